//! Differential test: the same source VMs and `VirtualMachineClone` manifests run once through
//! upstream KubeVirt v1.7.0's own clone controller and once through vmclone, on one private
//! control plane with KubeVirt's real virt-controller and virt-api (its admission webhooks), and
//! the target VMs are compared field by field.
//!
//! 1. The control plane starts with upstream's clone CRD and virt-controller's clone controller on.
//!    Both namespaces get the same sources (kubevirt-sim plays storage and CDI in each).
//!    Every clone is created in the first namespace with `kubectl create`, as a user would.
//! 2. virt-controller is restarted with its clone controller off (`--clone-controller-threads 0`),
//!    vmclone's CRD replaces upstream's, vmclone runs (in-process) on the second namespace, and
//!    the same manifests are created there.
//! 3. Each pair of targets is normalised (what differs per object by nature: UIDs, versions,
//!    timestamps, the namespace, random target-name suffixes, the restore UID in restored volume
//!    names and in `restore.kubevirt.io/lastRestoreUID`) and compared. Every difference must be
//!    one of [`ALLOWED`]: a deliberate fix that `docs/decisions.md` documents under the same id.
//!    Anything else fails the test, naming the path and both values. Every allowed entry must also
//!    be seen, so a stale entry cannot hide a future regression.
//!
//! Upstream's clone of MACs written with `:` never finishes (its restore is refused by KubeVirt's
//! own restore admission, forever): the test waits for that refusal (a `RestoreCreationFailed`
//! event naming the admission message), records it as a difference, and compares vmclone's
//! target of the `:` manifest with upstream's target of the same MACs written with `-`.
//!
//! The VM `status` is left out: KubeVirt's VM controller writes it over time (conditions,
//! timestamps), not the clone controller, and the two runs happen at different times.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clone_core::names::{firmware_uuid, generated_serial, normalize_mac};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use testenv::{CloneCrd, KubeVirtOptions, Options, TestEnv, wait_for};
use tokio::sync::oneshot;

/// Upstream's clone controller requeues failing passes with exponential backoff: a single clone
/// can take far longer than its snapshot and restore (research §9, §10).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(300);
const VMCLONE_TIMEOUT: Duration = Duration::from_secs(150);
/// How often a waiting upstream clone is woken (see [`Side::outcome`]).
const POKE_EVERY: Duration = Duration::from_secs(5);
/// What upstream's restore admission says about a patch value with a `:` (research §8 item 3).
const COLON_REFUSAL: &str = r#"one ":" expected"#;
const FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";
const LAST_RESTORE: &str = "restore.kubevirt.io/lastRestoreUID";
const CONTAINER_DISK: &str = "quay.io/containerdisks/fedora:latest";

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// What upstream's clone controller does with a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    /// Creates a target (the clone reaches `Succeeded`).
    Target,
    /// Never creates one: KubeVirt's restore admission refuses its restore (a `:` in a value).
    RestoreRefused,
}

/// One clone manifest, run through both controllers.
struct Scenario {
    name: &'static str,
    /// The clone's `metadata.name`.
    clone: &'static str,
    /// The manifest, as `kubectl create -f -` reads it.
    manifest: String,
    /// Round 2 clones a target of round 1 (created once that clone has succeeded).
    round: u8,
    upstream: Upstream,
    /// Compare vmclone's target with upstream's target of this scenario instead of its own
    /// (for a scenario upstream never finishes).
    reference: Option<&'static str>,
}

/// Source VMs (and the golden image's snapshot), the same in both namespaces.
fn sources() -> Vec<String> {
    let key_maps = json!({"key1": "a", "key10": "b", "mykey1": "c", "other": "d"});
    vec![
        common::source_vm_manifest("vm-cirros", "sim-snapshot"),
        container_disk_vm(
            "golden-vm",
            json!({"app": "golden"}),
            json!({}),
            json!({}),
            json!({}),
        ),
        container_disk_vm(
            "filters-vm",
            key_maps.clone(),
            key_maps.clone(),
            key_maps.clone(),
            key_maps,
        ),
        container_disk_vm(
            "mac-vm",
            json!({"app": "mac"}),
            json!({}),
            json!({}),
            json!({}),
        ),
        container_disk_vm(
            "serial-vm",
            json!({"app": "serial"}),
            json!({}),
            json!({}),
            json!({}),
        ),
        container_disk_vm(
            "patches-vm",
            json!({"app": "patches"}),
            json!({"description": "the source VM"}),
            json!({"app": "patches"}),
            json!({}),
        ),
        data_volume_vm("dv-vm"),
    ]
}

fn scenarios() -> Vec<Scenario> {
    let vm_clone = |clone: &'static str, source: &str, target: &str, extra: Value| {
        common::clone_manifest(clone, "VirtualMachine", source, Some(target), extra)
    };
    let scenario = |name, clone, manifest| Scenario {
        name,
        clone,
        manifest,
        round: 1,
        upstream: Upstream::Target,
        reference: None,
    };
    vec![
        scenario("seed", "testclone", common::seed_clone_manifest()),
        scenario(
            "golden-image",
            "golden-clone",
            common::clone_manifest(
                "golden-clone",
                "VirtualMachineSnapshot",
                "golden",
                None,
                json!({}),
            ),
        ),
        scenario(
            "filters",
            "filters-clone",
            vm_clone(
                "filters-clone",
                "filters-vm",
                "filters-target",
                json!({
                    "labelFilters": ["key1"],
                    "annotationFilters": ["*", "!key1"],
                    "template": {"labelFilters": ["key1*"], "annotationFilters": ["other"]},
                }),
            ),
        ),
        // Upstream's mutating webhook rewrites `spec` (dropping empty lists) only when it fills
        // in a target name: with a named target `[]` reaches upstream's controller.
        scenario(
            "filters-empty-list",
            "filters-empty-clone",
            vm_clone(
                "filters-empty-clone",
                "filters-vm",
                "filters-empty-target",
                json!({"labelFilters": [], "template": {"annotationFilters": []}}),
            ),
        ),
        scenario(
            "mac-dash",
            "mac-dash-clone",
            vm_clone(
                "mac-dash-clone",
                "mac-vm",
                "mac-dash-target",
                json!({
                    "newMacAddresses": {"default": "02-00-00-00-00-AA", "interfaceName": "02-00-00-00-00-bb"},
                    "newSMBiosSerial": "mac-serial",
                }),
            ),
        ),
        Scenario {
            upstream: Upstream::RestoreRefused,
            reference: Some("mac-dash"),
            ..scenario(
                "mac-colon",
                "mac-colon-clone",
                vm_clone(
                    "mac-colon-clone",
                    "mac-vm",
                    "mac-colon-target",
                    json!({
                        "newMacAddresses": {"default": "02:00:00:00:00:AA", "interfaceName": "02:00:00:00:00:bb"},
                        "newSMBiosSerial": "mac-serial",
                    }),
                ),
            )
        },
        scenario(
            "serial-given",
            "serial-given-clone",
            vm_clone(
                "serial-given-clone",
                "serial-vm",
                "serial-given-target",
                json!({"newSMBiosSerial": "given-serial"}),
            ),
        ),
        scenario(
            "serial-absent",
            "serial-absent-clone",
            vm_clone(
                "serial-absent-clone",
                "serial-vm",
                "serial-absent-target",
                json!({}),
            ),
        ),
        scenario(
            "patches",
            "patches-clone",
            vm_clone(
                "patches-clone",
                "patches-vm",
                "patches-target",
                json!({
                    "newSMBiosSerial": "overridden-serial",
                    "patches": [
                        r#"{"op": "add", "path": "/spec/template/metadata/labels/example", "value": "new-label"}"#,
                        r#"{"op": "remove", "path": "/metadata/annotations/description"}"#,
                        r#"{"op": "replace", "path": "/spec/template/spec/domain/resources/requests/memory", "value": "256Mi"}"#,
                        r#"{"op": "replace", "path": "/spec/template/spec/domain/firmware/serial", "value": "patched-serial"}"#,
                    ],
                }),
            ),
        ),
        scenario(
            "data-volume-templates",
            "dv-clone",
            vm_clone(
                "dv-clone",
                "dv-vm",
                "dv-target",
                json!({"newSMBiosSerial": "dv-serial"}),
            ),
        ),
        Scenario {
            round: 2,
            ..scenario(
                "clone-of-clone",
                "coc-clone",
                vm_clone(
                    "coc-clone",
                    "vm-clone-target",
                    "coc-target",
                    json!({
                        "labelFilters": ["*", "!app"],
                        "newMacAddresses": {"default": "02-00-00-00-00-cc"},
                    }),
                ),
            )
        },
    ]
}

/// A halted containerDisk VM with two interfaces (fixed MACs), a firmware serial, and the given
/// labels and annotations on the VM and on its template.
fn container_disk_vm(
    name: &str,
    labels: Value,
    annotations: Value,
    template_labels: Value,
    template_annotations: Value,
) -> String {
    vm_manifest(
        name,
        labels,
        annotations,
        template_labels,
        template_annotations,
        json!({"name": "rootdisk", "containerDisk": {"image": CONTAINER_DISK}}),
        None,
    )
    .to_string()
}

/// A halted VM whose disk is a DataVolume of its `dataVolumeTemplates` on snapshottable storage.
fn data_volume_vm(name: &str) -> String {
    let dv = format!("{name}-root");
    vm_manifest(
        name,
        json!({"app": "dv"}),
        json!({}),
        json!({"app": "dv"}),
        json!({}),
        json!({"name": "rootdisk", "dataVolume": {"name": dv}}),
        Some(json!([{
            "metadata": {"name": dv},
            "spec": {
                "source": {"blank": {}},
                "storage": {"storageClassName": "sim-snapshot", "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}}},
            },
        }])),
    )
    .to_string()
}

fn vm_manifest(
    name: &str,
    labels: Value,
    annotations: Value,
    template_labels: Value,
    template_annotations: Value,
    volume: Value,
    data_volume_templates: Option<Value>,
) -> Value {
    let mut vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {"labels": template_labels, "annotations": template_annotations},
                "spec": {
                    "domain": {
                        "devices": {
                            "disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}],
                            "interfaces": [
                                {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"},
                                {"name": "interfaceName", "bridge": {}, "macAddress": "02:00:00:00:00:02"},
                            ],
                        },
                        "firmware": {"serial": format!("{name}-serial")},
                        "resources": {"requests": {"memory": "128Mi"}},
                    },
                    "networks": [
                        {"name": "default", "pod": {}},
                        {"name": "interfaceName", "multus": {"networkName": "bridge-net"}},
                    ],
                    "volumes": [volume],
                },
            },
        },
    });
    if let Some(templates) = data_volume_templates {
        vm["spec"]["dataVolumeTemplates"] = templates;
    }
    vm
}

fn golden_snapshot() -> String {
    json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
           "metadata": {"name": "golden"},
           "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "golden-vm"}}})
    .to_string()
}

/// A manifest (YAML or JSON) as JSON.
fn parse_manifest(manifest: &str) -> Value {
    serde_saphyr::from_str(manifest).expect("a scenario manifest parses")
}

// ---------------------------------------------------------------------------------------------
// Allowed differences
// ---------------------------------------------------------------------------------------------

/// One difference between the two targets of a scenario, at a JSON Pointer (`""`: the outcome).
#[derive(Clone, Debug, PartialEq)]
struct Difference {
    pointer: String,
    upstream: Option<Value>,
    vmclone: Option<Value>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "<absent>".to_owned(),
        };
        let pointer = if self.pointer.is_empty() {
            "(outcome)"
        } else {
            &self.pointer
        };
        write!(
            f,
            "{pointer}: upstream {} / vmclone {}",
            show(&self.upstream),
            show(&self.vmclone)
        )
    }
}

/// What an allowed difference may look at: the scenario's clone spec and vmclone's clone.
struct Context<'a> {
    /// The scenario's clone `spec`, as written.
    spec: &'a Value,
    /// vmclone's namespace, clone UID and target name.
    vmclone_ns: &'a str,
    vmclone_clone_uid: &'a str,
    vmclone_target: &'a str,
}

/// A deliberate difference from upstream's targets; `id` names the entry of docs/decisions.md
/// ("Deliberate differences from upstream's targets") that documents it.
struct Allowed {
    id: &'static str,
    matches: fn(&Context<'_>, &Difference) -> bool,
}

const FIRMWARE_UUID: &str = "/spec/template/spec/domain/firmware/uuid";
const FIRMWARE_SERIAL: &str = "/spec/template/spec/domain/firmware/serial";
const INTERFACES: &str = "/spec/template/spec/domain/devices/interfaces/";
/// The four maps the filters govern, with the clone spec field of their filters.
const FILTERED_MAPS: [(&str, &str); 4] = [
    ("/spec/template/metadata/labels/", "/template/labelFilters"),
    (
        "/spec/template/metadata/annotations/",
        "/template/annotationFilters",
    ),
    ("/metadata/labels/", "/labelFilters"),
    ("/metadata/annotations/", "/annotationFilters"),
];

const ALLOWED: &[Allowed] = &[
    // Upstream blanks the firmware UUID and KubeVirt's VM mutating webhook fills a random one;
    // vmclone writes UUIDv5 of the clone's UID.
    Allowed {
        id: "firmware-uuid",
        matches: |cx, d| {
            d.pointer == FIRMWARE_UUID
                && d.upstream
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_some_and(is_uuid)
                && d.vmclone == Some(json!(firmware_uuid(cx.vmclone_clone_uid)))
        },
    },
    // Without newSMBiosSerial upstream blanks the serial (KubeVirt's VM mutating webhook then
    // fills a random UUID); vmclone generates one from the target's namespace and name.
    Allowed {
        id: "serial-generated",
        matches: |cx, d| {
            d.pointer == FIRMWARE_SERIAL
                && cx.spec.get("newSMBiosSerial").is_none()
                && d.upstream
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_some_and(is_uuid)
                && d.vmclone == Some(json!(generated_serial(cx.vmclone_ns, cx.vmclone_target)))
        },
    },
    // Upstream matches filters as unanchored regular expressions (`key1` also keeps `key10`
    // and `mykey1`); vmclone matches the literal key (with a trailing `*` as a prefix).
    Allowed {
        id: "exact-filters",
        matches: |cx, d| {
            let Some((map, filters)) = FILTERED_MAPS
                .iter()
                .find(|(map, _)| d.pointer.starts_with(map))
            else {
                return false;
            };
            let token = &d.pointer[map.len()..];
            if token.contains('/') {
                return false;
            }
            let key = token.replace("~1", "/").replace("~0", "~");
            let filters: Vec<&str> = cx
                .spec
                .pointer(filters)
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            filters.iter().any(|filter| {
                let negated = filter.starts_with('!');
                let expected = if negated {
                    // Upstream's negative regex removes it; vmclone's literal one keeps it.
                    d.upstream.is_none() && d.vmclone.is_some()
                } else {
                    d.upstream.is_some() && d.vmclone.is_none()
                };
                expected && regex_and_literal_disagree(filter, &key)
            })
        },
    },
    // An empty filter list removes every key upstream (no filter includes anything); vmclone
    // keeps every key, as for an absent list.
    Allowed {
        id: "empty-filter-list",
        matches: |cx, d| {
            FILTERED_MAPS.iter().any(|(map, filters)| {
                d.pointer.starts_with(map)
                    && !d.pointer[map.len()..].contains('/')
                    && cx
                        .spec
                        .pointer(filters)
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty)
            }) && d.upstream.is_none()
                && d.vmclone.is_some()
        },
    },
    // A MAC written with `:` makes upstream's restore be refused forever; vmclone writes it with
    // `-` and finishes.
    Allowed {
        id: "mac-colon",
        matches: |_, d| {
            d.pointer.is_empty()
                && d.upstream
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_some_and(|o| {
                        o.starts_with("RestoreCreationFailed") && o.contains(COLON_REFUSAL)
                    })
                && d.vmclone == Some(json!("Succeeded"))
        },
    },
    // Upstream copies the source's `kubectl.kubernetes.io/last-applied-configuration`, so a
    // later `kubectl apply` of the target diffs against the source's manifest; vmclone never
    // copies it.
    Allowed {
        id: "last-applied-configuration",
        matches: |_, d| {
            d.pointer == "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration"
                && d.upstream.is_some()
                && d.vmclone.is_none()
        },
    },
    // vmclone writes MACs in lower case (upstream copies the user's spelling).
    Allowed {
        id: "mac-lowercase",
        matches: |_, d| {
            d.pointer.starts_with(INTERFACES)
                && d.pointer.ends_with("/macAddress")
                && match (&d.upstream, &d.vmclone) {
                    (Some(Value::String(up)), Some(Value::String(ours))) => {
                        up != ours && *ours == normalize_mac(up)
                    }
                    _ => false,
                }
        },
    },
];

/// Whether upstream's unanchored-regex reading of `filter` and vmclone's literal one disagree
/// about `key` (the filter's literal text occurs in the key, but is not the key, nor its prefix
/// for a trailing `*`). An approximation of RE2 sufficient for filters without metacharacters
/// besides a trailing `*`.
fn regex_and_literal_disagree(filter: &str, key: &str) -> bool {
    let body = filter.trim_start_matches('!');
    if body == "*" {
        return false;
    }
    let literal = body.trim_end_matches('*');
    let literal_match = if body.ends_with('*') {
        key.starts_with(literal)
    } else {
        key == literal
    };
    !literal.is_empty() && key.contains(literal) && !literal_match
}

/// The allowed entry a difference matches, if any.
fn classify(cx: &Context<'_>, d: &Difference) -> Option<&'static str> {
    ALLOWED.iter().find(|a| (a.matches)(cx, d)).map(|a| a.id)
}

// ---------------------------------------------------------------------------------------------
// Normalisation and comparison
// ---------------------------------------------------------------------------------------------

/// What differs per object by nature, given the object's namespace, its target name and its
/// clone's UID.
fn normalise(vm: &Value, namespace: &str, target: &str, clone_uid: &str) -> Value {
    let mut vm = vm.clone();
    if let Some(meta) = vm.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "namespace",
            "selfLink",
        ] {
            meta.remove(key);
        }
    }
    if let Some(object) = vm.as_object_mut() {
        object.remove("status");
    }
    // `tmp-restore-<clone UID>-<restore UID>`: both controllers name the restore after the clone.
    let restore_prefix = format!("tmp-restore-{clone_uid}-");
    if let Some(value) = vm
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.get_mut(LAST_RESTORE))
        && let Some(text) = value.as_str()
        && text.strip_prefix(&restore_prefix).is_some_and(is_uuid)
    {
        *value = json!("tmp-restore-<clone UID>-<restore UID>");
    }
    map_strings(&mut vm, &|s| {
        let s = s.replace(namespace, "<namespace>");
        let s = if s == target {
            "<target>".to_owned()
        } else {
            s
        };
        replace_restore_uids(&s)
    });
    vm
}

/// Applies `f` to every string value (not keys) in `value`.
fn map_strings(value: &mut Value, f: &dyn Fn(&str) -> String) {
    match value {
        Value::String(s) => *s = f(s),
        Value::Array(items) => items.iter_mut().for_each(|v| map_strings(v, f)),
        Value::Object(map) => map.values_mut().for_each(|v| map_strings(v, f)),
        _ => {}
    }
}

/// `restore-<UUID>` (KubeVirt's restored PVC and DataVolume names) → `restore-<restore UID>`.
fn replace_restore_uids(s: &str) -> String {
    const PREFIX: &str = "restore-";
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(PREFIX) {
        let after = &rest[at + PREFIX.len()..];
        out.push_str(&rest[..at + PREFIX.len()]);
        if after.get(..36).is_some_and(is_uuid) {
            out.push_str("<restore UID>");
            rest = &after[36..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Every leaf where the two documents differ, in document order.
fn differences(upstream: &Value, vmclone: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    walk("", Some(upstream), Some(vmclone), &mut out);
    out
}

/// Objects and arrays are compared member by member, also against a missing one (a map the
/// other side lacks altogether yields one difference per key); an empty object or array against
/// a missing one is a difference of its own.
fn walk(pointer: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Difference>) {
    static EMPTY: std::sync::LazyLock<serde_json::Map<String, Value>> =
        std::sync::LazyLock::new(serde_json::Map::new);
    fn object(v: Option<&Value>) -> Option<&serde_json::Map<String, Value>> {
        match v {
            None => Some(&EMPTY),
            Some(v) => v.as_object(),
        }
    }
    fn array(v: Option<&Value>) -> Option<&[Value]> {
        match v {
            None => Some(&[]),
            Some(v) => v.as_array().map(Vec::as_slice),
        }
    }
    fn descend(v: Option<&Value>) -> bool {
        match v {
            Some(Value::Object(m)) => !m.is_empty(),
            Some(Value::Array(l)) => !l.is_empty(),
            _ => false,
        }
    }
    if descend(a) || descend(b) {
        if let (Some(x), Some(y)) = (object(a), object(b)) {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let token = key.replace('~', "~0").replace('/', "~1");
                walk(&format!("{pointer}/{token}"), x.get(key), y.get(key), out);
            }
            return;
        }
        if let (Some(x), Some(y)) = (array(a), array(b)) {
            for i in 0..x.len().max(y.len()) {
                walk(&format!("{pointer}/{i}"), x.get(i), y.get(i), out);
            }
            return;
        }
    }
    match (a, b) {
        (a, b) if a == b => {}
        (a, b) => out.push(Difference {
            pointer: pointer.to_owned(),
            upstream: a.cloned(),
            vmclone: b.cloned(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Running a side
// ---------------------------------------------------------------------------------------------

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn vm_resource() -> ApiResource {
    resource("kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}

fn clone_resource() -> ApiResource {
    resource(
        "clone.kubevirt.io",
        "v1beta1",
        "VirtualMachineClone",
        "virtualmachineclones",
    )
}

fn snapshot_resource() -> ApiResource {
    resource(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineSnapshot",
        "virtualmachinesnapshots",
    )
}

/// One side: a namespace and who clones in it.
struct Side {
    who: &'static str,
    ns: String,
    client: Client,
    timeout: Duration,
}

/// What a side produced for one scenario.
#[derive(Clone, Debug)]
enum Outcome {
    Target {
        /// The target VM as read from the API server (not normalised).
        vm: Value,
        target: String,
        clone_uid: String,
    },
    /// Upstream's restore refused (the event's message).
    Refused(String),
}

impl Side {
    fn api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, resource)
    }

    async fn get(&self, resource: &ApiResource, name: &str) -> Result<Option<Value>> {
        Ok(match self.api(resource).get_opt(name).await? {
            Some(object) => Some(serde_json::to_value(object)?),
            None => None,
        })
    }

    async fn kubectl(&self, env: &TestEnv, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        Ok(env.kubectl_output(&all, stdin).await?.ok()?.stdout)
    }

    /// Sources (client-side `kubectl apply`, so they carry `last-applied-configuration` as most
    /// users' VMs do) and the golden snapshot.
    async fn create_sources(&self, env: &TestEnv) -> Result<()> {
        for source in sources() {
            self.kubectl(env, &["apply", "-f", "-"], Some(&source))
                .await?;
        }
        self.kubectl(env, &["create", "-f", "-"], Some(&golden_snapshot()))
            .await?;
        Ok(())
    }

    /// Waits until KubeVirt reports every source's volumes (snapshottable PVCs and DataVolumes,
    /// not-snapshottable containerDisks) and the golden snapshot is ready.
    async fn wait_for_sources(&self) -> Result<()> {
        for source in sources() {
            let manifest = parse_manifest(&source);
            let vm = if manifest["kind"] == "List" {
                manifest["items"][1].clone()
            } else {
                manifest
            };
            let name = vm["metadata"]["name"].as_str().unwrap().to_owned();
            let volumes = vm["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .clone();
            wait_for(
                &format!("{}: source {name}'s volume snapshot statuses", self.who),
                self.timeout,
                || async {
                    let vm = self.get(&vm_resource(), &name).await?.context("no VM")?;
                    let statuses = vm
                        .pointer("/status/volumeSnapshotStatuses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for volume in &volumes {
                        let claim = volume.get("containerDisk").is_none();
                        let status = statuses.iter().find(|s| s["name"] == volume["name"]);
                        ensure!(
                            status.is_some_and(|s| !claim || s["enabled"] == true),
                            "volume {} not (yet) snapshottable: {statuses:?}",
                            volume["name"]
                        );
                    }
                    Ok(())
                },
            )
            .await?;
        }
        wait_for(
            &format!("{}: the golden snapshot to be ready", self.who),
            self.timeout,
            || async {
                let s = self
                    .get(&snapshot_resource(), "golden")
                    .await?
                    .context("no snapshot")?;
                ensure!(s.pointer("/status/readyToUse") == Some(&json!(true)), "{s}");
                Ok(())
            },
        )
        .await
    }

    /// Creates the clones of `round`.
    async fn create_clones(&self, env: &TestEnv, round: u8) -> Result<()> {
        for s in scenarios().into_iter().filter(|s| s.round == round) {
            self.kubectl(env, &["create", "-f", "-"], Some(&s.manifest))
                .await
                .with_context(|| format!("{}: creating the clone of {}", self.who, s.name))?;
        }
        Ok(())
    }

    /// Waits until `scenario` has its outcome on this side and returns it.
    async fn outcome(&self, scenario: &Scenario, refusal_expected: bool) -> Result<Outcome> {
        let clone = scenario.clone;
        if refusal_expected {
            let message = wait_for(
                &format!("{}: {clone}'s restore to be refused", self.who),
                self.timeout,
                || async {
                    let events = self.events(clone).await?;
                    events
                        .iter()
                        .find(|(reason, note)| {
                            reason == "RestoreCreationFailed" && note.contains(COLON_REFUSAL)
                        })
                        .map(|(reason, note)| format!("{reason}: {note}"))
                        .with_context(|| format!("events so far: {events:?}"))
                },
            )
            .await?;
            return Ok(Outcome::Refused(message));
        }
        // Upstream's clone controller requeues with exponential backoff and may notice a
        // complete restore minutes late (research §9-10). The comparison is about targets, not
        // speed, so an annotation on its clone every few seconds wakes it (an update event).
        let poked = std::cell::Cell::new(Instant::now());
        let done = wait_for(
            &format!("{}: clone {clone} to succeed", self.who),
            self.timeout,
            || async {
                if self.who == "upstream" && poked.get().elapsed() >= POKE_EVERY {
                    poked.set(Instant::now());
                    let poke = json!({"metadata": {"annotations": {
                        "vmclone.dev/test-poke": format!("{:?}", poked.get())}}});
                    self.api(&clone_resource())
                        .patch(clone, &PatchParams::default(), &Patch::Merge(&poke))
                        .await?;
                }
                let c = self
                    .get(&clone_resource(), clone)
                    .await?
                    .context("no clone")?;
                ensure!(
                    c.pointer("/status/phase") == Some(&json!("Succeeded")),
                    "status: {}",
                    c.get("status").unwrap_or(&Value::Null)
                );
                Ok(c)
            },
        )
        .await?;
        let target = done
            .pointer("/status/targetName")
            .or_else(|| done.pointer("/spec/target/name"))
            .and_then(Value::as_str)
            .context("the clone names no target")?
            .to_owned();
        let clone_uid = done["metadata"]["uid"].as_str().unwrap().to_owned();
        // KubeVirt's VM controller has taken the new VM over (its finalizer and a status).
        let vm = wait_for(
            &format!("{}: target {target} reconciled by KubeVirt", self.who),
            self.timeout,
            || async {
                let vm = self
                    .get(&vm_resource(), &target)
                    .await?
                    .context("no target VM")?;
                let finalized = vm["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| f.contains(&json!(FINALIZER)));
                ensure!(
                    finalized && vm.pointer("/status/printableStatus").is_some(),
                    "{vm}"
                );
                Ok(vm)
            },
        )
        .await?;
        Ok(Outcome::Target {
            vm,
            target,
            clone_uid,
        })
    }

    /// Every outcome: round 1, then round 2 (which clones a round-1 target).
    async fn run(&self, env: &TestEnv, upstream: bool) -> Result<BTreeMap<&'static str, Outcome>> {
        let mut outcomes = BTreeMap::new();
        for round in [1, 2] {
            self.create_clones(env, round).await?;
            for s in scenarios().into_iter().filter(|s| s.round == round) {
                let refused = upstream && s.upstream == Upstream::RestoreRefused;
                let outcome = self.outcome(&s, refused).await?;
                outcomes.insert(s.name, outcome);
            }
        }
        Ok(outcomes)
    }

    /// (reason, note) of every event about `clone`.
    async fn events(&self, clone: &str) -> Result<Vec<(String, String)>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(clone))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    fn dump(&self, env: &TestEnv) -> String {
        let mut out = format!("=== {} ({}) ===\n", self.who, self.ns);
        for args in [
            vec![
                "get",
                "vmclone,vmsnapshot,vmrestore,vm,dv,pvc",
                "-o",
                "yaml",
            ],
            vec!["get", "events", "--sort-by=.metadata.creationTimestamp"],
        ] {
            // For failure messages only: blocking is fine then.
            let mut all = vec!["-n", self.ns.as_str()];
            all.extend_from_slice(&args);
            match env.kubectl().args(&all).output() {
                Ok(o) => out.push_str(&String::from_utf8_lossy(&[o.stdout, o.stderr].concat())),
                Err(e) => {
                    let _ = writeln!(out, "kubectl {args:?} failed: {e:#}");
                }
            }
        }
        out
    }
}

/// Fails with everything worth seeing.
fn fail(env: &TestEnv, sides: &[&Side], error: anyhow::Error) -> ! {
    let mut text = format!("{error:#}\n");
    for side in sides {
        text.push_str(&side.dump(env));
    }
    text.push_str(&env.log_tails(40));
    panic!("{text}");
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// One compared scenario: its differences, each with the allowed id it matched (`None`:
/// unexpected).
struct Compared {
    scenario: &'static str,
    differences: Vec<(Difference, Option<&'static str>)>,
}

fn compare(
    scenario: &Scenario,
    upstream: &BTreeMap<&'static str, Outcome>,
    upstream_ns: &str,
    vmclone: &BTreeMap<&'static str, Outcome>,
    vmclone_ns: &str,
) -> Result<Compared> {
    let Some(Outcome::Target {
        vm: ours,
        target: our_target,
        clone_uid: our_uid,
    }) = vmclone.get(scenario.name)
    else {
        bail!(
            "{}: vmclone produced no target: {:?}",
            scenario.name,
            vmclone.get(scenario.name)
        );
    };
    let mut found = Vec::new();
    let reference = scenario.reference.unwrap_or(scenario.name);
    match (upstream.get(scenario.name), scenario.upstream) {
        (Some(Outcome::Refused(message)), Upstream::RestoreRefused) => {
            found.push(Difference {
                pointer: String::new(),
                upstream: Some(json!(message)),
                vmclone: Some(json!("Succeeded")),
            });
        }
        (Some(Outcome::Target { .. }), Upstream::Target) => {}
        (other, expected) => bail!(
            "{}: upstream's outcome {other:?} is not the expected {expected:?}",
            scenario.name
        ),
    }
    let Some(Outcome::Target {
        vm: theirs,
        target: their_target,
        clone_uid: their_uid,
    }) = upstream.get(reference)
    else {
        bail!(
            "{}: upstream produced no target for {reference}",
            scenario.name
        );
    };
    let a = normalise(theirs, upstream_ns, their_target, their_uid);
    let b = normalise(ours, vmclone_ns, our_target, our_uid);
    found.extend(differences(&a, &b));
    let spec = parse_manifest(&scenario.manifest)["spec"].clone();
    let cx = Context {
        spec: &spec,
        vmclone_ns,
        vmclone_clone_uid: our_uid,
        vmclone_target: our_target,
    };
    Ok(Compared {
        scenario: scenario.name,
        differences: found
            .into_iter()
            .map(|d| {
                let id = classify(&cx, &d);
                (d, id)
            })
            .collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_and_vmclone_make_the_same_targets_but_for_documented_fixes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let mut env = TestEnv::start_with_options(Options {
        kubevirt: Some(KubeVirtOptions {
            upstream_clone_controller: true,
        }),
        clone_crd: CloneCrd::Upstream,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = env.client().await.unwrap();
    kubevirt_sim::install_storage(client.clone()).await.unwrap();
    let mut sides = Vec::new();
    let mut sims = Vec::new();
    for (who, prefix, timeout) in [
        ("upstream", "diff-upstream", UPSTREAM_TIMEOUT),
        ("vmclone", "diff-vmclone", VMCLONE_TIMEOUT),
    ] {
        let ns = env.namespace(prefix).await.unwrap();
        let config = kubevirt_sim::SimConfig::default()
            .storage_only(true)
            .namespace(ns.clone());
        sims.push(
            kubevirt_sim::Sim::start(client.clone(), config)
                .await
                .unwrap(),
        );
        sides.push(Side {
            who,
            ns,
            client: client.clone(),
            timeout,
        });
    }
    let [upstream_side, vmclone_side] = &sides[..] else {
        unreachable!()
    };
    let all = [upstream_side, vmclone_side];
    for side in all {
        side.create_sources(&env)
            .await
            .unwrap_or_else(|e| fail(&env, &all, e));
    }
    for side in all {
        side.wait_for_sources()
            .await
            .unwrap_or_else(|e| fail(&env, &all, e));
    }
    let prepared = started.elapsed();

    // 1. Upstream's clone controller.
    let upstream = upstream_side
        .run(&env, true)
        .await
        .unwrap_or_else(|e| fail(&env, &all, e));
    assert!(
        upstream_side
            .get(&vm_resource(), "mac-colon-target")
            .await
            .unwrap()
            .is_none(),
        "upstream created the target of a clone whose restore was refused"
    );
    let upstream_done = started.elapsed();

    // 2. vmclone: upstream's clone controller off, vmclone's CRD, vmclone running.
    env.restart_virt_controller(KubeVirtOptions {
        upstream_clone_controller: false,
    })
    .await
    .unwrap();
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crds");
    env.install_crds_from(&[crd]).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(clone_controller::run(
        client.clone(),
        clone_controller::Config {
            namespace: Some(vmclone_side.ns.clone()),
            ..Default::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let vmclone = vmclone_side
        .run(&env, false)
        .await
        .unwrap_or_else(|e| fail(&env, &all, e));
    let _ = stop.send(());
    controller.await.unwrap().unwrap();
    let vmclone_done = started.elapsed();

    // 3. Compare.
    let mut report = String::new();
    let mut unexpected = Vec::new();
    let mut seen = BTreeSet::new();
    for scenario in scenarios() {
        let compared = compare(
            &scenario,
            &upstream,
            &upstream_side.ns,
            &vmclone,
            &vmclone_side.ns,
        )
        .unwrap_or_else(|e| fail(&env, &all, e));
        let _ = writeln!(
            report,
            "{}: {} difference(s)",
            compared.scenario,
            compared.differences.len()
        );
        for (d, id) in &compared.differences {
            match id {
                Some(id) => {
                    seen.insert(*id);
                    let _ = writeln!(report, "  allowed [{id}] {d}");
                }
                None => {
                    let _ = writeln!(report, "  UNEXPECTED {d}");
                    unexpected.push(format!("{}: {d}", compared.scenario));
                }
            }
        }
    }
    eprintln!(
        "differential run: prepared {:.1}s, upstream done {:.1}s, vmclone done {:.1}s\n{report}",
        prepared.as_secs_f64(),
        upstream_done.as_secs_f64(),
        vmclone_done.as_secs_f64()
    );
    for sim in sims {
        sim.stop().await;
    }
    assert!(
        unexpected.is_empty(),
        "vmclone's targets differ from upstream's where no documented decision says they may \
         (scenario: JSON pointer: upstream value / vmclone value):\n  {}\n\nfull report:\n{report}",
        unexpected.join("\n  ")
    );
    let unused: Vec<_> = ALLOWED
        .iter()
        .map(|a| a.id)
        .filter(|id| !seen.contains(id))
        .collect();
    assert!(
        unused.is_empty(),
        "allowed differences never seen (remove them or restore the scenario that shows them): \
         {unused:?}\n{report}"
    );
}

/// The section of docs/decisions.md that lists the deliberate differences.
const DECISIONS_SECTION: &str = "## Deliberate differences from upstream's targets";

#[test]
fn every_allowed_difference_is_documented_in_decisions_md() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/decisions.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text
        .find(DECISIONS_SECTION)
        .unwrap_or_else(|| panic!("{} has no section {DECISIONS_SECTION:?}", path.display()));
    let section = &text[at + DECISIONS_SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let missing: Vec<_> = ALLOWED
        .iter()
        .map(|a| a.id)
        .filter(|id| !section.contains(&format!("`{id}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "allowed differences not documented in {} ({DECISIONS_SECTION}): {missing:?}",
        path.display()
    );
    let ids: BTreeSet<_> = ALLOWED.iter().map(|a| a.id).collect();
    assert_eq!(ids.len(), ALLOWED.len(), "duplicate allowed ids");
}

/// The comparison itself, on hand-made targets: normalisation hides what differs by nature,
/// allowed differences are recognised only in their exact shape, anything else is unexpected.
#[test]
fn the_comparison_normalises_classifies_and_catches() {
    let clone_uid = "0b1c2d3e-0000-4000-8000-000000000001";
    let restore_uid = "0b1c2d3e-0000-4000-8000-0000000000ff";
    let vm = |ns: &str, target: &str, uid: &str, restore: &str, uuid: &str, key10: bool| {
        let mut labels = json!({"key1": "a"});
        if key10 {
            labels["key10"] = json!("b");
        }
        json!({
            "metadata": {"name": target, "namespace": ns, "uid": uid, "resourceVersion": "7",
                         "labels": labels,
                         "annotations": {LAST_RESTORE: format!("tmp-restore-{uid}-{restore}"),
                                         "note": format!("in {ns}")}},
            "spec": {"template": {"spec": {
                "domain": {"firmware": {"uuid": uuid, "serial": "s"},
                           "devices": {"interfaces": [{"name": "default", "macAddress": "02-00-00-00-00-AA"}]}},
                "volumes": [{"name": "root", "dataVolume": {"name": format!("restore-{restore}-root")}}]}}},
            "status": {"printableStatus": "Stopped"},
        })
    };
    let spec = json!({"labelFilters": ["key1"]});
    let ours_uuid = firmware_uuid(clone_uid);
    let upstream = normalise(
        &vm(
            "ns-a",
            "clone-x-abcde",
            clone_uid,
            restore_uid,
            "9f0e4c1a-0000-4000-8000-00000000abcd",
            true,
        ),
        "ns-a",
        "clone-x-abcde",
        clone_uid,
    );
    let other_restore = "0b1c2d3e-0000-4000-8000-0000000000ee";
    let mut ours_raw = vm(
        "ns-b",
        "clone-x-fghij",
        clone_uid,
        other_restore,
        &ours_uuid,
        false,
    );
    ours_raw["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] =
        json!("02-00-00-00-00-aa");
    let ours = normalise(&ours_raw, "ns-b", "clone-x-fghij", clone_uid);
    let cx = Context {
        spec: &spec,
        vmclone_ns: "ns-b",
        vmclone_clone_uid: clone_uid,
        vmclone_target: "clone-x-fghij",
    };
    let found: Vec<_> = differences(&upstream, &ours)
        .into_iter()
        .map(|d| (d.pointer.clone(), classify(&cx, &d)))
        .collect();
    assert_eq!(
        found,
        vec![
            ("/metadata/labels/key10".to_owned(), Some("exact-filters")),
            (
                "/spec/template/spec/domain/devices/interfaces/0/macAddress".to_owned(),
                Some("mac-lowercase")
            ),
            (FIRMWARE_UUID.to_owned(), Some("firmware-uuid")),
        ]
    );
    // A perturbed field is unexpected, and so is an allowed path with the wrong value.
    let mut perturbed = ours.clone();
    perturbed["spec"]["template"]["spec"]["volumes"][0]["name"] = json!("other");
    perturbed["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"] = json!("not-derived");
    let unexpected: Vec<_> = differences(&upstream, &perturbed)
        .into_iter()
        .filter(|d| classify(&cx, d).is_none())
        .map(|d| d.pointer)
        .collect();
    assert_eq!(
        unexpected,
        vec![
            FIRMWARE_UUID.to_owned(),
            "/spec/template/spec/volumes/0/name".to_owned()
        ]
    );
    assert_eq!(
        replace_restore_uids(&format!("restore-{restore_uid}-root")),
        "restore-<restore UID>-root"
    );
    // A map one side lacks is compared key by key; an empty one against none is one difference.
    let pointers = |a: Value, b: Value| -> Vec<String> {
        differences(&a, &b).into_iter().map(|d| d.pointer).collect()
    };
    assert_eq!(
        pointers(json!({"m": {"x": 1, "y/z": 2}}), json!({})),
        vec!["/m/x", "/m/y~1z"]
    );
    assert_eq!(pointers(json!({"m": {}}), json!({})), vec!["/m"]);
    assert_eq!(
        pointers(json!({"m": [1]}), json!({"m": {"0": 1}})),
        vec!["/m"]
    );
    assert_eq!(
        pointers(json!({"m": [1, 2]}), json!({"m": [1]})),
        vec!["/m/1"]
    );
}
