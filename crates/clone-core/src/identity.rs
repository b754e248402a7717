//! Identity stripping for the `Snapshot` strategy: the JSON patches that turn a copy of the source
//! VM into a VM of its own.
//!
//! The input is the VM manifest stored in the snapshot content
//! (`content.spec.source.virtualMachine`, never the live VM); the output goes into the restore's
//! `spec.patches`, and KubeVirt's restore controller applies it to the new VM. In order (later
//! operations win):
//!
//! 1. MAC addresses: every interface gets its `newMacAddresses` entry (normalised to lower case
//!    with `-`), or loses its `macAddress`. Map keys that name no interface are reported.
//! 2. SMBIOS serial: `newSMBiosSerial` or [`generated_serial`], after adding an empty `firmware`
//!    object when the VM has none.
//! 3. Firmware UUID: [`firmware_uuid`] of the clone's UID.
//! 4. Labels, annotations, template labels, template annotations: a `remove` per key the filters
//!    do not copy (sorted; `restore.kubevirt.io/lastRestoreUID` is never removed, and the VM's
//!    `kubectl.kubernetes.io/last-applied-configuration` always is).
//! 5. The user's `patches`, verbatim.
//!
//! Every generated operation is a compact JSON object with keys in the order `op`, `path`,
//! `value`, an `add` for what is set (so it applies whether or not the member exists) and a
//! `remove` only for members that exist in the given VM, so the list applies under strict RFC 6902
//! as well as under KubeVirt's lenient applier. Generated values are `{}` or scalar strings without
//! `,` or `:`, so KubeVirt's naive admission check passes, provided the spec was validated
//! ([`crate::validate::validate`]) and the keys are real Kubernetes label and annotation keys
//! (which never contain `,` or `:`). A key of arbitrary JSON that does contain them still gets its
//! `remove`: KubeVirt then refuses the restore and the clone fails visibly, instead of silently
//! copying a key the filters exclude.
//!
//! Nothing here panics on any JSON: parts of the VM that are missing or have the wrong shape are
//! skipped (no interfaces array → no MAC operations, every `newMacAddresses` key unknown; no
//! `spec.template.spec.domain` object → no serial or UUID operations, since their parent could not
//! exist; non-object `metadata` or maps → no removals).

use clone_api::names::LAST_APPLIED_CONFIGURATION_ANNOTATION;
use clone_api::v1beta1::VirtualMachineCloneSpec;
use clone_api::validation::field;
use serde_json::{Map, Value};

use crate::filter::FilterSet;
use crate::names::{firmware_uuid, generated_serial, normalize_mac};

/// JSON Pointer of the VM's interfaces.
const INTERFACES: &str = "/spec/template/spec/domain/devices/interfaces";
/// JSON Pointer of the VM's domain (the parent of `firmware`).
const DOMAIN: &str = "/spec/template/spec/domain";
/// JSON Pointer of the VM's firmware block.
const FIRMWARE: &str = "/spec/template/spec/domain/firmware";

/// What identity stripping needs besides the VM.
#[derive(Debug, Clone, Copy)]
pub struct IdentityInput<'a> {
    /// The clone's spec (filters, `newMacAddresses`, `newSMBiosSerial`, `patches`).
    pub spec: &'a VirtualMachineCloneSpec,
    /// The clone's (and the target's) namespace.
    pub namespace: &'a str,
    /// The target VM's name.
    pub target_name: &'a str,
    /// The clone's UID.
    pub clone_uid: &'a str,
}

/// The restore's patch list and what the clone should warn about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityPatches {
    /// One JSON Patch operation object per string, generated ones first, the user's last.
    pub patches: Vec<String>,
    /// `newMacAddresses` keys that name no interface of the VM (sorted), for an
    /// `UnknownInterface` warning.
    pub unknown_interfaces: Vec<String>,
}

/// Builds the restore's patches for `vm`, the VM manifest of the snapshot content.
pub fn identity_patches(input: &IdentityInput<'_>, vm: &Value) -> IdentityPatches {
    let spec = input.spec;
    let mut patches = Vec::new();

    let unknown_interfaces = mac_patches(spec, vm, &mut patches);

    if vm.pointer(DOMAIN).is_some_and(Value::is_object) {
        // A missing (or malformed) firmware block is created first, so the members below have a
        // parent under strict RFC 6902 too.
        if !vm.pointer(FIRMWARE).is_some_and(Value::is_object) {
            patches.push(add(FIRMWARE, Value::Object(Map::new())));
        }
        let serial = match spec.new_smbios_serial.as_deref() {
            Some(serial) => serial.to_owned(),
            None => generated_serial(input.namespace, input.target_name),
        };
        patches.push(add(&format!("{FIRMWARE}/serial"), Value::String(serial)));
        let uuid = firmware_uuid(input.clone_uid);
        patches.push(add(&format!("{FIRMWARE}/uuid"), Value::String(uuid)));
    }

    let template = spec.template.as_ref();
    let maps = [
        (
            "/metadata/labels",
            field::LABEL_FILTERS,
            spec.label_filters.as_deref(),
        ),
        (
            "/metadata/annotations",
            field::ANNOTATION_FILTERS,
            spec.annotation_filters.as_deref(),
        ),
        (
            "/spec/template/metadata/labels",
            field::TEMPLATE_LABEL_FILTERS,
            template.and_then(|t| t.label_filters.as_deref()),
        ),
        (
            "/spec/template/metadata/annotations",
            field::TEMPLATE_ANNOTATION_FILTERS,
            template.and_then(|t| t.annotation_filters.as_deref()),
        ),
    ];
    for (base, field, filters) in maps {
        let Some(map) = vm.pointer(base).and_then(Value::as_object) else {
            continue;
        };
        // A validated spec parses; an unvalidated one must still give an answer (see
        // `FilterSet::parse_lossy`).
        let filters = FilterSet::parse_lossy(field, filters);
        let mut removed = filters.removed_keys(map);
        // kubectl's record of the source's last apply never becomes the target's.
        if base == "/metadata/annotations"
            && map.contains_key(LAST_APPLIED_CONFIGURATION_ANNOTATION)
            && !removed
                .iter()
                .any(|k| k == LAST_APPLIED_CONFIGURATION_ANNOTATION)
        {
            removed.push(LAST_APPLIED_CONFIGURATION_ANNOTATION.to_owned());
            removed.sort();
        }
        for key in removed {
            patches.push(remove(&format!("{base}/{}", escape_pointer_token(&key))));
        }
    }

    patches.extend(spec.patches.iter().flatten().cloned());
    IdentityPatches {
        patches,
        unknown_interfaces,
    }
}

/// Step 1: one operation per interface; returns the `newMacAddresses` keys no interface has.
fn mac_patches(
    spec: &VirtualMachineCloneSpec,
    vm: &Value,
    patches: &mut Vec<String>,
) -> Vec<String> {
    let requested = spec.new_mac_addresses.as_ref();
    let interfaces = vm.pointer(INTERFACES).and_then(Value::as_array);
    let mut seen = Vec::new();
    for (index, interface) in interfaces.into_iter().flatten().enumerate() {
        let Some(interface) = interface.as_object() else {
            continue;
        };
        let name = interface.get("name").and_then(Value::as_str);
        if let Some(name) = name {
            seen.push(name);
        }
        let path = format!("{INTERFACES}/{index}/macAddress");
        // An empty value means "strip", like no entry.
        let new_mac = name
            .and_then(|name| requested.and_then(|macs| macs.get(name)))
            .filter(|mac| !mac.is_empty());
        match new_mac {
            Some(mac) => patches.push(add(&path, Value::String(normalize_mac(mac)))),
            None if interface.contains_key("macAddress") => patches.push(remove(&path)),
            None => {}
        }
    }
    // `BTreeMap` keys come sorted.
    requested
        .into_iter()
        .flat_map(|macs| macs.keys())
        .filter(|key| !seen.contains(&key.as_str()))
        .cloned()
        .collect()
}

/// `{"op":"add","path":…,"value":…}`, compact, keys in that order (written out rather than left
/// to a map's key order).
fn add(path: &str, value: Value) -> String {
    format!(
        r#"{{"op":"add","path":{},"value":{value}}}"#,
        Value::from(path)
    )
}

/// `{"op":"remove","path":…}`, compact, keys in that order.
fn remove(path: &str) -> String {
    format!(r#"{{"op":"remove","path":{}}}"#, Value::from(path))
}

/// A map key as one JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape_pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
