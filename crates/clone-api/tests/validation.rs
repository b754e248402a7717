//! Every validation rule of api.md, evaluated client-side with kube's CEL evaluator against the
//! generated CRD schema. The same table (`testdata/validation-cases.yaml`) runs against the real
//! API server in the testenv tests.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use kube::core::cel::{ErrorKind, ValidationErrors, Validator};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    spec: Value,
    #[serde(default)]
    error: Option<String>,
    /// Enforced by the structural schema (enum, maxLength), not by a CEL rule.
    #[serde(default)]
    structural: bool,
}

fn cases() -> Vec<Case> {
    let text = include_str!("../testdata/validation-cases.yaml");
    serde_saphyr::from_str(text).expect("validation-cases.yaml parses")
}

fn schema(version: &str) -> Value {
    let crd = serde_json::to_value(clone_api::crd()).expect("CRD serialises");
    let versions = crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .clone();
    let v = versions
        .into_iter()
        .find(|v| v["name"] == version)
        .expect("version present");
    v["schema"]["openAPIV3Schema"].clone()
}

fn object(version: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": format!("clone.kubevirt.io/{version}"),
        "kind": "VirtualMachineClone",
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": spec,
    })
}

fn messages(result: Result<(), ValidationErrors>) -> Vec<String> {
    match result {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| {
                assert_eq!(
                    e.kind,
                    ErrorKind::ValidationFailure,
                    "rule `{}` did not evaluate cleanly: {}",
                    e.rule,
                    e.message
                );
                e.message
            })
            .collect(),
    }
}

#[test]
fn every_case_is_accepted_or_refused_with_its_message() {
    let validator = Validator::new();
    for version in ["v1alpha1", "v1beta1"] {
        let schema = schema(version);
        for case in cases().iter().filter(|c| !c.structural) {
            let got = messages(validator.validate(&schema, &object(version, &case.spec), None));
            match &case.error {
                None => assert!(
                    got.is_empty(),
                    "{version} `{}` was refused: {got:?}",
                    case.name
                ),
                Some(want) => assert_eq!(
                    got,
                    vec![want.clone()],
                    "{version} `{}`: want exactly one message",
                    case.name
                ),
            }
        }
    }
}

#[test]
fn the_table_covers_every_message_of_api_md() {
    use clone_api::validation as v;
    let table: Vec<String> = cases().into_iter().filter_map(|c| c.error).collect();
    let expected_fragments = [
        "filter must not be empty",
        v::NEGATION_ALONE,
        v::NEGATION_POSITION,
        v::WILDCARD_POSITION,
        v::KEY_CHARACTERS,
        v::SOURCE_KIND_UNSUPPORTED,
        v::SOURCE_API_GROUP_EMPTY,
        v::SOURCE_API_GROUP_MISMATCH,
        v::SOURCE_NAME_EMPTY,
        v::TARGET_KIND_UNSUPPORTED,
        v::TARGET_API_GROUP_INVALID,
        v::TARGET_EQUALS_SOURCE,
        v::TARGET_NAME_INVALID,
        "malformed MAC address",
        v::SERIAL_SEPARATORS,
        "patch is not valid JSON",
        "must be a JSON Patch operation with op and path",
        v::PATCH_PATH_PREFIX,
        v::PATCH_NAIVE_CHECK,
        v::SOURCE_NAMESPACE_NEEDS_DATAVOLUME,
        v::DATAVOLUME_NEEDS_VM_SOURCE,
    ];
    for fragment in expected_fragments {
        assert!(
            table.iter().any(|m| m.contains(fragment)),
            "no case in validation-cases.yaml is refused with `{fragment}`"
        );
    }
}

#[test]
fn spec_is_immutable() {
    let validator = Validator::new();
    let schema = schema("v1beta1");
    let old = object(
        "v1beta1",
        &json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "a"}}),
    );
    let new = object(
        "v1beta1",
        &json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "b"}}),
    );
    assert_eq!(
        messages(validator.validate(&schema, &new, Some(&old))),
        vec![clone_api::validation::SPEC_IMMUTABLE.to_owned()]
    );
    assert!(messages(validator.validate(&schema, &old, Some(&old))).is_empty());
}

#[test]
fn the_naive_check_names_the_first_offending_patch() {
    let validator = Validator::new();
    let spec = json!({
        "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
        "patches": [
            r#"{"op": "add", "path": "/spec/template/metadata/labels/ok", "value": "fine"}"#,
            r#"{"op": "add", "path": "/spec/template/metadata/labels/a", "value": "x,y"}"#,
        ],
    });
    let got = messages(validator.validate(&schema("v1beta1"), &object("v1beta1", &spec), None));
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with(r#""value": "x,y"}"#), "{got:?}");
}

#[test]
fn both_versions_share_one_schema() {
    let mut alpha = schema("v1alpha1");
    let mut beta = schema("v1beta1");
    // Only the generated description may name the version.
    alpha["description"] = Value::Null;
    beta["description"] = Value::Null;
    assert_eq!(alpha, beta);
}
