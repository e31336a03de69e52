//! PURE: renders `spec.target.template` with MiniJinja.
//!
//! Every mapped value is a variable named after its key and also sits in the `data` map
//! (for keys such as `tls.crt` that are not identifiers). Undefined variables are errors;
//! rendering runs on a fuel budget so a hostile template cannot spin forever or exhaust memory,
//! and its output is capped at the Secret size limit. Errors carry the key, the kind and the
//! line, never a value.
//!
//! Templates come from `template.data` and from the ConfigMaps and Secrets that
//! `template.templateFrom` names ([`collect`] checks what the controller read). A template
//! read from a Secret is confidential: its errors never quote it.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::api::{Template, TemplateMergePolicy, TemplateSourceItem};
use crate::sync::desired::{HashKey, MAX_SECRET_BYTES};
use crate::sync::mapping::Bytes;

/// Instructions a template may spend; far beyond any realistic Secret template. MiniJinja also
/// charges fuel for every byte it produces, so this bounds the memory a render can use too.
const FUEL: u64 = 100_000;

/// `templateFrom` may bring at most this many bytes of templates (keys and texts, together).
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// ... and at most this many templates.
pub const MAX_SOURCE_KEYS: usize = 64;

/// bcrypt cost of `htpasswd` (2^10 rounds: ~50 ms, the usual htpasswd default).
const BCRYPT_COST: u32 = 10;
/// bcrypt is slow by design and fuel does not count time: a sync may hash at most this many.
pub const MAX_HTPASSWD_CALLS: usize = 16;
/// `fromjson` and `fromyaml` parse at most this many bytes (parsing is not charged fuel).
const MAX_PARSE_BYTES: usize = 256 * 1024;

// The details of the operator's own filter errors: fixed texts, so safe to show.
const NOT_BASE64: &str = "b64decode: input is not valid base64";
const NOT_UTF8: &str = "b64decode: result is not UTF-8";
const NOT_BASE64URL: &str = "b64urldecode: input is not valid URL-safe base64";
const NOT_UTF8_URL: &str = "b64urldecode: result is not UTF-8";
const NOT_HEX: &str = "hexdecode: input is not an even number of hex digits";
const NOT_UTF8_HEX: &str = "hexdecode: result is not UTF-8";
const NOT_JSON: &str = "fromjson: input is not valid JSON";
const NOT_YAML: &str = "fromyaml: input is not valid YAML";
const PARSE_TOO_LARGE: &str = "fromjson/fromyaml: input is over 256 KiB";
const NO_YAML: &str = "toyaml: value cannot be written as YAML";
const PEM_UNTERMINATED: &str = "pem: a BEGIN line has no matching END line";
const NO_CERTIFICATE: &str = "pem_certificates: no CERTIFICATE block";
const NO_PRIVATE_KEY: &str = "pem_private_key: no PRIVATE KEY block";
const TWO_PRIVATE_KEYS: &str = "pem_private_key: more than one PRIVATE KEY block";
const HTPASSWD_USER: &str = "htpasswd: the user name must not be empty or hold ':' or a line break";
const HTPASSWD_LONG: &str = "htpasswd: bcrypt takes at most 72 bytes of password";
const HTPASSWD_MANY: &str = "htpasswd: at most 16 calls per sync";
const OWN_ERRORS: &[&str] = &[
    NOT_BASE64,
    NOT_UTF8,
    NOT_BASE64URL,
    NOT_UTF8_URL,
    NOT_HEX,
    NOT_UTF8_HEX,
    NOT_JSON,
    NOT_YAML,
    PARSE_TOO_LARGE,
    NO_YAML,
    PEM_UNTERMINATED,
    NO_CERTIFICATE,
    NO_PRIVATE_KEY,
    TWO_PRIVATE_KEYS,
    HTPASSWD_USER,
    HTPASSWD_LONG,
    HTPASSWD_MANY,
];

/// A template failed. Messages name the key, the kind of problem and the line, never a value.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template does not compile or does not render.
    #[error("{problem} in template for key {key:?}{}", at_line(*line))]
    Invalid {
        /// The Secret key whose template failed.
        key: String,
        /// What went wrong: MiniJinja's error kind (plus its detail for syntax errors).
        problem: String,
        /// Line in the template, when MiniJinja knows it.
        line: Option<usize>,
    },
    /// The rendered keys would not fit in a Secret.
    #[error("template for key {key:?}: the Secret would be over the 1 MiB limit")]
    TooLarge {
        /// The Secret key whose output crossed the limit.
        key: String,
    },
}

impl TemplateError {
    /// Stable reason for status and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "InvalidSpec",
            Self::TooLarge { .. } => "TooLarge",
        }
    }

    /// The Secret key whose template failed.
    pub fn key(&self) -> &str {
        match self {
            Self::Invalid { key, .. } | Self::TooLarge { key } => key,
        }
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|n| format!(" at line {n}")).unwrap_or_default()
}

/// A template read through `templateFrom`.
pub struct Source {
    text: Zeroizing<String>,
    /// Read from a Secret: never quoted, not even in a syntax error.
    confidential: bool,
}

/// Which kind of object a `templateFrom` entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A ConfigMap (`data` and `binaryData`).
    ConfigMap,
    /// A Secret (`data`); its templates are confidential.
    Secret,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        })
    }
}

/// One `templateFrom` entry as read: `data` is `None` when the object does not exist.
pub struct Fetched<'a> {
    /// ConfigMap or Secret.
    pub kind: SourceKind,
    /// Its name (in the KeeperSecret's namespace).
    pub name: &'a str,
    /// The keys to use; empty: all of them.
    pub items: &'a [TemplateSourceItem],
    /// Its keys and values.
    pub data: Option<BTreeMap<String, Bytes>>,
}

/// A `templateFrom` source is missing or unusable. Messages name objects and keys only.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The ConfigMap or Secret does not exist.
    #[error("templateFrom: {kind} {name:?} not found in this namespace")]
    NotFound { kind: SourceKind, name: String },
    /// A listed key is not in it.
    #[error("templateFrom: {kind} {name:?} has no key {key:?}")]
    MissingKey {
        kind: SourceKind,
        name: String,
        key: String,
    },
    /// It holds no keys to use.
    #[error("templateFrom: {kind} {name:?} holds no keys")]
    Empty { kind: SourceKind, name: String },
    /// A template is not UTF-8 text.
    #[error("templateFrom: key {key:?} of {kind} {name:?} is not UTF-8 text")]
    NotText {
        kind: SourceKind,
        name: String,
        key: String,
    },
    /// Together over [`MAX_SOURCE_BYTES`] or [`MAX_SOURCE_KEYS`].
    #[error("templateFrom: the templates are over the limit of {MAX_SOURCE_KEYS} keys or 1 MiB")]
    TooLarge,
}

impl SourceError {
    /// Stable reason for status and metrics. Both are fixed outside the KeeperSecret (by
    /// creating or editing the source), so they are retried, never Stalled.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } | Self::MissingKey { .. } => "TemplateSourceNotFound",
            _ => "TemplateSourceInvalid",
        }
    }
}

/// The templates `templateFrom` brings, by Secret key: every key of each source, or only its
/// listed ones; a later source wins over an earlier one for the same key.
pub fn collect(fetched: Vec<Fetched<'_>>) -> Result<BTreeMap<String, Source>, SourceError> {
    let mut out = BTreeMap::new();
    let mut bytes = 0usize;
    for f in fetched {
        let (kind, name) = (f.kind, f.name.to_string());
        let Some(mut data) = f.data else {
            return Err(SourceError::NotFound { kind, name });
        };
        if !f.items.is_empty() {
            let mut listed = BTreeMap::new();
            for item in f.items {
                let Some(value) = data.remove(&item.key) else {
                    let key = item.key.clone();
                    return Err(SourceError::MissingKey { kind, name, key });
                };
                listed.insert(item.key.clone(), value);
            }
            data = listed;
        }
        if data.is_empty() {
            return Err(SourceError::Empty { kind, name });
        }
        for (key, value) in data {
            bytes += key.len() + value.len();
            let Ok(text) = String::from_utf8(value.to_vec()) else {
                return Err(SourceError::NotText { kind, name, key });
            };
            let source = Source {
                text: Zeroizing::new(text),
                confidential: kind == SourceKind::Secret,
            };
            out.insert(key, source);
        }
        if bytes > MAX_SOURCE_BYTES || out.len() > MAX_SOURCE_KEYS {
            return Err(SourceError::TooLarge);
        }
    }
    Ok(out)
}

/// Applies the template (if any) to the mapped values: the inline `data` templates, and those
/// `templateFrom` brought (`from`) for keys `data` does not set. `key` makes `htpasswd`'s salts.
/// The result never exceeds the Secret size limit: rendering stops as soon as the keys would.
pub fn apply(
    template: Option<&Template>,
    from: BTreeMap<String, Source>,
    values: BTreeMap<String, Bytes>,
    key: &HashKey,
) -> Result<BTreeMap<String, Bytes>, TemplateError> {
    let Some(template) = template else {
        return Ok(values);
    };
    let mut sources = from;
    for (k, text) in &template.data {
        let text = Zeroizing::new(text.clone());
        let inline = Source {
            text,
            confidential: false,
        };
        sources.insert(k.clone(), inline);
    }
    if sources.is_empty() {
        return Ok(values);
    }
    let env = environment(key.clone());
    let ctx = context(&values);
    let mut out = match template.merge_policy {
        TemplateMergePolicy::Merge => values,
        TemplateMergePolicy::Replace => BTreeMap::new(),
    };
    for (key, source) in &sources {
        out.remove(key);
        let used: usize = out.iter().map(|(k, v)| k.len() + v.len()).sum();
        let room = MAX_SECRET_BYTES.saturating_sub(used + key.len());
        let rendered = render(&env, key, source, &ctx, room)?;
        out.insert(key.clone(), rendered);
    }
    Ok(out)
}

/// Compiles, then renders into a buffer that refuses to grow past `room` bytes.
fn render(
    env: &Environment<'_>,
    key: &str,
    source: &Source,
    ctx: &Value,
    room: usize,
) -> Result<Bytes, TemplateError> {
    // Compiling sees only the template text: its messages are shown when the tenant wrote it
    // in the open (spec or ConfigMap), but not when it came from a Secret.
    let template = env
        .template_from_named_str(key, &source.text)
        .map_err(|e| {
            let problem = if source.confidential {
                e.kind().to_string()
            } else {
                compile_problem(&e)
            };
            invalid(key, &e, problem)
        })?;
    let mut out = Limited {
        buf: Zeroizing::new(Vec::new()),
        room,
        over: false,
    };
    match template.render_captured_to(ctx.clone(), &mut out) {
        Ok(_) => Ok(out.buf),
        Err(_) if out.over => Err(TemplateError::TooLarge { key: key.into() }),
        // Rendering sees the values: MiniJinja's detail can quote them ("unable to calculate
        // 73195 // 0"), so only the kind is shown.
        Err(e) => Err(invalid(key, &e, render_problem(&e))),
    }
}

fn invalid(key: &str, e: &Error, problem: String) -> TemplateError {
    TemplateError::Invalid {
        key: key.into(),
        problem,
        line: e.line(),
    }
}

fn compile_problem(e: &Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// The kind (a fixed text per kind), plus the detail only when it is one of the operator's own
/// fixed texts.
fn render_problem(e: &Error) -> String {
    match e.detail() {
        Some(detail) if OWN_ERRORS.contains(&detail) => detail.to_string(),
        _ => e.kind().to_string(),
    }
}

/// Output sink with a byte budget; writing past it fails the render.
struct Limited {
    buf: Bytes,
    room: usize,
    over: bool,
}

impl io::Write for Limited {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.room {
            self.over = true;
            return Err(io::Error::other("over the Secret size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn environment(key: HashKey) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.add_filter("b64encode", |v: Value| STANDARD.encode(bytes_of(&v)));
    env.add_filter("b64decode", |s: &str| {
        text(STANDARD.decode(s.trim()), NOT_BASE64, NOT_UTF8)
    });
    env.add_filter("b64urlencode", |v: Value| {
        URL_SAFE_NO_PAD.encode(bytes_of(&v))
    });
    env.add_filter("b64urldecode", |s: &str| {
        text(
            URL_SAFE_ANY_PAD.decode(s.trim()),
            NOT_BASE64URL,
            NOT_UTF8_URL,
        )
    });
    env.add_filter("hexencode", |v: Value| hex(&bytes_of(&v)));
    env.add_filter("hexdecode", |s: &str| {
        text(unhex(s.trim()).ok_or(()), NOT_HEX, NOT_UTF8_HEX)
    });
    env.add_filter("sha256", |v: Value| hex(&Sha256::digest(bytes_of(&v))));
    env.add_filter("fromjson", fromjson);
    env.add_filter("fromyaml", fromyaml);
    env.add_filter("toyaml", toyaml);
    env.add_filter("pem_blocks", pem_blocks);
    env.add_filter("pem_certificates", pem_certificates);
    env.add_filter("pem_private_key", pem_private_key);
    env.add_filter("pem_join", pem_join);
    let calls = Arc::new(AtomicUsize::new(0));
    env.add_function("htpasswd", move |user: &str, password: &str| {
        if calls.fetch_add(1, Ordering::Relaxed) >= MAX_HTPASSWD_CALLS {
            return Err(fail(HTPASSWD_MANY));
        }
        htpasswd(&key, user, password)
    });
    env
}

/// Values are strings when they are UTF-8 and bytes otherwise (binary files).
fn context(values: &BTreeMap<String, Bytes>) -> Value {
    let data: BTreeMap<String, Value> = values
        .iter()
        .map(|(k, v)| {
            let value = match std::str::from_utf8(v) {
                Ok(s) => Value::from(s),
                Err(_) => Value::from_bytes(v.to_vec()),
            };
            (k.clone(), value)
        })
        .collect();
    let mut vars = data.clone();
    vars.insert("data".to_string(), Value::from(data));
    Value::from(vars)
}

fn fail(detail: &'static str) -> Error {
    Error::new(ErrorKind::InvalidOperation, detail)
}

/// The bytes of a value: its own for bytes (binary files), its text otherwise.
fn bytes_of(value: &Value) -> Vec<u8> {
    match value.as_bytes() {
        Some(b) => b.to_vec(),
        None => value.to_string().into_bytes(),
    }
}

/// Decoded bytes as text, or the decoder's or the UTF-8 fixed error.
fn text<E>(
    decoded: Result<Vec<u8>, E>,
    invalid: &'static str,
    not_utf8: &'static str,
) -> Result<String, Error> {
    let bytes = decoded.map_err(|_| fail(invalid))?;
    String::from_utf8(bytes).map_err(|_| fail(not_utf8))
}

/// URL-safe base64 with or without padding (JWTs drop it, other tools keep it).
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn fromjson(s: &str) -> Result<Value, Error> {
    if s.len() > MAX_PARSE_BYTES {
        return Err(fail(PARSE_TOO_LARGE));
    }
    serde_json::from_str(s).map_err(|_| fail(NOT_JSON))
}

/// serde_yaml_ng refuses alias bombs (its repetition limit) and deep nesting.
fn fromyaml(s: &str) -> Result<Value, Error> {
    if s.len() > MAX_PARSE_BYTES {
        return Err(fail(PARSE_TOO_LARGE));
    }
    serde_yaml_ng::from_str(s).map_err(|_| fail(NOT_YAML))
}

fn toyaml(v: Value) -> Result<String, Error> {
    serde_yaml_ng::to_string(&v).map_err(|_| fail(NO_YAML))
}

/// The PEM blocks of `text` in order, as (label, block); each block runs from its BEGIN line to
/// its END line, trimmed, `\n`-terminated. Text around blocks (openssl's "Bag Attributes") is
/// skipped.
fn parse_pem(text: &str) -> Result<Vec<(String, String)>, Error> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        let begin = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"));
        match (open.take(), begin) {
            (None, Some(label)) => open = Some((label.to_string(), format!("{line}\n"))),
            (None, None) => {}
            (Some(_), Some(_)) => return Err(fail(PEM_UNTERMINATED)),
            (Some((label, mut block)), None) => {
                block.push_str(line);
                block.push('\n');
                if line == format!("-----END {label}-----") {
                    blocks.push((label, block));
                } else {
                    open = Some((label, block));
                }
            }
        }
    }
    match open {
        Some(_) => Err(fail(PEM_UNTERMINATED)),
        None => Ok(blocks),
    }
}

/// `value | pem_blocks` → every block; `value | pem_blocks("CERTIFICATE")` → those labelled so.
fn pem_blocks(text: &str, label: Option<&str>) -> Result<Vec<String>, Error> {
    Ok(parse_pem(text)?
        .into_iter()
        .filter(|(l, _)| label.is_none_or(|want| l == want))
        .map(|(_, block)| block)
        .collect())
}

/// Every CERTIFICATE block (leaf and chain, in order), concatenated.
fn pem_certificates(text: &str) -> Result<String, Error> {
    let certs = pem_blocks(text, Some("CERTIFICATE"))?;
    if certs.is_empty() {
        return Err(fail(NO_CERTIFICATE));
    }
    Ok(certs.concat())
}

/// The one private key block (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`, ...).
fn pem_private_key(text: &str) -> Result<String, Error> {
    let mut keys = parse_pem(text)?
        .into_iter()
        .filter(|(label, _)| label.ends_with("PRIVATE KEY"));
    match (keys.next(), keys.next()) {
        (Some((_, key)), None) => Ok(key),
        (None, _) => Err(fail(NO_PRIVATE_KEY)),
        (Some(_), Some(_)) => Err(fail(TWO_PRIVATE_KEYS)),
    }
}

/// PEM texts joined one after another, each ending in exactly one line break.
fn pem_join(blocks: Vec<String>) -> String {
    blocks
        .iter()
        .map(|b| b.trim())
        .filter(|b| !b.is_empty())
        .map(|b| format!("{b}\n"))
        .collect()
}

/// `user:$2y$10$...`, an htpasswd line as ingress-nginx basic auth reads it. The salt is a
/// keyed digest of user and password, so the same input renders the same line every sync (a
/// fresh random salt would change the Secret, and restart its workloads, at every refresh).
fn htpasswd(key: &HashKey, user: &str, password: &str) -> Result<String, Error> {
    if user.is_empty() || user.contains([':', '\n', '\r']) {
        return Err(fail(HTPASSWD_USER));
    }
    let digest = key.digest(
        "keeper-operator.dev/htpasswd-salt/v1",
        &[user.as_bytes(), password.as_bytes()],
    );
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&digest[..16]);
    // The non-truncating variant refuses passwords bcrypt would silently cut at 72 bytes.
    let hash = bcrypt::non_truncating_hash_with_salt(password, BCRYPT_COST, salt)
        .map_err(|_| fail(HTPASSWD_LONG))?;
    Ok(format!(
        "{user}:{}",
        hash.format_for_version(bcrypt::Version::TwoY)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Bytes> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Zeroizing::new(v.to_vec())))
            .collect()
    }

    fn tpl(policy: TemplateMergePolicy, pairs: &[(&str, &str)]) -> Template {
        Template {
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            merge_policy: policy,
            template_from: vec![],
        }
    }

    fn key() -> HashKey {
        HashKey::derive(b"credential", "uid-1")
    }

    /// Applies `t` with no templateFrom and the test key.
    fn run(
        t: &Template,
        values: BTreeMap<String, Bytes>,
    ) -> Result<BTreeMap<String, Bytes>, TemplateError> {
        apply(Some(t), BTreeMap::new(), values, &key())
    }

    fn text(m: &BTreeMap<String, Bytes>, k: &str) -> String {
        String::from_utf8(m[k].to_vec()).unwrap()
    }

    #[test]
    fn no_template_passes_values_through() {
        let out = apply(None, BTreeMap::new(), vals(&[("a", b"1")]), &key()).unwrap();
        assert_eq!(text(&out, "a"), "1");
    }

    #[test]
    fn replace_keeps_only_templated_keys() {
        let t = tpl(
            TemplateMergePolicy::Replace,
            &[(
                "url",
                "postgres://{{ user }}:{{ data['pass.word'] }}@db/app",
            )],
        );
        let out = run(&t, vals(&[("user", b"app"), ("pass.word", b"s3cr3t")])).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["url"]);
        assert_eq!(text(&out, "url"), "postgres://app:s3cr3t@db/app");
    }

    #[test]
    fn merge_keeps_mapped_values_and_template_wins() {
        let t = tpl(
            TemplateMergePolicy::Merge,
            &[("user", "{{ user | upper }}")],
        );
        let out = run(&t, vals(&[("user", b"app"), ("other", b"x")])).unwrap();
        assert_eq!(text(&out, "user"), "APP");
        assert_eq!(text(&out, "other"), "x");
    }

    #[test]
    fn dockerconfigjson_from_fields() {
        let src = r#"{"auths":{"{{ host }}":{"auth":"{{ (user ~ ':' ~ pass) | b64encode }}"}}}"#;
        let t = tpl(TemplateMergePolicy::Replace, &[(".dockerconfigjson", src)]);
        let out = run(
            &t,
            vals(&[("host", b"r.io"), ("user", b"u"), ("pass", b"p")]),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text(&out, ".dockerconfigjson")).unwrap();
        assert_eq!(v["auths"]["r.io"]["auth"], "dTpw");
    }

    #[test]
    fn binary_values_are_bytes_and_b64encode_is_exact() {
        let t = tpl(
            TemplateMergePolicy::Replace,
            &[("b", "{{ data['f.bin'] | b64encode }}")],
        );
        let out = run(&t, vals(&[("f.bin", &[0xff, 0x00, 0xfe])])).unwrap();
        assert_eq!(text(&out, "b"), "/wD+");
    }

    #[test]
    fn b64decode_and_tojson() {
        let t = tpl(
            TemplateMergePolicy::Replace,
            &[("d", "{{ enc | b64decode }}"), ("j", "{{ user | tojson }}")],
        );
        let out = run(&t, vals(&[("enc", b"aGk="), ("user", b"a\"b")])).unwrap();
        assert_eq!(text(&out, "d"), "hi");
        assert_eq!(text(&out, "j"), r#""a\"b""#);
    }

    #[test]
    fn undefined_variable_is_an_error_naming_the_key_not_values() {
        let t = tpl(TemplateMergePolicy::Replace, &[("url", "{{ pasword }}")]);
        let err = run(&t, vals(&[("password", b"TOPSECRET")])).unwrap_err();
        assert_eq!(err.key(), "url");
        assert!(!err.to_string().contains("TOPSECRET"));
    }

    /// A vault of numeric and string values, each distinctive enough to be found in a message.
    const VAULT: &[(&str, &[u8])] = &[
        ("pin", b"73195"),
        ("long_pin", b"482913756"),
        ("password", b"Hunter2-Xq9vLp"),
        ("token", b"tok_8c1f55aa09"),
        ("amount", b"12.75"),
        ("blob", &[0xde, 0xad, 0xbe, 0xef, 0x42]),
    ];

    fn render_error(source: &str) -> TemplateError {
        let t = tpl(TemplateMergePolicy::Replace, &[("DATABASE_URL", source)]);
        match run(&t, vals(VAULT)) {
            Ok(out) => panic!("{source:?} rendered ({} keys)", out.len()),
            Err(e) => e,
        }
    }

    fn assert_no_value(source: &str, message: &str) {
        for (name, value) in VAULT {
            let text = String::from_utf8_lossy(value);
            assert!(
                !message.contains(text.as_ref()),
                "{source:?}: the message shows the value of {name}: {message}"
            );
        }
        for name in ["DEADBEEF", "deadbeef", "222, 173", "3q2+7"] {
            assert!(!message.contains(name), "{source:?}: the blob: {message}");
        }
    }

    #[test]
    fn render_errors_give_kind_and_line_never_a_value() {
        let failing = [
            "{{ (pin | int) // 0 }}",
            "{{ (long_pin | int) // 0 }}",
            "{{ (long_pin | int) % 0 }}",
            "{{ pin // 0 }}",
            "{{ (amount | float) // 0 }}",
            "{{ password | int }}",
            "{{ password | float + 1 }}",
            "{{ password + 1 }}",
            "{{ pin - password }}",
            "{{ password - pin }}",
            "{{ password[100] }}",
            "{{ password[password] }}",
            "{{ data[password] }}",
            "{{ data[pin] }}",
            "{{ data[blob] }}",
            "{{ password.foo }}",
            "{{ password.foo.bar }}",
            "{{ password | attr(password) }}",
            "{{ password | round(password) }}",
            "{{ password | indent(password) }}",
            "{{ password | replace(1) }}",
            "{{ password | split(1) }}",
            "{{ password | dictsort }}",
            "{{ password | batch(password) }}",
            "{{ password | join(1, 2) }}",
            "{{ password | default(1, 2, 3) }}",
            "{{ password ~ 1 | foo }}",
            "{{ password(1) }}",
            "{{ password.upper(password) }}",
            "{{ password * 99999999999 }}",
            "{{ password * password }}",
            "{{ [password] * 99999999999 }}",
            "{{ range(long_pin | int) }}",
            "{{ range(password) }}",
            "{{ '%d' | format(password) }}",
            "{{ {password: 1}[token] }}",
            "{{ {password: 1}.pin }}",
            "{% for a, b in [password] %}{% endfor %}",
            "{% set x, y = password %}",
            "{{ blob | int }}",
            "{{ blob ~ password | b64decode }}",
            "{{ password | b64decode }}",
            "{{ undefined_name ~ password }}",
            "{{ namespace(x=password).y }}",
            "{{ password | tojson | int }}",
            "{{ pin | int | attr('x') }}",
        ];
        for source in failing {
            let err = render_error(source);
            let message = err.to_string();
            assert_no_value(source, &message);
            assert!(
                message.contains("\"DATABASE_URL\""),
                "{source:?}: {message}"
            );
            assert_eq!(err.reason(), "InvalidSpec", "{source:?}: {message}");
        }
    }

    #[test]
    fn a_failing_render_reports_kind_key_and_line() {
        let err = render_error("line one\n{{ (pin | int) // 0 }}");
        assert_eq!(
            err.to_string(),
            "invalid operation in template for key \"DATABASE_URL\" at line 2"
        );
        let err = render_error("{{ password.missing }}");
        assert_eq!(
            err.to_string(),
            "undefined value in template for key \"DATABASE_URL\" at line 1"
        );
        // The operator's own filter errors are fixed texts and are shown.
        let err = render_error("{{ password | b64decode }}");
        assert_eq!(
            err.to_string(),
            "b64decode: input is not valid base64 in template for key \"DATABASE_URL\" at line 1"
        );
    }

    #[test]
    fn syntax_errors_quote_the_template_only() {
        let err = render_error("{{ password | }}\n");
        let message = err.to_string();
        assert!(message.starts_with("syntax error: "), "{message}");
        assert!(message.ends_with("at line 1"), "{message}");
        assert_no_value("syntax", &message);
    }

    #[test]
    fn output_over_the_secret_limit_is_refused() {
        // One key alone.
        let err = render_error("{% for i in range(3000) %}{{ password * 30 }}{% endfor %}");
        assert!(matches!(err, TemplateError::TooLarge { .. }), "{err}");
        assert_eq!(err.reason(), "TooLarge");
        assert_no_value("size", &err.to_string());
        // Several keys, each under the limit, together over it.
        let big = "{% for i in range(2000) %}{{ password * 20 }}{% endfor %}"; // 560,000 bytes
        let t = tpl(TemplateMergePolicy::Replace, &[("a", big), ("b", big)]);
        let err = run(&t, vals(VAULT)).unwrap_err();
        assert!(
            matches!(err, TemplateError::TooLarge { ref key } if key == "b"),
            "{err}"
        );
        // Merged values count too.
        let t = tpl(TemplateMergePolicy::Merge, &[("a", big)]);
        let mapped = vals(&[("file", &[7u8; 600_000]), ("password", b"Hunter2-Xq9vLp")]);
        assert!(matches!(
            run(&t, mapped),
            Err(TemplateError::TooLarge { .. })
        ));
        // Just under the limit is fine.
        let t = tpl(TemplateMergePolicy::Replace, &[("a", big)]);
        assert_eq!(run(&t, vals(VAULT)).unwrap()["a"].len(), 560_000);
    }

    #[test]
    fn doubling_and_repetition_run_out_of_fuel() {
        let unrolled = format!(
            "{{% set x = password %}}{}{{{{ x | length }}}}",
            "{% set x = x ~ x %}".repeat(40)
        );
        for source in [
            // Doubling: each step is one instruction but doubles the bytes produced.
            "{% set ns = namespace(x=password) %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
            unrolled.as_str(),
            // Repetition: one instruction asking for a huge string or list.
            "{{ (password * 90000000) | length }}",
            "{{ ([password] * 90000000) | join }}",
            "{{ password | indent(100000000) }}",
            "{% for i in range(100000) %}{% set y = password * 1000 %}{% endfor %}",
        ] {
            let err = render_error(source);
            let message = err.to_string();
            assert!(
                message.starts_with("engine ran out of fuel"),
                "{source:?}: {message}"
            );
        }
    }

    fn one(source: &str, values: &[(&str, &[u8])]) -> String {
        let t = tpl(TemplateMergePolicy::Replace, &[("out", source)]);
        text(&run(&t, vals(values)).unwrap(), "out")
    }

    #[test]
    fn encodings_and_sha256() {
        let v: &[(&str, &[u8])] = &[("s", b"hi"), ("b", &[0xfb, 0xff])];
        assert_eq!(one("{{ data.b | b64urlencode }}", v), "-_8");
        assert_eq!(one("{{ data.b | b64encode }}", v), "+/8=");
        assert_eq!(one("{{ 'aGk' | b64urldecode }}", v), "hi");
        assert_eq!(one("{{ 'aGk=' | b64urldecode }}", v), "hi");
        assert_eq!(one("{{ s | hexencode }}", v), "6869");
        assert_eq!(one("{{ data.b | hexencode }}", v), "fbff");
        assert_eq!(one("{{ '6869' | hexdecode }}", v), "hi");
        assert_eq!(one("{{ '6A6B' | hexdecode }}", v), "jk");
        assert_eq!(
            one("{{ 'abc' | sha256 }}", v),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            one("{{ data.b | sha256 }}", v),
            hex(&Sha256::digest([0xfb, 0xff]))
        );
    }

    #[test]
    fn json_and_yaml() {
        let v: &[(&str, &[u8])] = &[
            (
                "cfg",
                br#"{"db": {"host": "h", "port": 5432}, "tags": ["a", "b"]}"#,
            ),
            ("y", b"a: [1, 2]\nb: {c: x}\n"),
        ];
        assert_eq!(one("{{ (cfg | fromjson).db.port }}", v), "5432");
        assert_eq!(
            one("{{ (y | fromyaml).a[1] }}:{{ (y | fromyaml).b.c }}", v),
            "2:x"
        );
        assert_eq!(
            one("{{ (cfg | fromjson).db | toyaml }}", v),
            "host: h\nport: 5432\n"
        );
        assert_eq!(
            one("{{ y | fromyaml | tojson }}", v),
            r#"{"a": [1, 2], "b": {"c": "x"}}"#
        );
    }

    const BUNDLE: &str = "Bag Attributes: x\n-----BEGIN CERTIFICATE-----\nTEVBRg==\n-----END CERTIFICATE-----\r\n  -----BEGIN CERTIFICATE-----\r\nQ0E=\n-----END CERTIFICATE-----\n\n-----BEGIN EC PRIVATE KEY-----\nS0VZ\n-----END EC PRIVATE KEY-----\n";
    const LEAF: &str = "-----BEGIN CERTIFICATE-----\nTEVBRg==\n-----END CERTIFICATE-----\n";
    const CA: &str = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nS0VZ\n-----END EC PRIVATE KEY-----\n";

    #[test]
    fn pem_split_and_join() {
        let v: &[(&str, &[u8])] = &[("bundle", BUNDLE.as_bytes())];
        assert_eq!(
            one("{{ bundle | pem_certificates }}", v),
            format!("{LEAF}{CA}")
        );
        assert_eq!(one("{{ bundle | pem_private_key }}", v), KEY);
        assert_eq!(one("{{ bundle | pem_blocks | length }}", v), "3");
        assert_eq!(
            one("{{ bundle | pem_blocks('CERTIFICATE') | first }}", v),
            LEAF
        );
        assert_eq!(
            one(
                "{{ (bundle | pem_blocks('CERTIFICATE'))[1:] | pem_join }}",
                v
            ),
            CA
        );
        assert_eq!(
            one(
                "{{ [bundle | pem_private_key, bundle | pem_certificates] | pem_join }}",
                v
            ),
            format!("{KEY}{LEAF}{CA}")
        );
    }

    #[test]
    fn helper_errors_are_fixed_texts() {
        let cases = [
            ("{{ password | hexdecode }}", NOT_HEX),
            ("{{ 'fff' | hexdecode }}", NOT_HEX),
            ("{{ '+f' | hexdecode }}", NOT_HEX),
            ("{{ 'ff' | hexdecode }}", NOT_UTF8_HEX),
            ("{{ password | b64urldecode }}", NOT_BASE64URL),
            ("{{ '_w' | b64urldecode }}", NOT_UTF8_URL),
            ("{{ password | fromjson }}", NOT_JSON),
            ("{{ (password ~ ': [') | fromyaml }}", NOT_YAML),
            ("{{ (password * 20000) | fromjson }}", PARSE_TOO_LARGE),
            (
                "{{ ('-----BEGIN CERTIFICATE-----\n' ~ password) | pem_certificates }}",
                PEM_UNTERMINATED,
            ),
            ("{{ password | pem_certificates }}", NO_CERTIFICATE),
            ("{{ password | pem_private_key }}", NO_PRIVATE_KEY),
            (
                "{{ (data.key ~ data.key) | pem_private_key }}",
                TWO_PRIVATE_KEYS,
            ),
            ("{{ htpasswd(password ~ ':', password) }}", HTPASSWD_USER),
            ("{{ htpasswd('', password) }}", HTPASSWD_USER),
            ("{{ htpasswd('u', password * 6) }}", HTPASSWD_LONG),
        ];
        for (source, expected) in cases {
            let t = tpl(TemplateMergePolicy::Replace, &[("DATABASE_URL", source)]);
            let mut values = vals(VAULT);
            values.insert("key".into(), Zeroizing::new(KEY.as_bytes().to_vec()));
            let err = run(&t, values).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with(expected), "{source:?}: {message}");
            assert_no_value(source, &message);
        }
    }

    #[test]
    fn htpasswd_is_stable_verifies_and_depends_on_the_key() {
        let t = tpl(
            TemplateMergePolicy::Replace,
            &[("auth", "{{ htpasswd(user, password) }}")],
        );
        let v = vals(&[("user", b"admin"), ("password", b"Hunter2-Xq9vLp")]);
        let first = text(&run(&t, v.clone()).unwrap(), "auth");
        assert_eq!(text(&run(&t, v.clone()).unwrap(), "auth"), first);
        let hash = first.strip_prefix("admin:$2y$10$").expect(&first);
        assert!(bcrypt::verify("Hunter2-Xq9vLp", &format!("$2y$10${hash}")).unwrap());
        assert!(!bcrypt::verify("hunter2", &format!("$2y$10${hash}")).unwrap());
        // Another KeeperSecret (or credential) salts differently.
        let other = HashKey::derive(b"credential", "uid-2");
        let elsewhere = apply(Some(&t), BTreeMap::new(), v, &other).unwrap();
        assert_ne!(text(&elsewhere, "auth"), first);
    }

    #[test]
    fn htpasswd_calls_are_bounded_per_sync() {
        let sixteen = "{% for i in range(16) %}{{ htpasswd('u' ~ i, 'p') }}\n{% endfor %}";
        let t = tpl(TemplateMergePolicy::Replace, &[("a", sixteen)]);
        assert_eq!(
            text(&run(&t, BTreeMap::new()).unwrap(), "a")
                .lines()
                .count(),
            16
        );
        // The budget is per sync, across keys.
        let t = tpl(
            TemplateMergePolicy::Replace,
            &[("a", sixteen), ("b", "{{ htpasswd('u', 'p') }}")],
        );
        let err = run(&t, BTreeMap::new()).unwrap_err();
        assert_eq!(err.key(), "b");
        assert!(err.to_string().starts_with(HTPASSWD_MANY), "{err}");
    }

    fn item(key: &str) -> TemplateSourceItem {
        TemplateSourceItem { key: key.into() }
    }

    fn fetched<'a>(
        kind: SourceKind,
        items: &'a [TemplateSourceItem],
        data: Option<&[(&str, &[u8])]>,
    ) -> Fetched<'a> {
        Fetched {
            kind,
            name: "tpl",
            items,
            data: data.map(vals),
        }
    }

    #[test]
    fn template_from_all_keys_listed_keys_and_inline_wins() {
        let cm: &[(&str, &[u8])] = &[
            ("url", b"db://{{ user }}"),
            ("greeting", b"hi {{ user }}"),
            ("other", b"x"),
        ];
        let listed = [item("url"), item("greeting")];
        let from = collect(vec![fetched(SourceKind::ConfigMap, &listed, Some(cm))]).unwrap();
        assert_eq!(from.keys().collect::<Vec<_>>(), ["greeting", "url"]);
        let t = tpl(
            TemplateMergePolicy::Replace,
            &[("greeting", "hello {{ user }}")],
        );
        let out = apply(Some(&t), from, vals(&[("user", b"app")]), &key()).unwrap();
        assert_eq!(text(&out, "url"), "db://app");
        assert_eq!(text(&out, "greeting"), "hello app");
        // No items: every key; a later source wins.
        let later: &[(&str, &[u8])] = &[("other", b"y")];
        let from = collect(vec![
            fetched(SourceKind::ConfigMap, &[], Some(cm)),
            fetched(SourceKind::Secret, &[], Some(later)),
        ])
        .unwrap();
        let t = tpl(TemplateMergePolicy::Replace, &[]);
        let out = apply(Some(&t), from, vals(&[("user", b"app")]), &key()).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(text(&out, "other"), "y");
    }

    #[test]
    fn template_from_errors_name_objects_and_keys_only() {
        let reason = |f: Fetched<'_>| {
            let e = collect(vec![f]).err().expect("an error");
            assert!(!e.to_string().contains("TOPSECRET"), "{e}");
            (e.reason(), e.to_string())
        };
        let secret: &[(&str, &[u8])] = &[("a", b"TOPSECRET"), ("bin", &[0xff, 0xfe])];
        assert_eq!(
            reason(fetched(SourceKind::ConfigMap, &[], None)),
            (
                "TemplateSourceNotFound",
                "templateFrom: ConfigMap \"tpl\" not found in this namespace".into()
            )
        );
        let missing = [item("b")];
        assert_eq!(
            reason(fetched(SourceKind::Secret, &missing, Some(secret))),
            (
                "TemplateSourceNotFound",
                "templateFrom: Secret \"tpl\" has no key \"b\"".into()
            )
        );
        assert_eq!(
            reason(fetched(SourceKind::Secret, &[], Some(&[]))).0,
            "TemplateSourceInvalid"
        );
        assert_eq!(
            reason(fetched(SourceKind::Secret, &[], Some(secret))).1,
            "templateFrom: key \"bin\" of Secret \"tpl\" is not UTF-8 text"
        );
        let many: Vec<(String, Vec<u8>)> = (0..=MAX_SOURCE_KEYS)
            .map(|i| (format!("k{i}"), b"x".to_vec()))
            .collect();
        let many: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            reason(fetched(SourceKind::ConfigMap, &[], Some(&many))).0,
            "TemplateSourceInvalid"
        );
        let big = vec![b'x'; MAX_SOURCE_BYTES];
        assert!(matches!(
            collect(vec![fetched(
                SourceKind::ConfigMap,
                &[],
                Some(&[("k", &big)])
            )]),
            Err(SourceError::TooLarge)
        ));
    }

    #[test]
    fn a_template_from_a_secret_is_never_quoted() {
        let body: &[(&str, &[u8])] = &[("k", b"{% TOPSECRET %}")];
        let t = tpl(TemplateMergePolicy::Replace, &[]);
        for (kind, shown) in [(SourceKind::ConfigMap, true), (SourceKind::Secret, false)] {
            let from = collect(vec![fetched(kind, &[], Some(body))]).unwrap();
            let err = apply(Some(&t), from, BTreeMap::new(), &key()).unwrap_err();
            assert_eq!(
                err.to_string().contains("TOPSECRET"),
                shown,
                "{kind}: {err}"
            );
            assert!(err.to_string().starts_with("syntax error"), "{err}");
        }
    }

    #[test]
    fn runaway_template_runs_out_of_fuel() {
        let t = tpl(
            TemplateMergePolicy::Replace,
            &[(
                "x",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            )],
        );
        assert!(run(&t, BTreeMap::new()).is_err());
    }
}
