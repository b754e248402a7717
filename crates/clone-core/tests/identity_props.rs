//! Identity stripping: the patch list for the restore gives the target its own MACs, serial and
//! firmware UUID, drops the filtered labels and annotations, and changes nothing else, whatever the
//! source VM looks like.

// Helpers of integration tests are not `#[test]` functions, so clippy's test exemptions miss them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use clone_api::names::{LAST_APPLIED_CONFIGURATION_ANNOTATION, LAST_RESTORE_UID_ANNOTATION};
use clone_api::v1beta1::{TemplateFilters, VirtualMachineCloneSpec};
use clone_api::validation::{PATCH_PATH_PREFIXES, field};
use clone_core::filter::FilterSet;
use clone_core::identity::{
    IdentityInput, IdentityPatches, escape_pointer_token, identity_patches,
};
use clone_core::names::{firmware_uuid, generated_serial, normalize_mac};
use clone_core::patch::{apply_kubevirt, apply_strict};
use clone_core::validate::passes_kubevirt_naive_check;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const NAMESPACE: &str = "ns";
const TARGET: &str = "clone-target";
const UID: &str = "0d6a5b5e-1c2f-4e55-a3c9-6b3f2f7c9e11";

const INTERFACES: &str = "/spec/template/spec/domain/devices/interfaces";
const FIRMWARE: &str = "/spec/template/spec/domain/firmware";
const MAPS: [&str; 4] = [
    "/metadata/labels",
    "/metadata/annotations",
    "/spec/template/metadata/labels",
    "/spec/template/metadata/annotations",
];

fn generate(spec: &VirtualMachineCloneSpec, vm: &Value) -> IdentityPatches {
    let input = IdentityInput {
        spec,
        namespace: NAMESPACE,
        target_name: TARGET,
        clone_uid: UID,
    };
    identity_patches(&input, vm)
}

/// The list applied with both appliers, which must agree.
fn applied(vm: &Value, patches: &[String]) -> Value {
    let mut strict = vm.clone();
    apply_strict(&mut strict, patches).unwrap_or_else(|e| panic!("strict: {e}\n{patches:#?}"));
    let mut lenient = vm.clone();
    apply_kubevirt(&mut lenient, patches).unwrap_or_else(|e| panic!("kubevirt: {e}"));
    assert_eq!(strict, lenient);
    strict
}

fn filter_sets(spec: &VirtualMachineCloneSpec) -> [FilterSet; 4] {
    let template = spec.template.clone().unwrap_or_default();
    let parse = |field, list: &Option<Vec<String>>| {
        FilterSet::parse(field, list.as_deref()).expect("generated filters are valid")
    };
    [
        parse(field::LABEL_FILTERS, &spec.label_filters),
        parse(field::ANNOTATION_FILTERS, &spec.annotation_filters),
        parse(field::TEMPLATE_LABEL_FILTERS, &template.label_filters),
        parse(
            field::TEMPLATE_ANNOTATION_FILTERS,
            &template.annotation_filters,
        ),
    ]
}

/// Removes the member `pointer` points at, if there is one.
fn take(doc: &mut Value, pointer: &str) -> Option<Value> {
    let (parent, key) = pointer.rsplit_once('/')?;
    let key = key.replace("~1", "/").replace("~0", "~");
    doc.pointer_mut(parent)?.as_object_mut()?.remove(&key)
}

// ---------------------------------------------------------------------------------------------
// Examples

fn example_vm() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": "source",
            "namespace": NAMESPACE,
            "labels": {"app": "web", "example.com/team": "a", "skip~me": "x"},
            "annotations": {"note": "n", LAST_RESTORE_UID_ANNOTATION: "r-1"},
        },
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": "source"}, "annotations": {"ovn.kubernetes.io/ip": "10.0.0.5"}},
                "spec": {
                    "domain": {
                        "devices": {"interfaces": [
                            {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"},
                            {"name": "secondary", "bridge": {}, "macAddress": "02:00:00:00:00:02"},
                            {"name": "tertiary", "bridge": {}},
                        ]},
                        "firmware": {"serial": "source-serial", "uuid": "11111111-2222-3333-4444-555555555555", "bootloader": {"efi": {}}},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                },
            },
        },
    })
}

#[test]
fn the_documented_order_and_spelling() {
    let spec = VirtualMachineCloneSpec {
        // `~` cannot be written in a filter; a key holding it is removed because nothing keeps it.
        label_filters: Some(vec!["app".into(), "example.com/*".into()]),
        annotation_filters: Some(vec!["!*".into()]),
        template: Some(TemplateFilters {
            label_filters: None,
            annotation_filters: Some(vec!["*".into(), "!ovn.kubernetes.io/*".into()]),
        }),
        new_mac_addresses: Some(BTreeMap::from([
            ("secondary".to_string(), "02:AB:CD:00:00:09".to_string()),
            ("tertiary".to_string(), "".to_string()),
            ("nic9".to_string(), "02:00:00:00:00:99".to_string()),
        ])),
        new_smbios_serial: Some("new-serial".into()),
        patches: Some(vec![
            r#"{"op":"add","path":"/spec/runStrategy","value":"Always"}"#.into(),
        ]),
        ..Default::default()
    };
    let out = generate(&spec, &example_vm());
    let uuid = firmware_uuid(UID);
    assert_eq!(
        out.patches,
        [
            r#"{"op":"remove","path":"/spec/template/spec/domain/devices/interfaces/0/macAddress"}"#.to_string(),
            r#"{"op":"add","path":"/spec/template/spec/domain/devices/interfaces/1/macAddress","value":"02-ab-cd-00-00-09"}"#.into(),
            r#"{"op":"add","path":"/spec/template/spec/domain/firmware/serial","value":"new-serial"}"#.into(),
            format!(r#"{{"op":"add","path":"/spec/template/spec/domain/firmware/uuid","value":"{uuid}"}}"#),
            r#"{"op":"remove","path":"/metadata/labels/skip~0me"}"#.into(),
            r#"{"op":"remove","path":"/metadata/annotations/note"}"#.into(),
            r#"{"op":"remove","path":"/spec/template/metadata/annotations/ovn.kubernetes.io~1ip"}"#.into(),
            r#"{"op":"add","path":"/spec/runStrategy","value":"Always"}"#.into(),
        ]
    );
    assert_eq!(out.unknown_interfaces, ["nic9"]);

    let target = applied(&example_vm(), &out.patches);
    assert_eq!(
        target["spec"]["template"]["spec"]["domain"]["firmware"],
        json!({"serial": "new-serial", "uuid": uuid, "bootloader": {"efi": {}}})
    );
    assert_eq!(
        target["metadata"]["labels"],
        json!({"app": "web", "example.com/team": "a"})
    );
    assert_eq!(
        target["metadata"]["annotations"],
        json!({LAST_RESTORE_UID_ANNOTATION: "r-1"})
    );
    assert_eq!(
        target["spec"]["runStrategy"], "Always",
        "the user's patches come last and win"
    );
}

/// Upstream copies it, so a later `kubectl apply` on the target diffs against the source's
/// manifest; whatever the filters say, the target never inherits it.
#[test]
fn the_last_applied_configuration_is_never_copied() {
    let mut vm = example_vm();
    vm["metadata"]["annotations"][LAST_APPLIED_CONFIGURATION_ANNOTATION] =
        json!(r#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine"}"#);
    for filters in [
        None,
        Some(vec!["*".to_string()]),
        Some(vec!["note".into(), "kubectl.kubernetes.io/*".into()]),
    ] {
        let spec = VirtualMachineCloneSpec {
            annotation_filters: filters.clone(),
            ..Default::default()
        };
        let target = applied(&vm, &generate(&spec, &vm).patches);
        let annotations = target["metadata"]["annotations"].as_object().unwrap();
        assert!(
            !annotations.contains_key(LAST_APPLIED_CONFIGURATION_ANNOTATION),
            "{filters:?}: {annotations:?}"
        );
        assert!(
            annotations.contains_key("note"),
            "{filters:?}: {annotations:?}"
        );
    }
}

#[test]
fn defaults_strip_every_mac_and_generate_serial_and_uuid() {
    let out = generate(&VirtualMachineCloneSpec::default(), &example_vm());
    let target = applied(&example_vm(), &out.patches);
    let interfaces = &target["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"];
    for interface in interfaces.as_array().expect("interfaces") {
        assert!(interface.get("macAddress").is_none(), "{interface}");
    }
    let firmware = &target["spec"]["template"]["spec"]["domain"]["firmware"];
    assert_eq!(firmware["serial"], generated_serial(NAMESPACE, TARGET));
    assert_eq!(firmware["uuid"], firmware_uuid(UID));
    assert_eq!(
        target["metadata"],
        example_vm()["metadata"],
        "absent filters keep everything"
    );
    assert!(out.unknown_interfaces.is_empty());
}

#[test]
fn a_vm_without_firmware_gets_an_empty_firmware_object_first() {
    let mut vm = example_vm();
    take(&mut vm, FIRMWARE);
    let out = generate(&VirtualMachineCloneSpec::default(), &vm);
    let firmware_ops: Vec<&String> = out
        .patches
        .iter()
        .filter(|p| p.contains("/firmware"))
        .collect();
    assert_eq!(
        firmware_ops[0],
        r#"{"op":"add","path":"/spec/template/spec/domain/firmware","value":{}}"#
    );
    assert_eq!(firmware_ops.len(), 3);
    let target = applied(&vm, &out.patches);
    assert_eq!(
        target.pointer(FIRMWARE),
        Some(&json!({"serial": generated_serial(NAMESPACE, TARGET), "uuid": firmware_uuid(UID)}))
    );
}

#[test]
fn a_vm_without_a_domain_gets_no_firmware_operations() {
    let vm = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"template": {"spec": {}}}});
    let spec = VirtualMachineCloneSpec {
        label_filters: Some(vec!["b".into()]),
        new_mac_addresses: Some(BTreeMap::from([("default".to_string(), "".to_string())])),
        ..Default::default()
    };
    let out = generate(&spec, &vm);
    assert_eq!(
        out.patches,
        [r#"{"op":"remove","path":"/metadata/labels/a"}"#]
    );
    assert_eq!(out.unknown_interfaces, ["default"]);
    applied(&vm, &out.patches);
}

#[test]
fn the_same_mac_as_the_source_survives_only_when_requested() {
    let spec = VirtualMachineCloneSpec {
        new_mac_addresses: Some(BTreeMap::from([(
            "default".to_string(),
            "02:00:00:00:00:01".to_string(),
        )])),
        ..Default::default()
    };
    let target = applied(&example_vm(), &generate(&spec, &example_vm()).patches);
    let interfaces = &target["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"];
    assert_eq!(interfaces[0]["macAddress"], "02-00-00-00-00-01");
    assert!(interfaces[1].get("macAddress").is_none());
}

// ---------------------------------------------------------------------------------------------
// Properties on random VMs

/// Keys like real label and annotation keys, plus `/`, `~` and `.` to exercise pointer escaping.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9./~_-]{0,12}",
        1 => Just(LAST_RESTORE_UID_ANNOTATION.to_string()),
        1 => Just("a/b~c/~1".to_string()),
    ]
}

fn string_map() -> impl Strategy<Value = Option<Map<String, Value>>> {
    prop::option::of(
        prop::collection::btree_map(key(), "[a-z0-9]{0,4}", 0..6)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
    )
}

/// Lists of valid filters over a small alphabet, so they actually match the generated keys.
fn filters() -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(prop::collection::vec("!?[a-z0-9./_-]{0,4}\\*?", 0..4)).prop_map(|list| {
        list.map(|l| {
            l.into_iter()
                .filter(|f| !f.is_empty() && f != "!")
                .collect()
        })
    })
}

fn mac() -> impl Strategy<Value = String> {
    (
        "[0-9a-fA-F]{2}",
        "[:-]",
        prop::collection::vec("[0-9a-fA-F]{2}", 5),
    )
        .prop_map(|(first, sep, rest)| {
            std::iter::once(first)
                .chain(rest)
                .collect::<Vec<_>>()
                .join(&sep)
        })
}

fn interface() -> impl Strategy<Value = Value> {
    (
        prop::option::of("[a-d]"),
        prop::option::of(mac()),
        any::<bool>(),
    )
        .prop_map(|(name, mac, bridge)| {
            let mut interface = Map::new();
            if let Some(name) = name {
                interface.insert("name".into(), json!(name));
            }
            interface.insert(
                if bridge { "bridge" } else { "masquerade" }.into(),
                json!({}),
            );
            if let Some(mac) = mac {
                interface.insert("macAddress".into(), json!(mac));
            }
            Value::Object(interface)
        })
}

fn firmware() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(
        (
            prop::option::of("[a-z0-9-]{0,8}"),
            prop::option::of("[a-f0-9-]{36}"),
            any::<bool>(),
        )
            .prop_map(|(serial, uuid, efi)| {
                let mut firmware = Map::new();
                if let Some(serial) = serial {
                    firmware.insert("serial".into(), json!(serial));
                }
                if let Some(uuid) = uuid {
                    firmware.insert("uuid".into(), json!(uuid));
                }
                if efi {
                    firmware.insert("bootloader".into(), json!({"efi": {"secureBoot": false}}));
                }
                Value::Object(firmware)
            }),
    )
}

prop_compose! {
    fn random_vm()(
        labels in string_map(),
        annotations in string_map(),
        template_labels in string_map(),
        template_annotations in string_map(),
        interfaces in prop::option::of(prop::collection::vec(interface(), 0..5)),
        firmware in firmware(),
    ) -> Value {
        let mut vm = json!({"metadata": {"name": "source", "namespace": NAMESPACE}, "spec": {"template": {"metadata": {"creationTimestamp": null}}}});
        for (pointer, key, map) in [
            ("/metadata", "labels", labels),
            ("/metadata", "annotations", annotations),
            ("/spec/template/metadata", "labels", template_labels),
            ("/spec/template/metadata", "annotations", template_annotations),
        ] {
            if let (Some(map), Some(object)) = (map, vm.pointer_mut(pointer)) {
                object[key] = Value::Object(map);
            }
        }
        let mut domain = json!({"cpu": {"cores": 2}, "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}});
        if let Some(interfaces) = interfaces {
            domain["devices"]["interfaces"] = Value::Array(interfaces);
        }
        if let Some(firmware) = firmware {
            domain["firmware"] = firmware;
        }
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": vm["metadata"].take(),
            "spec": {
                "runStrategy": "Halted",
                "template": {"metadata": vm["spec"]["template"]["metadata"].take(), "spec": {"domain": domain, "volumes": []}},
            },
            "status": {},
        })
    }
}

prop_compose! {
    fn random_spec()(
        label_filters in filters(),
        annotation_filters in filters(),
        template_label_filters in filters(),
        template_annotation_filters in filters(),
        template in any::<bool>(),
        macs in prop::option::of(prop::collection::btree_map("[a-f]", prop_oneof![4 => mac(), 1 => Just(String::new())], 0..4)),
        serial in prop::option::of("[a-zA-Z0-9 ._-]{0,12}"),
    ) -> VirtualMachineCloneSpec {
        VirtualMachineCloneSpec {
            label_filters,
            annotation_filters,
            template: template.then_some(TemplateFilters {
                label_filters: template_label_filters,
                annotation_filters: template_annotation_filters,
            }),
            new_mac_addresses: macs,
            new_smbios_serial: serial,
            ..Default::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_lists_apply_and_touch_only_identity(vm in random_vm(), spec in random_spec()) {
        let out = generate(&spec, &vm);

        // Every generated operation survives KubeVirt's restore admission.
        for patch in &out.patches {
            prop_assert!(passes_kubevirt_naive_check(patch), "naive check: {}", patch);
            prop_assert!(patch.starts_with(r#"{"op":""#), "key order: {}", patch);
            let op: Value = serde_json::from_str(patch).expect("JSON");
            let path = op["path"].as_str().expect("path");
            prop_assert!(PATCH_PATH_PREFIXES.iter().any(|p| path.starts_with(p)), "prefix: {}", path);
        }

        let target = applied(&vm, &out.patches);

        // MACs: the requested one (normalised), or none at all.
        let requested = spec.new_mac_addresses.clone().unwrap_or_default();
        let source_interfaces = vm.pointer(INTERFACES).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut names = Vec::new();
        for (index, interface) in source_interfaces.iter().enumerate() {
            let name = interface.get("name").and_then(Value::as_str);
            names.extend(name.map(str::to_string));
            let want = name.and_then(|n| requested.get(n)).filter(|m| !m.is_empty()).map(|m| normalize_mac(m));
            let got = target.pointer(&format!("{INTERFACES}/{index}/macAddress")).cloned();
            prop_assert_eq!(got, want.map(Value::String), "interface {}", index);
        }
        let unknown: Vec<String> = requested.keys().filter(|k| !names.contains(k)).cloned().collect();
        prop_assert_eq!(&out.unknown_interfaces, &unknown);

        // Serial and UUID: the requested or generated serial, this clone's UUID.
        let serial = spec.new_smbios_serial.clone().unwrap_or_else(|| generated_serial(NAMESPACE, TARGET));
        prop_assert_eq!(target.pointer(&format!("{FIRMWARE}/serial")), Some(&json!(serial)));
        prop_assert_eq!(target.pointer(&format!("{FIRMWARE}/uuid")), Some(&json!(firmware_uuid(UID))));

        // Maps: kept keys untouched, filtered keys gone, lastRestoreUID always kept.
        for (base, filters) in MAPS.iter().zip(filter_sets(&spec)) {
            let Some(source) = vm.pointer(base).and_then(Value::as_object) else {
                prop_assert!(target.pointer(base).is_none());
                continue;
            };
            let expected: Map<String, Value> = source
                .iter()
                .filter(|(k, _)| filters.keeps(k) || k.as_str() == LAST_RESTORE_UID_ANNOTATION)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            prop_assert_eq!(target.pointer(base), Some(&Value::Object(expected)), "{}", base);
        }

        // Everything else is the source's: equal as JSON (objects compare without regard to key
        // order, which JSON does not give a meaning and json-patch's `remove` does not keep).
        let (mut rest_source, mut rest_target) = (vm.clone(), target.clone());
        for doc in [&mut rest_source, &mut rest_target] {
            for index in 0..source_interfaces.len() {
                take(doc, &format!("{INTERFACES}/{index}/macAddress"));
            }
            take(doc, &format!("{FIRMWARE}/serial"));
            take(doc, &format!("{FIRMWARE}/uuid"));
            for base in MAPS {
                take(doc, base);
            }
        }
        if vm.pointer(FIRMWARE).is_none() {
            prop_assert_eq!(take(&mut rest_target, FIRMWARE), Some(json!({})));
        }
        prop_assert_eq!(rest_target, rest_source);
    }

    #[test]
    fn generated_removals_are_sorted_and_escaped(vm in random_vm(), spec in random_spec()) {
        let out = generate(&spec, &vm);
        for base in MAPS {
            let prefix = format!(r#"{{"op":"remove","path":"{base}/"#);
            let keys: Vec<String> = out
                .patches
                .iter()
                .filter_map(|p| p.strip_prefix(&prefix)?.strip_suffix(r#""}"#).map(str::to_string))
                .collect();
            let source: Vec<String> = vm.pointer(base).and_then(Value::as_object).map(|m| m.keys().map(|k| escape_pointer_token(k)).collect()).unwrap_or_default();
            prop_assert!(keys.iter().all(|k| source.contains(k)), "only existing keys are removed");
            let unescaped: Vec<String> = keys.iter().map(|k| k.replace("~1", "/").replace("~0", "~")).collect();
            let mut sorted = unescaped.clone();
            sorted.sort();
            prop_assert_eq!(unescaped, sorted);
        }
    }

    #[test]
    fn the_users_patches_come_last_verbatim(vm in random_vm(), spec in random_spec(), user in prop::collection::vec("\\PC{0,20}", 0..4)) {
        let spec = VirtualMachineCloneSpec { patches: Some(user.clone()), ..spec };
        let out = generate(&spec, &vm);
        prop_assert!(out.patches.len() >= user.len());
        prop_assert_eq!(&out.patches[out.patches.len() - user.len()..], &user[..]);
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary JSON never panics, and what is generated still applies

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "\\PC{0,6}",
                    Just("name".to_string()),
                    Just("macAddress".to_string())
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A VM with parts replaced by arbitrary JSON: the shapes a broken manifest can have.
fn broken_vm() -> impl Strategy<Value = Value> {
    const PARTS: [&str; 16] = [
        "",
        "/metadata",
        "/metadata/labels",
        "/metadata/annotations",
        "/spec",
        "/spec/template",
        "/spec/template/metadata",
        "/spec/template/metadata/labels",
        "/spec/template/spec",
        "/spec/template/spec/domain",
        "/spec/template/spec/domain/devices",
        INTERFACES,
        "/spec/template/spec/domain/devices/interfaces/0",
        "/spec/template/spec/domain/devices/interfaces/0/name",
        FIRMWARE,
        "/spec/template/spec/domain/firmware/serial",
    ];
    (
        random_vm(),
        prop::collection::vec((0..PARTS.len(), arbitrary_json()), 1..4),
    )
        .prop_map(|(mut vm, edits)| {
            for (part, value) in edits {
                if let Some(slot) = vm.pointer_mut(PARTS[part]) {
                    *slot = value;
                }
            }
            vm
        })
}

prop_compose! {
    /// Specs that were never validated: any strings as filters, MACs and serial.
    fn unvalidated_spec()(
        lists in prop::collection::vec(prop::option::of(prop::collection::vec("\\PC{0,6}", 0..4)), 4),
        macs in prop::option::of(prop::collection::btree_map("\\PC{0,4}", "\\PC{0,20}", 0..4)),
        serial in prop::option::of("\\PC{0,20}"),
    ) -> VirtualMachineCloneSpec {
        VirtualMachineCloneSpec {
            label_filters: lists[0].clone(),
            annotation_filters: lists[1].clone(),
            template: Some(TemplateFilters { label_filters: lists[2].clone(), annotation_filters: lists[3].clone() }),
            new_mac_addresses: macs,
            new_smbios_serial: serial,
            ..Default::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_json_is_handled_without_panic(vm in arbitrary_json(), spec in unvalidated_spec()) {
        let out = generate(&spec, &vm);
        applied(&vm, &out.patches);
    }

    #[test]
    fn broken_vms_are_handled_without_panic(vm in broken_vm(), spec in unvalidated_spec()) {
        let out = generate(&spec, &vm);
        applied(&vm, &out.patches);
    }
}
