//! Leak scan: every secret value of the test vault, and the key material of the configs the
//! operator was given, must never appear in what the operator exposes outside Secret `data`:
//! its logs, Events, and object status / metadata.
//!
//! What counts as secret (everything else is an identifier users see anyway, e.g. logins,
//! hostnames, URLs, titles, labels, plain `text` custom fields, dates):
//! - fields and custom fields of a secret type ([`SECRET_FIELD_TYPES`]), every string or number
//!   leaf of their value (so `keyPair.privateKey`, `paymentCard.cardSecurityCode`, a PIN, …);
//! - record notes;
//! - file contents (the whole text, each line of a text file, and its base64 form);
//! - from a KSM config: `privateKey`, `appKey`, `clientKey`, and the whole config (JSON and
//!   base64). `clientId` is an identifier (a hash sent in every request), not a credential;
//! - anything a test registers with [`SecretValues::add`] (one-time tokens, …).
//!
//! Values shorter than [`MIN_LEN`] are skipped: they would match by chance.
//!
//! Each value is looked for as is, JSON- and Rust-`Debug`-escaped (how structured logs and error
//! chains print it) and base64-encoded (how Secret `data` carries it). A report names the value's
//! origin and where it was found, never the value.

use std::fmt;

use keeper_operator::ksm::crypto::b64_std;
use serde_json::Value;

use crate::ksm_server::{RecordSpec, VaultSpec};

/// Values shorter than this are not scanned for.
pub const MIN_LEN: usize = 6;

/// Field types whose values are secret (Keeper's standard field types).
pub const SECRET_FIELD_TYPES: &[&str] = &[
    "password",
    "secret",
    "keyPair",
    "pinCode",
    "paymentCard",
    "bankAccount",
    "oneTimeCode",
    "otp",
    "securityQuestion",
    "licenseNumber",
    "accountNumber",
    "passkey",
    "note",
    "multiline",
];

/// Config keys holding key material.
const CONFIG_SECRET_KEYS: &[&str] = &["privateKey", "appKey", "clientKey"];

/// One value to look for, with where it came from.
#[derive(Clone)]
struct Needle {
    origin: String,
    forms: Vec<String>,
}

/// The set of secret values a scan looks for. `Debug` shows origins only.
#[derive(Clone, Default)]
pub struct SecretValues {
    needles: Vec<Needle>,
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.needles.iter().map(|n| &n.origin))
            .finish()
    }
}

impl SecretValues {
    /// Registers a value (skipped if shorter than [`MIN_LEN`] bytes).
    pub fn add(&mut self, origin: impl Into<String>, value: &str) {
        if value.len() < MIN_LEN || self.needles.iter().any(|n| n.forms[0] == value) {
            return;
        }
        let mut forms = vec![value.to_string()];
        let json = serde_json::to_string(value).unwrap_or_default();
        let debug = format!("{value:?}");
        for escaped in [json, debug] {
            let inner = escaped.trim_matches('"').to_string();
            if !forms.contains(&inner) {
                forms.push(inner);
            }
        }
        // The base64 of the longest whole-triplet prefix: a prefix of the encoding of the value
        // and of anything that starts with it.
        let whole = value.len() / 3 * 3;
        let b64 = b64_std(&value.as_bytes()[..whole]);
        if b64.len() >= 8 {
            forms.push(b64);
        }
        self.needles.push(Needle {
            origin: origin.into(),
            forms,
        });
    }

    /// Registers file content: its base64 (of the first 24 bytes: a prefix of any encoding that
    /// starts at the content's start) and, when it is UTF-8, as text.
    pub fn add_bytes(&mut self, origin: &str, bytes: &[u8]) {
        let prefix = &bytes[..bytes.len().min(24) / 3 * 3];
        if prefix.len() >= MIN_LEN {
            self.needles.push(Needle {
                origin: format!("{origin} (base64)"),
                forms: vec![b64_std(prefix)],
            });
        }
        if let Ok(text) = std::str::from_utf8(bytes) {
            self.add_text(origin, text);
        }
    }

    /// Registers a text (notes, file content): the whole of it and each substantial line, so a
    /// partial leak (one line of a key) is caught too. PEM armour lines are public.
    fn add_text(&mut self, origin: &str, text: &str) {
        self.add(origin, text);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.len() >= 16 && !line.starts_with("-----") {
                self.add(format!("{origin} line {}", i + 1), line);
            }
        }
    }

    /// Every secret value of a record (see the module docs for what counts).
    pub fn add_record(&mut self, record: &RecordSpec) {
        let fields = record.fields.iter().map(|f| ("field", f));
        let custom = record.custom.iter().map(|f| ("custom field", f));
        for (kind, field) in fields.chain(custom) {
            let type_ = field["type"].as_str().unwrap_or_default();
            if !SECRET_FIELD_TYPES.contains(&type_) {
                continue;
            }
            let label = field["label"].as_str().unwrap_or(type_);
            let origin = format!("record {} {kind} {label}", record.uid);
            let mut leaves = Vec::new();
            leaves_as_text(&field["value"], &mut leaves);
            for leaf in leaves {
                self.add_text(&origin, &leaf);
            }
        }
        if let Some(notes) = &record.notes {
            self.add_text(&format!("record {} notes", record.uid), notes);
        }
        for file in &record.files {
            if let Ok(bytes) = file.bytes() {
                self.add_bytes(&format!("file {} content", file.uid), &bytes);
            }
        }
    }

    /// Every secret value of a vault spec.
    pub fn add_vault(&mut self, vault: &VaultSpec) {
        for record in &vault.records {
            self.add_record(record);
        }
    }

    /// Key material of a KSM config (JSON or base64 of JSON), and the config itself.
    pub fn add_config(&mut self, config: &str) {
        self.add("KSM config", config.trim());
        let json = keeper_operator::ksm::crypto::b64_decode(config.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| config.to_string());
        if json != config {
            self.add("KSM config (JSON)", json.trim());
        }
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&json) else {
            return;
        };
        for key in CONFIG_SECRET_KEYS {
            if let Some(v) = map.get(*key).and_then(Value::as_str) {
                self.add(format!("config {key}"), v);
            }
        }
    }

    /// How many values are looked for.
    pub fn len(&self) -> usize {
        self.needles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Every occurrence of a value in the given texts (`(where, text)`).
    pub fn find(&self, haystacks: &[(String, String)]) -> Vec<Leak> {
        let mut leaks = Vec::new();
        for (place, text) in haystacks {
            for needle in &self.needles {
                let hit = needle
                    .forms
                    .iter()
                    .find_map(|form| text.find(form.as_str()));
                if let Some(at) = hit {
                    leaks.push(Leak {
                        value: needle.origin.clone(),
                        place: place.clone(),
                        line: text[..at].matches('\n').count() + 1,
                    });
                }
            }
        }
        leaks
    }
}

/// String and number leaves (a PIN or an account number may be stored as a JSON number), as text.
fn leaves_as_text(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|x| leaves_as_text(x, out)),
        Value::Object(o) => o.values().for_each(|x| leaves_as_text(x, out)),
        _ => {}
    }
}

/// A secret value found somewhere it must not be. Names the value's origin, not the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    pub value: String,
    pub place: String,
    pub line: usize,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} found in {} (line {})",
            self.value, self.place, self.line
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksm_server::sample_vault;

    fn hay(place: &str, text: &str) -> Vec<(String, String)> {
        vec![(place.to_string(), text.to_string())]
    }

    #[test]
    fn sample_vault_secrets_are_found_in_every_form() {
        let mut s = SecretValues::default();
        s.add_vault(&sample_vault());
        let pw = "S3cure!Pa55w0rd#prod";
        let log = format!("{{\"level\":\"DEBUG\",\"msg\":\"x\"}}\n{{\"body\":\"{pw}\"}}");
        let leaks = s.find(&hay("operator.log", &log));
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert_eq!(leaks[0].line, 2);
        assert!(
            leaks[0]
                .value
                .contains("YP6qLSSxX3qEJLYyQs6iZw field password")
        );
        assert!(!leaks[0].to_string().contains(pw), "report names no value");

        let b64 = b64_std(pw.as_bytes());
        assert_eq!(s.find(&hay("event", &b64)).len(), 1, "base64 form");
        // A custom secret field, the numeric PIN, notes, a file line, the binary file's base64.
        for text in [
            "token pool-7f3a9c2e here",
            "invalid operation: unable to calculate 73195482 // 0",
            "Primary database of the shop. Rotate quarterly.",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKiss",
        ] {
            assert!(!s.find(&hay("status", text)).is_empty(), "{text}");
        }
        // JSON escaping of a multi-line value (the notes of a file record are one line; build one).
        let mut m = SecretValues::default();
        m.add("multi", "line one\n\"quoted\"");
        assert_eq!(
            m.find(&hay("log", r#"x "line one\n\"quoted\"" y"#)).len(),
            1
        );
    }

    #[test]
    fn numeric_leaves_are_secrets_too() {
        let record = RecordSpec::new("NumericRecordUid000001", "Card", "bankCard").custom(
            "pinCode",
            "PIN",
            serde_json::json!([4829173650u64]),
        );
        let mut s = SecretValues::default();
        s.add_record(&record);
        assert_eq!(s.find(&hay("status", "calculate 4829173650 // 0")).len(), 1);
    }

    #[test]
    fn identifiers_and_short_values_are_not_secrets() {
        let mut s = SecretValues::default();
        s.add_vault(&sample_vault());
        s.add("short", "abc");
        let benign = "login app_user url postgres://db.prod.internal:5432/app host \
                      analytics.db.prod.internal title Postgres env production abc \
                      -----BEGIN CERTIFICATE-----";
        assert_eq!(s.find(&hay("log", benign)), vec![]);
        assert!(format!("{s:?}").contains("notes"));
        assert!(
            !format!("{s:?}").contains("S3cure"),
            "Debug shows origins only"
        );
    }

    #[test]
    fn config_key_material_is_secret_but_the_client_id_is_not() {
        let json = r#"{"hostname":"127.0.0.1:1","clientId":"Y2xpZW50LWlkLWhhc2g=","privateKey":"MIGHAgEAMBMGByqGSM49","appKey":"YXBwLWtleS0zMi1ieXRlcw=="}"#;
        let mut s = SecretValues::default();
        s.add_config(&b64_std(json.as_bytes()));
        assert_eq!(s.find(&hay("log", "MIGHAgEAMBMGByqGSM49")).len(), 1);
        assert_eq!(s.find(&hay("log", "YXBwLWtleS0zMi1ieXRlcw==")).len(), 1);
        assert_eq!(s.find(&hay("log", json)).len(), 3, "the JSON and 2 keys");
        assert!(s.find(&hay("log", "Y2xpZW50LWlkLWhhc2g=")).is_empty());
    }
}
