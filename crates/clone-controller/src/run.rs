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
use futures::StreamExt;
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

/// The clones in `store` that match `f`, as references to reconcile.
fn clones_where(
    store: &Store<VirtualMachineClone>,
    f: impl Fn(&VirtualMachineClone) -> bool,
) -> Vec<ObjectRef<VirtualMachineClone>> {
    store
        .state()
        .iter()
        .filter(|c| f(c))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
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

fn is_snapshot_source(clone: &VirtualMachineClone) -> bool {
    clone.spec.source.kind == names::VIRTUAL_MACHINE_SNAPSHOT_KIND
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
    let clones_api: Api<VirtualMachineClone> = api(&client, ns);
    let controller = Controller::new(clones_api, watcher::Config::default().any_semantic())
        .with_config(controller::Config::default().concurrency(config.concurrency));
    let clones = controller.store();

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
        let clones = clones.clone();
        move |snapshot: VirtualMachineSnapshot| {
            let mut refs: Vec<_> = owning_clone(&snapshot).into_iter().collect();
            let (ns, name) = (snapshot.namespace(), snapshot.name_any());
            refs.extend(clones_where(&clones, |c| {
                is_snapshot_source(c) && c.namespace() == ns && c.spec.source.name == name
            }));
            refs
        }
    };
    let by_restore = |restore: VirtualMachineRestore| owning_clone(&restore);
    let by_vm = {
        let clones = clones.clone();
        move |vm: PartialObjectMeta<VirtualMachine>| {
            let (ns, name) = (vm.namespace(), vm.name_any());
            clones_where(&clones, |c| {
                c.namespace() == ns
                    && ((!is_snapshot_source(c) && c.spec.source.name == name)
                        || decide::target_name(c) == name)
            })
        }
    };
    let by_kubevirt = {
        let clones = clones.clone();
        // Gates changed: wake every clone that has not finished.
        move |_: KubeVirt| {
            clones_where(&clones, |c| {
                !c.status.as_ref().is_some_and(|s| s.phase.is_terminal())
            })
        }
    };
    let by_pvc = {
        let clones = clones.clone();
        move |pvc: PartialObjectMeta<PersistentVolumeClaim>| {
            let restore = pvc.annotations().get(RESTORE_NAME_ANNOTATION).cloned();
            let ns = pvc.namespace();
            let uid = restore
                .as_deref()
                .and_then(|r| r.strip_prefix(TEMP_RESTORE_PREFIX))
                .map(str::to_owned);
            match uid {
                Some(uid) => clones_where(&clones, |c| {
                    c.namespace() == ns && c.metadata.uid.as_deref() == Some(uid.as_str())
                }),
                None => Vec::new(),
            }
        }
    };
    let by_content = {
        let clones = clones.clone();
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
            let snapshot_name = snapshot.name_any();
            refs.extend(clones_where(&clones, |c| {
                is_snapshot_source(c) && c.namespace() == ns && c.spec.source.name == snapshot_name
            }));
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
