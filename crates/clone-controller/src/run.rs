//! Wiring: the caches, the watches that wake clones, and the controller loop.
//!
//! Clones are the primary resource. Snapshots and restores are cached in full (they are small);
//! VMs only by metadata (a cluster may hold thousands, and the clone needs the full object only of
//! its source, which it reads directly). PVCs and snapshot contents are watched by metadata only,
//! to wake the clone they belong to. Every related object is mapped back to clones by name, owner
//! reference or the `restore.kubevirt.io/name` annotation.

use std::future::Future;
use std::sync::Arc;

use clone_api::kubevirt::{
    KubeVirt, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};
use clone_api::names::{self, RESTORE_NAME_ANNOTATION, TEMP_RESTORE_PREFIX};
use clone_api::v1beta1::VirtualMachineClone;
use clone_core::decide;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::context::{Caches, Config, Context};
use crate::index::{CloneIndex, Key};
use crate::reconcile::{error_policy, reconcile};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The clone that controls an object (owner reference of kind `VirtualMachineClone`).
fn owning_clone<K: Resource>(object: &K) -> Option<ObjectRef<VirtualMachineClone>> {
    let ns = object.meta().namespace.as_deref()?;
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == names::KIND
                && o.api_version.starts_with(names::GROUP)
        })
        .map(|o| ObjectRef::new(&o.name).within(ns))
}

/// A cache fed by a watch; the returned stream must be polled (the controller does).
fn cached_watch<K>(
    api: Api<K>,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .touched_objects();
    (reader, stream)
}

/// Runs the controller until `shutdown` completes; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let ns = config.namespace.clone();
    let ns = ns.as_deref();
    // Clones: a cache for reconciles and an index for the watches that map back to clones.
    let (clones, clone_writer) = reflector::store();
    let index = CloneIndex::default();
    let clone_stream = {
        let index = index.clone();
        watcher(
            api::<VirtualMachineClone>(&client, ns),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .reflect(clone_writer)
        .inspect_ok(move |event| index.apply(event))
        .applied_objects()
    };
    let controller = Controller::for_stream(clone_stream, clones.clone())
        .with_config(controller::Config::default().concurrency(config.concurrency));

    let (snapshots, snapshot_stream) = cached_watch(api::<VirtualMachineSnapshot>(&client, ns));
    let (restores, restore_stream) = cached_watch(api::<VirtualMachineRestore>(&client, ns));
    let (vms, vm_stream) = cached_watch(api::<PartialObjectMeta<VirtualMachine>>(&client, ns));
    let (kubevirts, kubevirt_stream) = cached_watch(Api::<KubeVirt>::all(client.clone()));
    let pvc_stream = watcher(
        api::<PartialObjectMeta<PersistentVolumeClaim>>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .touched_objects();
    let content_stream = watcher(
        api::<PartialObjectMeta<VirtualMachineSnapshotContent>>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .touched_objects();

    let caches = Caches {
        clones: clones.clone(),
        snapshots: snapshots.clone(),
        restores: restores.clone(),
        vms: vms.clone(),
        kubevirts: kubevirts.clone(),
    };
    let reporter = Reporter {
        controller: "vmclone-controller".into(),
        instance: config.instance.clone(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client.clone(), config, caches, recorder));

    let by_snapshot = {
        let index = index.clone();
        move |snapshot: VirtualMachineSnapshot| {
            let mut refs: Vec<_> = owning_clone(&snapshot).into_iter().collect();
            let key = Key::SourceSnapshot(
                snapshot.namespace().unwrap_or_default(),
                snapshot.name_any(),
            );
            refs.extend(index.get(&key));
            refs
        }
    };
    let by_restore = |restore: VirtualMachineRestore| owning_clone(&restore);
    let by_vm = {
        let index = index.clone();
        move |vm: PartialObjectMeta<VirtualMachine>| {
            let (ns, name) = (vm.namespace().unwrap_or_default(), vm.name_any());
            let mut refs = index.get(&Key::SourceVm(ns.clone(), name.clone()));
            refs.extend(index.get(&Key::Target(ns, name)));
            refs
        }
    };
    let by_kubevirt = {
        let clones = clones.clone();
        // Gates changed: wake every clone that has not finished (rare; a scan is fine).
        move |_: KubeVirt| {
            clones
                .state()
                .iter()
                .filter(|c| !c.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let by_pvc = {
        let index = index.clone();
        move |pvc: PartialObjectMeta<PersistentVolumeClaim>| {
            pvc.annotations()
                .get(RESTORE_NAME_ANNOTATION)
                .and_then(|r| r.strip_prefix(TEMP_RESTORE_PREFIX))
                .map(|uid| index.get(&Key::Uid(uid.to_owned())))
                .unwrap_or_default()
        }
    };
    let by_content = {
        let index = index.clone();
        let snapshots = snapshots.clone();
        move |content: PartialObjectMeta<VirtualMachineSnapshotContent>| {
            let ns = content.namespace();
            let name = content.name_any();
            let Some(snapshot) =
                snapshots.find(|s| s.namespace() == ns && decide::content_name(s) == name)
            else {
                return Vec::new();
            };
            let mut refs: Vec<_> = owning_clone(snapshot.as_ref()).into_iter().collect();
            let key = Key::SourceSnapshot(ns.unwrap_or_default(), snapshot.name_any());
            refs.extend(index.get(&key));
            refs
        }
    };

    info!("clone controller starting");
    controller
        .watches_stream(snapshot_stream, by_snapshot)
        .watches_stream(restore_stream, by_restore)
        .watches_stream(vm_stream, by_vm)
        .watches_stream(kubevirt_stream, by_kubevirt)
        .watches_stream(pvc_stream, by_pvc)
        .watches_stream(content_stream, by_content)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((clone, _)) => debug!(clone = %clone, "reconciled"),
                Err(controller::Error::ObjectNotFound(clone)) => {
                    debug!(clone = %clone, "clone gone")
                }
                Err(error) => warn!(%error, "controller"),
            }
        })
        .await;
    info!("clone controller stopped");
    Ok(())
}
