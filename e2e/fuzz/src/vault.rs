//! The `template` and `spec` targets: what a tenant writes, run against a fixed vault whose
//! secret values are long and random-looking, so finding one in an error message cannot be
//! chance. Checked: no panic; no error (`Display` or `Debug`) shows a value, or a 12-character
//! piece of one, that the input itself does not contain (a tenant may write a value into a
//! template, and a syntax error may quote the template); rendered data never over the Secret
//! size limit. `spec` runs the operator's own build, so it checks what a sync would write.

use std::collections::BTreeMap;

use keeper_operator::api::{KeeperSecret, KeeperSecretSpec, Template, TemplateMergePolicy};
use keeper_operator::error::Error;
use keeper_operator::ksm::crypto::AesKey;
use keeper_operator::ksm::record::notation::Notation;
use keeper_operator::ksm::record::{Field, KeeperFile, Record, SharedFolder, Vault};
use keeper_operator::sync::allowlist::AllowList;
use keeper_operator::sync::build::{self, Inputs, Write};
use keeper_operator::sync::desired::{HashKey, MAX_SECRET_BYTES};
use keeper_operator::sync::mapping::Bytes;
use keeper_operator::sync::template;
use serde_json::{Value, json};
use zeroize::Zeroizing;

const PASSWORD: &str = "Vq7xL2mZ9pRt4KwN8sYb3HcJ";
/// A PIN-like number, as text (how Keeper stores pinCode values).
const PIN: &str = "738291046573829104657382";
/// A number stored as a JSON number.
const ACCOUNT: u64 = 4_829_173_650_192_837;
const SECRET_A: &str = "Gd4nT8wQ1zXc6VbR0yUe5JfK";
const SECRET_B: &str = "Pm3sA9hW7kLq2NxC5tZr8BvY";
const NOTES: &str = "Nt6yH1jU4iO7pE0aS3dF9gQz";
const FILE_TEXT: &str = "Fc2lV5bN8mK1xJ4hG7dS0aQw";
const BINARY: &[u8] = &[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x42, 0x13, 0x37];

/// Length of the pieces of a value looked for.
const PIECE: usize = 12;

pub const RECORD_UID: &str = "FuzzRecordUid000000001";
const OTHER_UID: &str = "FuzzRecordUid000000002";
const FOLDER_UID: &str = "FuzzFolderUid000000001";
const FILE_UID: &str = "FuzzFileUid00000000001";
const BINARY_UID: &str = "FuzzFileUid00000000002";

/// Every secret value of the vault, as text.
fn secrets() -> Vec<String> {
    [PASSWORD, PIN, SECRET_A, SECRET_B, NOTES, FILE_TEXT]
        .map(String::from)
        .into_iter()
        .chain([ACCOUNT.to_string()])
        .collect()
}

fn field(field_type: &str, label: Option<&str>, value: Value) -> Field {
    Field {
        field_type: field_type.into(),
        label: label.map(Into::into),
        value: value.as_array().cloned().unwrap_or_default(),
    }
}

fn file(uid: &str, name: &str) -> KeeperFile {
    KeeperFile {
        uid: uid.into(),
        name: name.into(),
        title: format!("{name} file"),
        mime_type: None,
        size: None,
        url: None,
        key: AesKey::from_slice(&[9u8; 32]).expect("32 bytes"),
    }
}

/// Two records (same title, so a title selector is ambiguous; one in a folder) with standard and
/// custom fields of every shape (strings, numbers, objects, several values), notes and files.
fn vault() -> Vault {
    let main = Record {
        uid: RECORD_UID.into(),
        title: "Prod DB".into(),
        record_type: "login".into(),
        revision: 3,
        folder_uid: Some(FOLDER_UID.into()),
        inner_folder_uid: None,
        fields: vec![
            field("login", None, json!(["svc_login"])),
            field("password", None, json!([PASSWORD])),
            field(
                "host",
                None,
                json!([{"hostName": "db.fuzz.internal", "port": "5432"}]),
            ),
            field("fileRef", None, json!([FILE_UID, BINARY_UID])),
        ],
        custom: vec![
            field("pinCode", Some("pin"), json!([PIN])),
            field("accountNumber", Some("account"), json!([ACCOUNT])),
            field("secret", Some("tokens"), json!([SECRET_A, SECRET_B])),
            field("text", Some("env"), json!(["staging"])),
        ],
        notes: Some(NOTES.into()),
        files: vec![file(FILE_UID, "cert.pem"), file(BINARY_UID, "blob.bin")],
    };
    let other = Record {
        uid: OTHER_UID.into(),
        title: "Prod DB".into(),
        folder_uid: None,
        fields: vec![field("password", None, json!([SECRET_B]))],
        custom: vec![],
        notes: None,
        files: vec![],
        ..main.clone()
    };
    Vault {
        records: vec![main, other],
        folders: vec![SharedFolder {
            uid: FOLDER_UID.into(),
            name: Some("Fuzz".into()),
            parent_uid: None,
        }],
        ..Vault::default()
    }
}

fn file_bytes(uid: &str) -> Bytes {
    let bytes = if uid == BINARY_UID {
        BINARY
    } else {
        FILE_TEXT.as_bytes()
    };
    Zeroizing::new(bytes.to_vec())
}

/// Fails if `message` shows a piece of a vault value that `tenant_text` does not contain.
fn assert_no_value(tenant_text: &str, message: &str) {
    for value in secrets() {
        let bytes = value.as_bytes();
        for piece in bytes.windows(PIECE.min(bytes.len())) {
            let piece = std::str::from_utf8(piece).expect("ASCII values");
            assert!(
                !message.contains(piece) || tenant_text.contains(piece),
                "an error shows a piece of a vault value the input does not contain"
            );
        }
    }
}

fn assert_error_clean(tenant_text: &str, error: Error) {
    assert_no_value(tenant_text, &error.to_string());
    assert_no_value(tenant_text, &format!("{error:?}"));
}

fn size(data: &BTreeMap<String, Bytes>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The mapped values a template sees: every shape a value can take.
fn template_values() -> BTreeMap<String, Bytes> {
    let text = |s: &str| Zeroizing::new(s.as_bytes().to_vec());
    BTreeMap::from([
        ("password".into(), text(PASSWORD)),
        ("pin".into(), text(PIN)),
        ("account".into(), text(&ACCOUNT.to_string())),
        (
            "tokens".into(),
            text(&json!([SECRET_A, SECRET_B]).to_string()),
        ),
        ("notes".into(), text(NOTES)),
        ("cert.pem".into(), text(FILE_TEXT)),
        ("blob.bin".into(), Zeroizing::new(BINARY.to_vec())),
        (
            "host".into(),
            text(r#"{"hostName":"db.fuzz.internal","port":"5432"}"#),
        ),
        ("login".into(), text("svc_login")),
    ])
}

/// The hash key of the fuzzed KeeperSecret (it also salts `htpasswd`).
fn fuzz_key() -> HashKey {
    HashKey::derive(b"fuzz credential", "00000000-0000-0000-0000-000000000001")
}

/// Template text, up to four keys separated by NUL; the first byte's low bit picks Merge.
pub fn template(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let merge_policy = if first & 1 == 1 {
        TemplateMergePolicy::Merge
    } else {
        TemplateMergePolicy::Replace
    };
    let template = Template {
        data: text
            .split('\0')
            .take(4)
            .enumerate()
            .map(|(i, source)| (format!("k{i}"), source.to_string()))
            .collect(),
        merge_policy,
        template_from: vec![],
    };
    match template::apply(
        Some(&template),
        BTreeMap::new(),
        template_values(),
        &fuzz_key(),
    ) {
        Ok(out) => assert!(size(&out) <= MAX_SECRET_BYTES, "rendered over the limit"),
        Err(e) => assert_error_clean(text, e.into()),
    }
}

/// What the tenant wrote, as the operator reads it: the input, plus each notation as it
/// parses (the base64 form of a notation hides its text from the raw input).
fn tenant_text(input: &str, spec: &KeeperSecretSpec) -> String {
    let mut text = input.to_string();
    text.push_str(&serde_json::to_string(spec).unwrap_or_default());
    for item in &spec.data {
        if let Some(n) = item
            .notation
            .as_deref()
            .and_then(|n| n.parse::<Notation>().ok())
        {
            text.push('\n');
            text.push_str(&n.record);
            text.push('\n');
            text.push_str(&format!("{:?}", n.selector));
        }
    }
    text
}

/// The fixed vault's file bytes, at once.
struct Files;

impl Inputs for Files {
    type Error = Error;

    fn file(
        &self,
        file: &KeeperFile,
        _revision: i64,
        _room: usize,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        std::future::ready(Ok(file_bytes(&file.uid)))
    }
}

/// The output of `future`, which must not wait: a build over the fixed vault never does (files
/// and inline renders are ready at once), so no executor is needed.
fn at_once<T>(future: impl Future<Output = T>) -> T {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => unreachable!("a build over the fixed vault waited"),
    }
}

/// A store allowing the shared folder only, so the allow-list meets hostile specs too.
fn store() -> Option<AllowList> {
    let spec = serde_json::from_value(json!({
        "credentialsSecretRef": {"name": "ksm", "key": "config"},
        "allowedFolders": [FOLDER_UID],
    }))
    .expect("a store spec");
    AllowList::of_store("fuzz", &spec)
}

/// A whole KeeperSecret spec as JSON, through the operator's build ([`build::build`]: allow-list,
/// mapping, incomplete data, deletion policy, files, decoding, template, the desired Secret),
/// read directly and through a store.
pub fn spec(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = serde_json::from_str::<KeeperSecretSpec>(input) else {
        return;
    };
    let tenant = tenant_text(input, &spec);
    let mut ks = KeeperSecret::new("fuzz", spec);
    ks.metadata.namespace = Some("tenant".into());
    ks.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
    let (vault, key) = (vault(), fuzz_key());
    for allow in [None, store()] {
        match at_once(build::build(&ks, allow.as_ref(), &vault, &key, &Files)) {
            Ok(built) => {
                if let Write::Apply(d) = built.write {
                    let stored: usize = d
                        .secret
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| k.len() + v.0.len())
                        .sum();
                    assert!(stored <= MAX_SECRET_BYTES, "a Secret over the limit");
                }
            }
            Err(e) => assert_error_clean(&tenant, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "shows a piece of a vault value")]
    fn a_value_in_an_error_is_caught() {
        assert_no_value(
            "{{ (pin | int) // 0 }}",
            &format!("unable to calculate {PIN} // 0"),
        );
    }

    #[test]
    #[should_panic(expected = "shows a piece of a vault value")]
    fn a_piece_of_a_value_is_caught() {
        assert_no_value("", &format!("near {}", &PASSWORD[5..19]));
    }

    #[test]
    fn a_value_the_input_holds_is_the_tenant_s_own_text() {
        let source = format!("{{{{ '{PASSWORD}' | int }}}}");
        assert_no_value(&source, &format!("syntax error near '{PASSWORD}'"));
    }
}
