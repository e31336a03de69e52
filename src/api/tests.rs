//! CEL rules evaluated client-side (kube `cel` feature), on the same objects users write.
use super::*;
use kube::CustomResourceExt;

fn ks(spec: serde_json::Value) -> KeeperSecret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "keeper-operator.dev/v1alpha1",
        "kind": "KeeperSecret",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": spec,
    }))
    .unwrap()
}

fn auth() -> serde_json::Value {
    serde_json::json!({"secretRef": {"name": "ksm", "key": "config"}})
}

fn valid(spec: serde_json::Value) -> bool {
    ks(spec).validate_cel().is_ok()
}

#[test]
fn minimal_notation_spec_is_valid() {
    assert!(valid(serde_json::json!({
        "auth": auth(),
        "data": [{"key": "password", "notation": "keeper://6ya_fdc6XTsZ7i7x9Jcodg/field/password"}],
    })));
}

#[test]
fn auth_needs_exactly_one_form() {
    let both =
        serde_json::json!({"secretRef": {"name": "a", "key": "b"}, "storeRef": {"name": "s"}});
    let data = serde_json::json!([{"key": "k", "notation": "x/field/y"}]);
    assert!(!valid(serde_json::json!({"auth": both, "data": data})));
    assert!(!valid(serde_json::json!({"auth": {}, "data": data})));
    assert!(valid(
        serde_json::json!({"auth": {"storeRef": {"name": "s"}}, "data": data})
    ));
}

#[test]
fn data_item_needs_exactly_one_form() {
    let bad = [
        serde_json::json!({"key": "k"}),
        serde_json::json!({"key": "k", "notation": "a/field/b", "record": {"title": "t"}, "field": "f"}),
        serde_json::json!({"key": "k", "record": {"title": "t"}}),
        serde_json::json!({"key": "k", "record": {"title": "t"}, "field": "f", "file": "x"}),
        serde_json::json!({"key": "k", "notation": "a/field/b", "property": "p"}),
        serde_json::json!({"key": "k", "record": {"title": "t"}, "file": "x", "property": "p"}),
        serde_json::json!({"key": "k", "record": {"title": "t", "uid": "6ya_fdc6XTsZ7i7x9Jcodg"}, "field": "f"}),
    ];
    for item in bad {
        assert!(
            !valid(serde_json::json!({"auth": auth(), "data": [item.clone()]})),
            "{item}"
        );
    }
    let good = [
        serde_json::json!({"key": "k", "record": {"title": "t"}, "field": "host", "property": "hostName"}),
        serde_json::json!({"key": "k", "record": {"uid": "6ya_fdc6XTsZ7i7x9Jcodg"}, "file": "cert.pem"}),
    ];
    for item in good {
        assert!(
            valid(serde_json::json!({"auth": auth(), "data": [item.clone()]})),
            "{item}"
        );
    }
}

#[test]
fn data_from_needs_exactly_one_form_and_some_mapping_is_required() {
    let both =
        serde_json::json!({"record": {"title": "t"}, "folder": {"uid": "6ya_fdc6XTsZ7i7x9Jcodg"}});
    assert!(!valid(
        serde_json::json!({"auth": auth(), "dataFrom": [both]})
    ));
    assert!(valid(
        serde_json::json!({"auth": auth(), "dataFrom": [{"folder": {"uid": "6ya_fdc6XTsZ7i7x9Jcodg"}}]})
    ));
    assert!(!valid(serde_json::json!({"auth": auth()})));
}

#[test]
fn template_keys_must_be_secret_keys() {
    let spec = |key: &str| {
        serde_json::json!({
            "auth": auth(),
            "data": [{"key": "k", "notation": "a/field/b"}],
            "target": {"template": {"data": {key: "{{ k }}"}}},
        })
    };
    assert!(valid(spec(".dockerconfigjson")));
    assert!(!valid(spec("has space")));
}

#[test]
fn template_from_names_exactly_one_source() {
    let spec = |entry: serde_json::Value| {
        serde_json::json!({
            "auth": auth(),
            "data": [{"key": "k", "notation": "a/field/b"}],
            "target": {"template": {"templateFrom": [entry]}},
        })
    };
    let source = serde_json::json!({"name": "t", "items": [{"key": "tls.crt"}]});
    assert!(valid(spec(serde_json::json!({"configMap": source}))));
    assert!(valid(spec(serde_json::json!({"secret": source}))));
    assert!(!valid(spec(
        serde_json::json!({"configMap": source, "secret": source})
    )));
    assert!(!valid(spec(serde_json::json!({}))));
}

#[test]
fn target_name_is_immutable() {
    let spec = |name: Option<&str>| {
        let mut s =
            serde_json::json!({"auth": auth(), "data": [{"key": "k", "notation": "a/field/b"}]});
        if let Some(n) = name {
            s["target"] = serde_json::json!({"name": n});
        }
        ks(s)
    };
    assert!(
        spec(Some("a"))
            .validate_cel_update(&spec(Some("a")))
            .is_ok()
    );
    assert!(
        spec(Some("b"))
            .validate_cel_update(&spec(Some("a")))
            .is_err()
    );
    assert!(spec(None).validate_cel_update(&spec(Some("a"))).is_err());
    assert!(spec(Some("a")).validate_cel_update(&spec(None)).is_err());
    assert!(spec(None).validate_cel_update(&spec(None)).is_ok());
}

#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let p = format!("{path}.{name}");
                if child.get("description").is_none()
                    && !matches!(name.as_str(), "metadata" | "apiVersion" | "kind")
                {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(path, items, missing);
        }
    }
    for crd in [KeeperSecret::crd(), ClusterKeeperStore::crd()] {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut missing = Vec::new();
        walk("", &schema["openAPIV3Schema"], &mut missing);
        // Condition and LabelSelector come from k8s-openapi with their own docs.
        missing
            .retain(|p| !p.starts_with(".status.conditions") && !p.contains("namespaceSelector."));
        assert!(
            missing.is_empty(),
            "{} fields lack descriptions: {missing:?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn target_cannot_mint_tokens_or_freeze_merged_secrets() {
    let with_target = |target: serde_json::Value| {
        valid(serde_json::json!({
            "auth": auth(),
            "data": [{"key": "k", "notation": "a/field/b"}],
            "target": target,
        }))
    };
    assert!(!with_target(
        serde_json::json!({"type": "kubernetes.io/service-account-token"})
    ));
    assert!(!with_target(
        serde_json::json!({"annotations": {"kubernetes.io/service-account.name": "default"}})
    ));
    assert!(!with_target(
        serde_json::json!({"creationPolicy": "Merge", "immutable": true})
    ));
    assert!(with_target(
        serde_json::json!({"creationPolicy": "Merge", "type": "kubernetes.io/tls"})
    ));
    assert!(with_target(
        serde_json::json!({"immutable": true, "annotations": {"team": "a"}})
    ));
}

/// `n` characters: `prefix`, then `x`s.
fn chars(prefix: &str, n: usize) -> String {
    format!("{prefix}{}", "x".repeat(n - prefix.len()))
}

/// The largest KeeperSecret spec the schema admits (ASCII), field by field at its bound.
fn largest_spec() -> serde_json::Value {
    let data: Vec<_> = (0..MAX_DATA_ITEMS)
        .map(|i| {
            serde_json::json!({
                "key": chars(&format!("k{i}"), 253),
                "record": {"title": chars("t", 253)},
                "field": chars("f", 253),
                "property": chars("p", 63),
                "custom": true,
                "decodingStrategy": "Base64URL",
            })
        })
        .collect();
    let data_from: Vec<_> = (0..MAX_DATA_FROM_ITEMS)
        .map(|_| {
            serde_json::json!({
                "record": {"title": chars("t", 253)},
                "prefix": chars("p", 63),
                "duplicateKeys": "Suffix",
                "decodingStrategy": "Base64URL",
            })
        })
        .collect();
    let templates: serde_json::Map<_, _> = (0..MAX_INLINE_TEMPLATES)
        .map(|i| {
            let text = chars("{{ k }}", MAX_INLINE_TEMPLATE_CHARS);
            (chars(&format!("t{i}"), 253), serde_json::Value::from(text))
        })
        .collect();
    let items: Vec<_> = (0..64)
        .map(|i| serde_json::json!({"key": chars(&format!("i{i}"), 253)}))
        .collect();
    let template_from: Vec<_> = (0..8)
        .map(|_| serde_json::json!({"configMap": {"name": chars("c", 253), "items": items}}))
        .collect();
    let metadata = |value: usize| -> serde_json::Map<String, serde_json::Value> {
        (0..MAX_TARGET_METADATA)
            .map(|i| {
                let key = chars(&format!("m{i}"), MAX_METADATA_KEY_CHARS);
                (key, chars("v", value).into())
            })
            .collect()
    };
    let rollouts: Vec<_> = (0..MAX_ROLLOUT_TARGETS)
        .map(|_| serde_json::json!({"kind": "StatefulSet", "name": chars("w", 253)}))
        .collect();
    serde_json::json!({
        "auth": {"secretRef": {"name": chars("s", 253), "key": chars("k", 253)}},
        "refreshInterval": chars("1", 31) + "s",
        "refreshPolicy": "CreatedOnce",
        "data": data,
        "dataFrom": data_from,
        "rolloutRestart": rollouts,
        "target": {
            "name": chars("n", 253),
            "type": chars("t", 253),
            "creationPolicy": "Orphan",
            "deletionPolicy": "Retain",
            "adopt": true,
            "immutable": true,
            "labels": metadata(MAX_LABEL_VALUE_CHARS),
            "annotations": metadata(MAX_ANNOTATION_VALUE_CHARS),
            "template": {"data": templates, "templateFrom": template_from, "mergePolicy": "Merge"},
        },
    })
}

/// Every string, list and map under `spec` in `schema`, with the bound it lacks.
fn unbounded(path: &str, schema: &serde_json::Value, out: &mut Vec<String>) {
    let has = |k: &str| schema.get(k).is_some();
    match schema.get("type").and_then(|t| t.as_str()) {
        Some("string") if !has("maxLength") && !has("enum") => {
            out.push(format!("{path} maxLength"))
        }
        Some("array") if !has("maxItems") => out.push(format!("{path} maxItems")),
        Some("object") if has("additionalProperties") && !has("maxProperties") => {
            out.push(format!("{path} maxProperties"))
        }
        _ => {}
    }
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, child) in props {
            unbounded(&format!("{path}.{name}"), child, out);
        }
    }
    for nested in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(nested).filter(|c| c.is_object()) {
            unbounded(&format!("{path}[]"), child, out);
        }
    }
}

#[test]
fn every_field_a_tenant_sets_is_bounded() {
    let crd = serde_json::to_value(KeeperSecret::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut missing = Vec::new();
    unbounded("spec", spec, &mut missing);
    // A record or folder UID is exactly 22 characters by its pattern.
    missing.retain(|p| !p.ends_with(".uid maxLength"));
    assert!(missing.is_empty(), "unbounded: {missing:?}");
}

#[test]
fn the_largest_spec_is_valid_and_under_1_mib() {
    let spec = largest_spec();
    let size = serde_json::to_vec(&spec).unwrap().len();
    assert!(size < 1024 * 1024, "{size} bytes");
    assert!(size > 900 * 1024, "{size} bytes: not the largest");
    let ks = ks(spec);
    ks.validate_cel().unwrap();
}

#[test]
fn schema_bounds_are_stated_in_the_crd() {
    let crd = serde_json::to_value(KeeperSecret::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let template = &spec["target"]["properties"]["template"]["properties"]["data"];
    assert_eq!(template["maxProperties"], MAX_INLINE_TEMPLATES);
    assert_eq!(
        template["additionalProperties"]["maxLength"],
        MAX_INLINE_TEMPLATE_CHARS
    );
    assert_eq!(spec["data"]["maxItems"], MAX_DATA_ITEMS);
    assert_eq!(spec["dataFrom"]["maxItems"], MAX_DATA_FROM_ITEMS);
    assert_eq!(spec["rolloutRestart"]["maxItems"], MAX_ROLLOUT_TARGETS);
    assert_eq!(
        spec["data"]["items"]["properties"]["notation"]["maxLength"],
        MAX_NOTATION_CHARS
    );
    let annotations = &spec["target"]["properties"]["annotations"];
    assert_eq!(annotations["maxProperties"], MAX_TARGET_METADATA);
    assert_eq!(
        annotations["additionalProperties"]["maxLength"],
        MAX_ANNOTATION_VALUE_CHARS
    );
}

#[test]
fn map_keys_are_bounded_by_cel() {
    let with_target = |target: serde_json::Value| {
        valid(serde_json::json!({
            "auth": auth(),
            "data": [{"key": "k", "notation": "a/field/b"}],
            "target": target,
        }))
    };
    let long = |n: usize| chars("k", n);
    assert!(with_target(
        serde_json::json!({"template": {"data": {long(253): "x"}}})
    ));
    assert!(!with_target(
        serde_json::json!({"template": {"data": {long(254): "x"}}})
    ));
    assert!(with_target(serde_json::json!({"labels": {long(317): "x"}})));
    assert!(!with_target(
        serde_json::json!({"labels": {long(318): "x"}})
    ));
    assert!(!with_target(
        serde_json::json!({"annotations": {long(318): "x"}})
    ));
}

#[test]
fn creation_policy_is_immutable() {
    let spec = |policy: Option<&str>| {
        let mut s =
            serde_json::json!({"auth": auth(), "data": [{"key": "k", "notation": "a/field/b"}]});
        if let Some(p) = policy {
            s["target"] = serde_json::json!({"creationPolicy": p});
        }
        ks(s)
    };
    let update =
        |new: Option<&str>, old: Option<&str>| spec(new).validate_cel_update(&spec(old)).is_ok();
    assert!(update(Some("Merge"), Some("Merge")));
    assert!(!update(Some("Owner"), Some("Merge")), "Merge to Owner");
    assert!(!update(None, Some("Merge")), "Merge to the default");
    assert!(!update(Some("Merge"), None), "the default to Merge");
    assert!(!update(Some("Orphan"), Some("Owner")));
    assert!(update(Some("Owner"), None), "the default is Owner");
    assert!(update(None, None));
}

#[test]
fn helm_releases_and_bootstrap_tokens_are_not_target_types() {
    let with_type = |t: &str| {
        valid(serde_json::json!({
            "auth": auth(),
            "data": [{"key": "k", "notation": "a/field/b"}],
            "target": {"type": t},
        }))
    };
    assert!(!with_type("helm.sh/release.v1"));
    assert!(!with_type("bootstrap.kubernetes.io/token"));
    assert!(with_type("kubernetes.io/tls"));
}
