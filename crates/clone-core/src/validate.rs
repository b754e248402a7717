//! The spec rules of the API, checked in Rust.
//!
//! The CRD's CEL rules reject invalid clones at `kubectl create`, but CEL cannot parse JSON, so
//! "each patch is a JSON Patch operation" is only approximated there. The controller runs
//! [`validate_spec`] on every clone before it acts (an invalid one fails with reason
//! `InvalidSpec`), and the kubectl plugin runs it before it submits. Every rule of the API's
//! "Validation" section is here, with the message from [`clone_api::validation`], so the user reads
//! the same words whichever side refuses the input; a test checks that this module and the CEL
//! rules agree on validity.
//!
//! The size bounds of the schema (`maxItems`, `maxLength`, `maxProperties`) are structural and
//! enforced by the API server alone; they are not repeated here.

use std::sync::LazyLock;

use clone_api::names::{
    KUBEVIRT_GROUP, SNAPSHOT_GROUP, VIRTUAL_MACHINE_KIND, VIRTUAL_MACHINE_SNAPSHOT_KIND,
};
use clone_api::v1beta1::{CloneStrategy, VirtualMachineCloneSpec};
use clone_api::validation::{self as v, field};
use regex::Regex;
use serde_json::Value;

use crate::filter::Filter;
use crate::patch::parse_operation;

type Compiled = LazyLock<Result<Regex, regex::Error>>;

static MAC: Compiled = LazyLock::new(|| Regex::new(v::MAC_REGEX));
static DNS1123_SUBDOMAIN: Compiled = LazyLock::new(|| Regex::new(v::DNS1123_SUBDOMAIN_REGEX));
static NAIVE_PATCH: Compiled = LazyLock::new(|| Regex::new(v::NAIVE_PATCH_REGEX));

/// Whether `text` matches a compiled constant. A constant that does not compile (a unit test
/// proves they all do) matches nothing: validation fails closed.
fn is_match(regex: &Compiled, text: &str) -> bool {
    regex.as_ref().is_ok_and(|regex| regex.is_match(text))
}

/// Whether `mac` is a 48-bit MAC with `:` or `-` separators, or empty ([`v::MAC_REGEX`]).
pub fn is_valid_mac(mac: &str) -> bool {
    is_match(&MAC, mac)
}

/// Whether `name` is a DNS-1123 subdomain of at most 63 characters (a valid target VM name).
pub fn is_valid_target_name(name: &str) -> bool {
    name.len() <= crate::names::MAX_NAME_LENGTH && is_match(&DNS1123_SUBDOMAIN, name)
}

/// Whether KubeVirt's restore admission accepts the patch string: split on `,`, every piece has
/// exactly one `:` ([`v::NAIVE_PATCH_REGEX`]).
pub fn passes_kubevirt_naive_check(patch: &str) -> bool {
    is_match(&NAIVE_PATCH, patch)
}

/// Checks every rule of the API on `spec` and returns every message that applies (in the order
/// filters, source and target, identity fields, patches, strategy), or `Ok` when there is none.
pub fn validate_spec(spec: &VirtualMachineCloneSpec) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check_filters(spec, &mut errors);
    check_source_and_target(spec, &mut errors);
    check_identity(spec, &mut errors);
    check_patches(spec, &mut errors);
    check_strategy(spec, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_filters(spec: &VirtualMachineCloneSpec, errors: &mut Vec<String>) {
    let template = spec.template.as_ref();
    let lists = [
        (field::LABEL_FILTERS, spec.label_filters.as_ref()),
        (field::ANNOTATION_FILTERS, spec.annotation_filters.as_ref()),
        (
            field::TEMPLATE_LABEL_FILTERS,
            template.and_then(|t| t.label_filters.as_ref()),
        ),
        (
            field::TEMPLATE_ANNOTATION_FILTERS,
            template.and_then(|t| t.annotation_filters.as_ref()),
        ),
    ];
    for (field, list) in lists {
        for text in list.into_iter().flatten() {
            if let Err(error) = Filter::parse(field, text) {
                errors.push(error.to_string());
            }
        }
    }
}

fn check_source_and_target(spec: &VirtualMachineCloneSpec, errors: &mut Vec<String>) {
    let source = &spec.source;
    let expected_group = match source.kind.as_str() {
        VIRTUAL_MACHINE_KIND => Some(KUBEVIRT_GROUP),
        VIRTUAL_MACHINE_SNAPSHOT_KIND => Some(SNAPSHOT_GROUP),
        _ => None,
    };
    if expected_group.is_none() {
        errors.push(v::SOURCE_KIND_UNSUPPORTED.to_owned());
    }
    match source.api_group.as_deref() {
        None | Some("") => errors.push(v::SOURCE_API_GROUP_EMPTY.to_owned()),
        Some(group) => {
            if expected_group.is_some_and(|expected| expected != group) {
                errors.push(v::SOURCE_API_GROUP_MISMATCH.to_owned());
            }
        }
    }
    if source.name.is_empty() {
        errors.push(v::SOURCE_NAME_EMPTY.to_owned());
    }

    let Some(target) = &spec.target else { return };
    if target
        .kind
        .as_deref()
        .is_some_and(|kind| kind != VIRTUAL_MACHINE_KIND)
    {
        errors.push(v::TARGET_KIND_UNSUPPORTED.to_owned());
    }
    if target
        .api_group
        .as_deref()
        .is_some_and(|group| group != KUBEVIRT_GROUP)
    {
        errors.push(v::TARGET_API_GROUP_INVALID.to_owned());
    }
    if let Some(name) = &target.name {
        if !is_valid_target_name(name) {
            errors.push(v::TARGET_NAME_INVALID.to_owned());
        }
        // Same namespace (no `source.namespace`) and both VMs: the target would be the source.
        if source.kind == VIRTUAL_MACHINE_KIND && source.namespace.is_none() && *name == source.name
        {
            errors.push(v::TARGET_EQUALS_SOURCE.to_owned());
        }
    }
}

fn check_identity(spec: &VirtualMachineCloneSpec, errors: &mut Vec<String>) {
    for mac in spec.new_mac_addresses.iter().flat_map(|macs| macs.values()) {
        if !is_valid_mac(mac) {
            errors.push(v::malformed_mac(mac));
        }
    }
    if spec
        .new_smbios_serial
        .as_deref()
        .is_some_and(|serial| serial.contains([',', ':']))
    {
        errors.push(v::SERIAL_SEPARATORS.to_owned());
    }
}

fn check_patches(spec: &VirtualMachineCloneSpec, errors: &mut Vec<String>) {
    // KubeVirt's restore applies the patches unless the DataVolume strategy builds the VM itself
    // (`Auto` may pick the restore, so it must pass too).
    let kubevirt_applies = spec.strategy != Some(CloneStrategy::DataVolume);
    for (index, patch) in spec.patches.iter().flatten().enumerate() {
        if let Err(message) = check_patch(index, patch) {
            errors.push(message);
        }
        if kubevirt_applies && !passes_kubevirt_naive_check(patch) {
            errors.push(v::patch_rejected_by_kubevirt(index, patch));
        }
    }
}

/// One patch string: JSON, then an operation object with `op` and `path`, then an allowed path,
/// then a complete operation (`value` or `from` where the op needs one, a valid JSON pointer).
fn check_patch(index: usize, patch: &str) -> Result<(), String> {
    let value: Value = serde_json::from_str(patch).map_err(|_| v::patch_not_json(patch))?;
    let op = value.get("op").and_then(Value::as_str);
    let path = value.get("path").and_then(Value::as_str);
    let (Some(op), Some(path)) = (op, path) else {
        return Err(v::patch_not_operation(index));
    };
    if !v::PATCH_OPS.contains(&op) {
        return Err(v::patch_not_operation(index));
    }
    if !v::PATCH_PATH_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        return Err(v::patch_path_invalid(patch));
    }
    parse_operation(patch)
        .map(drop)
        .map_err(|_| v::patch_not_operation(index))
}

fn check_strategy(spec: &VirtualMachineCloneSpec, errors: &mut Vec<String>) {
    let strategy = spec.strategy.unwrap_or_default();
    if spec.source.namespace.is_some()
        && !matches!(strategy, CloneStrategy::DataVolume | CloneStrategy::Auto)
    {
        errors.push(v::SOURCE_NAMESPACE_NEEDS_DATAVOLUME.to_owned());
    }
    if strategy == CloneStrategy::DataVolume && spec.source.kind != VIRTUAL_MACHINE_KIND {
        errors.push(v::DATAVOLUME_NEEDS_VM_SOURCE.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regex_constant_compiles() {
        for regex in [&MAC, &DNS1123_SUBDOMAIN, &NAIVE_PATCH] {
            assert!(regex.is_ok());
        }
    }
}
