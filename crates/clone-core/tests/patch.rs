//! Patch application: RFC 6902 through the `json-patch` crate, plus the one leniency of KubeVirt's
//! applier (evanphx json-patch v4): `replace` of a missing member of an existing object is an
//! `add`.

// Helpers of integration tests are not `#[test]` functions, so clippy's test exemptions miss them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_core::patch::{PatchError, apply_kubevirt, apply_strict, parse_operation};
use json_patch::PatchOperation;
use serde_json::{Value, json};

fn vm() -> Value {
    json!({
        "metadata": {"name": "vm", "labels": {"a": "1"}},
        "spec": {"template": {"spec": {"domain": {"devices": {"interfaces": [{"name": "default"}]}}}}},
    })
}

fn patches(list: &[Value]) -> Vec<String> {
    list.iter().map(Value::to_string).collect()
}

#[test]
fn replace_of_a_missing_member_acts_as_add_in_kubevirt_mode() {
    let list = patches(&[
        json!({"op": "replace", "path": "/spec/template/spec/domain/firmware", "value": {}}),
        json!({"op": "replace", "path": "/spec/template/spec/domain/firmware/serial", "value": "s1"}),
        json!({"op": "replace", "path": "/metadata/labels/a", "value": "2"}),
    ]);
    let mut doc = vm();
    apply_kubevirt(&mut doc, &list).expect("applies");
    assert_eq!(
        doc["spec"]["template"]["spec"]["domain"]["firmware"],
        json!({"serial": "s1"})
    );
    assert_eq!(
        doc["metadata"]["labels"]["a"], "2",
        "an existing member is replaced"
    );
}

#[test]
fn strict_mode_refuses_replace_of_a_missing_member() {
    let list = patches(&[json!({"op": "replace", "path": "/metadata/labels/b", "value": "x"})]);
    let mut doc = vm();
    let error = apply_strict(&mut doc, &list).expect_err("missing member");
    assert!(
        matches!(error, PatchError::Apply { index: 0, .. }),
        "{error}"
    );
    assert_eq!(doc, vm());
}

#[test]
fn replace_with_a_missing_parent_fails_in_both_modes() {
    let list = patches(&[json!({"op": "replace", "path": "/metadata/missing/b", "value": "x"})]);
    for apply in [apply_kubevirt, apply_strict] {
        let mut doc = vm();
        assert!(matches!(
            apply(&mut doc, &list),
            Err(PatchError::Apply { index: 0, .. })
        ));
        assert_eq!(doc, vm());
    }
}

#[test]
fn replace_of_a_missing_array_index_fails_in_both_modes() {
    let path = "/spec/template/spec/domain/devices/interfaces/1";
    let list = patches(&[json!({"op": "replace", "path": path, "value": {"name": "x"}})]);
    for apply in [apply_kubevirt, apply_strict] {
        let mut doc = vm();
        assert!(apply(&mut doc, &list).is_err());
    }
}

#[test]
fn remove_of_a_missing_member_fails_in_both_modes() {
    let list = patches(&[json!({"op": "remove", "path": "/metadata/labels/missing"})]);
    for apply in [apply_kubevirt, apply_strict] {
        let mut doc = vm();
        assert!(matches!(
            apply(&mut doc, &list),
            Err(PatchError::Apply { index: 0, .. })
        ));
        assert_eq!(doc, vm());
    }
}

#[test]
fn a_failing_list_leaves_the_document_unchanged() {
    let list = patches(&[
        json!({"op": "add", "path": "/metadata/labels/new", "value": "x"}),
        json!({"op": "remove", "path": "/metadata/labels/a"}),
        json!({"op": "replace", "path": "/metadata/name", "value": "other"}),
        json!({"op": "test", "path": "/metadata/name", "value": "not-it"}),
    ]);
    for apply in [apply_kubevirt, apply_strict] {
        let mut doc = vm();
        let error = apply(&mut doc, &list).expect_err("test fails");
        assert!(
            matches!(error, PatchError::Apply { index: 3, .. }),
            "{error}"
        );
        assert_eq!(doc, vm(), "nothing of the first three operations remains");
    }
}

#[test]
fn an_unparsable_string_fails_before_anything_applies() {
    let list = vec![
        json!({"op": "add", "path": "/metadata/labels/new", "value": "x"}).to_string(),
        "{not json".to_string(),
    ];
    let mut doc = vm();
    let error = apply_kubevirt(&mut doc, &list).expect_err("parse error");
    match error {
        PatchError::Unparsable { index, source } => {
            assert_eq!(index, 1);
            assert!(matches!(*source, PatchError::NotJson { .. }));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(doc, vm());
}

#[test]
fn every_operation_kind_applies() {
    let list = patches(&[
        json!({"op": "add", "path": "/metadata/labels/b", "value": "2"}),
        json!({"op": "copy", "from": "/metadata/labels/b", "path": "/metadata/labels/c"}),
        json!({"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/d"}),
        json!({"op": "test", "path": "/metadata/labels/d", "value": "1"}),
        json!({"op": "remove", "path": "/metadata/labels/b"}),
        json!({"op": "replace", "path": "/metadata/name", "value": "vm2"}),
    ]);
    let mut doc = vm();
    apply_strict(&mut doc, &list).expect("applies");
    assert_eq!(doc["metadata"]["labels"], json!({"c": "2", "d": "1"}));
    assert_eq!(doc["metadata"]["name"], "vm2");
}

#[test]
fn upstreams_remove_with_a_null_value_still_parses() {
    let op = parse_operation(r#"{"op":"remove","path":"/metadata/labels/a","value":null}"#)
        .expect("parses");
    assert!(matches!(op, PatchOperation::Remove(_)));
    let mut doc = vm();
    apply_kubevirt(&mut doc, &[op.to_string()]).expect("applies");
    assert_eq!(doc["metadata"]["labels"], json!({}));
}

#[test]
fn parse_operation_tells_bad_json_from_a_non_operation() {
    let cases = [
        ("{", "json"),
        ("", "json"),
        ("[]", "operation"),
        (r#"{"op":"add","path":"/spec/x"}"#, "operation"), // add needs a value
        (r#"{"op":"frobnicate","path":"/spec/x"}"#, "operation"),
        (r#"{"op":"remove","path":"spec/x"}"#, "operation"), // not a JSON pointer
        (r#"{"op":"move","path":"/spec/x"}"#, "operation"),  // move needs from
    ];
    for (text, want) in cases {
        let got = match parse_operation(text) {
            Err(PatchError::NotJson { patch, .. }) => {
                assert_eq!(patch, text);
                "json"
            }
            Err(PatchError::NotOperation { patch, .. }) => {
                assert_eq!(patch, text);
                "operation"
            }
            other => panic!("{text}: unexpected {other:?}"),
        };
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn later_operations_win() {
    let list = patches(&[
        json!({"op": "add", "path": "/metadata/labels/a", "value": "generated"}),
        json!({"op": "replace", "path": "/metadata/labels/a", "value": "user"}),
    ]);
    let mut doc = vm();
    apply_kubevirt(&mut doc, &list).expect("applies");
    assert_eq!(doc["metadata"]["labels"]["a"], "user");
}

#[test]
fn an_empty_list_changes_nothing() {
    let mut doc = vm();
    apply_kubevirt(&mut doc, &[]).expect("applies");
    apply_strict(&mut doc, &[]).expect("applies");
    assert_eq!(doc, vm());
}
