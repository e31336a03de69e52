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
