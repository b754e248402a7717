//! Property tests over inputs the table tests cannot enumerate.
//!
//! - `decide` on random worlds: any clone status (phase, recorded names, old conditions), any
//!   spec (valid or not), any mixture of present, absent, ready, failed or mismatched source,
//!   snapshots, content, restore, target, claims, rival clones and refusals. Whatever comes in,
//!   the decision keeps the lifecycle's invariants (see [`check_decision`]) and a repeated pass
//!   over the same world publishes nothing new.
//! - The JSON Patch appliers on arbitrary patch strings over arbitrary documents: no panic,
//!   atomic failures that name the right operation, strict success implies the same lenient
//!   result, and applying a list in two parts equals applying it at once.
//! - `validate`: on arbitrary clones it never panics and every message names the field it
//!   is about (or is one of the two API messages whose field the API server's path names); on
//!   specs assembled from known-good and known-bad parts it accepts exactly the good ones and
//!   reports every bad part.

use std::collections::BTreeMap;

use clone_api::extensions::{self, CloneStrategy, TargetRunStrategy};
use clone_api::kubevirt::{
    VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot, VirtualMachineSnapshotContent,
};
use clone_api::names::{
    CREATED_BY_CLONE_ANNOTATION, EventReason, KIND, KUBEVIRT_GROUP, LAST_RESTORE_UID_ANNOTATION,
    SNAPSHOT_GROUP, VIRTUAL_MACHINE_KIND, VIRTUAL_MACHINE_SNAPSHOT_KIND, condition,
};
use clone_api::v1beta1::{
    CloneCondition, ClonePhase, CloneSource, CloneTarget, TemplateFilters, VirtualMachineClone,
    VirtualMachineCloneSpec, VirtualMachineCloneStatus, VolumeNamePolicy,
};
use clone_api::validation::{self as v, PATCH_PATH_PREFIXES};
use clone_core::decide::{
    Child, CreateRejection, FeatureGate, ReadPlan, Rival, content_name, lookups, project,
    target_name,
};
use clone_core::names::{temp_restore_name, temp_snapshot_name};
use clone_core::patch::{PatchError, apply_kubevirt, apply_strict, parse_operation};
use clone_core::status::{phase_reason, status_changed};
use clone_core::validate::{passes_kubevirt_naive_check, validate};
use clone_core::{Action, Decision, Observed, decide};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

type TestResult<T = ()> = Result<T, TestCaseError>;

const NAMESPACE: &str = "ns";
const CLONE_NAME: &str = "testclone";
const SOURCE_VM: &str = "vm-src";
const SOURCE_SNAPSHOT: &str = "golden";
const CLAIMS: [&str; 2] = ["restore-root", "restore-data"];

/// `cases` cases; failures are not written next to the sources (an integration test has no
/// `lib.rs` for proptest to put them beside).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fail(what: &str, error: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {error}"))
}

fn time(text: &str) -> TestResult<Time> {
    Ok(Time(text.parse().map_err(|e| fail(text, e))?))
}

fn typed<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> TestResult<T> {
    serde_json::from_value(value).map_err(|e| fail(what, e))
}

fn select<T: Clone + std::fmt::Debug + 'static>(items: &[T]) -> prop::sample::Select<T> {
    prop::sample::select(items.to_vec())
}

fn strings(items: &[&str]) -> prop::sample::Select<String> {
    prop::sample::select(items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
}

// =============================================================================================
// Specs: parts that are known to be valid or invalid (api.md, "Validation")
// =============================================================================================

/// Filters, each with whether the API accepts it.
fn filter() -> impl Strategy<Value = (String, bool)> {
    let good = [
        "*",
        "!*",
        "app",
        "!app",
        "!kubevirt.io/*",
        "example.com/*",
        "some/key*",
        "a-b_c.d/e",
    ];
    let bad = [
        "",
        "!",
        "key!",
        "some/!key",
        "*/key",
        "some/*/key",
        "**",
        "!!a",
        "a b",
        "k?",
        "[x]",
        "{y}",
        "ké",
        "a:b",
    ];
    prop_oneof![
        3 => strings(&good).prop_map(|f| (f, true)),
        1 => strings(&bad).prop_map(|f| (f, false)),
    ]
}

/// An optional filter list and how many of its filters are invalid.
fn filter_list() -> impl Strategy<Value = (Option<Vec<String>>, usize)> {
    prop::option::weighted(0.6, prop::collection::vec(filter(), 0..4)).prop_map(|list| match list {
        None => (None, 0),
        Some(list) => {
            let bad = list.iter().filter(|(_, ok)| !ok).count();
            (Some(list.into_iter().map(|(f, _)| f).collect()), bad)
        }
    })
}

/// MAC values, each with whether the API accepts it.
fn mac() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        3 => strings(&["02:00:00:00:00:01", "02-AB-cd-00-00-02", "0A:1b:2C:3d:4E:5f", ""])
            .prop_map(|m| (m, true)),
        1 => strings(&["zz", "02:00:00:00:00", "02:00-00:00:00:00", "0200.0000.0001", "02:00:00:00:00:001", "g2:00:00:00:00:01"])
            .prop_map(|m| (m, false)),
    ]
}

/// How a patch string fares with the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    /// A complete JSON Patch operation that KubeVirt's naive check lets through.
    Good,
    /// A complete operation whose values hold `,` or `:` (fine only for the DataVolume strategy).
    NaiveOnly,
    /// Not an operation the API accepts.
    Bad,
}

fn patch() -> impl Strategy<Value = (String, PatchKind)> {
    let good = [
        r#"{"op":"add","path":"/spec/runStrategy","value":"Halted"}"#,
        r#"{"op": "remove", "path": "/metadata/labels/app"}"#,
        r#"{"op":"replace","path":"/metadata/annotations/note","value":"x"}"#,
        r#"{"op":"test","path":"/spec/running","value":false}"#,
        r#"{"op":"move","from":"/spec/a","path":"/spec/b"}"#,
        r#"{"op":"copy","from":"/spec/a","path":"/spec/template/metadata/labels/b"}"#,
    ];
    let naive_only = [
        r#"{"op":"add","path":"/spec/x","value":"a,b"}"#,
        r#"{"op":"add","path":"/spec/template/metadata/labels/x","value":"a:b"}"#,
        r#"{"op":"add","path":"/spec/x","value":{"a":1,"b":2}}"#,
    ];
    let bad = [
        "",
        "garbage",
        "[1,2]",
        r#"{"op":"add","path":"/status/x","value":"y"}"#,
        r#"{"op":"add","path":"/metadata/name","value":"y"}"#,
        r#"{"op":"bogus","path":"/spec/x"}"#,
        r#"{"op":"add","path":"/spec/x"}"#,
        r#"{"op":"move","path":"/spec/x"}"#,
        r#"{"path":"/spec/x","value":"y"}"#,
        r#"{"op":"add","path":"/spec/x","value":"a"}}"#,
        r#"{"op":"add","path":"/spec/x","value":"a""#,
    ];
    prop_oneof![
        3 => strings(&good).prop_map(|p| (p, PatchKind::Good)),
        1 => strings(&naive_only).prop_map(|p| (p, PatchKind::NaiveOnly)),
        1 => strings(&bad).prop_map(|p| (p, PatchKind::Bad)),
    ]
}

/// Target names, each with whether the API accepts it.
fn target_name_choice() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        3 => strings(&["t", "vm-clone-target", "a.b-c", SOURCE_VM, &"x".repeat(63)])
            .prop_map(|n| (n, true)),
        1 => strings(&["", "UPPER", "bad_name", "-a", "a-", "a..b", &"x".repeat(64)])
            .prop_map(|n| (n, false)),
    ]
}

fn strategy() -> impl Strategy<Value = Option<CloneStrategy>> {
    prop::option::of(select(&[
        CloneStrategy::Snapshot,
        CloneStrategy::DataVolume,
        CloneStrategy::Auto,
    ]))
}

fn run_strategy() -> impl Strategy<Value = Option<TargetRunStrategy>> {
    prop::option::of(select(&[
        TargetRunStrategy::Always,
        TargetRunStrategy::RerunOnFailure,
        TargetRunStrategy::Manual,
        TargetRunStrategy::Halted,
    ]))
}

fn volume_name_policy() -> impl Strategy<Value = Option<VolumeNamePolicy>> {
    prop::option::of(select(&[
        VolumeNamePolicy::RandomizeNames,
        VolumeNamePolicy::PrefixTargetName,
    ]))
}

/// What the API's rules say about a clone assembled from tagged parts.
#[derive(Debug, Clone)]
struct Expected {
    /// Whether every rule holds.
    valid: bool,
}

/// What a user writes: the spec and the clone's annotations (vmclone's extensions).
#[derive(Debug, Clone, Default)]
struct CloneInput {
    spec: VirtualMachineCloneSpec,
    annotations: BTreeMap<String, String>,
}

impl CloneInput {
    /// The clone in [`NAMESPACE`], named [`CLONE_NAME`].
    fn clone_object(&self) -> VirtualMachineClone {
        let mut clone = VirtualMachineClone::new(CLONE_NAME, self.spec.clone());
        clone.metadata.namespace = Some(NAMESPACE.to_owned());
        clone.metadata.annotations = Some(self.annotations.clone()).filter(|a| !a.is_empty());
        clone
    }
}

prop_compose! {
    fn source()(
        kind in prop_oneof![
            4 => Just(VIRTUAL_MACHINE_KIND.to_owned()),
            3 => Just(VIRTUAL_MACHINE_SNAPSHOT_KIND.to_owned()),
            1 => strings(&["Pod", "", "virtualmachine"]),
        ],
        group in prop_oneof![
            6 => Just(None),
            1 => prop::option::of(strings(&["", "apps", KUBEVIRT_GROUP, SNAPSHOT_GROUP])).prop_map(Some),
        ],
        name in prop_oneof![
            6 => Just(None),
            1 => strings(&["", SOURCE_VM, SOURCE_SNAPSHOT, "missing"]).prop_map(Some),
        ],
        namespace in prop_oneof![8 => Just(None), 1 => prop::option::of(strings(&[NAMESPACE, "elsewhere"]))],
    ) -> (CloneSource, Option<String>) {
        // By default the group and name that go with the kind, so most specs get far.
        let vm = kind == VIRTUAL_MACHINE_KIND;
        let api_group = group.unwrap_or_else(|| Some(if vm { KUBEVIRT_GROUP } else { SNAPSHOT_GROUP }.to_owned()));
        let name = name.unwrap_or_else(|| if vm { SOURCE_VM } else { SOURCE_SNAPSHOT }.to_owned());
        (CloneSource { api_group, kind, name }, namespace)
    }
}

prop_compose! {
    fn target()(
        present in prop::bool::weighted(0.8),
        kind in prop_oneof![6 => Just(VIRTUAL_MACHINE_KIND.to_owned()), 1 => Just("Pod".to_owned())],
        group in prop_oneof![4 => Just(Some(KUBEVIRT_GROUP.to_owned())), 2 => Just(None), 1 => Just(Some(SNAPSHOT_GROUP.to_owned()))],
        (name, name_ok) in target_name_choice(),
    ) -> (Option<CloneTarget>, bool) {
        if !present {
            return (None, true);
        }
        let ok = name_ok
            && kind == VIRTUAL_MACHINE_KIND
            && group.as_deref().is_none_or(|g| g == KUBEVIRT_GROUP);
        (Some(CloneTarget { api_group: group, kind, name }), ok)
    }
}

prop_compose! {
    fn identity()(
        macs in prop::option::of(prop::collection::btree_map(strings(&["default", "storage", "eth9"]), mac(), 0..3)),
        serial in prop_oneof![
            3 => Just((None, true)),
            2 => strings(&["serial-1", "", "web-01-clone"]).prop_map(|s| (Some(s), true)),
            1 => strings(&["a,b", "a:b"]).prop_map(|s| (Some(s), false)),
        ],
        patches in prop::option::weighted(0.5, prop::collection::vec(patch(), 0..4)),
    ) -> (Option<BTreeMap<String, String>>, usize, (Option<String>, bool), Option<Vec<(String, PatchKind)>>) {
        let bad_macs = macs.iter().flatten().filter(|(_, (_, ok))| !ok).count();
        let macs = macs.map(|m| m.into_iter().map(|(k, (v, _))| (k, v)).collect());
        (macs, bad_macs, serial, patches)
    }
}

prop_compose! {
    /// A spec from tagged parts, and what the API's rules say about it.
    fn tagged_spec()(
        (source, source_namespace) in source(),
        (target, target_ok) in target(),
        (label_filters, bad_labels) in filter_list(),
        (annotation_filters, bad_annotations) in filter_list(),
        template in prop::option::weighted(0.4, (filter_list(), filter_list())),
        (macs, bad_macs, (serial, serial_ok), patches) in identity(),
        strategy in strategy(),
        target_run_strategy in run_strategy(),
        volume_name_policy in volume_name_policy(),
    ) -> (CloneInput, Expected) {
        let ((template_labels, bad_template_labels), (template_annotations, bad_template_annotations)) =
            template.clone().unwrap_or(((None, 0), (None, 0)));
        let bad_filters = bad_labels + bad_annotations + bad_template_labels + bad_template_annotations;
        let vm = source.kind == VIRTUAL_MACHINE_KIND;
        let source_ok = !source.name.is_empty()
            && match source.kind.as_str() {
                VIRTUAL_MACHINE_KIND => source.api_group.as_deref() == Some(KUBEVIRT_GROUP),
                VIRTUAL_MACHINE_SNAPSHOT_KIND => source.api_group.as_deref() == Some(SNAPSHOT_GROUP),
                _ => false,
            };
        let same_as_source = vm
            && source_namespace.as_deref().is_none_or(|ns| ns == NAMESPACE)
            && target.as_ref().map(|t| t.name.as_str()) == Some(source.name.as_str());
        let data_volume = strategy == Some(CloneStrategy::DataVolume);
        let strategy_ok = (source_namespace.is_none() || matches!(strategy, Some(CloneStrategy::DataVolume | CloneStrategy::Auto)))
            && (!data_volume || vm);
        let patch_list = patches.clone().unwrap_or_default();
        let bad_patches = patch_list
            .iter()
            .filter(|(_, kind)| *kind == PatchKind::Bad || (*kind == PatchKind::NaiveOnly && !data_volume))
            .count();
        let valid = bad_filters == 0 && source_ok && target_ok && !same_as_source && bad_macs == 0
            && serial_ok && bad_patches == 0 && strategy_ok;
        let spec = VirtualMachineCloneSpec {
            source,
            target,
            label_filters,
            annotation_filters,
            template: template.map(|_| TemplateFilters {
                label_filters: template_labels,
                annotation_filters: template_annotations,
            }),
            new_mac_addresses: macs,
            new_smbios_serial: serial,
            patches: patches.map(|list| list.into_iter().map(|(p, _)| p).collect()),
            volume_name_policy,
        };
        let annotations = [
            (extensions::STRATEGY, strategy.map(|s| s.as_str().to_owned())),
            (extensions::TARGET_RUN_STRATEGY, target_run_strategy.map(|s| s.as_str().to_owned())),
            (extensions::SOURCE_NAMESPACE, source_namespace),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect();
        (CloneInput { spec, annotations }, Expected { valid })
    }
}

/// Arbitrary text for every string of a spec (mostly nonsense).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "\\PC{0,12}",
        1 => strings(&["", "!", "*", "VirtualMachine", "VirtualMachineSnapshot", KUBEVIRT_GROUP, SNAPSHOT_GROUP, "{\"op\":\"add\"}"]),
    ]
}

prop_compose! {
    fn arbitrary_spec()(
        kind in text(),
        api_group in prop::option::of(text()),
        name in text(),
        namespace in prop::option::of(text()),
        target in prop::option::of((prop::option::of(text()), prop::option::of(text()), prop::option::of(text()))),
        lists in prop::collection::vec(prop::option::of(prop::collection::vec(text(), 0..4)), 4),
        has_template in any::<bool>(),
        macs in prop::option::of(prop::collection::btree_map(text(), text(), 0..3)),
        serial in prop::option::of(text()),
        patches in prop::option::of(prop::collection::vec(text(), 0..4)),
        strategy in prop::option::of(text()),
    ) -> CloneInput {
        let mut lists = lists.into_iter();
        let spec = VirtualMachineCloneSpec {
            source: CloneSource { api_group, kind, name },
            target: target.map(|(api_group, kind, name)| CloneTarget {
                api_group,
                kind: kind.unwrap_or_default(),
                name: name.unwrap_or_default(),
            }),
            label_filters: lists.next().flatten(),
            annotation_filters: lists.next().flatten(),
            template: has_template.then(|| TemplateFilters {
                label_filters: lists.next().flatten(),
                annotation_filters: lists.next().flatten(),
            }),
            new_mac_addresses: macs,
            new_smbios_serial: serial,
            patches,
            ..Default::default()
        };
        let annotations = [
            (extensions::STRATEGY.to_owned(), strategy),
            (extensions::SOURCE_NAMESPACE.to_owned(), namespace),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect();
        CloneInput { spec, annotations }
    }
}

/// The words by which a message names the field it is about.
const FIELD_WORDS: [&str; 12] = [
    "spec.",
    "annotation",
    "interface",
    "volumeNamePolicy",
    "Source",
    "source",
    "Target",
    "target",
    "newSMBiosSerial",
    "patch",
    "strategy",
    "newMacAddresses",
];

/// Every message is non-empty and names its field, except the message the API keeps from
/// upstream for a lone `!`.
fn check_messages(spec: &VirtualMachineCloneSpec, errors: &[String]) -> TestResult {
    prop_assert!(!errors.is_empty(), "Err without a message");
    for message in errors {
        prop_assert!(
            !message.trim().is_empty(),
            "an empty message in {:?}",
            errors
        );
        if FIELD_WORDS.iter().any(|word| message.contains(word)) {
            continue;
        }
        let lists = [
            spec.label_filters.as_ref(),
            spec.annotation_filters.as_ref(),
            spec.template
                .as_ref()
                .and_then(|t| t.label_filters.as_ref()),
            spec.template
                .as_ref()
                .and_then(|t| t.annotation_filters.as_ref()),
        ];
        let lone_negation = message.ends_with(v::NEGATION_ALONE)
            && lists
                .iter()
                .flatten()
                .flat_map(|l| l.iter())
                .any(|f| f == "!");
        prop_assert!(lone_negation, "message names no field: {:?}", message);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// Whatever the spec holds, validation answers, and every message says which field is wrong.
    #[test]
    fn validation_never_panics_and_names_the_field(input in arbitrary_spec()) {
        if let Err(errors) = validate(&input.clone_object()) {
            check_messages(&input.spec, &errors)?;
        }
    }

    /// Assembled from parts known to be good or bad, a spec is accepted exactly when every part
    /// and every cross-field rule is good, and every bad part gets its own message.
    #[test]
    fn validation_accepts_exactly_the_valid_specs((input, expected) in tagged_spec()) {
        match validate(&input.clone_object()) {
            Ok(()) => prop_assert!(expected.valid, "accepted an invalid clone: {:?}", input),
            Err(errors) => {
                prop_assert!(!expected.valid, "refused a valid clone: {:?}", errors);
                check_messages(&input.spec, &errors)?;
            }
        }
    }
}

// =============================================================================================
// Patch application on arbitrary input
// =============================================================================================

const KEYS: [&str; 8] = ["a", "b", "0", "1", "-", "~", "/", "x~1y"];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..3).prop_map(Value::from),
        strings(&KEYS).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(strings(&KEYS), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON pointers into documents made of [`KEYS`] (escaped and not), and some that are not
/// pointers at all.
fn pointer() -> impl Strategy<Value = String> {
    let segment = strings(&[
        "a", "b", "0", "1", "2", "-", "~0", "~1", "", "x~1y", "~", "~2",
    ]);
    prop_oneof![
        6 => prop::collection::vec(segment, 0..4)
            .prop_map(|segments| segments.iter().map(|s| format!("/{s}")).collect::<String>()),
        1 => "\\PC{0,8}",
    ]
}

/// Patch strings: mostly operation objects (of every op, some incomplete or with extra
/// members), some arbitrary text, some JSON that is not an object.
fn patch_string() -> impl Strategy<Value = String> {
    let operation = (
        strings(&[
            "add", "remove", "replace", "move", "copy", "test", "bogus", "",
        ]),
        prop::option::weighted(0.95, pointer()),
        prop::option::of(json_value()),
        prop::option::of(pointer()),
        any::<bool>(),
    )
        .prop_map(|(op, path, value, from, extra)| {
            let mut object = Map::new();
            object.insert("op".into(), Value::from(op));
            if let Some(path) = path {
                object.insert("path".into(), Value::from(path));
            }
            if let Some(value) = value {
                object.insert("value".into(), value);
            }
            if let Some(from) = from {
                object.insert("from".into(), Value::from(from));
            }
            if extra {
                object.insert("extra".into(), Value::from(1));
            }
            Value::Object(object).to_string()
        });
    prop_oneof![
        8 => operation,
        1 => "\\PC{0,24}",
        1 => json_value().prop_map(|v| v.to_string()),
    ]
}

/// The index of the operation an error blames.
fn blamed(error: &PatchError) -> TestResult<usize> {
    match error {
        PatchError::Unparsable { index, .. } | PatchError::Apply { index, .. } => Ok(*index),
        other => Err(fail("a list error that names no operation", other)),
    }
}

/// An error from a list names an operation of it, the first unparsable one or the one that
/// failed to apply; and the document is as it was.
fn check_failure(doc: &Value, after: &Value, patches: &[String], error: &PatchError) -> TestResult {
    prop_assert_eq!(after, doc, "a failed list changed the document ({})", error);
    let index = blamed(error)?;
    prop_assert!(index < patches.len(), "{} blames index {}", error, index);
    let parsed: Vec<bool> = patches.iter().map(|p| parse_operation(p).is_ok()).collect();
    match error {
        PatchError::Unparsable { .. } => {
            prop_assert!(!parsed[index], "{} blames a parsable operation", error);
            prop_assert!(
                parsed[..index].iter().all(|ok| *ok),
                "{} is not the first",
                error
            );
        }
        PatchError::Apply { patch, .. } => {
            prop_assert!(
                parsed.iter().all(|ok| *ok),
                "applied a list with an unparsable member"
            );
            prop_assert_eq!(patch, &patches[index]);
        }
        _ => {}
    }
    Ok(())
}

fn applied(
    apply: fn(&mut Value, &[String]) -> Result<(), PatchError>,
    doc: &Value,
    patches: &[String],
) -> Option<Value> {
    let mut doc = doc.clone();
    apply(&mut doc, patches).ok().map(|()| doc)
}

proptest! {
    #![proptest_config(config(1024))]

    /// Both appliers answer on any input, fail atomically and blame the right operation; strict
    /// success means lenient success with the same document, and strict never fails later than
    /// lenient.
    #[test]
    fn appliers_handle_any_patch_over_any_document(
        doc in json_value(),
        patches in prop::collection::vec(patch_string(), 0..5),
    ) {
        let mut strict = doc.clone();
        let strict_result = apply_strict(&mut strict, &patches);
        let mut lenient = doc.clone();
        let lenient_result = apply_kubevirt(&mut lenient, &patches);
        if let Err(error) = &strict_result {
            check_failure(&doc, &strict, &patches, error)?;
        }
        if let Err(error) = &lenient_result {
            check_failure(&doc, &lenient, &patches, error)?;
        }
        match (&strict_result, &lenient_result) {
            (Ok(()), Ok(())) => {
                prop_assert_eq!(&strict, &lenient);
            }
            (Ok(()), Err(error)) => {
                return Err(fail("strict applied, lenient failed", error));
            }
            (Err(_), Ok(())) => {}
            (Err(s), Err(l)) => {
                let (s_index, l_index) = (blamed(s)?, blamed(l)?);
                prop_assert!(s_index <= l_index, "strict failed at {}, lenient at {}", s_index, l_index);
                if matches!(s, PatchError::Unparsable { .. }) {
                    let both_unparsable = matches!(l, PatchError::Unparsable { .. });
                    prop_assert!(both_unparsable && s_index == l_index, "{} and {}", s, l);
                }
            }
        }
    }

    /// Applying a list at once equals applying its two parts one after the other.
    #[test]
    fn applying_in_parts_equals_applying_at_once(
        doc in json_value(),
        patches in prop::collection::vec(patch_string(), 0..6),
        split in any::<prop::sample::Index>(),
    ) {
        let at = split.index(patches.len() + 1);
        let (first, second) = patches.split_at(at);
        for apply in [apply_strict as fn(&mut Value, &[String]) -> Result<(), PatchError>, apply_kubevirt] {
            let whole = applied(apply, &doc, &patches);
            let parts = applied(apply, &doc, first).and_then(|mid| applied(apply, &mid, second));
            prop_assert_eq!(whole, parts);
        }
    }
}

// =============================================================================================
// decide on random worlds
// =============================================================================================

/// Which name a status records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// This clone's temporary object.
    Ours,
    /// The source snapshot's name.
    Golden,
    /// Something else.
    Other,
}

#[derive(Debug, Clone)]
struct StatusShape {
    phase: ClonePhase,
    snapshot: Option<Recorded>,
    restore: Option<Recorded>,
    target: Option<String>,
    ready: Option<(String, String)>,
    progressing: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    None,
    Tpm,
    Efi,
    Cbt(&'static str),
}

/// A VM: snapshot support of its two claim volumes (`None`: not reported), backend storage,
/// labels (realistic keys), interfaces and whether it uses `running`.
#[derive(Debug, Clone)]
struct VmShape {
    support: [Option<bool>; 2],
    backend: Backend,
    labels: BTreeMap<String, String>,
    macs: [Option<String>; 2],
    running: bool,
    firmware: bool,
}

/// What a content holds where the VM belongs.
#[derive(Debug, Clone)]
enum ContentVm {
    Vm(VmShape),
    Absent,
    Garbage(Value),
}

#[derive(Debug, Clone)]
struct ContentShape {
    /// Whether its name is the one the snapshot in use names.
    name_matches: bool,
    snapshot_name: Option<String>,
    vm: ContentVm,
    backups: Vec<String>,
}

#[derive(Debug, Clone)]
struct SnapshotShape {
    ready: Option<bool>,
    phase: Option<String>,
    failure_condition: bool,
    error: Option<String>,
    content_name_in_status: bool,
}

#[derive(Debug, Clone)]
struct RestoreShape {
    complete: Option<bool>,
    failure_condition: bool,
    claims: Vec<String>,
}

/// Who the VM named like the target belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetShape {
    /// Restored by this clone's restore (`lastRestoreUID` = `tmp-restore-<uid>-<restore uid>`).
    Ours,
    /// No `lastRestoreUID` at all.
    Foreign,
    /// Restored by another clone's restore.
    OtherRestore,
    /// `lastRestoreUID` = `tmp-restore-<uid>` exactly (no restore UID suffix).
    BarePrefix,
}

#[derive(Debug, Clone)]
struct RivalShape {
    uid: String,
    /// `Some(true)`: created before this clone, `Some(false)`: at the same time; `None`: no time.
    earlier: Option<bool>,
    phase: ClonePhase,
}

#[derive(Debug, Clone)]
struct Case {
    uid: String,
    deleting: bool,
    generation: Option<i64>,
    input: CloneInput,
    status: Option<StatusShape>,
    gate: FeatureGate,
    source_vm: Option<VmShape>,
    source_snapshot: Option<SnapshotShape>,
    temp_snapshot: Option<SnapshotShape>,
    content: Option<ContentShape>,
    restore: Option<RestoreShape>,
    target: Option<(TargetShape, bool)>,
    claims: BTreeMap<String, String>,
    rivals: Vec<RivalShape>,
    rejection: Option<CreateRejection>,
}

const PHASES: [ClonePhase; 7] = [
    ClonePhase::Unset,
    ClonePhase::SnapshotInProgress,
    ClonePhase::RestoreInProgress,
    ClonePhase::CreatingTargetVM,
    ClonePhase::Succeeded,
    ClonePhase::Failed,
    ClonePhase::Unknown,
];

const PENDING_REASONS: [EventReason; 8] = [
    EventReason::FeatureGateDisabled,
    EventReason::KubeVirtNotFound,
    EventReason::SourceDoesNotExist,
    EventReason::VMVolumeSnapshotsInvalid,
    EventReason::SnapshotCreationFailed,
    EventReason::RestoreCreationFailed,
    EventReason::RestoreError,
    EventReason::ObjectUnreadable,
];

/// Holds that can last past the snapshot: a refused restore that is retried, the gate seen off
/// by KubeVirt's restore admission, an error KubeVirt retries on the restore, an object that
/// cannot be read.
const LATE_PENDING_REASONS: [EventReason; 4] = [
    EventReason::FeatureGateDisabled,
    EventReason::RestoreCreationFailed,
    EventReason::RestoreError,
    EventReason::ObjectUnreadable,
];

const FAILURE_REASONS: [EventReason; 9] = [
    EventReason::InvalidSpec,
    EventReason::TargetExists,
    EventReason::SourceVMWithBackendStorageInvalid,
    EventReason::SnapshotFailed,
    EventReason::SnapshotCreationFailed,
    EventReason::SnapshotDeleted,
    EventReason::SnapshotContentInvalid,
    EventReason::RestoreCreationFailed,
    EventReason::RestoreFailed,
];

fn recorded() -> impl Strategy<Value = Recorded> {
    prop_oneof![4 => Just(Recorded::Ours), 1 => Just(Recorded::Golden), 1 => Just(Recorded::Other)]
}

fn old_condition() -> impl Strategy<Value = Option<(String, String)>> {
    prop::option::of((
        strings(&["True", "False", "Unknown"]),
        strings(&[
            "SourceDoesNotExist",
            "VMVolumeSnapshotsInvalid",
            "TargetExists",
            "Succeeded",
            "Pending",
            "SnapshotInProgress",
            "",
        ]),
    ))
}

prop_compose! {
    fn status_shape()(
        phase in select(&PHASES),
        snapshot in prop::option::of(recorded()),
        restore in prop::option::of(recorded()),
        target in prop::option::of(strings(&["t", "other-target"])),
        ready in old_condition(),
        progressing in old_condition(),
    ) -> StatusShape {
        StatusShape { phase, snapshot, restore, target, ready, progressing }
    }
}

fn support() -> impl Strategy<Value = Option<bool>> {
    prop_oneof![10 => Just(Some(true)), 1 => Just(Some(false)), 1 => Just(None)]
}

prop_compose! {
    fn vm_shape()(
        support in [support(), support()],
        backend in prop_oneof![
            12 => Just(Backend::None),
            1 => Just(Backend::Tpm),
            1 => Just(Backend::Efi),
            1 => select(&["Enabled", "Disabled", "", "PendingRestart"]).prop_map(Backend::Cbt),
        ],
        labels in prop::collection::btree_map(
            strings(&["app", "kubevirt.io/vm", "example.com/team", "a.b/c-d_e", "x~y", LAST_RESTORE_UID_ANNOTATION]),
            strings(&["x", "web", ""]),
            0..4,
        ),
        macs in [
            prop::option::of(strings(&["02:00:00:00:00:01", "02-00-00-00-00-0A"])),
            prop::option::of(strings(&["02:00:00:00:00:02"])),
        ],
        running in prop::bool::weighted(0.2),
        firmware in any::<bool>(),
    ) -> VmShape {
        VmShape { support, backend, labels, macs, running, firmware }
    }
}

impl VmShape {
    fn json(&self) -> Value {
        let statuses: Vec<Value> = ["root", "data"]
            .iter()
            .zip(self.support)
            .filter_map(|(name, enabled)| enabled.map(|e| json!({"name": name, "enabled": e})))
            .collect();
        let interfaces: Vec<Value> = ["default", "storage"]
            .iter()
            .zip(&self.macs)
            .map(|(name, mac)| match mac {
                Some(mac) => json!({"name": name, "bridge": {}, "macAddress": mac}),
                None => json!({"name": name, "masquerade": {}}),
            })
            .collect();
        let mut devices = Map::new();
        devices.insert("interfaces".into(), Value::Array(interfaces));
        if self.backend == Backend::Tpm {
            devices.insert("tpm".into(), json!({"persistent": true}));
        }
        let mut domain = Map::new();
        domain.insert("devices".into(), Value::Object(devices));
        if self.backend == Backend::Efi {
            domain.insert(
                "firmware".into(),
                json!({"bootloader": {"efi": {"persistent": true}}}),
            );
        } else if self.firmware {
            domain.insert(
                "firmware".into(),
                json!({"serial": "source-serial", "uuid": "0f9f4e33-1a3b-4b3b-9d36-000000000001"}),
            );
        }
        let mut status = Map::new();
        status.insert("volumeSnapshotStatuses".into(), Value::Array(statuses));
        if let Backend::Cbt(state) = self.backend {
            status.insert("changedBlockTracking".into(), json!({"state": state}));
        }
        let mut spec = json!({
            "template": {
                "metadata": {"labels": self.labels, "annotations": {"note": "n"}},
                "spec": {
                    "domain": Value::Object(domain),
                    "volumes": [
                        {"name": "root", "persistentVolumeClaim": {"claimName": "root-pvc"}},
                        {"name": "data", "dataVolume": {"name": "data-dv"}},
                        {"name": "cloudinit", "cloudInitNoCloud": {"userData": "x"}},
                    ],
                },
            },
        });
        if let Some(spec) = spec.as_object_mut() {
            if self.running {
                spec.insert("running".into(), Value::Bool(false));
            } else {
                spec.insert("runStrategy".into(), Value::from("Halted"));
            }
        }
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": SOURCE_VM, "namespace": NAMESPACE, "labels": self.labels,
                         "annotations": {"note": "n", LAST_RESTORE_UID_ANNOTATION: "old"}},
            "spec": spec,
            "status": Value::Object(status),
        })
    }
}

prop_compose! {
    fn snapshot_shape()(
        ready in prop_oneof![6 => Just(Some(true)), 1 => Just(Some(false)), 1 => Just(None)],
        phase in prop::option::of(strings(&["Succeeded", "InProgress", "Failed", "Unknown"])),
        failure_condition in prop::bool::weighted(0.1),
        error in prop::option::weighted(0.1, strings(&["deadline exceeded", ""])),
        content_name_in_status in any::<bool>(),
    ) -> SnapshotShape {
        SnapshotShape { ready, phase, failure_condition, error, content_name_in_status }
    }
}

fn content_vm() -> impl Strategy<Value = ContentVm> {
    prop_oneof![
        8 => vm_shape().prop_map(ContentVm::Vm),
        1 => Just(ContentVm::Absent),
        1 => select(&[
            Value::Null,
            json!("text"),
            json!([1, 2]),
            json!({"spec": "not an object"}),
            json!({"spec": {"template": 5}}),
            json!({"spec": {"template": {"spec": {"volumes": "none"}}}}),
            json!({"metadata": {"labels": {"a,b:c": "x", "k": "v"}}, "spec": {}}),
        ])
        .prop_map(ContentVm::Garbage),
    ]
}

prop_compose! {
    fn content_shape()(
        name_matches in prop::bool::weighted(0.85),
        snapshot_name in prop_oneof![6 => Just(Some("named".to_owned())), 1 => Just(None)],
        vm in content_vm(),
        backups in prop_oneof![
            8 => Just(vec!["root".to_owned(), "data".to_owned()]),
            1 => prop::collection::vec(strings(&["root", "data", "cloudinit"]), 0..3),
        ],
    ) -> ContentShape {
        ContentShape { name_matches, snapshot_name, vm, backups }
    }
}

prop_compose! {
    fn restore_shape()(
        complete in prop::option::of(any::<bool>()),
        failure_condition in prop::bool::weighted(0.15),
        claims in prop::collection::vec(strings(&CLAIMS), 0..3),
    ) -> RestoreShape {
        RestoreShape { complete, failure_condition, claims }
    }
}

prop_compose! {
    fn rival()(
        uid in strings(&["uid-0", "uid-1", "uid-9"]),
        earlier in prop::option::of(any::<bool>()),
        phase in select(&PHASES),
    ) -> RivalShape {
        RivalShape { uid, earlier, phase }
    }
}

fn rejection() -> impl Strategy<Value = Option<CreateRejection>> {
    prop::option::weighted(
        0.15,
        (
            select(&[Child::Snapshot, Child::Restore, Child::TargetDryRun]),
            select(&[400u16, 403, 409, 422, 500]),
            strings(&["", "Invalid", "BadRequest"]),
            strings(&[
                "denied by admission",
                "VirtualMachineRestore \"x\" in progress",
                "admission webhook \"w\" denied the request: Snapshot/Restore feature gate not enabled",
                "",
            ]),
        )
            .prop_map(|(child, code, reason, message)| CreateRejection {
                child,
                code,
                reason,
                message,
            }),
    )
}

fn spec_for_decide() -> impl Strategy<Value = CloneInput> {
    // Valid specs mostly, so most worlds get past validation.
    (tagged_spec().boxed(), prop::bool::weighted(0.15))
        .prop_filter_map("mostly valid specs", |((spec, expected), keep_invalid)| {
            (expected.valid || keep_invalid).then_some(spec)
        })
}

prop_compose! {
    fn clone_part()(
        uid in prop_oneof![6 => Just("uid-1".to_owned()), 1 => Just(String::new()), 1 => "[a-z0-9]{1,6}"],
        deleting in prop::bool::weighted(0.05),
        generation in prop::option::weighted(0.9, 1i64..4),
        spec in spec_for_decide(),
        status in prop::option::weighted(0.85, status_shape()),
    ) -> (String, bool, Option<i64>, CloneInput, Option<StatusShape>) {
        (uid, deleting, generation, spec, status)
    }
}

prop_compose! {
    fn world_part()(
        gate in prop_oneof![8 => Just(FeatureGate::Enabled), 1 => Just(FeatureGate::Disabled), 1 => Just(FeatureGate::KubeVirtNotFound)],
        source_vm in prop::option::weighted(0.8, vm_shape()),
        source_snapshot in prop::option::weighted(0.7, snapshot_shape()),
        temp_snapshot in prop::option::weighted(0.6, snapshot_shape()),
        content in prop::option::weighted(0.7, content_shape()),
        restore in prop::option::weighted(0.5, restore_shape()),
        target in prop::option::weighted(0.4, (prop_oneof![4 => Just(TargetShape::Ours), 1 => Just(TargetShape::Foreign), 1 => Just(TargetShape::OtherRestore), 1 => Just(TargetShape::BarePrefix)], any::<bool>())),
        claims in prop::collection::btree_map(strings(&CLAIMS), strings(&["Bound", "Pending", "Lost"]), 0..3),
        rivals in prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(rival(), 1..3)],
        rejection in rejection(),
    ) -> (FeatureGate, Option<VmShape>, Option<SnapshotShape>, Option<SnapshotShape>, Option<ContentShape>, Option<RestoreShape>, Option<(TargetShape, bool)>, BTreeMap<String, String>, Vec<RivalShape>, Option<CreateRejection>) {
        (gate, source_vm, source_snapshot, temp_snapshot, content, restore, target, claims, rivals, rejection)
    }
}

/// Any world: every part random on its own (most of them end in a failure or a wait).
fn random_case() -> impl Strategy<Value = Case> {
    (clone_part().boxed(), world_part().boxed()).prop_map(
        |(
            (uid, deleting, generation, spec, status),
            (
                gate,
                source_vm,
                source_snapshot,
                temp_snapshot,
                content,
                restore,
                target,
                claims,
                rivals,
                rejection,
            ),
        )| Case {
            uid,
            deleting,
            generation,
            input: spec,
            status,
            gate,
            source_vm,
            source_snapshot,
            temp_snapshot,
            content,
            restore,
            target,
            claims,
            rivals,
            rejection,
        },
    )
}

/// A world that could have come out of a real clone's life at a random step: a valid spec, the
/// gate on, a healthy source, ready snapshots and their valid content, no rival, and at most a
/// target made by this clone; status, restore, claims and refusals stay random.
fn coherent_case() -> impl Strategy<Value = Case> {
    (
        random_case().boxed(),
        tagged_spec()
            .boxed()
            .prop_filter_map("valid specs", |(spec, e)| e.valid.then_some(spec)),
        vm_shape(),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(mut case, spec, vm, target)| {
            let healthy = |mut vm: VmShape| {
                vm.support = [Some(true), Some(true)];
                vm.backend = Backend::None;
                vm
            };
            let ready = |snapshot: &mut SnapshotShape| {
                snapshot.ready = Some(true);
                snapshot.phase = Some("Succeeded".to_owned());
                snapshot.failure_condition = false;
                snapshot.error = None;
            };
            case.input = spec;
            case.deleting = false;
            case.gate = FeatureGate::Enabled;
            case.rivals.clear();
            case.source_vm = Some(healthy(case.source_vm.take().unwrap_or(vm)));
            case.source_snapshot.get_or_insert(SnapshotShape {
                ready: None,
                phase: None,
                failure_condition: false,
                error: None,
                content_name_in_status: true,
            });
            case.source_snapshot
                .iter_mut()
                .chain(case.temp_snapshot.iter_mut())
                .for_each(ready);
            let content_vm = match case.source_vm.clone() {
                Some(vm) => ContentVm::Vm(vm),
                None => ContentVm::Absent,
            };
            case.content = Some(ContentShape {
                name_matches: true,
                snapshot_name: Some("named".to_owned()),
                vm: content_vm,
                backups: vec!["root".to_owned(), "data".to_owned()],
            });
            case.target = target.map(|created| (TargetShape::Ours, created));
            if let Some(status) = &mut case.status {
                if status.phase == ClonePhase::Failed {
                    status.phase = ClonePhase::Unset;
                }
                status.snapshot = status.snapshot.map(|_| Recorded::Ours);
                status.restore = status.restore.map(|_| Recorded::Ours);
            }
            case
        })
}

/// Boxed: the unboxed type nests so deep that generating a case overflows a test thread's
/// stack in debug builds.
fn case() -> BoxedStrategy<Case> {
    prop_oneof![2 => random_case().boxed(), 1 => coherent_case().boxed()].boxed()
}

/// The objects of one case, owned, so an [`Observed`] can borrow them.
struct World {
    clone: VirtualMachineClone,
    gate: FeatureGate,
    source_vm: Option<VirtualMachine>,
    source_snapshot: Option<VirtualMachineSnapshot>,
    temp_snapshot: Option<VirtualMachineSnapshot>,
    content: Option<VirtualMachineSnapshotContent>,
    restore: Option<VirtualMachineRestore>,
    target: Option<VirtualMachine>,
    claims: BTreeMap<String, String>,
    rivals: Vec<Rival>,
    rejection: Option<CreateRejection>,
    now: Time,
}

const CREATED: &str = "2026-01-01T00:00:00Z";

fn condition_of(type_: &str, shape: &Option<(String, String)>) -> Option<CloneCondition> {
    shape.as_ref().map(|(status, reason)| CloneCondition {
        type_: type_.to_owned(),
        status: status.clone(),
        reason: Some(reason.clone()).filter(|r| !r.is_empty()),
        message: Some("old".to_owned()),
        ..Default::default()
    })
}

fn snapshot_json(name: &str, uid: &str, shape: &SnapshotShape) -> Value {
    let mut status = Map::new();
    if let Some(ready) = shape.ready {
        status.insert("readyToUse".into(), Value::Bool(ready));
    }
    if let Some(phase) = &shape.phase {
        status.insert("phase".into(), Value::from(phase.as_str()));
    }
    if shape.failure_condition {
        status.insert(
            "conditions".into(),
            json!([{"type": "Failure", "status": "True", "reason": "Failed", "message": "disk gone"}]),
        );
    }
    if let Some(error) = &shape.error {
        status.insert("error".into(), json!({"message": error}));
    }
    if shape.content_name_in_status {
        status.insert(
            "virtualMachineSnapshotContentName".into(),
            Value::from(format!("content-of-{name}")),
        );
    }
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid},
        "spec": {"source": {"apiGroup": KUBEVIRT_GROUP, "kind": VIRTUAL_MACHINE_KIND, "name": SOURCE_VM}},
        "status": Value::Object(status),
    })
}

impl Case {
    fn world(&self) -> TestResult<World> {
        let uid = self.uid.as_str();
        let mut clone = self.input.clone_object();
        clone.metadata.uid = Some(uid.to_owned()).filter(|u| !u.is_empty());
        clone.metadata.generation = self.generation;
        clone.metadata.creation_timestamp = Some(time(CREATED)?);
        if self.deleting {
            clone.metadata.deletion_timestamp = Some(time("2026-01-01T00:09:00Z")?);
        }
        clone.status = self.status.as_ref().map(|s| {
            let name = |r: Recorded, ours: String| match r {
                Recorded::Ours => ours,
                Recorded::Golden => SOURCE_SNAPSHOT.to_owned(),
                Recorded::Other => "someone-elses".to_owned(),
            };
            VirtualMachineCloneStatus {
                phase: s.phase,
                snapshot_name: s.snapshot.map(|r| name(r, temp_snapshot_name(uid))),
                restore_name: s.restore.map(|r| name(r, temp_restore_name(uid))),
                target_name: s.target.clone(),
                conditions: [
                    condition_of(condition::PROGRESSING, &s.progressing),
                    condition_of(condition::READY, &s.ready),
                ]
                .into_iter()
                .flatten()
                .collect(),
                ..Default::default()
            }
        });

        let source_vm = match &self.source_vm {
            Some(shape) => Some(typed("source VM", shape.json())?),
            None => None,
        };
        let source_snapshot: Option<VirtualMachineSnapshot> = match &self.source_snapshot {
            Some(shape) => Some(typed(
                "source snapshot",
                snapshot_json(SOURCE_SNAPSHOT, "golden-uid", shape),
            )?),
            None => None,
        };
        let temp_snapshot: Option<VirtualMachineSnapshot> = match &self.temp_snapshot {
            Some(shape) => Some(typed(
                "temporary snapshot",
                snapshot_json(&temp_snapshot_name(uid), "tmp-uid", shape),
            )?),
            None => None,
        };
        let in_use = if self.input.spec.source.kind == VIRTUAL_MACHINE_SNAPSHOT_KIND {
            source_snapshot.as_ref()
        } else {
            temp_snapshot.as_ref()
        };
        let content = match &self.content {
            Some(shape) => {
                let name = match (shape.name_matches, in_use) {
                    (true, Some(snapshot)) => content_name(snapshot),
                    _ => "vmsnapshot-content-unrelated".to_owned(),
                };
                let mut spec = Map::new();
                if let Some(snapshot_name) = &shape.snapshot_name {
                    spec.insert(
                        "virtualMachineSnapshotName".into(),
                        Value::from(snapshot_name.as_str()),
                    );
                }
                let vm = match &shape.vm {
                    ContentVm::Vm(vm) => Some(vm.json()),
                    ContentVm::Absent => None,
                    ContentVm::Garbage(value) => Some(value.clone()),
                };
                spec.insert(
                    "source".into(),
                    vm.map_or_else(|| json!({}), |vm| json!({"virtualMachine": vm})),
                );
                let backups: Vec<Value> = shape
                    .backups
                    .iter()
                    .map(|b| json!({"volumeName": b, "volumeSnapshotName": format!("vs-{b}")}))
                    .collect();
                spec.insert("volumeBackups".into(), Value::Array(backups));
                Some(typed(
                    "content",
                    json!({
                        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent",
                        "metadata": {"name": name, "namespace": NAMESPACE},
                        "spec": Value::Object(spec),
                    }),
                )?)
            }
            None => None,
        };
        let restore = match &self.restore {
            Some(shape) => {
                let mut status = Map::new();
                if let Some(complete) = shape.complete {
                    status.insert("complete".into(), Value::Bool(complete));
                }
                if shape.failure_condition {
                    status.insert(
                        "conditions".into(),
                        json!([{"type": "Failure", "status": "True", "reason": "Failed", "message": "target not ready"}]),
                    );
                }
                let restores: Vec<Value> = shape
                    .claims
                    .iter()
                    .map(|c| json!({"volumeName": "root", "persistentVolumeClaim": c}))
                    .collect();
                status.insert("restores".into(), Value::Array(restores));
                Some(typed(
                    "restore",
                    json!({
                        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
                        "metadata": {"name": temp_restore_name(uid), "namespace": NAMESPACE},
                        "spec": {"target": {"apiGroup": KUBEVIRT_GROUP, "kind": VIRTUAL_MACHINE_KIND, "name": "t"},
                                 "virtualMachineSnapshotName": temp_snapshot_name(uid)},
                        "status": Value::Object(status),
                    }),
                )?)
            }
            None => None,
        };
        let target = match self.target {
            Some((shape, created)) => {
                let mut metadata = Map::new();
                metadata.insert("name".into(), Value::from("t"));
                metadata.insert("namespace".into(), Value::from(NAMESPACE));
                if created {
                    metadata.insert(
                        "creationTimestamp".into(),
                        Value::from("2026-01-01T00:05:00Z"),
                    );
                }
                let last = match shape {
                    TargetShape::Ours => Some(format!("{}-8d7c", temp_restore_name(uid))),
                    TargetShape::Foreign => None,
                    TargetShape::OtherRestore => Some("tmp-restore-another-clone-1".to_owned()),
                    TargetShape::BarePrefix => Some(temp_restore_name(uid)),
                };
                if let Some(last) = last {
                    metadata.insert(
                        "annotations".into(),
                        json!({LAST_RESTORE_UID_ANNOTATION: last}),
                    );
                }
                Some(typed(
                    "target",
                    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                           "metadata": Value::Object(metadata), "spec": {}}),
                )?)
            }
            None => None,
        };
        let rivals = self
            .rivals
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let creation_timestamp = match r.earlier {
                    Some(true) => Some(time("2025-12-31T23:00:00Z")?),
                    Some(false) => Some(time(CREATED)?),
                    None => None,
                };
                Ok(Rival {
                    name: format!("rival-{i}"),
                    uid: r.uid.clone(),
                    creation_timestamp,
                    phase: r.phase,
                })
            })
            .collect::<TestResult<Vec<_>>>()?;
        Ok(World {
            clone,
            gate: self.gate,
            source_vm,
            source_snapshot,
            temp_snapshot,
            content,
            restore,
            target,
            claims: self.claims.clone(),
            rivals,
            rejection: self.rejection.clone(),
            now: time("2026-01-01T00:10:00Z")?,
        })
    }
}

impl World {
    fn observed(&self) -> Observed<'_> {
        Observed {
            clone: &self.clone,
            now: self.now.clone(),
            feature_gate: self.gate,
            source_vm: self.source_vm.as_ref(),
            source_snapshot: self.source_snapshot.as_ref(),
            temp_snapshot: self.temp_snapshot.as_ref(),
            content: self.content.as_ref(),
            restore: self.restore.as_ref(),
            target: self.target.as_ref(),
            claim_phases: self.claims.clone(),
            rivals: self.rivals.clone(),
            rejection: self.rejection.clone(),
            restore_stall_timeout: clone_core::decide::DEFAULT_RESTORE_STALL_TIMEOUT,
            source_claims: Default::default(),
            target_full: None,
            data_volumes: Default::default(),
            access: None,
            source_held_by: None,
        }
    }

    /// The same world, the clone carrying `status` (the next pass, nothing else changed).
    fn with_status(&self, status: &VirtualMachineCloneStatus) -> World {
        let mut clone = self.clone.clone();
        clone.status = Some(status.clone());
        World {
            clone,
            gate: self.gate,
            source_vm: self.source_vm.clone(),
            source_snapshot: self.source_snapshot.clone(),
            temp_snapshot: self.temp_snapshot.clone(),
            content: self.content.clone(),
            restore: self.restore.clone(),
            target: self.target.clone(),
            claims: self.claims.clone(),
            rivals: self.rivals.clone(),
            rejection: self.rejection.clone(),
            now: self.now.clone(),
        }
    }
}

/// Where a phase is on the way to success (`Failed` is off the way).
fn rank(phase: ClonePhase) -> u8 {
    match phase {
        ClonePhase::Unset | ClonePhase::Unknown => 0,
        ClonePhase::SnapshotInProgress => 1,
        ClonePhase::RestoreInProgress => 2,
        ClonePhase::CreatingTargetVM => 3,
        ClonePhase::Succeeded => 4,
        ClonePhase::Failed => 5,
        _ => 0,
    }
}

fn ready(d: &Decision) -> TestResult<&CloneCondition> {
    d.status
        .condition(condition::READY)
        .ok_or_else(|| fail("no Ready condition", format!("{:?}", d.status)))
}

fn progressing(d: &Decision) -> TestResult<&CloneCondition> {
    d.status
        .condition(condition::PROGRESSING)
        .ok_or_else(|| fail("no Progressing condition", format!("{:?}", d.status)))
}

fn is_one_of(reason: Option<&str>, reasons: &[EventReason]) -> bool {
    reasons.iter().any(|r| Some(r.as_str()) == reason)
}

/// A child object the clone creates is owned by the clone alone, as its controller, in the
/// clone's namespace.
fn check_owned(
    clone: &VirtualMachineClone,
    name: Option<&str>,
    namespace: Option<&str>,
    owners: Option<&Vec<OwnerReference>>,
    expected_name: &str,
) -> TestResult {
    prop_assert_eq!(name, Some(expected_name));
    prop_assert_eq!(namespace, clone.metadata.namespace.as_deref());
    let owners = owners.ok_or_else(|| fail("a child without owners", expected_name))?;
    prop_assert_eq!(owners.len(), 1, "owners: {:?}", owners);
    let owner = &owners[0];
    prop_assert_eq!(owner.kind.as_str(), KIND);
    prop_assert!(owner.api_version.starts_with("clone.kubevirt.io/"));
    prop_assert_eq!(Some(owner.name.as_str()), clone.metadata.name.as_deref());
    prop_assert_eq!(
        owner.uid.as_str(),
        clone.metadata.uid.as_deref().unwrap_or_default()
    );
    prop_assert_eq!(owner.controller, Some(true));
    prop_assert_eq!(owner.block_owner_deletion, Some(true));
    Ok(())
}

/// The invariants of one decision.
fn check_decision(o: &Observed<'_>, d: &Decision) -> TestResult {
    let clone = o.clone;
    let spec = &clone.spec;
    let old = clone.status.clone().unwrap_or_default();
    let uid = clone.metadata.uid.as_deref().unwrap_or_default();
    let tmp_snapshot = temp_snapshot_name(uid);
    let tmp_restore = temp_restore_name(uid);
    let vm_source = spec.source.kind != VIRTUAL_MACHINE_SNAPSHOT_KIND;
    let names = lookups(clone);

    // A clone being deleted is the garbage collector's.
    if clone.metadata.deletion_timestamp.is_some() {
        prop_assert_eq!(&d.action, &Action::Nothing);
        prop_assert_eq!(&d.status, &old);
        prop_assert!(d.events.is_empty());
        return Ok(());
    }

    // Deletions name only this clone's temporary objects; a source snapshot is never deleted.
    if let Action::Cleanup { restore, snapshot } = &d.action {
        prop_assert!(restore.is_some() || snapshot.is_some(), "an empty cleanup");
        prop_assert!(
            restore.as_deref().is_none_or(|r| r == tmp_restore),
            "deletes restore {:?}",
            restore
        );
        prop_assert!(
            snapshot.as_deref().is_none_or(|s| s == tmp_snapshot),
            "deletes snapshot {:?}",
            snapshot
        );
        prop_assert!(
            vm_source || snapshot.is_none(),
            "deletes the source snapshot {:?}",
            snapshot
        );
    }
    for event in &d.events {
        prop_assert!(
            !event.message.is_empty(),
            "an event without a note: {:?}",
            event
        );
    }

    // Failed is final: no event, no new condition; at most the temporary objects are released
    // (and their names cleared).
    if old.phase == ClonePhase::Failed {
        prop_assert_eq!(d.status.phase, ClonePhase::Failed);
        prop_assert!(
            d.events.is_empty(),
            "a failed clone published {:?}",
            d.events
        );
        prop_assert!(
            matches!(d.action, Action::Nothing | Action::Cleanup { .. }),
            "{:?}",
            d.action
        );
        prop_assert!(
            d.status.snapshot_name.is_none() || d.status.snapshot_name == old.snapshot_name
        );
        prop_assert!(d.status.restore_name.is_none() || d.status.restore_name == old.restore_name);
        let mut unchanged = old.clone();
        unchanged.snapshot_name.clone_from(&d.status.snapshot_name);
        unchanged.restore_name.clone_from(&d.status.restore_name);
        prop_assert_eq!(&d.status, &unchanged, "a failed clone's status changed");
        return Ok(());
    }

    prop_assert_eq!(
        d.status.target_name.as_deref(),
        Some(names.target_name.as_str())
    );
    let derived = target_name(clone);
    prop_assert_eq!(&names.target_name, &derived);

    // Conditions: exactly Progressing and Ready, with reasons, texts and the generation.
    prop_assert_eq!(d.status.conditions.len(), 2, "{:?}", d.status.conditions);
    for c in &d.status.conditions {
        prop_assert!(
            c.reason.as_deref().is_some_and(|r| !r.is_empty()),
            "{:?}",
            c
        );
        prop_assert!(
            c.message.as_deref().is_some_and(|m| !m.is_empty()),
            "{:?}",
            c
        );
        prop_assert!(c.status == "True" || c.status == "False", "{:?}", c);
        prop_assert!(c.last_transition_time.is_some());
    }
    let ready = ready(d)?;
    let progressing = progressing(d)?;
    let ready_reason = ready.reason.as_deref();
    let phase = d.status.phase;

    // The phase only moves forward, or to Failed; Unknown is never set.
    prop_assert!(
        phase == ClonePhase::Failed || rank(phase) >= rank(old.phase),
        "{:?} -> {:?}",
        old.phase,
        phase
    );
    prop_assert!(phase != ClonePhase::Unknown || old.phase == ClonePhase::Unknown);

    match phase {
        ClonePhase::Failed => {
            prop_assert_eq!(ready.status.as_str(), "False");
            prop_assert!(
                is_one_of(ready_reason, &FAILURE_REASONS),
                "failure reason {:?}",
                ready_reason
            );
            prop_assert_eq!(progressing.status.as_str(), "False");
            prop_assert_eq!(
                progressing.reason.as_deref(),
                Some(condition::REASON_FAILED)
            );
            prop_assert_eq!(&d.action, &Action::Nothing);
            prop_assert!(
                d.events
                    .iter()
                    .any(|e| Some(e.reason.as_str()) == ready_reason
                        && Some(e.message.as_str()) == ready.message.as_deref()),
                "failed without its event: {:?}",
                d.events
            );
        }
        ClonePhase::Succeeded => {
            prop_assert_eq!(ready.status.as_str(), "True");
            prop_assert_eq!(ready_reason, Some(condition::REASON_SUCCEEDED));
            prop_assert_eq!(progressing.status.as_str(), "False");
            prop_assert_eq!(
                progressing.reason.as_deref(),
                Some(condition::REASON_SUCCEEDED)
            );
            if old.phase != ClonePhase::Succeeded {
                // Success is claimed only over a VM this clone's restore made.
                let ours = format!("{tmp_restore}-");
                let last = o
                    .target
                    .and_then(|t| t.metadata.annotations.as_ref())
                    .and_then(|a| a.get(LAST_RESTORE_UID_ANNOTATION));
                prop_assert!(
                    last.is_some_and(|l| l.starts_with(&ours)),
                    "succeeded over {:?}",
                    o.target
                );
                prop_assert!(d.status.creation_time.is_some());
            }
        }
        _ if progressing.reason.as_deref() == Some(condition::REASON_PENDING) => {
            prop_assert_eq!(progressing.status.as_str(), "False");
            prop_assert_eq!(ready.status.as_str(), "False");
            prop_assert!(
                is_one_of(ready_reason, &PENDING_REASONS),
                "pending reason {:?}",
                ready_reason
            );
            prop_assert!(
                matches!(
                    phase,
                    ClonePhase::Unset | ClonePhase::SnapshotInProgress | ClonePhase::Unknown
                ) || (phase == ClonePhase::RestoreInProgress
                    && is_one_of(ready_reason, &LATE_PENDING_REASONS))
                    // The DataVolume strategy re-creates a target deleted before it finished.
                    || (phase == ClonePhase::CreatingTargetVM
                        && old.restore_name.is_none()
                        && o.target.is_none()),
                "pending in {:?} with {:?}",
                phase,
                ready_reason
            );
            prop_assert_eq!(&d.action, &Action::Nothing);
        }
        _ => {
            prop_assert_eq!(progressing.status.as_str(), "True");
            prop_assert_eq!(progressing.reason.as_deref(), Some(phase_reason(phase)));
            prop_assert_eq!(ready.status.as_str(), "False");
            prop_assert_eq!(ready_reason, Some(phase_reason(phase)));
        }
    }

    // An invalid spec fails every clone that has not succeeded, before anything is created.
    if old.phase != ClonePhase::Succeeded && validate(clone).is_err() {
        prop_assert_eq!(phase, ClonePhase::Failed);
        prop_assert_eq!(ready_reason, Some(EventReason::InvalidSpec.as_str()));
    }

    // A refused creation is never repeated in the same pass.
    if let Some(rejection) = &o.rejection {
        let repeated = match rejection.child {
            Child::Snapshot => matches!(d.action, Action::CreateSnapshot(_)),
            Child::Restore | Child::TargetDryRun => matches!(d.action, Action::CreateRestore(..)),
            Child::TargetVM => matches!(d.action, Action::CreateTargetVM(_)),
        };
        prop_assert!(!repeated, "created the refused {:?} again", rejection.child);
    }

    match &d.action {
        Action::Nothing => {}
        Action::CreateSnapshot(snapshot) => {
            let meta = &snapshot.metadata;
            check_owned(
                clone,
                meta.name.as_deref(),
                meta.namespace.as_deref(),
                meta.owner_references.as_ref(),
                &tmp_snapshot,
            )?;
            prop_assert!(vm_source, "a snapshot for a snapshot source");
            prop_assert_eq!(snapshot.spec.source.kind.as_str(), VIRTUAL_MACHINE_KIND);
            prop_assert_eq!(
                snapshot.spec.source.api_group.as_deref(),
                Some(KUBEVIRT_GROUP)
            );
            prop_assert_eq!(&snapshot.spec.source.name, &spec.source.name);
            prop_assert_eq!(o.feature_gate, FeatureGate::Enabled);
            prop_assert!(o.source_vm.is_some() && o.temp_snapshot.is_none());
            prop_assert!(
                old.snapshot_name.is_none(),
                "re-created the recorded snapshot {:?}",
                old.snapshot_name
            );
            prop_assert!(matches!(
                old.phase,
                ClonePhase::Unset | ClonePhase::SnapshotInProgress | ClonePhase::Unknown
            ));
            prop_assert_eq!(phase, ClonePhase::SnapshotInProgress);
            prop_assert_eq!(
                d.status.snapshot_name.as_deref(),
                Some(tmp_snapshot.as_str())
            );
        }
        Action::CreateRestore(restore, _) => {
            let meta = &restore.metadata;
            check_owned(
                clone,
                meta.name.as_deref(),
                meta.namespace.as_deref(),
                meta.owner_references.as_ref(),
                &tmp_restore,
            )?;
            prop_assert!(
                o.restore.is_none() && o.target.is_none(),
                "a second restore, or one over a VM"
            );
            prop_assert_eq!(&restore.spec.target.name, &names.target_name);
            prop_assert_eq!(restore.spec.target.kind.as_str(), VIRTUAL_MACHINE_KIND);
            prop_assert_eq!(
                restore.spec.target.api_group.as_deref(),
                Some(KUBEVIRT_GROUP)
            );
            let snapshot = if vm_source {
                &tmp_snapshot
            } else {
                &spec.source.name
            };
            prop_assert_eq!(&restore.spec.virtual_machine_snapshot_name, snapshot);
            prop_assert_eq!(
                restore.spec.volume_restore_policy.as_deref(),
                spec.volume_name_policy.as_ref().map(|p| p.as_str())
            );
            let in_use = if vm_source {
                o.temp_snapshot
            } else {
                o.source_snapshot
            };
            let in_use =
                in_use.ok_or_else(|| fail("a restore without a snapshot", &tmp_restore))?;
            prop_assert!(
                o.content.is_some_and(
                    |c| c.metadata.name.as_deref() == Some(content_name(in_use).as_str())
                ),
                "a restore without the snapshot's content"
            );
            if rank(old.phase) < rank(ClonePhase::RestoreInProgress) {
                prop_assert!(
                    in_use.status.as_ref().is_some_and(|s| s.is_ready()),
                    "restored from a snapshot that is not ready"
                );
            }
            prop_assert_eq!(phase, ClonePhase::RestoreInProgress);
            prop_assert_eq!(d.status.restore_name.as_deref(), Some(tmp_restore.as_str()));
            let patches = restore.spec.patches.clone().unwrap_or_default();
            prop_assert!(
                restore.spec.patches.as_ref().is_none_or(|p| !p.is_empty()),
                "an empty patch list"
            );
            prop_assert!(
                patches.ends_with(spec.patches.as_deref().unwrap_or_default()),
                "the user's patches are not last"
            );
            for patch in &patches {
                parse_operation(patch).map_err(|e| fail("an unparsable patch", e))?;
                let operation: Value = serde_json::from_str(patch).map_err(|e| fail(patch, e))?;
                let path = operation
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                prop_assert!(
                    PATCH_PATH_PREFIXES.iter().any(|p| path.starts_with(p)),
                    "path {} in {}",
                    path,
                    patch
                );
                // KubeVirt's admission passes every operation, except the removal of a key that
                // holds `,` or `:` itself (no real label key does; see identity.rs).
                if !path.contains([',', ':']) {
                    prop_assert!(
                        passes_kubevirt_naive_check(patch),
                        "KubeVirt would refuse {}",
                        patch
                    );
                }
            }
        }
        Action::Cleanup { .. } => {
            prop_assert_eq!(phase, ClonePhase::Succeeded);
            prop_assert!(d.status.snapshot_name.is_none() && d.status.restore_name.is_none());
            if let Some(restore) = o.restore {
                let status = restore.status.clone().unwrap_or_default();
                prop_assert!(
                    status
                        .claims()
                        .all(|c| o.claim_phases.get(c).map(String::as_str) == Some("Bound")),
                    "cleaned up before every PVC was bound"
                );
            }
        }
        Action::DeleteClone => {
            prop_assert_eq!(old.phase, ClonePhase::Succeeded);
            prop_assert_eq!(phase, ClonePhase::Succeeded);
            prop_assert!(o.target.is_none(), "deleted a clone whose target exists");
        }
        Action::CreateTargetVM(vm) => {
            // Never over an existing VM, always under the target's name, marked as this clone's.
            prop_assert!(
                o.target.is_none(),
                "created a target VM over an existing one"
            );
            prop_assert_eq!(phase, ClonePhase::CreatingTargetVM);
            let target = target_name(clone);
            prop_assert_eq!(
                vm.pointer("/metadata/name").and_then(|v| v.as_str()),
                Some(target.as_str())
            );
            let marker = format!(
                "/metadata/annotations/{}",
                CREATED_BY_CLONE_ANNOTATION.replace('/', "~1")
            );
            prop_assert_eq!(
                vm.pointer(&marker).and_then(|v| v.as_str()),
                clone.metadata.uid.as_deref()
            );
        }
        Action::ReviewAccess(review) => {
            prop_assert!(o.access.is_none(), "asked for access twice in one pass");
            prop_assert!(o.target.is_none());
            prop_assert_ne!(
                Some(review.namespace.as_str()),
                clone.metadata.namespace.as_deref()
            );
        }
    }
    Ok(())
}

/// The next pass over the same world, with the status just written: it repeats nothing. A
/// pass that did nothing (or cleaned up, or deleted the clone) is a fixed point; a failure
/// settles after at most one more pass (which may release the temporary objects).
fn check_next_passes(world: &World, first: &Decision) -> TestResult {
    if world.clone.metadata.deletion_timestamp.is_some() || world.rejection.is_some() {
        return Ok(());
    }
    let second_world = world.with_status(&first.status);
    let second = decide(&second_world.observed());
    check_decision(&second_world.observed(), &second)?;
    if first.status.phase == ClonePhase::Failed {
        let third_world = second_world.with_status(&second.status);
        let third = decide(&third_world.observed());
        prop_assert_eq!(&third.action, &Action::Nothing);
        prop_assert_eq!(&third.status, &second.status);
        return Ok(());
    }
    match first.action {
        Action::Nothing | Action::Cleanup { .. } => {
            prop_assert_eq!(
                &second.action,
                &Action::Nothing,
                "second pass after {:?}",
                first.action
            );
        }
        Action::DeleteClone => prop_assert_eq!(&second.action, &Action::DeleteClone),
        // The world does not show the created object yet: not a fixed point by design (the
        // controller confirms absence with a direct read).
        Action::CreateSnapshot(_) | Action::CreateRestore(..) | Action::CreateTargetVM(_) => {
            return Ok(());
        }
        // The answer comes in the same pass: not a fixed point either.
        Action::ReviewAccess(_) => return Ok(()),
    }
    prop_assert!(
        second.events.is_empty(),
        "published again: {:?}",
        second.events
    );
    prop_assert!(
        !status_changed(&first.status, &second.status),
        "{:?}\n{:?}",
        first.status,
        second.status
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    /// `decide` answers every world and keeps the lifecycle's invariants; the passes after it
    /// over the same world repeat nothing.
    #[test]
    fn decide_keeps_its_invariants_on_any_world(case in case()) {
        let world = case.world()?;
        let first = decide(&world.observed());
        check_decision(&world.observed(), &first)?;
        check_next_passes(&world, &first)?;
        // Another clone's snapshot holding the source VM changes one thing: no snapshot is
        // created (the pass waits instead).
        let mut held = world.observed();
        held.source_held_by = Some("tmp-snapshot-other".into());
        let gated = decide(&held);
        prop_assert!(
            !matches!(gated.action, Action::CreateSnapshot(_)),
            "created a snapshot of a held VM"
        );
        check_decision(&held, &gated)?;
        if !matches!(first.action, Action::CreateSnapshot(_)) {
            prop_assert_eq!(&gated, &first);
        }
    }
}

/// The world as the controller reads it: the objects its lookups name (a source VM and the
/// temporary snapshot for a VM source, the source snapshot otherwise) and every object it reads
/// from caches; with
/// `planned`, the source VM, the snapshot content and the claims' phases (direct reads) only when
/// the clone's [`ReadPlan`] asks for them (and the rival clones only when it reads them), else
/// whatever exists.
fn as_read(world: &World, planned: bool) -> World {
    let plan = ReadPlan::of(&world.clone);
    let mut read = world.with_status(&world.clone.status.clone().unwrap_or_default());
    if plan.names.source_snapshot.is_some() {
        read.temp_snapshot = None;
    } else {
        read.source_snapshot = None;
    }
    if plan.names.source_vm.is_none() {
        read.source_vm = None;
    }
    if !planned {
        return read;
    }
    if plan.reads_nothing() {
        read.source_vm = None;
        read.content = None;
        read.claims.clear();
        return read;
    }
    let lost_target = read.target.is_none() && plan.source_vm_for_lost_target().is_some();
    if plan.source_vm(read.temp_snapshot.as_ref()).is_none() && !lost_target {
        read.source_vm = None;
    }
    let in_use = read
        .source_snapshot
        .as_ref()
        .or(read.temp_snapshot.as_ref());
    let content = plan.content(in_use, read.restore.as_ref());
    if read.content.as_ref().and_then(|c| c.metadata.name.clone()) != content {
        read.content = None;
    }
    let claims: Vec<String> = plan
        .claims(read.restore.as_ref(), read.target.as_ref())
        .into_iter()
        .map(str::to_owned)
        .collect();
    read.claims.retain(|claim, _| claims.contains(claim));
    if !plan.rivals(read.restore.as_ref(), read.target.as_ref()) {
        read.rivals.clear();
    }
    // The controller's caches hold projections, and of a VM its metadata only.
    for snapshot in [&mut read.source_snapshot, &mut read.temp_snapshot]
        .into_iter()
        .flatten()
    {
        project::snapshot(snapshot);
    }
    if let Some(restore) = &mut read.restore {
        project::restore(restore);
    }
    read.target = read.target.take().map(|vm| {
        let mut metadata = vm.metadata;
        project::vm_metadata(&mut metadata);
        VirtualMachine {
            metadata,
            spec: Default::default(),
            status: None,
        }
    });
    read
}

proptest! {
    #![proptest_config(config(1024))]

    /// What the read plan leaves out never changes the decision: the controller reads enough.
    #[test]
    fn the_read_plan_reads_everything_decide_looks_at(case in case()) {
        let world = case.world()?;
        let everything = decide(&as_read(&world, false).observed());
        let planned = decide(&as_read(&world, true).observed());
        prop_assert_eq!(everything, planned);
    }
}

/// `count` cases of [`case`] from a fixed seed.
fn sample(count: usize) -> Result<Vec<Case>, String> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = case();
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .map(|tree| tree.current())
                .map_err(|e| format!("generating a case: {e}"))
        })
        .collect()
}

/// The generator reaches every kind of decision, so the invariants above are not vacuous.
#[test]
fn the_random_worlds_reach_every_action_and_outcome() -> Result<(), String> {
    let mut seen = BTreeMap::<&str, usize>::new();
    for case in sample(3000)? {
        let world = case.world().map_err(|e| e.to_string())?;
        let d = decide(&world.observed());
        let action = match d.action {
            Action::Nothing => "Nothing",
            Action::CreateSnapshot(_) => "CreateSnapshot",
            Action::CreateRestore(..) => "CreateRestore",
            Action::Cleanup { .. } => "Cleanup",
            Action::DeleteClone => "DeleteClone",
            Action::CreateTargetVM(_) => "CreateTargetVM",
            Action::ReviewAccess(_) => "ReviewAccess",
        };
        *seen.entry(action).or_default() += 1;
        *seen.entry(d.status.phase.as_str()).or_default() += 1;
        let pending = d
            .status
            .condition(condition::PROGRESSING)
            .and_then(|c| c.reason.as_deref())
            == Some(condition::REASON_PENDING);
        if pending {
            *seen.entry("Pending").or_default() += 1;
        }
    }
    for wanted in [
        "Nothing",
        "CreateSnapshot",
        "CreateRestore",
        "Cleanup",
        "DeleteClone",
        "Pending",
        "SnapshotInProgress",
        "RestoreInProgress",
        "CreatingTargetVM",
        "Succeeded",
        "Failed",
    ] {
        if seen.get(wanted).copied().unwrap_or_default() == 0 {
            return Err(format!("no random world reached {wanted}: {seen:?}"));
        }
    }
    Ok(())
}

/// The invariants catch broken decisions: every decision of a seeded sample, broken the way a
/// faulty `decide` could break it, is refused by [`check_decision`].
#[test]
fn the_invariants_refuse_broken_decisions() -> Result<(), String> {
    let mut caught = BTreeMap::<&str, usize>::new();
    for case in sample(1500)? {
        if case.deleting {
            continue;
        }
        let world = case.world().map_err(|e| e.to_string())?;
        let observed = world.observed();
        let d = decide(&observed);
        let old = world.clone.status.clone().unwrap_or_default();
        let mut mutants: Vec<(&str, Decision)> = Vec::new();
        let mut mutant = |what, change: &dyn Fn(&mut Decision)| {
            let mut m = d.clone();
            change(&mut m);
            mutants.push((what, m));
        };
        if old.phase == ClonePhase::Failed {
            mutant("a failed clone moves on", &|m| {
                m.status.phase = ClonePhase::Unset
            });
        } else {
            mutant("no Ready condition", &|m| {
                m.status.conditions.retain(|c| c.type_ != condition::READY)
            });
            if old.phase != ClonePhase::Succeeded {
                mutant("an unfinished clone deletes itself", &|m| {
                    m.action = Action::DeleteClone
                });
            }
            if d.status.phase == ClonePhase::Failed {
                mutant("a silent failure", &|m| m.events.clear());
            }
        }
        match &d.action {
            Action::CreateSnapshot(_) => mutant("a snapshot it does not control", &|m| {
                if let Action::CreateSnapshot(s) = &mut m.action {
                    for owner in s.metadata.owner_references.iter_mut().flatten() {
                        owner.controller = Some(false);
                    }
                }
            }),
            Action::CreateRestore(..) => mutant("a restore of another name", &|m| {
                if let Action::CreateRestore(r, _) = &mut m.action {
                    r.metadata.name = Some("tmp-restore-someone-else".to_owned());
                }
            }),
            Action::Cleanup { .. } => mutant("the source snapshot deleted", &|m| {
                m.action = Action::Cleanup {
                    restore: None,
                    snapshot: Some(SOURCE_SNAPSHOT.to_owned()),
                }
            }),
            Action::Nothing
            | Action::DeleteClone
            | Action::CreateTargetVM(_)
            | Action::ReviewAccess(_) => {}
        }
        for (what, broken) in mutants {
            if check_decision(&observed, &broken).is_ok() {
                return Err(format!("{what} passed the invariants: {broken:?}"));
            }
            *caught.entry(what).or_default() += 1;
        }
    }
    if caught.len() != 7 {
        return Err(format!("not every kind of breakage was tried: {caught:?}"));
    }
    Ok(())
}
