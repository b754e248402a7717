//! The generated CRD is upstream KubeVirt's, structurally: the same names, versions, printer
//! columns, subresources and schema (properties, types, required fields, nullability, list and map
//! markers) as the CRD virt-operator v1.7.0 installs. Only descriptions differ, and
//! `spec.volumeNamePolicy`, which upstream added in v1.8 (a v1.7 cluster prunes it).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::{Value, json};

/// Upstream's v1.7.0 clone CRD, the project's copy (descriptions already removed).
const UPSTREAM: &str =
    include_str!("../../testenv/upstream/virtualmachineclones.clone.kubevirt.io.yaml");

/// Removes every `description`, recursively.
fn without_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("description");
            map.values_mut().for_each(without_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(without_descriptions),
        _ => {}
    }
}

fn upstream() -> Value {
    let mut crd: Value = serde_saphyr::from_str(UPSTREAM).expect("upstream CRD parses");
    without_descriptions(&mut crd);
    crd
}

fn ours() -> Value {
    let mut crd = serde_json::to_value(clone_api::crd()).expect("CRD serialises");
    without_descriptions(&mut crd);
    crd
}

fn version<'a>(crd: &'a Value, name: &str) -> &'a Value {
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("version {name} present"))
}

/// Every JSON pointer where `a` and `b` differ, with both values, for a readable failure.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let null = Value::Null;
                let p = format!("{path}/{key}");
                differences(
                    &p,
                    x.get(key).unwrap_or(&null),
                    y.get(key).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: ours {a} / upstream {b}")),
    }
}

#[test]
fn names_and_scope_are_upstreams() {
    let (ours, upstream) = (ours(), upstream());
    for field in ["group", "names", "scope"] {
        assert_eq!(ours["spec"][field], upstream["spec"][field], "spec.{field}");
    }
    assert_eq!(ours["metadata"]["name"], upstream["metadata"]["name"]);
}

#[test]
fn each_version_matches_upstream_except_volume_name_policy() {
    let (ours, upstream) = (ours(), upstream());
    for name in ["v1alpha1", "v1beta1"] {
        let mut mine = version(&ours, name).clone();
        let theirs = version(&upstream, name);
        let spec = &mut mine["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let policy = spec
            .as_object_mut()
            .expect("spec properties")
            .remove("volumeNamePolicy");
        assert_eq!(
            policy,
            Some(json!({"type": "string"})),
            "{name}: volumeNamePolicy is a plain string, as in upstream v1.8+"
        );
        let mut diff = Vec::new();
        differences(&format!("/{name}"), &mine, theirs, &mut diff);
        assert!(
            diff.is_empty(),
            "differences from upstream:\n{}",
            diff.join("\n")
        );
    }
}

#[test]
fn the_comparison_sees_a_difference() {
    // The check above must be able to fail: a changed type and a missing required field show.
    let upstream = upstream();
    let theirs = version(&upstream, "v1beta1");
    let mut changed = theirs.clone();
    let spec = &mut changed["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]["newSMBiosSerial"]["type"] = json!("integer");
    spec["required"] = json!([]);
    let mut diff = Vec::new();
    differences("", &changed, theirs, &mut diff);
    assert_eq!(diff.len(), 2, "{diff:?}");
}
