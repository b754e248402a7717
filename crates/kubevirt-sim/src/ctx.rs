//! [`Ctx`]: what every controller of the sim shares — the client, the configuration, one cache
//! per watched kind, the controllers' queues — and the routing of a change of any kind to the
//! controllers that care about it.

use std::sync::Arc;

use clone_api::kubevirt::{
    DataVolume, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use tracing::debug;

use crate::config::SimConfig;
use crate::runtime::{Cache, ObjKey, WorkQueue};
use crate::types::{VirtualMachineInstance, VolumeSnapshot};

/// Names of the secondary indexes.
pub mod index {
    /// Snapshots by `<namespace>/<source VM>`.
    pub const SNAPSHOT_BY_VM: &str = "snapshot-by-vm";
    /// Restores by `<namespace>/<snapshot>`.
    pub const RESTORE_BY_SNAPSHOT: &str = "restore-by-snapshot";
    /// Restores by `<namespace>/<target VM>`.
    pub const RESTORE_BY_TARGET: &str = "restore-by-target";
    /// DataVolumes by `<namespace>/<source PVC>` of a PVC clone.
    pub const DV_BY_SOURCE: &str = "dv-by-source";
    /// VMs by `<namespace>/<claim>` of each PVC or DataVolume volume and DataVolume template.
    pub const VM_BY_CLAIM: &str = "vm-by-claim";
    /// VolumeSnapshots by `<namespace>/<source claim>`.
    pub const VOLUME_SNAPSHOT_BY_CLAIM: &str = "volume-snapshot-by-claim";
}

/// The controllers' queues.
#[derive(Clone, Debug)]
pub struct Queues {
    /// VirtualMachine controller (VMIs, DataVolumes from templates, status).
    pub vm: WorkQueue,
    /// VirtualMachineSnapshot controller.
    pub snapshot: WorkQueue,
    /// VirtualMachineRestore controller.
    pub restore: WorkQueue,
    /// PVC binder.
    pub pvc: WorkQueue,
    /// CDI DataVolume controller.
    pub dv: WorkQueue,
    /// CSI snapshotter (VolumeSnapshots).
    pub csi: WorkQueue,
}

/// Who reports an event.
#[derive(Clone, Copy, Debug)]
pub enum Component {
    /// KubeVirt's virt-controller (VM, snapshot and restore controllers).
    KubeVirt,
    /// CDI's controller.
    Cdi,
}

/// What the controllers share.
pub struct Ctx {
    /// The API client.
    pub client: Client,
    /// The configuration.
    pub config: SimConfig,
    /// VirtualMachines.
    pub vms: Arc<Cache<VirtualMachine>>,
    /// VirtualMachineInstances.
    pub vmis: Arc<Cache<VirtualMachineInstance>>,
    /// VirtualMachineSnapshots.
    pub snapshots: Arc<Cache<VirtualMachineSnapshot>>,
    /// VirtualMachineSnapshotContents.
    pub contents: Arc<Cache<VirtualMachineSnapshotContent>>,
    /// VirtualMachineRestores.
    pub restores: Arc<Cache<VirtualMachineRestore>>,
    /// PersistentVolumeClaims.
    pub pvcs: Arc<Cache<PersistentVolumeClaim>>,
    /// DataVolumes.
    pub dvs: Arc<Cache<DataVolume>>,
    /// CSI VolumeSnapshots.
    pub volume_snapshots: Arc<Cache<VolumeSnapshot>>,
    /// StorageClasses (cluster-wide).
    pub classes: Arc<Cache<StorageClass>>,
    /// Namespaces (for annotation-driven failure injection).
    pub namespaces: Arc<Cache<Namespace>>,
    /// The controllers' queues.
    pub queues: Queues,
    kubevirt_events: Recorder,
    cdi_events: Recorder,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn key_text(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn snapshot_by_vm(snapshot: &VirtualMachineSnapshot) -> Vec<String> {
    let namespace = snapshot.metadata.namespace.clone().unwrap_or_default();
    vec![key_text(&namespace, &snapshot.spec.source.name)]
}

fn restore_by_snapshot(restore: &VirtualMachineRestore) -> Vec<String> {
    let namespace = restore.metadata.namespace.clone().unwrap_or_default();
    vec![key_text(
        &namespace,
        &restore.spec.virtual_machine_snapshot_name,
    )]
}

fn restore_by_target(restore: &VirtualMachineRestore) -> Vec<String> {
    let namespace = restore.metadata.namespace.clone().unwrap_or_default();
    vec![key_text(&namespace, &restore.spec.target.name)]
}

fn dv_by_source(dv: &DataVolume) -> Vec<String> {
    let namespace = dv.metadata.namespace.clone().unwrap_or_default();
    dv.spec
        .source
        .as_ref()
        .and_then(|s| s.pvc.as_ref())
        .map(|pvc| {
            let source_namespace = if pvc.namespace.is_empty() {
                namespace.as_str()
            } else {
                pvc.namespace.as_str()
            };
            key_text(source_namespace, &pvc.name)
        })
        .into_iter()
        .collect()
}

fn volume_snapshot_by_claim(snapshot: &VolumeSnapshot) -> Vec<String> {
    let namespace = snapshot.metadata.namespace.clone().unwrap_or_default();
    snapshot
        .spec
        .source
        .persistent_volume_claim_name
        .iter()
        .map(|claim| key_text(&namespace, claim))
        .collect()
}

fn vm_by_claim(vm: &VirtualMachine) -> Vec<String> {
    let namespace = vm.metadata.namespace.clone().unwrap_or_default();
    let mut claims: Vec<String> = vm
        .spec
        .volumes()
        .iter()
        .filter_map(|v| v.claim_name())
        .map(|c| key_text(&namespace, c))
        .collect();
    for template in vm.spec.data_volume_templates.iter().flatten() {
        if let Some(name) = template.pointer("/metadata/name").and_then(|n| n.as_str()) {
            claims.push(key_text(&namespace, name));
        }
    }
    claims.sort();
    claims.dedup();
    claims
}

impl Ctx {
    /// A context with empty caches.
    pub fn new(client: Client, config: SimConfig, queues: Queues) -> Self {
        let reporter = |controller: &str| Reporter {
            controller: controller.to_owned(),
            instance: None,
        };
        Self {
            kubevirt_events: Recorder::new(
                client.clone(),
                reporter("sim.vmclone.dev/virt-controller"),
            ),
            cdi_events: Recorder::new(client.clone(), reporter("sim.vmclone.dev/cdi-controller")),
            client,
            config,
            vms: Arc::new(Cache::new(
                "VirtualMachine",
                vec![(index::VM_BY_CLAIM, vm_by_claim)],
            )),
            vmis: Arc::new(Cache::new("VirtualMachineInstance", vec![])),
            snapshots: Arc::new(Cache::new(
                "VirtualMachineSnapshot",
                vec![(index::SNAPSHOT_BY_VM, snapshot_by_vm)],
            )),
            contents: Arc::new(Cache::new("VirtualMachineSnapshotContent", vec![])),
            restores: Arc::new(Cache::new(
                "VirtualMachineRestore",
                vec![
                    (index::RESTORE_BY_SNAPSHOT, restore_by_snapshot),
                    (index::RESTORE_BY_TARGET, restore_by_target),
                ],
            )),
            pvcs: Arc::new(Cache::new("PersistentVolumeClaim", vec![])),
            dvs: Arc::new(Cache::new(
                "DataVolume",
                vec![(index::DV_BY_SOURCE, dv_by_source)],
            )),
            volume_snapshots: Arc::new(Cache::new(
                "VolumeSnapshot",
                vec![(index::VOLUME_SNAPSHOT_BY_CLAIM, volume_snapshot_by_claim)],
            )),
            classes: Arc::new(Cache::new("StorageClass", vec![])),
            namespaces: Arc::new(Cache::new("Namespace", vec![])),
            queues,
        }
    }

    /// A namespaced API for `K` in `namespace`.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Waits the configured latency before a step that changes the world.
    pub async fn pace(&self) {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
    }

    /// Whether the namespace carries `annotation` (any value); its value.
    pub fn namespace_annotation(&self, namespace: &str, annotation: &str) -> Option<String> {
        self.namespaces
            .get("", namespace)
            .and_then(|ns| ns.metadata.annotations.as_ref()?.get(annotation).cloned())
    }

    /// Publishes an event about `object`; failures are logged, never returned.
    pub async fn event<K>(
        &self,
        component: Component,
        object: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let reference: ObjectReference = object.object_ref(&());
        let recorder = match component {
            Component::KubeVirt => &self.kubevirt_events,
            Component::Cdi => &self.cdi_events,
        };
        let mut note = note;
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.chars().filter(|c| !c.is_whitespace()).collect(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            debug!(reason, %err, "publishing an event failed");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing: which controllers look again when an object of a kind changes.
// ---------------------------------------------------------------------------------------------

/// A VM changed: its own controller, the snapshots of it, the restores targeting it.
pub fn on_vm(ctx: &Ctx, vm: &VirtualMachine) {
    let key = ObjKey::of(vm);
    let text = key.to_string();
    ctx.queues.vm.enqueue(key);
    ctx.queues
        .snapshot
        .enqueue_all(ctx.snapshots.lookup(index::SNAPSHOT_BY_VM, &text));
    ctx.queues
        .restore
        .enqueue_all(ctx.restores.lookup(index::RESTORE_BY_TARGET, &text));
}

/// A VMI changed: its VM, the snapshots and restores of that VM, and every claim it mounts
/// (WaitForFirstConsumer binding, DataVolumes cloning from it, DataVolumes waiting for it).
pub fn on_vmi(ctx: &Ctx, vmi: &VirtualMachineInstance) {
    let key = ObjKey::of(vmi);
    let text = key.to_string();
    ctx.queues.vm.enqueue(key.clone());
    ctx.queues
        .snapshot
        .enqueue_all(ctx.snapshots.lookup(index::SNAPSHOT_BY_VM, &text));
    ctx.queues
        .restore
        .enqueue_all(ctx.restores.lookup(index::RESTORE_BY_TARGET, &text));
    for claim in vmi.claims() {
        let claim_key = ObjKey::new(key.namespace.clone(), claim);
        ctx.queues.pvc.enqueue(claim_key.clone());
        ctx.queues.dv.enqueue(claim_key.clone());
        ctx.queues
            .dv
            .enqueue_all(ctx.dvs.lookup(index::DV_BY_SOURCE, &claim_key.to_string()));
    }
}

/// A snapshot changed: itself, the restores from it, its source VM (snapshot lock).
pub fn on_snapshot(ctx: &Ctx, snapshot: &VirtualMachineSnapshot) {
    let key = ObjKey::of(snapshot);
    ctx.queues.snapshot.enqueue(key.clone());
    ctx.queues.restore.enqueue_all(
        ctx.restores
            .lookup(index::RESTORE_BY_SNAPSHOT, &key.to_string()),
    );
    ctx.queues.vm.enqueue(ObjKey::new(
        key.namespace,
        snapshot.spec.source.name.clone(),
    ));
}

/// A content changed: its snapshot and the restores from that snapshot.
pub fn on_content(ctx: &Ctx, content: &VirtualMachineSnapshotContent) {
    let key = ObjKey::of(content);
    if let Some(snapshot) = &content.spec.virtual_machine_snapshot_name {
        let snapshot_key = ObjKey::new(key.namespace, snapshot.clone());
        ctx.queues.restore.enqueue_all(
            ctx.restores
                .lookup(index::RESTORE_BY_SNAPSHOT, &snapshot_key.to_string()),
        );
        ctx.queues.snapshot.enqueue(snapshot_key);
    }
}

/// A restore changed: itself.
pub fn on_restore(ctx: &Ctx, restore: &VirtualMachineRestore) {
    ctx.queues.restore.enqueue(ObjKey::of(restore));
}

/// A PVC changed: the binder, the VMs using it (status) and their snapshots, the DataVolume
/// of the same name and the DataVolumes cloning from it, the restore that created it.
pub fn on_pvc(ctx: &Ctx, pvc: &PersistentVolumeClaim) {
    let key = ObjKey::of(pvc);
    let text = key.to_string();
    ctx.queues.pvc.enqueue(key.clone());
    ctx.queues.dv.enqueue(key.clone());
    ctx.queues.csi.enqueue_all(
        ctx.volume_snapshots
            .lookup(index::VOLUME_SNAPSHOT_BY_CLAIM, &text),
    );
    ctx.queues
        .dv
        .enqueue_all(ctx.dvs.lookup(index::DV_BY_SOURCE, &text));
    for vm in ctx.vms.lookup(index::VM_BY_CLAIM, &text) {
        ctx.queues
            .snapshot
            .enqueue_all(ctx.snapshots.lookup(index::SNAPSHOT_BY_VM, &vm.to_string()));
        ctx.queues.vm.enqueue(vm);
    }
    if let Some(restore) = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::names::RESTORE_NAME))
    {
        ctx.queues
            .restore
            .enqueue(ObjKey::new(key.namespace.clone(), restore.clone()));
    }
}

/// A DataVolume changed: itself, the VMs using it (and their snapshots), the restore that
/// created it, the DataVolumes cloning from its PVC.
pub fn on_dv(ctx: &Ctx, dv: &DataVolume) {
    let key = ObjKey::of(dv);
    let text = key.to_string();
    ctx.queues.dv.enqueue(key.clone());
    for vm in ctx.vms.lookup(index::VM_BY_CLAIM, &text) {
        ctx.queues
            .snapshot
            .enqueue_all(ctx.snapshots.lookup(index::SNAPSHOT_BY_VM, &vm.to_string()));
        ctx.queues.vm.enqueue(vm);
    }
    for owner in dv.metadata.owner_references.iter().flatten() {
        if owner.kind == "VirtualMachine" {
            ctx.queues
                .vm
                .enqueue(ObjKey::new(key.namespace.clone(), owner.name.clone()));
        }
    }
    if let Some(restore) = dv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::names::RESTORE_NAME))
    {
        ctx.queues
            .restore
            .enqueue(ObjKey::new(key.namespace.clone(), restore.clone()));
    }
}

/// A VolumeSnapshot changed: the snapshotter, and the claims restored from it (they wait for it
/// to be ready).
pub fn on_volume_snapshot(ctx: &Ctx, snapshot: &VolumeSnapshot) {
    let key = ObjKey::of(snapshot);
    ctx.queues.csi.enqueue(key.clone());
    let restored: Vec<ObjKey> = ctx
        .pvcs
        .in_namespace(&key.namespace)
        .iter()
        .filter(|pvc| {
            pvc.spec
                .as_ref()
                .and_then(|s| s.data_source.as_ref())
                .is_some_and(|d| d.kind == "VolumeSnapshot" && d.name == key.name)
        })
        .map(|pvc| ObjKey::of(pvc.as_ref()))
        .collect();
    ctx.queues.pvc.enqueue_all(restored);
}

/// A storage class changed: every PVC of that class.
pub fn on_class(ctx: &Ctx, class: &StorageClass) {
    let name = class.metadata.name.clone().unwrap_or_default();
    let keys: Vec<ObjKey> = ctx
        .pvcs
        .all()
        .into_iter()
        .filter(|pvc| {
            pvc.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                == Some(name.as_str())
        })
        .map(|pvc| ObjKey::of(pvc.as_ref()))
        .collect();
    ctx.queues.pvc.enqueue_all(keys);
}

/// A namespace changed (its failure-injection annotations): its snapshots, restores and
/// VolumeSnapshots.
pub fn on_namespace(ctx: &Ctx, namespace: &Namespace) {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    ctx.queues.csi.enqueue_all(
        ctx.volume_snapshots
            .in_namespace(&name)
            .iter()
            .map(|s| ObjKey::of(s.as_ref())),
    );
    ctx.queues.snapshot.enqueue_all(
        ctx.snapshots
            .in_namespace(&name)
            .iter()
            .map(|s| ObjKey::of(s.as_ref())),
    );
    ctx.queues.restore.enqueue_all(
        ctx.restores
            .in_namespace(&name)
            .iter()
            .map(|r| ObjKey::of(r.as_ref())),
    );
}
