//! PURE: renders `spec.target.template` with MiniJinja.
//!
//! Every mapped value is a variable named after its key and also sits in the `data` map
//! (for keys such as `tls.crt` that are not identifiers). Undefined variables are errors, and
//! rendering runs on a fuel budget so a hostile template cannot spin forever.

use std::collections::BTreeMap;

use base64::Engine;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use zeroize::Zeroizing;

use crate::crd::{Template, TemplateMergePolicy};
use crate::mapping::Bytes;

/// Instructions a template may spend; far beyond any realistic Secret template.
const FUEL: u64 = 100_000;

/// A template failed; the message names the key and the template problem, never a value.
#[derive(Debug, thiserror::Error)]
#[error("template for key {key:?}: {detail}")]
pub struct TemplateError {
    /// The Secret key whose template failed.
    pub key: String,
    /// What went wrong (kind and position).
    pub detail: String,
}

/// Applies the template (if any) to the mapped values.
pub fn apply(
    template: Option<&Template>,
    values: BTreeMap<String, Bytes>,
) -> Result<BTreeMap<String, Bytes>, TemplateError> {
    let Some(template) = template.filter(|t| !t.data.is_empty()) else {
        return Ok(values);
    };
    let env = environment();
    let ctx = context(&values);
    let mut out = match template.merge_policy {
        TemplateMergePolicy::Merge => values,
        TemplateMergePolicy::Replace => BTreeMap::new(),
    };
    for (key, source) in &template.data {
        let rendered = env.render_str(source, &ctx).map_err(|e| TemplateError {
            key: key.clone(),
            detail: describe(&e),
        })?;
        out.insert(key.clone(), Zeroizing::new(rendered.into_bytes()));
    }
    Ok(out)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
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

fn b64encode(value: Value) -> Result<String, Error> {
    let bytes = match value.as_bytes() {
        Some(b) => b.to_vec(),
        None => value.to_string().into_bytes(),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn b64decode(value: &str) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                "b64decode: input is not valid base64",
            )
        })?;
    String::from_utf8(bytes).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "b64decode: result is not UTF-8",
        )
    })
}

/// Kind, detail and line only: MiniJinja's `Display` could grow context in future versions.
fn describe(e: &Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s.push_str(": ");
        s.push_str(detail);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
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
        }
    }

    fn text(m: &BTreeMap<String, Bytes>, k: &str) -> String {
        String::from_utf8(m[k].to_vec()).unwrap()
    }

    #[test]
    fn no_template_passes_values_through() {
        let out = apply(None, vals(&[("a", b"1")])).unwrap();
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
        let out = apply(
            Some(&t),
            vals(&[("user", b"app"), ("pass.word", b"s3cr3t")]),
        )
        .unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["url"]);
        assert_eq!(text(&out, "url"), "postgres://app:s3cr3t@db/app");
    }

    #[test]
    fn merge_keeps_mapped_values_and_template_wins() {
        let t = tpl(
            TemplateMergePolicy::Merge,
            &[("user", "{{ user | upper }}")],
        );
        let out = apply(Some(&t), vals(&[("user", b"app"), ("other", b"x")])).unwrap();
        assert_eq!(text(&out, "user"), "APP");
        assert_eq!(text(&out, "other"), "x");
    }

    #[test]
    fn dockerconfigjson_from_fields() {
        let src = r#"{"auths":{"{{ host }}":{"auth":"{{ (user ~ ':' ~ pass) | b64encode }}"}}}"#;
        let t = tpl(TemplateMergePolicy::Replace, &[(".dockerconfigjson", src)]);
        let out = apply(
            Some(&t),
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
        let out = apply(Some(&t), vals(&[("f.bin", &[0xff, 0x00, 0xfe])])).unwrap();
        assert_eq!(text(&out, "b"), "/wD+");
    }

    #[test]
    fn b64decode_and_tojson() {
        let t = tpl(
            TemplateMergePolicy::Replace,
            &[("d", "{{ enc | b64decode }}"), ("j", "{{ user | tojson }}")],
        );
        let out = apply(Some(&t), vals(&[("enc", b"aGk="), ("user", b"a\"b")])).unwrap();
        assert_eq!(text(&out, "d"), "hi");
        assert_eq!(text(&out, "j"), r#""a\"b""#);
    }

    #[test]
    fn undefined_variable_is_an_error_naming_the_key_not_values() {
        let t = tpl(TemplateMergePolicy::Replace, &[("url", "{{ pasword }}")]);
        let err = apply(Some(&t), vals(&[("password", b"TOPSECRET")])).unwrap_err();
        assert_eq!(err.key, "url");
        assert!(!err.to_string().contains("TOPSECRET"));
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
        assert!(apply(Some(&t), BTreeMap::new()).is_err());
    }
}
