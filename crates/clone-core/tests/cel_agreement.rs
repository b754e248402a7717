//! The CRD's CEL rules and the engine agree: what the API server admits is what the engine accepts,
//! with the same message.
//!
//! The generated CRD schema is evaluated client-side with kube's CEL evaluator, on the same inputs
//! as [`Filter::parse`] and [`validate_spec`]. The one place CEL can only approximate is "each patch
//! is a JSON Patch operation" (CEL cannot parse JSON); the cases where CEL admits a patch that
//! `validate_spec` refuses are listed below, and the controller fails such clones with
//! `InvalidSpec`. The reverse (CEL refusing what the engine accepts) never happens.

// Helpers of integration tests are not `#[test]` functions, so clippy's test exemptions miss them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::v1beta1::VirtualMachineCloneSpec;
use clone_api::validation::{self as v, field};
use clone_core::filter::Filter;
use clone_core::validate::validate_spec;
use kube::core::cel::{ErrorKind, Validator};
use serde_json::{Value, json};

fn schema(version: &str) -> Value {
    let crd = serde_json::to_value(clone_api::crd()).expect("CRD serialises");
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == version)
        .expect("version present")["schema"]["openAPIV3Schema"]
        .clone()
}

/// The messages of every CEL rule that refuses a clone with `spec`.
fn cel_messages(validator: &Validator, schema: &Value, spec: &Value) -> Vec<String> {
    let object = json!({
        "apiVersion": "clone.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClone",
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": spec,
    });
    match validator.validate(schema, &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| {
                assert_eq!(
                    e.kind,
                    ErrorKind::ValidationFailure,
                    "rule `{}`: {}",
                    e.rule,
                    e.message
                );
                e.message
            })
            .collect(),
    }
}

fn base_spec() -> Value {
    json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}})
}

/// `base_spec()` with the filter list at `field` set to `[filter]`.
fn spec_with_filter(field: &str, filter: &str) -> Value {
    let mut spec = base_spec();
    let list = json!([filter]);
    match field {
        field::LABEL_FILTERS => spec["labelFilters"] = list,
        field::ANNOTATION_FILTERS => spec["annotationFilters"] = list,
        field::TEMPLATE_LABEL_FILTERS => spec["template"] = json!({"labelFilters": list}),
        field::TEMPLATE_ANNOTATION_FILTERS => spec["template"] = json!({"annotationFilters": list}),
        other => panic!("unknown field {other}"),
    }
    spec
}

#[test]
fn filter_parser_and_cel_agree_on_tricky_filters() {
    let long_key = format!("{}/{}", "a.b-c_d".repeat(30), "x".repeat(89));
    assert_eq!(long_key.len(), 300);
    let inputs = [
        "",
        "!",
        "*",
        "!*",
        "a*b",
        "a!b",
        "a*",
        "!a*",
        "!!a",
        "*!",
        "a?",
        "a[b]",
        "{a}",
        "é",
        "日本",
        "\n",
        "a\n",
        "a\nb",
        "\t",
        &long_key,
        "key with space",
        "**",
        "!a!",
        "a/b.c_d-e",
        "some/*/key",
        "*/key",
        "key!",
        "some/!key",
        "some/key*",
        "!some/key",
        "!some/*",
        "!*a",
        "a\\*",
        "a$",
        "^a",
        "(a)",
        "a|b",
        "a+",
        "a.*",
    ];
    let validator = Validator::new();
    let schema = schema("v1beta1");
    let fields = [
        field::LABEL_FILTERS,
        field::ANNOTATION_FILTERS,
        field::TEMPLATE_LABEL_FILTERS,
        field::TEMPLATE_ANNOTATION_FILTERS,
    ];
    for field in fields {
        for input in inputs {
            let cel = cel_messages(&validator, &schema, &spec_with_filter(field, input));
            match Filter::parse(field, input) {
                Ok(_) => assert!(cel.is_empty(), "{field} {input:?}: CEL refuses {cel:?}"),
                Err(error) => assert!(
                    cel.contains(&error.to_string()),
                    "{field} {input:?}: parser says {error:?}, CEL says {cel:?}"
                ),
            }
        }
    }
}

/// A whole spec: `changes` merged over a valid one.
fn spec(changes: &Value) -> Value {
    let mut spec = base_spec();
    spec["target"] =
        json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-clone"});
    json_patch::merge(&mut spec, changes);
    spec
}

fn engine_messages(spec: &Value) -> Vec<String> {
    let typed: VirtualMachineCloneSpec = serde_json::from_value(spec.clone()).expect("a spec");
    validate_spec(&typed).err().unwrap_or_default()
}

#[test]
fn validate_spec_and_cel_agree_on_whole_specs() {
    let patch_ok = r#"{"op":"replace","path":"/spec/template/spec/domain/cpu/cores","value":2}"#;
    let cases = [
        json!({}),
        json!({"target": null}),
        json!({"target": {"name": null}}),
        // MACs
        json!({"newMacAddresses": {"default": "00-11-22"}}),
        json!({"newMacAddresses": {"default": "00:11:22:33:44:55"}}),
        json!({"newMacAddresses": {"default": "00-11-22-33-44-55"}}),
        json!({"newMacAddresses": {"default": "00:11-22:33-44:55"}}),
        json!({"newMacAddresses": {"default": "AA:bb:CC:dd:EE:ff", "other": ""}}),
        json!({"newMacAddresses": {"default": "00:11:22:33:44:5z"}}),
        // Serial
        json!({"newSMBiosSerial": "a,b"}),
        json!({"newSMBiosSerial": "a:b"}),
        json!({"newSMBiosSerial": "plain-serial 1"}),
        // Patches
        json!({"patches": [patch_ok]}),
        json!({"patches": [r#"{"op": "remove", "path": "/metadata/labels/a~1b"}"#]}),
        json!({"patches": ["{"]}),
        json!({"patches": ["not json"]}),
        json!({"patches": [r#"{"path":"/spec/x","value":1}"#]}),
        json!({"patches": [r#"{"op":"merge","path":"/spec/x","value":1}"#]}),
        json!({"patches": [r#"{"op":"remove","path":"/status/x"}"#]}),
        json!({"patches": [r#"{"op":"replace","path":"/metadata/name","value":"x"}"#]}),
        json!({"patches": [r#"{"op":"add","path":"/spec/x","value":{"a":"1","b":"2"}}"#]}),
        json!({"patches": [r#"{"op":"add","path":"/spec/x","value":"a:b"}"#]}),
        json!({"strategy": "DataVolume", "patches": [r#"{"op":"add","path":"/spec/x","value":{"a":"1","b":"2"}}"#]}),
        json!({"strategy": "Auto", "patches": [r#"{"op":"add","path":"/spec/x","value":{"a":"1","b":"2"}}"#]}),
        json!({"strategy": "DataVolume", "patches": ["{}"]}),
        // Source and target
        json!({"source": {"kind": "Pod"}}),
        json!({"source": {"apiGroup": null}}),
        json!({"source": {"apiGroup": ""}}),
        json!({"source": {"apiGroup": "snapshot.kubevirt.io"}}),
        json!({"source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot"}}),
        json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachineSnapshot"}}),
        json!({"source": {"name": ""}}),
        json!({"target": {"kind": "Pod"}}),
        json!({"target": {"apiGroup": "v1"}}),
        json!({"target": {"name": "vm"}}),
        json!({"target": {"name": "Upper"}}),
        json!({"target": {"name": ""}}),
        json!({"target": {"name": "a-"}}),
        json!({"target": {"name": "a.b"}}),
        json!({"source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot"}, "target": {"name": "vm"}}),
        json!({"source": {"namespace": "other"}}),
        json!({"source": {"namespace": "other"}, "strategy": "Snapshot"}),
        json!({"source": {"namespace": "other"}, "strategy": "DataVolume", "target": {"name": "vm"}}),
        json!({"source": {"namespace": "other"}, "strategy": "Auto"}),
        json!({"strategy": "DataVolume", "source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot"}}),
        // Several problems at once
        json!({"source": {"name": ""}, "labelFilters": ["a!"], "newSMBiosSerial": ":"}),
    ];
    let validator = Validator::new();
    for version in ["v1alpha1", "v1beta1"] {
        let schema = schema(version);
        for changes in &cases {
            let spec = spec(changes);
            let cel = cel_messages(&validator, &schema, &spec);
            let engine = engine_messages(&spec);
            assert_eq!(
                cel.is_empty(),
                engine.is_empty(),
                "{version} {changes}: CEL {cel:?}, engine {engine:?}"
            );
            // Patch messages name the patch index in the engine only (CEL's field path names it);
            // every other message is word for word the same.
            let is_patch = |m: &String| m.contains("patch");
            let mut cel_rest: Vec<_> = cel.iter().filter(|m| !is_patch(m)).cloned().collect();
            let mut engine_rest: Vec<_> = engine.iter().filter(|m| !is_patch(m)).cloned().collect();
            cel_rest.sort();
            engine_rest.sort();
            assert_eq!(cel_rest, engine_rest, "{version} {changes}");
            assert_eq!(
                cel.iter().any(is_patch),
                engine.iter().any(is_patch),
                "{version} {changes}: CEL {cel:?}, engine {engine:?}"
            );
        }
    }
}

/// Patches CEL admits because it can only pattern-match the text; `validate_spec` parses them and
/// refuses them with the given message, and the controller fails the clone with `InvalidSpec`.
#[test]
fn where_cel_can_only_approximate_the_engine_is_stricter() {
    let no_value = r#"{"op":"add","path":"/spec/x"}"#;
    let no_from = r#"{"op":"move","path":"/spec/x"}"#;
    let duplicate_op = r#"{"op":"add","path":"/spec/x","value":1,"op":"frob"}"#;
    let trailing_comma = r#"{"op":"add","path":"/spec/x","value":1,}"#;
    let missing_comma = r#"{"op":"add" "path":"/spec/x" "value":1}"#;
    let path_in_value = r#"{"op":"remove","path":"/status/x","x":{"path":"/spec/a"}}"#;
    let two_objects = r#"{"op":"add","path":"/spec/x","value":1} {"a":1}"#;
    let cases = [
        (json!({"patches": [no_value]}), v::patch_not_operation(0)),
        (json!({"patches": [no_from]}), v::patch_not_operation(0)),
        // JSON keeps the last of duplicate keys; CEL sees the first.
        (
            json!({"patches": [duplicate_op]}),
            v::patch_not_operation(0),
        ),
        (
            json!({"strategy": "DataVolume", "patches": [trailing_comma]}),
            v::patch_not_json(trailing_comma),
        ),
        (
            json!({"strategy": "DataVolume", "patches": [missing_comma]}),
            v::patch_not_json(missing_comma),
        ),
        (
            json!({"strategy": "DataVolume", "patches": [path_in_value]}),
            v::patch_path_invalid(path_in_value),
        ),
        (
            json!({"strategy": "DataVolume", "patches": [two_objects]}),
            v::patch_not_json(two_objects),
        ),
    ];
    let validator = Validator::new();
    let schema = schema("v1beta1");
    for (changes, message) in cases {
        let spec = spec(&changes);
        assert_eq!(
            cel_messages(&validator, &schema, &spec),
            Vec::<String>::new(),
            "{changes}"
        );
        assert_eq!(engine_messages(&spec), [message], "{changes}");
    }
}
