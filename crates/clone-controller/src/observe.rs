//! Observe: read what `clone_core::decide` needs for one clone.
//!
//! Reads come from the caches. A child this controller just created stands in for the cache's
//! view until the cache shows it. An absence the decision would act on (a vanished snapshot fails
//! the clone, a vanished target deletes it) is confirmed with a direct read first, so a cache that
//! lags behind never causes a false failure or a deletion. The objects the caches hold only the
//! metadata of (the source VM, the snapshot content) are read whole once per resourceVersion.

use std::collections::BTreeMap;
use std::sync::Arc;

use clone_api::kubevirt::{
    DataVolume, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};
use clone_api::v1beta1::VirtualMachineClone;
use clone_core::decide::{self, FeatureGate, ReadPlan, Rival};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::index::Key;
use crate::reads::{Created, get_opt};

/// What was read for one clone; `clone_core::decide::Observed` borrows from it. Objects from the
/// caches are shared with them, not copied.
#[derive(Debug)]
pub struct World {
    /// The feature gate.
    pub gate: FeatureGate,
    /// The source VM.
    pub source_vm: Option<Arc<VirtualMachine>>,
    /// The source snapshot.
    pub source_snapshot: Option<Arc<VirtualMachineSnapshot>>,
    /// The temporary snapshot.
    pub temp_snapshot: Option<Arc<VirtualMachineSnapshot>>,
    /// The content of the snapshot in use.
    pub content: Option<Arc<VirtualMachineSnapshotContent>>,
    /// The restore.
    pub restore: Option<Arc<VirtualMachineRestore>>,
    /// The target VM (metadata only).
    pub target: Option<VirtualMachine>,
    /// PVC name → phase.
    pub claims: BTreeMap<String, String>,
    /// Clones naming the same target.
    pub rivals: Vec<Rival>,
    /// DataVolume strategy: the source claims by name (before the target exists).
    pub source_claims: BTreeMap<String, PersistentVolumeClaim>,
    /// DataVolume strategy: the whole target VM, once this clone created it.
    pub target_full: Option<VirtualMachine>,
    /// DataVolume strategy: the target's DataVolumes by name.
    pub data_volumes: BTreeMap<String, DataVolume>,
}

fn cached<K>(store: &Store<K>, ns: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + kube::runtime::reflector::Lookup<DynamicType = ()>,
{
    store.get(&ObjectRef::new(name).within(ns))
}

/// The resourceVersion the cache shows for `ns/name`.
fn cached_version<K>(store: &Store<PartialObjectMeta<K>>, ns: &str, name: &str) -> Option<String>
where
    K: Resource<DynamicType = ()> + Clone,
{
    cached(store, ns, name).and_then(|meta| meta.metadata.resource_version.clone())
}

/// A child this controller creates: from the cache; else as created, while the cache has not
/// caught up (its watch event not delivered yet); else, where its absence would decide, from the
/// API server.
async fn child<K>(
    store: &Store<K>,
    created: &Created<K>,
    api: &Api<K>,
    name: &str,
    confirm: bool,
) -> Result<Option<Arc<K>>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + kube::runtime::reflector::Lookup<DynamicType = ()>,
{
    let ns = api.namespace().unwrap_or_default();
    if let Some(object) = cached(store, ns, name) {
        return Ok(Some(object));
    }
    if let Some(object) = created.get(ns, name) {
        return Ok(Some(object));
    }
    if confirm {
        return Ok(get_opt(api, name).await?.map(Arc::new));
    }
    Ok(None)
}

/// A VM with only its metadata (the target guard reads nothing else).
fn vm_from_meta(meta: PartialObjectMeta<VirtualMachine>) -> VirtualMachine {
    VirtualMachine {
        metadata: meta.metadata,
        spec: Default::default(),
        status: None,
    }
}

/// Reads the world of one clone, as its [`ReadPlan`] says.
pub async fn observe(ctx: &Context, clone: &VirtualMachineClone) -> Result<World> {
    let ns = clone
        .namespace()
        .ok_or_else(|| Error::Incomplete(format!("clone {} has no namespace", clone.name_any())))?;
    let plan = ReadPlan::of(clone);
    let names = &plan.names;
    let client = ctx.client.clone();
    let caches = &ctx.caches;
    let reads = &ctx.reads;
    let mut world = World {
        gate: clone_core::gate::kubevirt_snapshot_gate(
            caches.kubevirt().as_deref(),
            ctx.config.gate_mode,
        ),
        source_vm: None,
        source_snapshot: None,
        temp_snapshot: None,
        content: None,
        restore: None,
        target: None,
        claims: BTreeMap::new(),
        rivals: Vec::new(),
        source_claims: BTreeMap::new(),
        target_full: None,
        data_volumes: BTreeMap::new(),
    };
    if plan.reads_nothing() {
        return Ok(world);
    }

    let snapshots = Api::<VirtualMachineSnapshot>::namespaced(client.clone(), &ns);
    if let Some(snapshot) = &names.source_snapshot {
        world.source_snapshot = match cached(&caches.snapshots, &ns, snapshot) {
            Some(s) => Some(s),
            None => get_opt(&snapshots, snapshot).await?.map(Arc::new),
        };
    } else {
        world.temp_snapshot = child(
            &caches.snapshots,
            &reads.snapshots,
            &snapshots,
            &names.snapshot_name,
            plan.confirm_temp_snapshot(),
        )
        .await?;
    }

    if let Some(vm) = plan.source_vm(world.temp_snapshot.as_deref()) {
        let source_ns = &names.source_namespace;
        let api = Api::<VirtualMachine>::namespaced(client.clone(), source_ns);
        let version = cached_version(&caches.vms, source_ns, vm);
        world.source_vm = reads
            .source_vms
            .get(&api, source_ns, vm, version.as_deref())
            .await?;
    }

    let restores = Api::<VirtualMachineRestore>::namespaced(client.clone(), &ns);
    world.restore = child(
        &caches.restores,
        &reads.restores,
        &restores,
        &names.restore_name,
        plan.confirm_restore(),
    )
    .await?;

    // The content is large (it holds a VM): read only when the next step needs it, and only
    // when it changed since it was last read.
    let snapshot_in_use = world
        .source_snapshot
        .as_deref()
        .or(world.temp_snapshot.as_deref());
    if let Some(content) = plan.content(snapshot_in_use, world.restore.as_deref()) {
        let api = Api::<VirtualMachineSnapshotContent>::namespaced(client.clone(), &ns);
        let version = cached_version(&caches.contents, &ns, &content);
        world.content = reads
            .contents
            .get(&api, &ns, &content, version.as_deref())
            .await?;
    }

    world.target = match cached(&caches.vms, &ns, &names.target_name) {
        Some(meta) => Some(vm_from_meta((*meta).clone())),
        None if plan.confirm_target(world.restore.as_deref()) => {
            Api::<VirtualMachine>::namespaced(client.clone(), &ns)
                .get_metadata_opt(&names.target_name)
                .await
                .map_err(|source| Error::Read {
                    what: format!("VirtualMachine {}", names.target_name),
                    source,
                })?
                .map(vm_from_meta)
        }
        None => None,
    };

    data_volume_strategy(ctx, clone, &plan, &mut world).await?;

    // Restored claims come from the claim cache: a claim not bound there yet is waited for (its
    // watch wakes the clone when it binds).
    for claim in plan.claims(world.restore.as_deref(), world.target.as_ref()) {
        if let Some(pvc) = cached(&caches.claims, &ns, claim) {
            let phase = pvc
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            world.claims.insert(claim.to_owned(), phase);
        }
    }

    if plan.rivals(world.restore.as_deref(), world.target.as_ref()) {
        world.rivals = rivals(ctx, clone, &ns, &names.target_name);
    }
    Ok(world)
}

/// What the DataVolume strategy reads: the source claims until the target exists, then the whole
/// target (its templates) and its DataVolumes from the cache.
async fn data_volume_strategy(
    ctx: &Context,
    clone: &VirtualMachineClone,
    plan: &ReadPlan,
    world: &mut World,
) -> Result<()> {
    let choice =
        clone_core::datavolume::choose(clone, world.source_vm.as_deref(), world.target.as_ref());
    if choice.strategy != clone_api::extensions::CloneStrategy::DataVolume {
        return Ok(());
    }
    let names = &plan.names;
    let ns = clone.namespace().unwrap_or_default();
    let client = ctx.client.clone();
    let uid = clone.metadata.uid.as_deref().unwrap_or_default();
    if world.target.is_none() && plan.confirm_data_volume_target() {
        let vms = Api::<VirtualMachine>::namespaced(client.clone(), &ns);
        world.target = get_opt(&vms, &names.target_name).await?;
    }
    match &world.target {
        Some(target) if clone_core::datavolume::created_by(target, uid) => {
            if !plan.follows_data_volumes() {
                return Ok(());
            }
            let full = if target.spec.template.is_some() {
                Some(target.clone())
            } else {
                let vms = Api::<VirtualMachine>::namespaced(client, &ns);
                get_opt(&vms, &names.target_name).await?
            };
            for template in full
                .iter()
                .flat_map(|vm| vm.spec.data_volume_templates.iter().flatten())
            {
                if let Some(name) = template.pointer("/metadata/name").and_then(|n| n.as_str())
                    && let Some(dv) = cached(&ctx.caches.data_volumes, &ns, name)
                {
                    world.data_volumes.insert(name.to_owned(), (*dv).clone());
                }
            }
            world.target_full = full;
        }
        Some(_) => {}
        None => {
            if world.source_vm.is_none()
                && let Some(name) = plan.source_vm_for_lost_target()
            {
                let vms =
                    Api::<VirtualMachine>::namespaced(client.clone(), &names.source_namespace);
                world.source_vm = get_opt(&vms, name).await?.map(Arc::new);
            }
            if let Some(vm) = &world.source_vm {
                let pvcs =
                    Api::<PersistentVolumeClaim>::namespaced(client, &names.source_namespace);
                for claim in clone_core::datavolume::source_claims(vm) {
                    if let Some(pvc) = get_opt(&pvcs, &claim).await? {
                        world.source_claims.insert(claim, pvc);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Other clones in the namespace that name the same target, from the index (not a scan of every
/// clone).
fn rivals(ctx: &Context, clone: &VirtualMachineClone, ns: &str, target: &str) -> Vec<Rival> {
    let uid = clone.metadata.uid.as_deref();
    ctx.caches
        .index
        .get(&Key::Target(ns.to_owned(), target.to_owned()))
        .iter()
        .filter_map(|reference| ctx.caches.clones.get(reference))
        .filter(|c| c.metadata.uid.as_deref() != uid && decide::target_name(c) == target)
        .map(|c| Rival {
            name: c.name_any(),
            uid: c.metadata.uid.clone().unwrap_or_default(),
            creation_timestamp: c.metadata.creation_timestamp.clone(),
            phase: c.status.as_ref().map(|s| s.phase).unwrap_or_default(),
        })
        .collect()
}
