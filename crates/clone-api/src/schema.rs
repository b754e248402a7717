//! Adjustments that make the generated CRD match upstream KubeVirt's field for field.
//!
//! kube's schema generator marks every `Option` field `nullable` and writes serde defaults;
//! KubeVirt's generator marks only Go pointers nullable and writes no defaults. [`upstream_shape`]
//! removes what upstream's CRD does not have (the test `crates/clone-api/tests/upstream_crd.rs`
//! compares the two structurally).

use serde_json::Value;

/// Status fields that are pointers upstream, so nullable.
const NULLABLE_STATUS: [&str; 4] = ["creationTime", "restoreName", "snapshotName", "targetName"];
/// Condition fields that are pointers upstream (`*metav1.Time`).
const NULLABLE_CONDITION: [&str; 2] = ["lastProbeTime", "lastTransitionTime"];

/// Removes `nullable` and `default` everywhere under `value`, except `nullable` on the direct
/// properties named in `keep`.
fn strip(value: &mut Value, keep: &[&str]) {
    let Value::Object(map) = value else { return };
    map.remove("nullable");
    map.remove("default");
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            let nullable = keep.contains(&name.as_str())
                && property.get("nullable") == Some(&Value::Bool(true));
            strip(property, &[]);
            if nullable && let Value::Object(property) = property {
                property.insert("nullable".into(), Value::Bool(true));
            }
        }
    }
    if let Some(items) = map.get_mut("items") {
        strip(items, NULLABLE_CONDITION.as_slice());
    }
    if let Some(additional) = map.get_mut("additionalProperties") {
        strip(additional, &[]);
    }
}

/// Gives one version's `openAPIV3Schema` upstream's nullability, no defaults, and the
/// `apiVersion`/`kind`/`metadata` properties upstream declares.
pub(crate) fn upstream_shape(schema: &mut Value) {
    let Value::Object(root) = schema else { return };
    root.remove("title");
    let Some(Value::Object(properties)) = root.get_mut("properties") else {
        return;
    };
    for (name, type_) in [
        ("apiVersion", "string"),
        ("kind", "string"),
        ("metadata", "object"),
    ] {
        properties.insert(name.into(), serde_json::json!({ "type": type_ }));
    }
    if let Some(spec) = properties.get_mut("spec") {
        strip(spec, &[]);
    }
    if let Some(status) = properties.get_mut("status") {
        strip(status, NULLABLE_STATUS.as_slice());
    }
}
