//! PURE: renders `spec.target.template` with MiniJinja.
//!
//! Every mapped value is a variable named after its key and also sits in the `data` map
//! (for keys such as `tls.crt` that are not identifiers). Undefined variables are errors;
//! rendering runs on a fuel budget so a hostile template cannot spin forever or exhaust memory,
//! and its output is capped at the Secret size limit. Errors carry the key, the kind and the
//! line, never a value.

use std::collections::BTreeMap;
use std::io;

use base64::Engine;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use zeroize::Zeroizing;

use crate::api::{Template, TemplateMergePolicy};
use crate::sync::desired::MAX_SECRET_BYTES;
use crate::sync::mapping::Bytes;

/// Instructions a template may spend; far beyond any realistic Secret template. MiniJinja also
/// charges fuel for every byte it produces, so this bounds the memory a render can use too.
const FUEL: u64 = 100_000;

/// The details of the operator's own filter errors: fixed texts, so safe to show.
const NOT_BASE64: &str = "b64decode: input is not valid base64";
const NOT_UTF8: &str = "b64decode: result is not UTF-8";

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

/// Applies the template (if any) to the mapped values. The result never exceeds the Secret
/// size limit: rendering stops as soon as the keys would.
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
    source: &str,
    ctx: &Value,
    room: usize,
) -> Result<Bytes, TemplateError> {
    // Compiling sees only the template text, which the tenant wrote: its messages are shown.
    let template = env
        .template_from_named_str(key, source)
        .map_err(|e| invalid(key, &e, compile_problem(&e)))?;
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
        Some(detail) if [NOT_BASE64, NOT_UTF8].contains(&detail) => detail.to_string(),
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
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, NOT_BASE64))?;
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidOperation, NOT_UTF8))
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
        match apply(Some(&t), vals(VAULT)) {
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
        let err = apply(Some(&t), vals(VAULT)).unwrap_err();
        assert!(
            matches!(err, TemplateError::TooLarge { ref key } if key == "b"),
            "{err}"
        );
        // Merged values count too.
        let t = tpl(TemplateMergePolicy::Merge, &[("a", big)]);
        let mapped = vals(&[("file", &[7u8; 600_000]), ("password", b"Hunter2-Xq9vLp")]);
        assert!(matches!(
            apply(Some(&t), mapped),
            Err(TemplateError::TooLarge { .. })
        ));
        // Just under the limit is fine.
        let t = tpl(TemplateMergePolicy::Replace, &[("a", big)]);
        assert_eq!(apply(Some(&t), vals(VAULT)).unwrap()["a"].len(), 560_000);
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
