//! `create`: clone manifests from `virtctl create clone`'s flags, aliases, defaults and error
//! messages, plus vmclone's own (`--patch`, `--volume-name-policy`, `--strategy`,
//! `--source-namespace`, `--target-run-strategy`, `--count`).
//!
//! The output is virtctl's field for field, with the keys in its order (sorted, as
//! `sigs.k8s.io/yaml` writes them); only the quoting style of some strings differs (virtctl writes
//! `'*'`, we write `"*"`). `tests/create_golden.rs` compares the two against KubeVirt v1.7.0's
//! real virtctl. Empty `--name`, `--source-type`, `--target-type`, `--target-name` and `-n` count
//! as not given, as in virtctl; a flag given twice means its last value.
//!
//! One deliberate difference: virtctl splits `--new-mac-address` on every `:`, so a MAC written
//! with colons (`eth0:02:00:00:00:00:01`) is refused; here the interface ends at the first `:`.
//! (A value without any `:` is refused by both, with different words: virtctl's "exactly one
//! ':' is expected" would be wrong here.)
//!
//! virtctl checks none of its flags' values beyond the above (the API server judges them at
//! create), and neither does `create`; vmclone's own flags, which virtctl does not have, are
//! checked with the admission policy's rules for them, so a typo fails here (exit status 2) with
//! the policy's message, which names the annotation or field.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use clone_api::extensions;
use clone_api::names;
use clone_api::v1beta1::VirtualMachineClone;
use serde_json::{Map, Value, json};

use crate::cli::{CloneFlags, CreateArgs, Global, Output};
use crate::{Exit, UsageError};

/// Prints the manifest(s): one object, or a `List` for `--count` above 1.
pub fn command(global: &Global, args: &CreateArgs) -> anyhow::Result<Exit> {
    let manifests = manifests(global.namespace.as_deref(), &args.clone)?;
    for manifest in &manifests {
        check_own_flags(manifest)?;
    }
    let object = match manifests.as_slice() {
        [one] => one.clone(),
        many => json!({"apiVersion": "v1", "kind": "List", "items": many}),
    };
    print!("{}", render(&sorted(object), args.output)?);
    Ok(Exit::Success)
}

/// The rule families of the admission policy that only vmclone's own flags can break (virtctl's
/// flags never write patches, a volume name policy or annotations).
const OWN_FLAG_RULES: [&str; 3] = [
    "spec.patches/",
    "spec.volumeNamePolicy/",
    "metadata.annotations/",
];

/// Checks what vmclone's own flags put into `manifest` with the policy's rules for them.
fn check_own_flags(manifest: &Value) -> Result<(), UsageError> {
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    let clone: VirtualMachineClone = serde_json::from_value(manifest.clone())
        .map_err(|e| UsageError(format!("clone {name}: {e}")))?;
    let mut problems: Vec<String> = Vec::new();
    let own = clone_core::rules::rules()
        .iter()
        .filter(|rule| OWN_FLAG_RULES.iter().any(|p| rule.id.starts_with(p)));
    for message in own.filter_map(|rule| rule.check_create(&clone)) {
        if !problems.contains(&message) {
            problems.push(message);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(UsageError(format!("clone {name}: {}", problems.join("; "))))
    }
}

/// `value` with every object's keys in byte order, as `sigs.k8s.io/yaml` (virtctl) and kubectl
/// print them.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// An object as YAML or JSON, as kubectl prints it.
pub fn render(object: &Value, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Yaml => serde_saphyr::to_string(object)?,
        Output::Json => format!("{}\n", serde_json::to_string_pretty(object)?),
    })
}

/// The clones the flags describe, as typed objects, each checked with the rules the admission
/// policy and the controller use (so nothing is created when any of them is invalid).
///
/// Without `--target-name` the clone has no `spec.target`: virtctl's manifest carries
/// `target.name: ""` for upstream's mutating webhook to fill in, which vmclone (no webhook; the
/// controller derives the name from the clone's UID) refuses as an invalid name.
pub fn clones(
    namespace: Option<&str>,
    flags: &CloneFlags,
) -> Result<Vec<VirtualMachineClone>, UsageError> {
    manifests(namespace, flags)?
        .into_iter()
        .map(|mut manifest| {
            let name = manifest["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if manifest["spec"]["target"]["name"] == ""
                && let Some(spec) = manifest["spec"].as_object_mut()
            {
                spec.remove("target");
            }
            let clone: VirtualMachineClone = serde_json::from_value(manifest)
                .map_err(|e| UsageError(format!("clone {name}: {e}")))?;
            clone_core::validate::validate(&clone)
                .map_err(|errors| UsageError(format!("clone {name}: {}", errors.join("; "))))?;
            Ok(clone)
        })
        .collect()
}

/// The manifests the flags describe, field for field as `virtctl create clone` writes them
/// (`creationTimestamp: null`, `template: {}`, `status: {}` included).
pub fn manifests(namespace: Option<&str>, flags: &CloneFlags) -> Result<Vec<Value>, UsageError> {
    let source_name = match flags.source_name.as_deref() {
        None => {
            return Err(UsageError(
                "required flag(s) \"source-name\" not set".to_owned(),
            ));
        }
        Some("") => return Err(UsageError("source name must not be empty".to_owned())),
        Some(name) => name,
    };
    let (source_kind, source_group) = source_type(&flags.source_type)?;
    target_type(&flags.target_type)?;
    let macs = mac_addresses(&flags.new_mac_addresses)?;
    if flags.count == 0 {
        return Err(UsageError("--count must be at least 1".to_owned()));
    }

    let mut spec = Map::new();
    spec.insert(
        "source".into(),
        json!({"apiGroup": source_group, "kind": source_kind, "name": source_name}),
    );
    let lists = [
        ("labelFilters", &flags.label_filters),
        ("annotationFilters", &flags.annotation_filters),
    ];
    for (field, values) in lists {
        if !values.is_empty() {
            spec.insert(field.into(), json!(values));
        }
    }
    let mut template = Map::new();
    let template_lists = [
        ("labelFilters", &flags.template_label_filters),
        ("annotationFilters", &flags.template_annotation_filters),
    ];
    for (field, values) in template_lists {
        if !values.is_empty() {
            template.insert(field.into(), json!(values));
        }
    }
    spec.insert("template".into(), Value::Object(template));
    if !macs.is_empty() {
        spec.insert("newMacAddresses".into(), json!(macs));
    }
    if let Some(serial) = flags.new_smbios_serial.as_deref().filter(|s| !s.is_empty()) {
        spec.insert("newSMBiosSerial".into(), json!(serial));
    }
    if !flags.patches.is_empty() {
        spec.insert("patches".into(), json!(flags.patches));
    }
    if let Some(policy) = &flags.volume_name_policy {
        spec.insert("volumeNamePolicy".into(), json!(policy));
    }
    let mut annotations = Map::new();
    let extension_flags = [
        (extensions::STRATEGY, &flags.strategy),
        (extensions::SOURCE_NAMESPACE, &flags.source_namespace),
        (extensions::TARGET_RUN_STRATEGY, &flags.target_run_strategy),
    ];
    for (key, value) in extension_flags {
        if let Some(value) = value {
            annotations.insert(key.into(), json!(value));
        }
    }

    let mut out = Vec::with_capacity(flags.count);
    for index in 1..=flags.count {
        let numbered = |base: &str| {
            if flags.count == 1 {
                base.to_owned()
            } else {
                format!("{base}-{index}")
            }
        };
        let name = match flags.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => numbered(name),
            None => format!("clone-{}", random_suffix()),
        };
        // No target name (or an empty one): the webhook names each target.
        let target = flags
            .target_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(numbered)
            .unwrap_or_default();
        let mut spec = spec.clone();
        spec.insert(
            "target".into(),
            json!({"apiGroup": names::KUBEVIRT_GROUP, "kind": names::VIRTUAL_MACHINE_KIND, "name": target}),
        );
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(name));
        if let Some(namespace) = namespace.filter(|n| !n.is_empty()) {
            metadata.insert("namespace".into(), json!(namespace));
        }
        metadata.insert("creationTimestamp".into(), Value::Null);
        if !annotations.is_empty() {
            metadata.insert("annotations".into(), Value::Object(annotations.clone()));
        }
        out.push(json!({
            "apiVersion": format!("{}/{}", names::GROUP, names::STORAGE_VERSION),
            "kind": names::KIND,
            "metadata": metadata,
            "spec": spec,
            "status": {},
        }));
    }
    let mut seen = std::collections::BTreeSet::new();
    for manifest in &out {
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        if !seen.insert(name.to_owned()) {
            return Err(UsageError(format!("two clones would be named {name}")));
        }
    }
    Ok(out)
}

/// virtctl's source types and aliases (empty: `vm`, as in virtctl).
fn source_type(value: &str) -> Result<(&'static str, &'static str), UsageError> {
    match value {
        "" | "vm" | "VM" | "VirtualMachine" | "virtualmachine" => {
            Ok((names::VIRTUAL_MACHINE_KIND, names::KUBEVIRT_GROUP))
        }
        "snapshot" | "VirtualMachineSnapshot" | "vmsnapshot" | "VMSnapshot" => {
            Ok((names::VIRTUAL_MACHINE_SNAPSHOT_KIND, names::SNAPSHOT_GROUP))
        }
        other => Err(UsageError(format!(
            "source type {other} is not supported. Supported types: vm, vmsnapshot"
        ))),
    }
}

/// virtctl's target types and aliases (VMs only; empty: `vm`, as in virtctl).
fn target_type(value: &str) -> Result<(), UsageError> {
    match value {
        "" | "vm" | "VM" | "VirtualMachine" | "virtualmachine" => Ok(()),
        other => Err(UsageError(format!(
            "target type {other} is not supported. Supported types: vm"
        ))),
    }
}

/// `interface:mac` pairs; the interface ends at the first `:` (so `eth0:02:00:00:00:00:01`
/// works, unlike in virtctl).
fn mac_addresses(values: &[String]) -> Result<BTreeMap<String, String>, UsageError> {
    let mut out = BTreeMap::new();
    for value in values {
        let Some((interface, address)) = value.split_once(':') else {
            return Err(UsageError(format!(
                "newMacAddress parameter {value} is invalid: an interface name, ':' and an address are expected. For example: 'interface0:02:00:00:00:00:01'"
            )));
        };
        if interface.is_empty() {
            return Err(UsageError(format!(
                "newMacAddress parameter {value} has empty interface name"
            )));
        }
        if address.is_empty() {
            return Err(UsageError(format!(
                "newMacAddress parameter {value} has empty address name"
            )));
        }
        out.insert(interface.to_owned(), address.to_owned());
    }
    Ok(out)
}

/// Five random characters from Kubernetes' name-suffix alphabet (as virtctl's default name).
fn random_suffix() -> String {
    let alphabet: Vec<char> = clone_core::names::SUFFIX_ALPHABET.chars().collect();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut bits = hasher.finish();
    (0..5)
        .map(|_| {
            let c = alphabet[(bits % alphabet.len() as u64) as usize];
            bits /= alphabet.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(source: &str) -> CloneFlags {
        CloneFlags {
            source_name: Some(source.to_owned()),
            source_type: "vm".into(),
            target_type: "vm".into(),
            count: 1,
            ..CloneFlags::default()
        }
    }

    #[test]
    fn a_mac_with_colons_keeps_them() {
        let mut f = flags("vm");
        f.new_mac_addresses = vec!["eth0:02:00:00:00:00:01".into()];
        let m = manifests(None, &f).unwrap();
        assert_eq!(m[0]["spec"]["newMacAddresses"]["eth0"], "02:00:00:00:00:01");
    }

    #[test]
    fn count_numbers_names_and_targets() {
        let mut f = flags("golden");
        f.name = Some("web".into());
        f.target_name = Some("web-vm".into());
        f.count = 3;
        let names: Vec<_> = manifests(Some("ns"), &f)
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["metadata"]["name"].as_str().unwrap().to_owned(),
                    m["spec"]["target"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("web-1".to_owned(), "web-vm-1".to_owned()),
                ("web-2".to_owned(), "web-vm-2".to_owned()),
                ("web-3".to_owned(), "web-vm-3".to_owned())
            ]
        );
    }

    #[test]
    fn empty_names_count_as_not_given_also_with_count() {
        let mut f = flags("golden");
        f.name = Some(String::new());
        f.target_name = Some(String::new());
        f.count = 2;
        for m in manifests(Some(""), &f).unwrap() {
            let name = m["metadata"]["name"].as_str().unwrap();
            assert!(name.starts_with("clone-") && name.len() == 11, "{name}");
            // Not "-1": an empty target name leaves the naming to the webhook.
            assert_eq!(m["spec"]["target"]["name"], "");
            assert!(m["metadata"].get("namespace").is_none(), "{m}");
        }
    }

    #[test]
    fn random_names_differ() {
        let a = random_suffix();
        assert_eq!(a.len(), 5);
        let distinct: std::collections::BTreeSet<_> = (0..20).map(|_| random_suffix()).collect();
        assert!(distinct.len() > 15, "{distinct:?}");
    }

    #[test]
    fn a_clone_without_a_target_name_leaves_the_name_to_the_controller() {
        let f = flags("vm");
        assert_eq!(
            manifests(None, &f).unwrap()[0]["spec"]["target"]["name"],
            ""
        );
        let clone = clones(Some("ns"), &f).unwrap().remove(0);
        assert_eq!(clone.spec.target, None);
        let mut named = flags("vm");
        named.target_name = Some("t".into());
        let clone = clones(Some("ns"), &named).unwrap().remove(0);
        assert_eq!(clone.spec.target.map(|t| t.name).as_deref(), Some("t"));
    }

    #[test]
    fn an_invalid_clone_of_a_count_refuses_them_all() {
        let mut f = flags("vm");
        f.count = 2;
        f.strategy = Some("Fast".into());
        let error = clones(Some("ns"), &f).unwrap_err();
        assert!(error.0.contains("vmclone.dev/strategy"), "{error}");
    }
}
