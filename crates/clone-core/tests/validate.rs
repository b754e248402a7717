//! `validate`: the Rust side of the rule table, case by case with exact messages (per rule, the
//! first offending item), including the controller-only JSON Patch check. The annotations of
//! drop-in.md are written here as `strategy`, `targetRunStrategy` and `source.namespace` in the
//! changes and moved to `vmclone.dev/*` annotations by [`clone`].

// Helpers of integration tests are not `#[test]` functions, so clippy's test exemptions miss them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::v1beta1::VirtualMachineClone;
use clone_api::validation::{self as v, field};
use clone_core::validate::{
    is_valid_mac, is_valid_target_name, passes_kubevirt_naive_check, validate,
};
use serde_json::{Value, json};

/// A clone in namespace `ns` with a valid spec and `changes` merged over it (a `null` removes a
/// field); `strategy`, `targetRunStrategy` and `source.namespace` become annotations.
fn clone(mut changes: Value) -> VirtualMachineClone {
    let mut annotations = json!({});
    for (from, key) in [
        ("/strategy", "vmclone.dev/strategy"),
        ("/targetRunStrategy", "vmclone.dev/target-run-strategy"),
        ("/source/namespace", "vmclone.dev/source-namespace"),
    ] {
        if let Some(value) = changes.pointer_mut(from).map(Value::take) {
            annotations[key] = value;
        }
    }
    if let Some(map) = changes.as_object_mut() {
        map.remove("strategy");
        map.remove("targetRunStrategy");
    }
    if let Some(source) = changes.get_mut("source").and_then(Value::as_object_mut) {
        source.remove("namespace");
    }
    let mut spec = json!({
        "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
        "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-clone"},
    });
    json_patch::merge(&mut spec, &changes);
    serde_json::from_value(json!({
        "apiVersion": "clone.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClone",
        "metadata": {"name": "c", "namespace": "ns", "annotations": annotations},
        "spec": spec,
    }))
    .expect("a clone")
}

fn messages(changes: Value) -> Vec<String> {
    validate(&clone(changes)).err().unwrap_or_default()
}

fn invalid_filter(field: &str, filter: &str, why: &str) -> String {
    v::filter_invalid(field, filter, why)
}

#[test]
fn valid_specs_pass() {
    let cases = [
        json!({}),
        json!({"target": null}),
        json!({"target": {"apiGroup": null}}),
        json!({"source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": "vm-clone"}}),
        json!({"labelFilters": ["*", "!some/key", "some/key*", "!some/*", "!*"], "annotationFilters": []}),
        json!({"template": {"labelFilters": ["a"], "annotationFilters": ["b*"]}}),
        json!({"newMacAddresses": {"default": "02:00:00:00:00:01", "b": "02-AB-cd-00-00-01", "c": ""}}),
        json!({"newSMBiosSerial": "new-serial"}),
        json!({"newSMBiosSerial": ""}),
        json!({"patches": [
            r#"{"op":"replace","path":"/spec/template/spec/domain/cpu/cores","value":2}"#,
            r#"{"op": "add", "path": "/metadata/labels/a", "value": "b"}"#,
            r#"{"op":"remove","path":"/metadata/annotations/a~1b"}"#,
        ]}),
        json!({"volumeNamePolicy": "PrefixTargetName", "targetRunStrategy": "Always"}),
        json!({"strategy": "DataVolume", "source": {"namespace": "other"}}),
        json!({"strategy": "Auto", "source": {"namespace": "other"}}),
        // Another namespace: the same name is a different VM.
        json!({"strategy": "DataVolume", "source": {"namespace": "other"}, "target": {"name": "vm"}}),
        // DataVolume: the restore's naive check does not apply.
        json!({"strategy": "DataVolume", "patches": [r#"{"op":"add","path":"/spec/x","value":{"a":1,"b":2}}"#]}),
        json!({"target": {"name": "a.b-c.d"}}),
    ];
    for changes in cases {
        assert_eq!(validate(&clone(changes.clone())), Ok(()), "{changes}");
    }
}

#[test]
fn every_filter_list_reports_each_broken_rule() {
    let lists = [
        (field::LABEL_FILTERS, "/labelFilters"),
        (field::ANNOTATION_FILTERS, "/annotationFilters"),
        (field::TEMPLATE_LABEL_FILTERS, "/template/labelFilters"),
        (
            field::TEMPLATE_ANNOTATION_FILTERS,
            "/template/annotationFilters",
        ),
    ];
    for (field, pointer) in lists {
        let filters = [
            "",
            "!",
            "some/*/key",
            "*/key",
            "key!",
            "some/!key",
            "a?",
            "ok*",
        ];
        let mut changes = json!({});
        let mut cursor = &mut changes;
        for part in pointer.trim_start_matches('/').split('/') {
            cursor = &mut cursor[part];
        }
        *cursor = json!(filters);
        assert_eq!(
            messages(changes),
            // Per rule, the first filter that breaks it (the admission policy names one too).
            [
                v::filter_empty(field),
                invalid_filter(field, "!", v::NEGATION_ALONE),
                invalid_filter(field, "key!", v::NEGATION_POSITION),
                invalid_filter(field, "some/*/key", v::WILDCARD_POSITION),
                invalid_filter(field, "a?", v::KEY_CHARACTERS),
            ],
            "{field}"
        );
    }
}

#[test]
fn invalid_specs_are_refused_with_the_api_message() {
    let not_json = "{\"op\":\"add\"";
    let no_op = r#"{"path":"/spec/x","value":1}"#;
    let bad_op = r#"{"op":"merge","path":"/spec/x","value":1}"#;
    let no_value = r#"{"op":"add","path":"/spec/x"}"#;
    let array = r#"[{"op":"add","path":"/spec/x","value":1}]"#;
    let status = r#"{"op":"remove","path":"/status/x"}"#;
    let name = r#"{"op":"replace","path":"/metadata/name","value":"x"}"#;
    let labels_map = r#"{"op":"remove","path":"/metadata/labels"}"#;
    let comma = r#"{"op":"add","path":"/spec/x","value":{"a":"1","b":"2"}}"#;
    let colon = r#"{"op":"add","path":"/spec/x","value":"a:b"}"#;
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            json!({"source": {"kind": "Pod"}}),
            vec![v::SOURCE_KIND_UNSUPPORTED.into()],
        ),
        (
            json!({"source": {"kind": ""}}),
            vec![v::SOURCE_KIND_UNSUPPORTED.into()],
        ),
        (
            json!({"source": {"apiGroup": null}}),
            vec![v::SOURCE_API_GROUP_EMPTY.into()],
        ),
        (
            json!({"source": {"apiGroup": ""}}),
            vec![v::SOURCE_API_GROUP_EMPTY.into()],
        ),
        (
            json!({"source": {"apiGroup": "snapshot.kubevirt.io"}}),
            vec![v::SOURCE_API_GROUP_MISMATCH.into()],
        ),
        (
            json!({"source": {"kind": "VirtualMachineSnapshot", "apiGroup": "kubevirt.io"}}),
            vec![v::SOURCE_API_GROUP_MISMATCH.into()],
        ),
        // An unsupported kind has no matching group to compare with.
        (
            json!({"source": {"kind": "Pod", "apiGroup": "v1"}}),
            vec![v::SOURCE_KIND_UNSUPPORTED.into()],
        ),
        (
            json!({"source": {"name": ""}}),
            vec![v::SOURCE_NAME_EMPTY.into()],
        ),
        (
            json!({"target": {"kind": "VirtualMachineInstance"}}),
            vec![v::TARGET_KIND_UNSUPPORTED.into()],
        ),
        (
            json!({"target": {"apiGroup": "snapshot.kubevirt.io"}}),
            vec![v::TARGET_API_GROUP_INVALID.into()],
        ),
        (
            json!({"target": {"apiGroup": ""}}),
            vec![v::TARGET_API_GROUP_INVALID.into()],
        ),
        (
            json!({"target": {"name": "vm"}}),
            vec![v::TARGET_EQUALS_SOURCE.into()],
        ),
        (
            json!({"target": {"name": "Upper"}}),
            vec![v::TARGET_NAME_INVALID.into()],
        ),
        (
            json!({"target": {"name": ""}}),
            vec![v::TARGET_NAME_INVALID.into()],
        ),
        (
            json!({"target": {"name": "a-"}}),
            vec![v::TARGET_NAME_INVALID.into()],
        ),
        (
            json!({"target": {"name": "a..b"}}),
            vec![v::TARGET_NAME_INVALID.into()],
        ),
        (
            json!({"target": {"name": "a_b"}}),
            vec![v::TARGET_NAME_INVALID.into()],
        ),
        (
            json!({"target": {"name": "a".repeat(64)}}),
            vec![v::TARGET_NAME_INVALID.into()],
        ),
        (
            json!({"newMacAddresses": {"default": "00-11-22"}}),
            vec![v::malformed_mac("default", "00-11-22")],
        ),
        (
            json!({"newMacAddresses": {"default": "00:11-22:33-44:55"}}),
            vec![v::malformed_mac("default", "00:11-22:33-44:55")],
        ),
        (
            json!({"newMacAddresses": {"default": "00:11:22:33:44:5g"}}),
            vec![v::malformed_mac("default", "00:11:22:33:44:5g")],
        ),
        (
            json!({"newMacAddresses": {"default": "0011.2233.4455"}}),
            vec![v::malformed_mac("default", "0011.2233.4455")],
        ),
        (
            json!({"newSMBiosSerial": "a,b"}),
            vec![v::SERIAL_SEPARATORS.into()],
        ),
        (
            json!({"newSMBiosSerial": "a:b"}),
            vec![v::SERIAL_SEPARATORS.into()],
        ),
        (
            json!({"patches": [not_json]}),
            vec![
                // One `:` and no `,`: KubeVirt's naive check would let it through.
                v::patch_not_json(not_json),
            ],
        ),
        (
            // The first patch that breaks the rule; the naive check skips what is not an object.
            json!({"patches": ["", "x"]}),
            vec![v::patch_not_json("")],
        ),
        (json!({"patches": [no_op]}), vec![v::patch_not_operation(0)]),
        (
            json!({"strategy": "DataVolume", "patches": ["{}", bad_op]}),
            vec![v::patch_not_operation(0)],
        ),
        (
            json!({"strategy": "DataVolume", "patches": [bad_op]}),
            vec![v::patch_not_operation(0)],
        ),
        (
            // Not an object: the policy's pattern calls it not JSON; the exact check adds why.
            json!({"strategy": "DataVolume", "patches": [array]}),
            vec![v::patch_not_json(array), v::patch_not_operation(0)],
        ),
        (
            json!({"patches": [no_value]}),
            vec![v::patch_not_operation(0)],
        ),
        (
            json!({"patches": [status]}),
            vec![v::patch_path_invalid(status)],
        ),
        (
            json!({"patches": [name]}),
            vec![v::patch_path_invalid(name)],
        ),
        (
            json!({"patches": [labels_map]}),
            vec![v::patch_path_invalid(labels_map)],
        ),
        (
            json!({"patches": [comma]}),
            vec![v::patch_rejected_by_kubevirt(0, comma)],
        ),
        (
            json!({"strategy": "Auto", "patches": [colon]}),
            vec![v::patch_rejected_by_kubevirt(0, colon)],
        ),
        (
            json!({"strategy": "Snapshot", "patches": [colon]}),
            vec![v::patch_rejected_by_kubevirt(0, colon)],
        ),
        (
            json!({"source": {"namespace": "other"}}),
            vec![v::SOURCE_NAMESPACE_NEEDS_DATAVOLUME.into()],
        ),
        (
            json!({"source": {"namespace": "other"}, "strategy": "Snapshot", "target": {"name": "x"}}),
            vec![v::SOURCE_NAMESPACE_NEEDS_DATAVOLUME.into()],
        ),
        (
            json!({"strategy": "DataVolume", "source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot"}}),
            vec![v::DATAVOLUME_NEEDS_VM_SOURCE.into()],
        ),
    ];
    for (changes, want) in cases {
        assert_eq!(messages(changes.clone()), want, "{changes}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let got = messages(json!({
        "source": {"apiGroup": "", "name": ""},
        "labelFilters": ["a!"],
        "newSMBiosSerial": "a:b",
        "patches": ["{}"],
    }));
    assert_eq!(
        got,
        [
            invalid_filter(field::LABEL_FILTERS, "a!", v::NEGATION_POSITION),
            v::SOURCE_API_GROUP_EMPTY.to_string(),
            v::SOURCE_NAME_EMPTY.to_string(),
            v::SERIAL_SEPARATORS.to_string(),
            v::patch_not_operation(0),
            v::patch_rejected_by_kubevirt(0, "{}"),
        ]
    );
}

#[test]
fn the_building_blocks_follow_the_api_regexes() {
    for (mac, ok) in [
        ("00:11:22:33:44:55", true),
        ("00-11-22-33-44-55", true),
        ("AA:bb:CC:dd:EE:ff", true),
        ("", true),
        ("00-11-22", false),
        ("00:11-22:33-44:55", false),
        ("00:11:22:33:44:55:66", false),
        ("00:11:22:33:44:55\n", false),
    ] {
        assert_eq!(is_valid_mac(mac), ok, "{mac:?}");
    }
    for (name, ok) in [
        ("a", true),
        ("a.b", true),
        ("0-0", true),
        (&"a".repeat(63)[..], true),
        (&"a".repeat(64)[..], false),
        ("-a", false),
        ("a.", false),
        ("A", false),
        ("", false),
    ] {
        assert_eq!(is_valid_target_name(name), ok, "{name:?}");
    }
    for (patch, ok) in [
        (r#"{"op":"remove","path":"/spec/a"}"#, true),
        (r#"{"op":"add","path":"/spec/a","value":{}}"#, true),
        (r#"{"op":"add","path":"/spec/a","value":"x,y"}"#, false),
        (r#"{"op":"add","path":"/spec/a","value":"x:y"}"#, false),
        ("{}", false),
        ("", false),
    ] {
        assert_eq!(passes_kubevirt_naive_check(patch), ok, "{patch}");
    }
}
