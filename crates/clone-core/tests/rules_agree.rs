//! The rule table's two sides agree: the CEL of the generated ValidatingAdmissionPolicy (evaluated
//! client-side with the `cel` crate and kube-cel's Kubernetes functions) and the Rust checks the
//! controller runs give the same verdict and the same message for every rule, on the validation
//! table and on generated clones. The API server itself runs the table in
//! `crates/clone-api/tests/api_server.rs`.
//!
//! kube-cel's own `VapEvaluator` is not used: without a schema it escapes every map key
//! (`vmclone.dev/x` becomes `vmclone__dot__dev__slash__x`), which kube-apiserver does only for
//! declared properties, so annotation rules would not see their keys.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::v1beta1::VirtualMachineClone;
use clone_core::filter::Filter;
use clone_core::policy::admission_policy;
use clone_core::rules::{Rule, rules, validate, validate_update};
use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Program, Value as CelValue};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    spec: Value,
    #[serde(default)]
    annotations: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    structural: bool,
}

fn clone_json(spec: &Value, annotations: Option<&Value>) -> Value {
    json!({
        "apiVersion": "clone.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClone",
        "metadata": {"name": "c", "namespace": "ns", "annotations": annotations.cloned().unwrap_or(json!({}))},
        "spec": spec,
    })
}

/// A validation of the policy, compiled: expression and message expression.
struct Validation {
    expression: String,
    program: Program,
    message: Program,
}

fn compile(source: &str) -> Program {
    Program::compile(source).unwrap_or_else(|e| panic!("`{source}` does not compile: {e:?}"))
}

thread_local! {
    /// Compiled once per test thread (`Program` is not `Sync`).
    static POLICY: Vec<(&'static Rule, Validation)> = policy_rules();
}

/// The policy's validations, paired with the rules they come from.
fn policy_rules() -> Vec<(&'static Rule, Validation)> {
    let validations = admission_policy()
        .spec
        .and_then(|s| s.validations)
        .expect("validations");
    let with_cel: Vec<&Rule> = rules().iter().filter(|r| !r.controller_only()).collect();
    assert_eq!(validations.len(), with_cel.len());
    with_cel
        .into_iter()
        .zip(validations)
        .map(|(rule, v)| {
            (
                rule,
                Validation {
                    program: compile(&v.expression),
                    message: compile(&v.message_expression.expect("message expression")),
                    expression: v.expression,
                },
            )
        })
        .collect()
}

/// The variables of one admission request.
fn context(operation: &str, object: &Value, old: Option<&Value>) -> Context<'static> {
    let mut ctx = Context::default().with_all();
    ctx.add_variable("object", object.clone()).unwrap();
    ctx.add_variable("oldObject", old.cloned().unwrap_or(Value::Null))
        .unwrap();
    ctx.add_variable("request", json!({"operation": operation}))
        .unwrap();
    ctx
}

/// `None` when the validation passes, else its message. Any evaluation error fails the test.
fn evaluate(ctx: &Context<'_>, validation: &Validation) -> Option<String> {
    let run = |program: &Program| {
        program
            .execute(ctx)
            .unwrap_or_else(|e| panic!("`{}` fails: {e:?}", validation.expression))
    };
    match run(&validation.program) {
        CelValue::Bool(true) => None,
        CelValue::Bool(false) => match run(&validation.message) {
            CelValue::String(message) => Some(message.to_string()),
            other => panic!("message is not a string: {other:?}"),
        },
        other => panic!("`{}` is not a boolean: {other:?}", validation.expression),
    }
}

/// The messages of the policy's failing validations, in order.
fn cel_messages(operation: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    let ctx = context(operation, object, old);
    POLICY.with(|policy| {
        policy
            .iter()
            .filter_map(|(_, validation)| evaluate(&ctx, validation))
            .collect()
    })
}

fn typed(object: &Value) -> VirtualMachineClone {
    serde_json::from_value(object.clone()).expect("a clone")
}

#[test]
fn both_sides_give_the_tables_first_message() {
    let cases: Vec<Case> = serde_saphyr::from_str(include_str!(
        "../../clone-api/testdata/validation-cases.yaml"
    ))
    .unwrap();
    let mut failures = Vec::new();
    for case in cases.iter().filter(|c| !c.structural) {
        let object = clone_json(&case.spec, case.annotations.as_ref());
        let cel = cel_messages("CREATE", &object, None);
        let rust = validate(&typed(&object)).err().unwrap_or_default();
        let want = case.error.as_ref();
        if cel.first() != want {
            failures.push(format!("CEL `{}`: want {want:?}, got {cel:?}", case.name));
        }
        if rust.first() != want {
            failures.push(format!("Rust `{}`: want {want:?}, got {rust:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(values).prop_map(str::to_owned)
}

fn filters() -> impl Strategy<Value = Option<Vec<String>>> {
    proptest::option::of(proptest::collection::vec("[a-zA-Z0-9!*?/._ -]{0,6}", 0..4))
}

fn spec() -> impl Strategy<Value = Value> {
    let source = (
        proptest::option::of(one_of(&["kubevirt.io", "snapshot.kubevirt.io", "", "x.io"])),
        one_of(&[
            "VirtualMachine",
            "VirtualMachineSnapshot",
            "VirtualMachineInstance",
            "",
        ]),
        one_of(&["vm", "", "t"]),
    );
    let target = proptest::option::of((
        proptest::option::of(one_of(&["kubevirt.io", "snapshot.kubevirt.io"])),
        one_of(&["VirtualMachine", "Pod"]),
        one_of(&[
            "vm",
            "t",
            "My_VM",
            "",
            "a.b-c",
            "x123456789012345678901234567890123456789012345678901234567890123",
        ]),
    ));
    let macs = proptest::option::of(proptest::option::of(one_of(&[
        "02:00:00:00:00:01",
        "00-11-22",
        "",
        "02:00-00:aa-bb:01",
        "zz",
    ])));
    let patches = proptest::option::of(proptest::collection::vec(
        one_of(&[
            r#"{"op":"add","path":"/spec/x","value":"1"}"#,
            "op add",
            r#"{"path":"/spec/x"}"#,
            r#"{"op":"add","path":"/status/x","value":"y"}"#,
            r#"{"op":"add","path":"/spec/x","value":"b:c"}"#,
            r#"{"op":"add","path":"/spec/x","value":"1,2"}"#,
            "{bad",
            "{}",
            r#"{"op":"remove","path":"/spec/x"}"#,
            r#" {"op": "replace", "path": "/metadata/labels/a", "value": "b"} "#,
        ]),
        0..3,
    ));
    (
        source,
        target,
        (filters(), filters(), filters(), filters()),
        macs,
        proptest::option::of(one_of(&["a", "a:b", "a,b", ""])),
        patches,
        proptest::option::of(one_of(&["RandomizeNames", "PrefixTargetName", "Whatever"])),
    )
        .prop_map(
            |(source, target, (l, a, tl, ta), mac, serial, patches, policy)| {
                let mut spec = json!({"source": {"kind": source.1, "name": source.2}});
                if let Some(group) = source.0 {
                    spec["source"]["apiGroup"] = json!(group);
                }
                if let Some((group, kind, name)) = target {
                    spec["target"] = json!({"kind": kind, "name": name});
                    if let Some(group) = group {
                        spec["target"]["apiGroup"] = json!(group);
                    }
                }
                for (key, list) in [("labelFilters", l), ("annotationFilters", a)] {
                    if let Some(list) = list {
                        spec[key] = json!(list);
                    }
                }
                if tl.is_some() || ta.is_some() {
                    spec["template"] = json!({});
                    if let Some(list) = tl {
                        spec["template"]["labelFilters"] = json!(list);
                    }
                    if let Some(list) = ta {
                        spec["template"]["annotationFilters"] = json!(list);
                    }
                }
                // At most one bad MAC: CEL maps have no order, so with two the "first" differs.
                if let Some(mac) = mac {
                    let mut macs = json!({"default": "02:00:00:00:00:02"});
                    if let Some(mac) = mac {
                        macs["second"] = json!(mac);
                    }
                    spec["newMacAddresses"] = macs;
                }
                if let Some(serial) = serial {
                    spec["newSMBiosSerial"] = json!(serial);
                }
                if let Some(patches) = patches {
                    spec["patches"] = json!(patches);
                }
                if let Some(policy) = policy {
                    spec["volumeNamePolicy"] = json!(policy);
                }
                spec
            },
        )
}

fn annotations() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(one_of(&["Snapshot", "DataVolume", "Auto", "Copy"])),
        proptest::option::of(one_of(&["other", "ns", "Bad_NS", ""])),
        proptest::option::of(one_of(&["Always", "Halted", "Running"])),
        proptest::option::of(one_of(&["vmclone.dev/typo", "vmclone.dev/"])),
        any::<bool>(),
    )
        .prop_map(|(strategy, ns, run, unknown, other)| {
            let mut a = json!({});
            if let Some(v) = strategy {
                a["vmclone.dev/strategy"] = json!(v);
            }
            if let Some(v) = ns {
                a["vmclone.dev/source-namespace"] = json!(v);
            }
            if let Some(v) = run {
                a["vmclone.dev/target-run-strategy"] = json!(v);
            }
            if let Some(k) = unknown {
                a[k] = json!("x");
            }
            if other {
                a["example.com/note"] = json!("x");
            }
            a
        })
}

/// Every rule with CEL: its own verdict and message on each side.
fn compare_rule_by_rule(operation: &str, object: &Value, old: Option<&Value>) {
    let new_typed = typed(object);
    let old_typed = old.map(typed);
    let ctx = context(operation, object, old);
    POLICY.with(|policy| {
        for (rule, validation) in policy {
            let cel = evaluate(&ctx, validation);
            let rust = match &old_typed {
                None => rule.check_create(&new_typed),
                Some(old) => rule.check_update(old, &new_typed),
            };
            assert_eq!(cel, rust, "rule {} on {operation} of {object}", rule.id);
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The filter parser the engine filters with accepts exactly what the rules accept, with the
    /// same message.
    #[test]
    fn the_filter_parser_and_the_rules_agree(filter in "[a-zA-Z0-9!*?/._ -]{0,6}") {
        let object = clone_json(
            &json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
                    "labelFilters": [filter]}),
            None,
        );
        let rules = validate(&typed(&object)).err().unwrap_or_default();
        let parsed = Filter::parse(clone_api::validation::field::LABEL_FILTERS, &filter)
            .err()
            .map(|e| e.to_string());
        prop_assert_eq!(rules.first(), parsed.as_ref());
    }

    #[test]
    fn cel_and_rust_agree_on_created_clones(spec in spec(), annotations in annotations()) {
        let object = clone_json(&spec, Some(&annotations));
        compare_rule_by_rule("CREATE", &object, None);
        // The whole policy's first refusal is the controller's first message, unless only a
        // controller-only rule refuses (CEL cannot parse JSON).
        let cel = cel_messages("CREATE", &object, None);
        let rust = validate(&typed(&object)).err().unwrap_or_default();
        if !cel.is_empty() {
            prop_assert_eq!(cel.first(), rust.first());
        }
    }

    #[test]
    fn cel_and_rust_agree_on_updates(
        spec in spec(),
        annotations in annotations(),
        other_spec in spec(),
        other_annotations in annotations(),
        change_spec in any::<bool>(),
        change_annotations in any::<bool>(),
    ) {
        let old = clone_json(&spec, Some(&annotations));
        let new = clone_json(
            if change_spec { &other_spec } else { &spec },
            Some(if change_annotations { &other_annotations } else { &annotations }),
        );
        compare_rule_by_rule("UPDATE", &new, Some(&old));
        let cel = cel_messages("UPDATE", &new, Some(&old));
        let rust = validate_update(&typed(&old), &typed(&new)).err().unwrap_or_default();
        prop_assert_eq!(cel, rust);
    }
}
