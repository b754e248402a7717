//! What KubeVirt's Go types do to a VirtualMachine on the way through its restore controller,
//! which builds the new VM as a typed `kubevirtv1.VirtualMachine`, marshals it to JSON, applies
//! the restore's patches and unmarshals the result again:
//!
//! - [`as_marshalled`]: the members Go's `json.Marshal` writes even when empty — struct-typed
//!   fields are never omitted (`metadata.creationTimestamp: null`, the template's `metadata`,
//!   `spec.domain`, `domain.resources`, `domain.devices`, a DataVolume template's `metadata` and
//!   `spec`, `status`), and the empty `TypeMeta` is (no `apiVersion`/`kind`). Patches see these.
//! - [`unmarshal_error`]: Go's `json.Unmarshal` parses every `resource.Quantity` of the VM and
//!   stops at the first that does not parse (memory, resource requests and limits, disk
//!   capacities, DataVolume template storage), with apimachinery's message.
//!
//! Simplified: other Go type errors (a string where Go wants a number) are not reproduced here;
//! the API server's schema then refuses the VM, with its own message.

use serde_json::{Map, Value, json};

/// apimachinery's `ErrFormatWrong`.
pub const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// apimachinery's `ErrSuffix`.
pub const QUANTITY_SUFFIX: &str = "unable to parse quantity's suffix";

fn object_at<'v>(parent: &'v mut Value, key: &str) -> Option<&'v mut Map<String, Value>> {
    let map = parent.as_object_mut()?;
    let slot = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

/// An `ObjectMeta` as Go marshals it: `creationTimestamp` always present.
fn object_meta(meta: &mut Map<String, Value>) {
    meta.entry("creationTimestamp").or_insert(Value::Null);
}

/// The VM JSON as Go's `json.Marshal` of a `kubevirtv1.VirtualMachine` built by the restore
/// controller has it (see the module docs).
pub fn as_marshalled(vm: &mut Value) {
    let Some(root) = vm.as_object_mut() else {
        return;
    };
    root.remove("apiVersion");
    root.remove("kind");
    if let Some(meta) = object_at(vm, "metadata") {
        object_meta(meta);
    }
    if let Some(status) = vm.get_mut("status")
        && status.is_null()
    {
        *status = json!({});
    }
    if let Some(map) = vm.as_object_mut() {
        map.entry("status").or_insert_with(|| json!({}));
    }
    let Some(spec) = vm.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(templates) = spec
        .get_mut("dataVolumeTemplates")
        .and_then(Value::as_array_mut)
    {
        for template in templates.iter_mut().filter(|t| t.is_object()) {
            if let Some(meta) = object_at(template, "metadata") {
                object_meta(meta);
            }
            object_at(template, "spec");
        }
    }
    let Some(template) = spec.get_mut("template").filter(|t| t.is_object()) else {
        return;
    };
    if let Some(meta) = object_at(template, "metadata") {
        object_meta(meta);
    }
    let Some(instance) = object_at(template, "spec") else {
        return;
    };
    let domain = instance.entry("domain").or_insert_with(|| json!({}));
    if domain.is_null() {
        *domain = json!({});
    }
    for member in ["devices", "resources"] {
        object_at(domain, member);
    }
}

/// Whether `c` is whitespace Go's `strings.TrimSpace` removes from the raw JSON text of a string
/// (JSON escapes control characters and Go escapes U+2028/U+2029, so those never appear raw).
fn trimmed_space(c: char) -> bool {
    c == ' ' || (!c.is_ascii() && c.is_whitespace() && c != '\u{2028}' && c != '\u{2029}')
}

/// apimachinery's `ParseQuantity` verdict on `text`: `None` when it parses, else its error.
pub fn quantity_error(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        return Some(QUANTITY_FORMAT);
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    if matches!(bytes.first(), Some(b'-' | b'+')) {
        pos = 1;
    }
    while pos < bytes.len() && bytes[pos] == b'0' {
        pos += 1;
    }
    if pos >= bytes.len() {
        return None;
    }
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos >= bytes.len() {
        return None;
    }
    if bytes[pos] == b'.' {
        pos += 1;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos >= bytes.len() {
            return None;
        }
    }
    let suffix_start = pos;
    while pos < bytes.len() && b"eEinumkKMGTP".contains(&bytes[pos]) {
        pos += 1;
    }
    if pos < bytes.len() && matches!(bytes[pos], b'-' | b'+') {
        pos += 1;
    }
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < bytes.len() {
        return Some(QUANTITY_FORMAT);
    }
    let suffix = &text[suffix_start..];
    let known = matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    );
    let exponent =
        suffix.len() > 1 && suffix.starts_with(['e', 'E']) && exponent_parses(&suffix[1..]);
    if known || exponent {
        None
    } else {
        Some(QUANTITY_SUFFIX)
    }
}

/// Go's `strconv.ParseInt(text, 10, 64)` succeeds.
fn exponent_parses(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && text.parse::<i64>().is_ok()
}

/// `Quantity.UnmarshalJSON` on one JSON value: `null` and numbers parse; a string's text is
/// parsed trimmed; anything else (its raw text) does not parse.
fn json_quantity_error(value: &Value) -> Option<&'static str> {
    match value {
        Value::Null | Value::Number(_) => None,
        Value::String(text) => quantity_error(text.trim_matches(trimmed_space)),
        _ => Some(QUANTITY_FORMAT),
    }
}

/// The first error of a `ResourceList` (a map of quantities), in key order.
fn list_error(list: Option<&Value>) -> Option<&'static str> {
    let map = list?.as_object()?;
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    keys.into_iter()
        .find_map(|k| map.get(k).and_then(json_quantity_error))
}

/// `requests`/`limits` of a resource requirements object (`limits` sorts first).
fn requirements_error(requirements: Option<&Value>) -> Option<&'static str> {
    let requirements = requirements?;
    list_error(requirements.get("limits")).or_else(|| list_error(requirements.get("requests")))
}

/// The error Go's `json.Unmarshal` into a `kubevirtv1.VirtualMachine` stops at, if any (see the
/// module docs). The document is visited in the order Go meets it: the JSON the patch library
/// marshals has its object keys sorted.
pub fn unmarshal_error(vm: &Value) -> Option<&'static str> {
    let spec = vm.get("spec")?;
    let templates = spec
        .get("dataVolumeTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|template| {
            let dv_spec = template.get("spec")?;
            requirements_error(dv_spec.pointer("/pvc/resources"))
                .or_else(|| requirements_error(dv_spec.pointer("/storage/resources")))
        });
    templates.or_else(|| {
        let instance = spec.pointer("/template/spec")?;
        let domain = instance.get("domain");
        let memory = domain.and_then(|d| d.get("memory"));
        memory
            .and_then(|m| m.get("guest"))
            .and_then(json_quantity_error)
            .or_else(|| {
                memory
                    .and_then(|m| m.get("maxGuest"))
                    .and_then(json_quantity_error)
            })
            .or_else(|| requirements_error(domain.and_then(|d| d.get("resources"))))
            .or_else(|| {
                instance
                    .get("volumes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find_map(|volume| {
                        volume
                            .pointer("/emptyDisk/capacity")
                            .and_then(json_quantity_error)
                            .or_else(|| {
                                volume
                                    .pointer("/hostDisk/capacity")
                                    .and_then(json_quantity_error)
                            })
                    })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_apimachinery() {
        for ok in [
            "0", "1", "1Gi", "128Mi", "1.5", "1.", ".", "-", "+", "100m", "1e3", "1E+3", "1e-3",
            "007", "5E", "12Ki",
        ] {
            assert_eq!(quantity_error(ok), None, "{ok}");
        }
        for (bad, error) in [
            ("", QUANTITY_FORMAT),
            ("lots", QUANTITY_FORMAT),
            ("1 Gi", QUANTITY_FORMAT),
            ("1.2.3", QUANTITY_FORMAT),
            ("1Gx", QUANTITY_FORMAT),
            ("1ki", QUANTITY_SUFFIX),
            ("1e", QUANTITY_SUFFIX),
            ("1iG", QUANTITY_SUFFIX),
            ("1MiB", QUANTITY_FORMAT),
        ] {
            assert_eq!(quantity_error(bad), Some(error), "{bad}");
        }
    }

    #[test]
    fn json_values_unmarshal_like_quantity() {
        assert_eq!(json_quantity_error(&json!(null)), None);
        assert_eq!(json_quantity_error(&json!(1.5e3)), None);
        assert_eq!(json_quantity_error(&json!(" 1Gi ")), None);
        assert_eq!(json_quantity_error(&json!(true)), Some(QUANTITY_FORMAT));
        assert_eq!(json_quantity_error(&json!({"a": 1})), Some(QUANTITY_FORMAT));
        assert_eq!(json_quantity_error(&json!("\t1Gi")), Some(QUANTITY_FORMAT));
    }

    #[test]
    fn the_first_bad_quantity_in_gos_order_is_the_error() {
        let vm = json!({
            "spec": {"template": {"spec": {
                "domain": {"resources": {"requests": {"memory": "lots", "cpu": "1"}}},
                "volumes": [{"name": "e", "emptyDisk": {"capacity": "1ki"}}],
            }}},
        });
        assert_eq!(unmarshal_error(&vm), Some(QUANTITY_FORMAT));
        let vm = json!({
            "spec": {"template": {"spec": {
                "domain": {"resources": {"requests": {"memory": "1Gi"}}},
                "volumes": [{"name": "e", "emptyDisk": {"capacity": "1ki"}}],
            }}},
        });
        assert_eq!(unmarshal_error(&vm), Some(QUANTITY_SUFFIX));
        let vm = json!({
            "spec": {
                "dataVolumeTemplates": [{"spec": {"storage": {"resources": {"requests": {"storage": "x"}}}}}],
                "template": {"spec": {"domain": {"memory": {"guest": "2Gi"}}}},
            },
        });
        assert_eq!(unmarshal_error(&vm), Some(QUANTITY_FORMAT));
        let fine =
            json!({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "2Gi"}}}}}});
        assert_eq!(unmarshal_error(&fine), None);
    }

    #[test]
    fn patches_can_add_under_the_structs_go_always_writes() {
        let mut vm = json!({"metadata": {"name": "vm"}, "spec": {"template": {"spec": {}}}});
        let patch = r#"{"op": "add", "path": "/spec/template/spec/domain/resources/requests", "value": {"memory": "1Gi"}}"#;
        let patches = vec![patch.to_owned()];
        assert!(
            crate::jsonpatch::apply(&vm, &patches).is_err(),
            "absent in the stored VM"
        );
        as_marshalled(&mut vm);
        let patched = crate::jsonpatch::apply(&vm, &patches).unwrap();
        assert_eq!(
            patched.pointer("/spec/template/spec/domain/resources/requests/memory"),
            Some(&json!("1Gi"))
        );
        assert_eq!(unmarshal_error(&patched), None);
    }

    #[test]
    fn go_writes_empty_structs_and_null_timestamps_but_no_type_meta() {
        let mut vm = json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "vm"},
            "spec": {
                "dataVolumeTemplates": [{"metadata": {"name": "dv"}}],
                "template": {"spec": {"volumes": []}},
            },
        });
        as_marshalled(&mut vm);
        assert_eq!(
            vm,
            json!({
                "metadata": {"name": "vm", "creationTimestamp": null},
                "spec": {
                    "dataVolumeTemplates": [{"metadata": {"name": "dv", "creationTimestamp": null}, "spec": {}}],
                    "template": {
                        "spec": {"volumes": [], "domain": {"devices": {}, "resources": {}}},
                        "metadata": {"creationTimestamp": null},
                    },
                },
                "status": {},
            })
        );
    }
}
