use std::time::Duration;

use super::budget::MAX_PARSE_DEPTH;
use super::helpers::*;
use super::source::{MAX_SOURCE_BYTES, MAX_SOURCE_KEYS};
use super::*;
use crate::api::TemplateSourceItem;
use sha2::{Digest, Sha256};

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
            message.starts_with(Exceeded::Fuel.text()),
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

/// Runs on a budget of `secs` of wall time (a loaded test machine hashes slowly).
fn run_for(
    t: &Template,
    values: BTreeMap<String, Bytes>,
    time: Duration,
) -> Result<BTreeMap<String, Bytes>, TemplateError> {
    let budget = Budget::ending_at(Instant::now() + time);
    apply_within(Some(t), BTreeMap::new(), values, &key(), budget)
}

#[test]
fn htpasswd_calls_are_bounded_per_sync() {
    let sixteen = "{% for i in range(16) %}{{ htpasswd('u' ~ i, 'p') }}\n{% endfor %}";
    let t = tpl(TemplateMergePolicy::Replace, &[("a", sixteen)]);
    let minute = Duration::from_secs(60);
    assert_eq!(
        text(&run_for(&t, BTreeMap::new(), minute).unwrap(), "a")
            .lines()
            .count(),
        16
    );
    // The budget is per sync, across keys.
    let t = tpl(
        TemplateMergePolicy::Replace,
        &[("a", sixteen), ("b", "{{ htpasswd('u', 'p') }}")],
    );
    let err = run_for(&t, BTreeMap::new(), minute).unwrap_err();
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
) -> FetchedSource<'a> {
    FetchedSource {
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
    let reason = |f: FetchedSource<'_>| {
        let e = collect(vec![f]).err().expect("an error");
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        (e.reason().as_str(), e.to_string())
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

fn bound(err: &TemplateError) -> Option<Exceeded> {
    match err {
        TemplateError::Budget { bound, .. } => Some(*bound),
        _ => None,
    }
}

#[test]
fn a_yaml_alias_bomb_is_stopped_by_the_node_budget() {
    // 25 KB of template: an anchored list of 5,000 items, referenced 5,000 times, is 25
    // million values (600+ MiB) to build.
    let bomb = format!(
        "{{{{ ('{{a: &a [{}], b: [{}]}}' | fromyaml).b | length }}}}",
        vec!["x"; 5000].join(","),
        vec!["*a"; 5000].join(",")
    );
    assert!(bomb.len() < 26_000);
    let start = Instant::now();
    let err = render_error(&bomb);
    assert_eq!(bound(&err), Some(Exceeded::Nodes), "{err}");
    assert!(start.elapsed() < DEADLINE, "{:?}", start.elapsed());
    assert_eq!(
        err.to_string(),
        format!(
            "{} (template for key \"DATABASE_URL\")",
            Exceeded::Nodes.text()
        )
    );
    assert_eq!(err.reason(), "InvalidSpec");
    // Small anchors and aliases are still YAML.
    assert_eq!(
        one("{{ ('{a: &a [1, 2], b: *a}' | fromyaml).b[1] }}", &[]),
        "2"
    );
}

#[test]
fn parsed_values_nest_at_most_64_deep() {
    let deep = |n: usize| {
        format!(
            "{{{{ ('{}{}' | fromjson) | length }}}}",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert_eq!(one(&deep(MAX_PARSE_DEPTH), &[]), "1");
    let err = render_error(&deep(MAX_PARSE_DEPTH + 1));
    assert_eq!(bound(&err), Some(Exceeded::Depth), "{err}");
}

#[test]
fn fuel_is_one_budget_for_all_keys() {
    // About 90,000 fuel each: any one fits, three do not.
    let spin = "{% for i in range(30000) %}{% endfor %}ok";
    let t = tpl(TemplateMergePolicy::Replace, &[("a", spin)]);
    assert_eq!(text(&run(&t, BTreeMap::new()).unwrap(), "a"), "ok");
    let t = tpl(
        TemplateMergePolicy::Replace,
        &[("a", spin), ("b", spin), ("c", spin)],
    );
    let err = run(&t, BTreeMap::new()).unwrap_err();
    assert_eq!(bound(&err), Some(Exceeded::Fuel), "{err}");
    assert_eq!(err.key(), "c");
}

#[test]
fn at_most_64_templates() {
    let keys: Vec<String> = (0..=MAX_TEMPLATE_KEYS)
        .map(|i| format!("k{i:02}"))
        .collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "x")).collect();
    let t = tpl(TemplateMergePolicy::Replace, &pairs[..MAX_TEMPLATE_KEYS]);
    assert_eq!(run(&t, BTreeMap::new()).unwrap().len(), MAX_TEMPLATE_KEYS);
    let t = tpl(TemplateMergePolicy::Replace, &pairs);
    let err = run(&t, BTreeMap::new()).unwrap_err();
    assert_eq!(bound(&err), Some(Exceeded::Keys), "{err}");
    // Inline and templateFrom count together.
    let from = collect(vec![fetched(
        SourceKind::ConfigMap,
        &[],
        Some(&[("zz", b"y".as_slice())]),
    )])
    .unwrap();
    let t = tpl(TemplateMergePolicy::Replace, &pairs[..MAX_TEMPLATE_KEYS]);
    let err = apply(Some(&t), from, BTreeMap::new(), &key()).unwrap_err();
    assert_eq!(bound(&err), Some(Exceeded::Keys), "{err}");
}

#[test]
fn helpers_charge_one_byte_budget_before_they_allocate() {
    // Doubling through a helper: fuel alone would let it grow far past 4 MiB.
    let doubling = "{% set ns = namespace(x=password) %}{% for i in range(30) %}{% set ns.x = ns.x | hexencode %}{% endfor %}{{ ns.x | length }}";
    let err = render_error(doubling);
    assert_eq!(bound(&err), Some(Exceeded::Bytes), "{err}");
    assert_no_value(doubling, &err.to_string());
    // 2.2 MB each: either key alone fits, both do not.
    let big = "{{ (password * 80000) | hexencode | length }}";
    let t = tpl(TemplateMergePolicy::Replace, &[("a", big)]);
    assert_eq!(text(&run(&t, vals(VAULT)).unwrap(), "a"), "2240000");
    let t = tpl(TemplateMergePolicy::Replace, &[("a", big), ("b", big)]);
    let err = run(&t, vals(VAULT)).unwrap_err();
    assert_eq!((bound(&err), err.key()), (Some(Exceeded::Bytes), "b"));
    // Every producing helper charges.
    for source in [
        "{% set s = password * 160000 %}{{ (s | toyaml | length) + (s | toyaml | length) }}",
        "{{ (password * 100000) | b64encode | b64encode | length }}",
        "{{ (password * 100000) | b64urlencode | b64urlencode | length }}",
        "{% set s = (password ~ '\n') * 160000 %}{{ (s | pem_blocks | length) + (s | pem_blocks | length) }}",
    ] {
        // Debug builds serialize slowly: this is about bytes, not time.
        let t = tpl(TemplateMergePolicy::Replace, &[("DATABASE_URL", source)]);
        let err = run_for(&t, vals(VAULT), Duration::from_secs(60)).unwrap_err();
        assert_eq!(bound(&err), Some(Exceeded::Bytes), "{source}: {err}");
    }
    // tojson is charged its fuel before it serializes.
    let err = render_error("{{ (password * 100000) | tojson | length }}");
    assert_eq!(bound(&err), Some(Exceeded::Fuel), "{err}");
}

#[test]
fn the_deadline_stops_a_render_inside_helpers() {
    let sixteen = "{% for i in range(16) %}{{ htpasswd('u' ~ i, 'p') }}\n{% endfor %}";
    let t = tpl(TemplateMergePolicy::Replace, &[("a", sixteen)]);
    let start = Instant::now();
    let err = run_for(&t, BTreeMap::new(), Duration::from_millis(100)).unwrap_err();
    assert_eq!(bound(&err), Some(Exceeded::Time), "{err}");
    assert_eq!(err.reason(), "TemplateTimeout");
    assert!(!err.is_repeatable());
    // One bcrypt past the deadline at most, not sixteen.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Checked between keys too.
    let t = tpl(TemplateMergePolicy::Replace, &[("a", "x"), ("b", "y")]);
    let err = run_for(&t, BTreeMap::new(), Duration::ZERO).unwrap_err();
    assert_eq!((bound(&err), err.key()), (Some(Exceeded::Time), "a"));
}

#[test]
fn tojson_keeps_minijinja_output() {
    let v: &[(&str, &[u8])] = &[("cfg", br#"{"a": "<b>&'", "n": [1, 2]}"#)];
    assert_eq!(
        one("{{ cfg | fromjson | tojson }}", v),
        r#"{"a": "\u003cb\u003e\u0026\u0027", "n": [1, 2]}"#
    );
    assert_eq!(
        one("{{ (cfg | fromjson).n | tojson(indent=2) }}", v),
        "[\n  1,\n  2\n]"
    );
    assert_eq!(one("{{ {1: 2} | tojson }}", v), r#"{"1": 2}"#);
}
