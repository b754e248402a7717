//! Throughput of the engine's hot paths, with inputs shaped like a real cluster's.
//!
//! ```sh
//! cargo bench -p clone-core --bench engine
//! ```
//!
//! Groups and functions (criterion writes `target/criterion/<group>/<function>/new/`):
//!
//! - `filter`: one label map of [`LABELS`] keys against a typical filter list; every function
//!   counts the labels it evaluates.
//!   - `keeps`: [`FilterSet::keeps`] per key, on a list parsed once;
//!   - `removed_keys`: [`FilterSet::removed_keys`] over the map (filter, collect, sort);
//!   - `parse_remove`: what identity stripping does per map: parse the list, then `removed_keys`.
//! - `patches`: the identity patches of a realistic VM (three interfaces, firmware, labels and
//!   annotations on the VM and its template, two user patches); counts the operations.
//!   - `generate`: [`identity_patches`];
//!   - `apply`: those operations applied with KubeVirt's lenient applier, as the restore does.
//! - `decide`: one whole [`decide`] pass; counts decisions.
//!   - `restore`: the snapshot became ready, the content is checked and the restore built with the
//!     identity patches (the heaviest pass of a clone);
//!   - `wait`: a clone waiting for its restore to complete (the most frequent pass).
//!
//! Not a test: nothing here asserts a speed. The fixtures are checked once before measuring, so a
//! change that makes a benchmark measure a different path fails loudly instead.

use std::collections::BTreeMap;
use std::error::Error;
use std::hint::black_box;

use clone_api::kubevirt::{
    VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot, VirtualMachineSnapshotContent,
};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VirtualMachineCloneStatus};
use clone_api::validation::field;
use clone_core::decide::FeatureGate;
use clone_core::filter::FilterSet;
use clone_core::identity::{IdentityInput, identity_patches};
use clone_core::patch::apply_kubevirt;
use clone_core::{Action, Observed, decide};
use criterion::{Criterion, Throughput};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Labels on the source VM (what a VM deployed by a chart and an operator carries).
const LABELS: usize = 20;
const NAMESPACE: &str = "tenant-a";
const UID: &str = "5f0c3f7e-8a7d-4b6e-9a51-2d4c1e0b7f31";
const SNAPSHOT: &str = "tmp-snapshot-5f0c3f7e-8a7d-4b6e-9a51-2d4c1e0b7f31";
const RESTORE: &str = "tmp-restore-5f0c3f7e-8a7d-4b6e-9a51-2d4c1e0b7f31";
const CONTENT: &str = "vmsnapshot-content-7d1e9a40-58c2-4f0b-b1b4-0c6f5e2a9d11";
const TARGET: &str = "web-01-clone";

/// The typical filter list: everything except KubeVirt's own labels and the chart's instance.
fn label_filters() -> Vec<String> {
    ["*", "!kubevirt.io/*", "!app.kubernetes.io/instance"]
        .map(String::from)
        .to_vec()
}

/// [`LABELS`] labels: chart and operator labels, KubeVirt's, and the team's own.
fn labels() -> Map<String, Value> {
    let fixed = [
        ("app", "web"),
        ("app.kubernetes.io/name", "web"),
        ("app.kubernetes.io/instance", "web-01"),
        ("app.kubernetes.io/version", "2.14.1"),
        ("app.kubernetes.io/component", "frontend"),
        ("app.kubernetes.io/part-of", "shop"),
        ("app.kubernetes.io/managed-by", "helm"),
        ("helm.sh/chart", "web-2.14.1"),
        ("kubevirt.io/vm", "web-01"),
        ("kubevirt.io/domain", "web-01"),
        ("kubevirt.io/size", "medium"),
        ("vm.kubevirt.io/template", "rhel9-server-medium"),
        ("vm.kubevirt.io/template.namespace", "openshift"),
        ("os.template.kubevirt.io/rhel9.4", "true"),
        ("workload.template.kubevirt.io/server", "true"),
        ("flavor.template.kubevirt.io/medium", "true"),
        ("example.com/team", "storefront"),
        ("example.com/cost-center", "cc-4711"),
        ("example.com/environment", "production"),
        ("topology.kubernetes.io/zone", "zone-a"),
    ];
    fixed
        .into_iter()
        .take(LABELS)
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect()
}

/// A VM manifest as a snapshot content stores it: identity everywhere, 20 labels.
fn source_vm() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": "web-01",
            "namespace": NAMESPACE,
            "uid": "0a8f5c2e-3b1d-4e7a-9c6f-1d2e3f4a5b6c",
            "labels": labels(),
            "annotations": {
                "description": "storefront web server",
                "kubevirt.io/latest-observed-api-version": "v1",
                "kubevirt.io/storage-observed-api-version": "v1",
                "meta.helm.sh/release-name": "web-01",
                "meta.helm.sh/release-namespace": NAMESPACE,
                "example.com/owner": "team-storefront",
                "restore.kubevirt.io/lastRestoreUID": "tmp-restore-old-1234",
            },
        },
        "spec": {
            "runStrategy": "Halted",
            "dataVolumeTemplates": [{
                "metadata": {"name": "web-01-root"},
                "spec": {"source": {"pvc": {"name": "rhel9", "namespace": "images"}},
                         "storage": {"resources": {"requests": {"storage": "30Gi"}}}},
            }],
            "template": {
                "metadata": {
                    "labels": {
                        "kubevirt.io/vm": "web-01",
                        "kubevirt.io/domain": "web-01",
                        "app": "web",
                        "app.kubernetes.io/instance": "web-01",
                        "example.com/team": "storefront",
                    },
                    "annotations": {
                        "vm.kubevirt.io/os": "rhel9",
                        "vm.kubevirt.io/workload": "server",
                        "ovn.kubernetes.io/ip_address": "10.16.0.15",
                        "ovn.kubernetes.io/mac_address": "02-00-00-00-00-01",
                    },
                },
                "spec": {
                    "domain": {
                        "cpu": {"cores": 2, "sockets": 1, "threads": 1},
                        "memory": {"guest": "4Gi"},
                        "devices": {
                            "disks": [
                                {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1},
                                {"name": "data", "disk": {"bus": "virtio"}},
                                {"name": "cloudinit", "disk": {"bus": "virtio"}},
                            ],
                            "interfaces": [
                                {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01", "model": "virtio"},
                                {"name": "storage", "bridge": {}, "macAddress": "02:00:00:00:00:02", "model": "virtio"},
                                {"name": "backup", "bridge": {}, "macAddress": "02:00:00:00:00:03"},
                            ],
                            "rng": {},
                        },
                        "firmware": {
                            "serial": "8f3c2a10-source-serial",
                            "uuid": "6a1f0c9e-2b3d-4c5e-8f70-9a1b2c3d4e5f",
                            "bootloader": {"efi": {"secureBoot": false}},
                        },
                        "resources": {"requests": {"memory": "4Gi"}},
                    },
                    "networks": [
                        {"name": "default", "pod": {}},
                        {"name": "storage", "multus": {"networkName": "storage-net"}},
                        {"name": "backup", "multus": {"networkName": "backup-net"}},
                    ],
                    "volumes": [
                        {"name": "root", "dataVolume": {"name": "web-01-root"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "web-01-data"}},
                        {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\nhostname: web-01\n"}},
                    ],
                },
            },
        },
        "status": {
            "printableStatus": "Stopped",
            "ready": false,
            "volumeSnapshotStatuses": [
                {"name": "root", "enabled": true},
                {"name": "data", "enabled": true},
                {"name": "cloudinit", "enabled": false,
                 "reason": "Snapshot is not supported for this volumeSource type [cloudinit]"},
            ],
        },
    })
}

/// The clone's spec: the typical filters, two new MACs, a serial and two patches of the user's.
fn clone_spec() -> Value {
    json!({
        "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web-01"},
        "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": TARGET},
        "labelFilters": label_filters(),
        "annotationFilters": ["*", "!meta.helm.sh/*", "!kubevirt.io/*"],
        "template": {
            "labelFilters": ["*", "!kubevirt.io/*", "!app.kubernetes.io/instance"],
            "annotationFilters": ["*", "!ovn.kubernetes.io/*"],
        },
        "newMacAddresses": {"default": "02:AB:CD:00:00:01", "storage": "02-ab-cd-00-00-02"},
        "newSMBiosSerial": "web-01-clone-serial",
        "volumeNamePolicy": "PrefixTargetName",
        "patches": [
            r#"{"op": "add", "path": "/spec/template/metadata/labels/example.com~1clone", "value": "true"}"#,
            r#"{"op": "replace", "path": "/metadata/labels/example.com~1environment", "value": "staging"}"#,
        ],
    })
}

/// The clone at `phase`, as the controller reads it.
fn clone_at(phase: ClonePhase, restore: Option<&str>) -> BoxResult<VirtualMachineClone> {
    let mut clone: VirtualMachineClone = serde_json::from_value(json!({
        "apiVersion": "clone.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClone",
        "metadata": {"name": "web-01-clone", "namespace": NAMESPACE, "uid": UID, "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": clone_spec(),
    }))?;
    clone.status = Some(VirtualMachineCloneStatus {
        phase,
        snapshot_name: Some(SNAPSHOT.to_owned()),
        restore_name: restore.map(str::to_owned),
        target_name: Some(TARGET.to_owned()),
        ..Default::default()
    });
    Ok(clone)
}

/// Everything a pass observes, owned.
struct World {
    clone: VirtualMachineClone,
    source: VirtualMachine,
    snapshot: VirtualMachineSnapshot,
    content: VirtualMachineSnapshotContent,
    restore: Option<VirtualMachineRestore>,
    now: Time,
}

impl World {
    /// The pass in which the temporary snapshot turned ready: the restore gets built.
    fn snapshot_ready() -> BoxResult<Self> {
        let source: VirtualMachine = serde_json::from_value(source_vm())?;
        let snapshot = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": SNAPSHOT, "namespace": NAMESPACE, "uid": "7d1e9a40-58c2-4f0b-b1b4-0c6f5e2a9d11"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web-01"}},
            "status": {"readyToUse": true, "phase": "Succeeded",
                       "virtualMachineSnapshotContentName": CONTENT},
        }))?;
        let content = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent",
            "metadata": {"name": CONTENT, "namespace": NAMESPACE},
            "spec": {
                "virtualMachineSnapshotName": SNAPSHOT,
                "source": {"virtualMachine": source_vm()},
                "volumeBackups": [
                    {"volumeName": "root", "volumeSnapshotName": "vmsnapshot-root"},
                    {"volumeName": "data", "volumeSnapshotName": "vmsnapshot-data"},
                ],
            },
            "status": {"readyToUse": true},
        }))?;
        Ok(Self {
            clone: clone_at(ClonePhase::SnapshotInProgress, None)?,
            source,
            snapshot,
            content,
            restore: None,
            now: Time("2026-01-01T00:01:00Z".parse()?),
        })
    }

    /// A later pass: the restore exists and is still running.
    fn restore_running() -> BoxResult<Self> {
        let mut world = Self::snapshot_ready()?;
        world.clone = clone_at(ClonePhase::RestoreInProgress, Some(RESTORE))?;
        world.restore = Some(serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
            "metadata": {"name": RESTORE, "namespace": NAMESPACE},
            "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": TARGET},
                     "virtualMachineSnapshotName": SNAPSHOT},
            "status": {"complete": false, "conditions": [
                {"type": "Progressing", "status": "True", "reason": "Creating new PVCs"}]},
        }))?);
        Ok(world)
    }

    fn observed(&self) -> Observed<'_> {
        Observed {
            clone: &self.clone,
            now: self.now.clone(),
            feature_gate: FeatureGate::Enabled,
            source_vm: Some(&self.source),
            source_snapshot: None,
            temp_snapshot: Some(&self.snapshot),
            content: Some(&self.content),
            restore: self.restore.as_ref(),
            target: None,
            claim_phases: BTreeMap::new(),
            rivals: Vec::new(),
            rejection: None,
            restore_stall_timeout: clone_core::decide::DEFAULT_RESTORE_STALL_TIMEOUT,
            source_claims: Default::default(),
            target_full: None,
            data_volumes: Default::default(),
            access: None,
            source_held_by: None,
        }
    }
}

fn bench_filter(c: &mut Criterion) -> BoxResult<()> {
    let map = labels();
    let filters = label_filters();
    let set = FilterSet::parse(field::LABEL_FILTERS, Some(&filters))?;
    let removed = set.removed_keys(&map);
    // The three `kubevirt.io/` labels and the instance label.
    if removed.len() != 4 {
        return Err(format!("the filter fixture removes {removed:?}").into());
    }

    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(map.len() as u64));
    group.bench_function("keeps", |b| {
        b.iter(|| {
            black_box(&map)
                .keys()
                .filter(|key| black_box(&set).keeps(key))
                .count()
        });
    });
    group.bench_function("removed_keys", |b| {
        b.iter(|| black_box(&set).removed_keys(black_box(&map)));
    });
    group.bench_function("parse_remove", |b| {
        b.iter(|| {
            FilterSet::parse_lossy(field::LABEL_FILTERS, Some(black_box(&filters)))
                .removed_keys(black_box(&map))
        });
    });
    group.finish();
    Ok(())
}

fn bench_patches(c: &mut Criterion) -> BoxResult<()> {
    let clone = clone_at(ClonePhase::SnapshotInProgress, None)?;
    let vm = source_vm();
    let input = IdentityInput {
        spec: &clone.spec,
        namespace: NAMESPACE,
        target_name: TARGET,
        clone_uid: UID,
    };
    let generated = identity_patches(&input, &vm);
    let mut applied = vm.clone();
    apply_kubevirt(&mut applied, &generated.patches)?;
    if !generated.unknown_interfaces.is_empty() || applied == vm {
        return Err(format!("the patch fixture is off: {generated:?}").into());
    }
    let operations = generated.patches.len() as u64;

    let mut group = c.benchmark_group("patches");
    group.throughput(Throughput::Elements(operations));
    group.bench_function("generate", |b| {
        b.iter(|| identity_patches(black_box(&input), black_box(&vm)));
    });
    group.bench_function("apply", |b| {
        b.iter_batched_ref(
            || vm.clone(),
            |doc| apply_kubevirt(doc, black_box(&generated.patches)).is_ok(),
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
    Ok(())
}

fn bench_decide(c: &mut Criterion) -> BoxResult<()> {
    let ready = World::snapshot_ready()?;
    let decision = decide(&ready.observed());
    if !matches!(decision.action, Action::CreateRestore(..)) {
        return Err(format!("the ready world does not build the restore: {decision:?}").into());
    }
    let running = World::restore_running()?;
    let decision = decide(&running.observed());
    if decision.action != Action::Nothing || decision.status.phase != ClonePhase::RestoreInProgress
    {
        return Err(format!("the running world does not wait: {decision:?}").into());
    }

    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    group.bench_function("restore", |b| {
        b.iter(|| decide(black_box(&ready.observed())));
    });
    group.bench_function("wait", |b| {
        b.iter(|| decide(black_box(&running.observed())));
    });
    group.finish();
    Ok(())
}

fn main() -> BoxResult<()> {
    let mut criterion = Criterion::default().configure_from_args();
    bench_filter(&mut criterion)?;
    bench_patches(&mut criterion)?;
    bench_decide(&mut criterion)?;
    criterion.final_summary();
    Ok(())
}
