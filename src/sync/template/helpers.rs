//! PURE: the operator's template helpers (filters and `htpasswd`).
//!
//! MiniJinja's fuel does not see inside a helper call, so each helper charges the render's
//! [`Budget`] with what it is about to produce *before* allocating it, and checks the deadline.
//! Their own errors are fixed texts ([`OWN_ERRORS`]), safe to show: never a value.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value};
use sha2::{Digest, Sha256};

use super::budget::{Budget, FUEL};
use super::parse::{self, MAX_PARSE_BYTES, ParseError};
use crate::sync::desired::HashKey;

/// bcrypt cost of `htpasswd` (2^10 rounds: ~50 ms, the usual htpasswd default). Fixed: a
/// template cannot raise it.
pub const BCRYPT_COST: u32 = 10;
/// bcrypt is slow by design and fuel does not count time: a render may hash at most this many.
pub const MAX_HTPASSWD_CALLS: usize = 16;

pub(super) const NOT_BASE64: &str = "b64decode: input is not valid base64";
pub(super) const NOT_UTF8: &str = "b64decode: result is not UTF-8";
pub(super) const NOT_BASE64URL: &str = "b64urldecode: input is not valid URL-safe base64";
pub(super) const NOT_UTF8_URL: &str = "b64urldecode: result is not UTF-8";
pub(super) const NOT_HEX: &str = "hexdecode: input is not an even number of hex digits";
pub(super) const NOT_UTF8_HEX: &str = "hexdecode: result is not UTF-8";
pub(super) const NOT_JSON: &str = "fromjson: input is not valid JSON";
pub(super) const NOT_YAML: &str = "fromyaml: input is not valid YAML";
pub(super) const PARSE_TOO_LARGE: &str = "fromjson/fromyaml: input is over 256 KiB";
pub(super) const NO_YAML: &str = "toyaml: value cannot be written as YAML";
pub(super) const PEM_UNTERMINATED: &str = "pem: a BEGIN line has no matching END line";
pub(super) const NO_CERTIFICATE: &str = "pem_certificates: no CERTIFICATE block";
pub(super) const NO_PRIVATE_KEY: &str = "pem_private_key: no PRIVATE KEY block";
pub(super) const TWO_PRIVATE_KEYS: &str = "pem_private_key: more than one PRIVATE KEY block";
pub(super) const HTPASSWD_USER: &str =
    "htpasswd: the user name must not be empty or hold ':' or a line break";
pub(super) const HTPASSWD_LONG: &str = "htpasswd: bcrypt takes at most 72 bytes of password";
pub(super) const HTPASSWD_MANY: &str = "htpasswd: at most 16 calls per sync";
/// The helpers' fixed error texts: shown in full, unlike MiniJinja's details.
pub(super) const OWN_ERRORS: &[&str] = &[
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

/// The environment of one render: strict undefined values, fuel, and the helpers, all charging
/// `budget`. `key` makes `htpasswd`'s salts.
pub(super) fn environment(key: HashKey, budget: Arc<Budget>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    let b = budget.clone();
    env.add_filter("b64encode", move |v: Value| {
        let bytes = bytes_of(&v);
        b.bytes(base64_len(bytes.len(), true))?;
        Ok::<_, Error>(STANDARD.encode(&bytes))
    });
    let b = budget.clone();
    env.add_filter("b64decode", move |s: &str| {
        b.bytes(s.len())?;
        text(STANDARD.decode(s.trim()), NOT_BASE64, NOT_UTF8)
    });
    let b = budget.clone();
    env.add_filter("b64urlencode", move |v: Value| {
        let bytes = bytes_of(&v);
        b.bytes(base64_len(bytes.len(), false))?;
        Ok::<_, Error>(URL_SAFE_NO_PAD.encode(&bytes))
    });
    let b = budget.clone();
    env.add_filter("b64urldecode", move |s: &str| {
        b.bytes(s.len())?;
        text(
            URL_SAFE_ANY_PAD.decode(s.trim()),
            NOT_BASE64URL,
            NOT_UTF8_URL,
        )
    });
    let b = budget.clone();
    env.add_filter("hexencode", move |v: Value| {
        let bytes = bytes_of(&v);
        b.bytes(bytes.len().saturating_mul(2))?;
        Ok::<_, Error>(hex(&bytes))
    });
    let b = budget.clone();
    env.add_filter("hexdecode", move |s: &str| {
        b.bytes(s.len() / 2)?;
        text(unhex(s.trim()).ok_or(()), NOT_HEX, NOT_UTF8_HEX)
    });
    let b = budget.clone();
    env.add_filter("sha256", move |v: Value| {
        b.bytes(64)?;
        Ok::<_, Error>(hex(&Sha256::digest(bytes_of(&v))))
    });
    let b = budget.clone();
    env.add_filter("fromjson", move |s: &str| {
        parsed(s, &b, parse::json, NOT_JSON)
    });
    let b = budget.clone();
    env.add_filter("fromyaml", move |s: &str| {
        parsed(s, &b, parse::yaml, NOT_YAML)
    });
    let b = budget.clone();
    env.add_filter("toyaml", move |v: Value| toyaml(&v, &b));
    let b = budget.clone();
    env.add_filter(
        "tojson",
        move |state: &State, v: Value, indent: Option<Value>, args: Kwargs| {
            tojson(state, &v, indent, args, &b)
        },
    );
    let b = budget.clone();
    env.add_filter("pem_blocks", move |s: &str, label: Option<&str>| {
        b.bytes(s.len() + 1)?;
        pem_blocks(s, label)
    });
    let b = budget.clone();
    env.add_filter("pem_certificates", move |s: &str| {
        // The blocks, then their concatenation.
        b.bytes(2 * (s.len() + 1))?;
        pem_certificates(s)
    });
    let b = budget.clone();
    env.add_filter("pem_private_key", move |s: &str| {
        b.bytes(s.len() + 1)?;
        pem_private_key(s)
    });
    let b = budget.clone();
    env.add_filter("pem_join", move |blocks: Vec<String>| {
        b.bytes(blocks.iter().map(|s| s.len() + 1).sum())?;
        Ok::<_, Error>(pem_join(blocks))
    });
    let calls = AtomicUsize::new(0);
    env.add_function("htpasswd", move |user: &str, password: &str| {
        if calls.fetch_add(1, Ordering::Relaxed) >= MAX_HTPASSWD_CALLS {
            return Err(fail(HTPASSWD_MANY));
        }
        // `user:` and a 60-byte hash; the deadline is checked before bcrypt's ~50 ms.
        budget.bytes(user.len() + 61)?;
        htpasswd(&key, user, password)
    });
    env
}

pub(super) fn fail(detail: &'static str) -> Error {
    Error::new(ErrorKind::InvalidOperation, detail)
}

/// The bytes of a value: its own for bytes (binary files) and strings, its text otherwise.
fn bytes_of(value: &Value) -> Cow<'_, [u8]> {
    match value.as_bytes() {
        Some(b) => Cow::Borrowed(b),
        None => Cow::Owned(value.to_string().into_bytes()),
    }
}

/// Length of the base64 encoding of `n` bytes.
fn base64_len(n: usize, padded: bool) -> usize {
    base64::encoded_len(n, padded).unwrap_or(usize::MAX)
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

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
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

/// `fromjson` / `fromyaml`: bounded text, every value built charged to the budget.
fn parsed(
    s: &str,
    budget: &Budget,
    parse: fn(&str, &Budget) -> Result<Value, ParseError>,
    invalid: &'static str,
) -> Result<Value, Error> {
    if s.len() > MAX_PARSE_BYTES {
        return Err(fail(PARSE_TOO_LARGE));
    }
    budget.time()?;
    parse(s, budget).map_err(|e| match e {
        ParseError::Budget(e) => e,
        ParseError::Syntax => fail(invalid),
    })
}

/// An output that takes every byte from the budget before keeping it.
struct Charged<'b> {
    buf: Vec<u8>,
    budget: &'b Budget,
}

impl io::Write for Charged<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.budget
            .bytes(data.len())
            .map_err(|_| io::Error::other("template budget"))?;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sink that only counts, charging the budget as it goes (no allocation).
struct Counted<'b> {
    budget: &'b Budget,
    len: usize,
}

impl io::Write for Counted<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.budget
            .bytes(data.len())
            .map_err(|_| io::Error::other("template budget"))?;
        self.len += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The error for a serializer that stopped: the budget's when it did, else `otherwise`.
fn stopped(budget: &Budget, otherwise: &'static str) -> Error {
    match budget.tripped() {
        Some(bound) => budget.trip(bound),
        None => fail(otherwise),
    }
}

fn toyaml(v: &Value, budget: &Budget) -> Result<String, Error> {
    let mut out = Charged {
        buf: Vec::new(),
        budget,
    };
    serde_yaml_ng::to_writer(&mut out, v).map_err(|_| stopped(budget, NO_YAML))?;
    String::from_utf8(out.buf).map_err(|_| fail(NO_YAML))
}

/// MiniJinja's `tojson` (same output: spaced or indented, safe for HTML), charged (bytes and
/// fuel) first with the compact JSON's length, counted without allocating; spacing and HTML
/// escapes after.
fn tojson(
    state: &State,
    v: &Value,
    indent: Option<Value>,
    args: Kwargs,
    budget: &Budget,
) -> Result<Value, Error> {
    let mut counted = Counted { budget, len: 0 };
    // serde_json may refuse what MiniJinja writes (keys that are not strings): then the
    // estimate is what was counted so far, and the rest is charged after.
    if serde_json::to_writer(&mut counted, v).is_err()
        && let Some(bound) = budget.tripped()
    {
        return Err(budget.trip(bound));
    }
    // What the built-in charges for serializing (16 of 64 fuel units per byte), before it runs.
    let fuel = |len: usize| len.div_ceil(4) as u64;
    state.consume_fuel(fuel(counted.len))?;
    let rendered = minijinja::filters::tojson(v, indent, args)?;
    let len = rendered.as_str().map_or(0, str::len);
    budget.bytes(len.saturating_sub(counted.len))?;
    state.consume_fuel(fuel(len).saturating_sub(fuel(counted.len)))?;
    Ok(rendered)
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
