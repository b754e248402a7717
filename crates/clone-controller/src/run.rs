//! Wiring: the caches, the watches that wake clones, and the controller loop.
//!
//! Clones are the primary resource. Every other cache holds the projection `decide` reads
//! (`clone_core::decide::project`): snapshots, restores and PVCs their few read fields, VMs and
//! snapshot contents their metadata (a cluster may hold thousands of VMs, and a content holds a
//! whole VM; `reads` fetches the source VM and the content whole when needed). A watch wakes a
//! clone only when the projection changed, and every related object is mapped back to clones by
//! name, owner reference or the `restore.kubevirt.io/name` annotation.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// How long a graceful shutdown may take before the controller stops anyway.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// How long a woken clone waits for more changes before its pass: KubeVirt writes a snapshot's or
/// a restore's status, then its VM's, in quick bursts, and one pass after the burst reads them
/// all. Short beside the seconds a snapshot and a restore take.
const DEBOUNCE: Duration = Duration::from_millis(50);

use clone_api::kubevirt::{
    DataVolume, KubeVirt, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};
use clone_api::names::{self, RESTORE_NAME_ANNOTATION, TEMP_RESTORE_PREFIX};
use clone_api::v1beta1::VirtualMachineClone;
use clone_core::decide::project;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::context::{Caches, CloneMemory, Config, Context, Synced};
use crate::events::{FLUSH_DEADLINE, Publisher};
use crate::index::{CloneIndex, ContentOwners, Key};
use crate::leader::{self, Leadership};
use crate::reconcile::{error_policy, reconcile};
use crate::telemetry::Telemetry;
use crate::upstream;

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

/// The clone that controls a temporary snapshot or restore, while the change can matter to it
/// (`project::wakes_on_child_change`).
fn owning_clone_for<K: Resource>(
    clones: &Store<VirtualMachineClone>,
    child: &K,
) -> Vec<ObjectRef<VirtualMachineClone>> {
    let name = child.meta().name.as_deref().unwrap_or_default();
    owning_clone(child)
        .filter(|r| {
            clones
                .get(r)
                .is_none_or(|c| project::wakes_on_child_change(&c, name))
        })
        .into_iter()
        .collect()
}

/// Whether a change of a clone's target VM (`deleted`: its deletion) wakes the clone.
fn wakes(
    clones: &Store<VirtualMachineClone>,
    clone: &ObjectRef<VirtualMachineClone>,
    deleted: bool,
) -> bool {
    clones
        .get(clone)
        .is_none_or(|c| project::wakes_on_target_change(&c, deleted))
}

/// A cache fed by a watch, holding each object as `project` leaves it, and a signal that turns
/// true once the cache holds its first full list. The returned stream (every object touched, the
/// deleted ones too) must be polled (the controller does).
fn cached_watch<K>(
    api: Api<K>,
    project: fn(&mut K),
) -> (
    Store<K>,
    Synced,
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
    let (synced, mark) = Synced::new();
    let stream = watcher(api, watch_config())
        .backoff(WatchBackoff::default())
        .modify(project)
        .reflect(writer)
        .inspect_ok(move |event| mark(event))
        .touched_objects();
    (reader, synced, stream)
}

/// Drops what no pass reads before an object goes into a cache: `managedFields`, often the
/// largest part of a small object's metadata (every writer and every field it owns).
fn slim<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Passes on an object of a cached watch only when its projection changed (its resourceVersion
/// aside) or it is gone from `store`: a write that touches nothing a pass reads (a finalizer, a
/// label, a relist that brings nothing new) wakes no clone. One fingerprint per object.
fn changes_only<K>(
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    store: Store<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + Send + Sync + 'static,
{
    let mut seen: HashMap<ObjectRef<K>, u64> = HashMap::new();
    stream.try_filter(move |object| {
        let key = ObjectRef::from_obj(object);
        let wake = if store.get(&key).is_none() {
            seen.remove(&key);
            true
        } else {
            let mut unversioned = object.clone();
            unversioned.meta_mut().resource_version = None;
            let mut hasher = DefaultHasher::new();
            serde_json::to_vec(&unversioned)
                .unwrap_or_default()
                .hash(&mut hasher);
            let fingerprint = hasher.finish();
            seen.insert(key, fingerprint) != Some(fingerprint)
        };
        futures::future::ready(wake)
    })
}

/// How every watch lists: a consistent read (`resourceVersion=""`), never from the API server's
/// watch cache at any age (`resourceVersion="0"`). After an etcd restart a cached list can hand
/// back a resourceVersion the watch then refuses as too old (410), and relisting from the same
/// cache repeats it: the fault suite saw watches stuck that way for minutes, growing their backoff
/// to 30 s while new clones went unseen. A consistent list ends that loop on the first relist.
fn watch_config() -> watcher::Config {
    watcher::Config::default()
}

/// How long a watch waits before retrying after an error: 250 ms, doubling up to 5 s, back to
/// the start on the first event that gets through.
///
/// kube-runtime's default goes up to 30 s. An API server restart costs a watch several failed
/// connects and then a 410 on its old resourceVersion, each doubling the wait, so with that default
/// the fault suite saw watches (the clones' among them) stay away for tens of seconds after the
/// API server was back. Seven watches per replica retrying every 5 s are no burden for it.
#[derive(Debug, Clone)]
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Runs the controller until `shutdown` completes; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    run_with(client, config, Telemetry::default(), shutdown).await
}

/// [`run`], reporting metrics and readiness through `telemetry` (served by the binary).
pub async fn run_with(
    client: Client,
    config: Config,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let (leadership, election) = match &config.leader_election {
        Some(election) => {
            let (leadership, running) = leader::elect(client.clone(), election).await?;
            (leadership, Some(running))
        }
        None => (Leadership::always(), None),
    };
    let ns = config.namespace.clone();
    let ns = ns.as_deref();
    // Clones: a cache for reconciles and an index for the watches that map back to clones.
    let (clones, clone_writer) = reflector::store();
    let index = CloneIndex::default();
    let (clones_synced, mark_clones) = Synced::new();
    let memory = Arc::new(CloneMemory::new(
        telemetry.metrics.clone_state_entries.clone(),
    ));
    let clone_stream = {
        let (index, memory) = (index.clone(), memory.clone());
        watcher(api::<VirtualMachineClone>(&client, ns), watch_config())
            .backoff(WatchBackoff::default())
            .modify(slim)
            .reflect(clone_writer)
            .inspect_ok(move |event| {
                index.apply(event);
                mark_clones(event);
                // A deleted clone takes its per-clone state with it.
                if let watcher::Event::Delete(clone) = event {
                    memory.forget(&ObjectRef::from_obj(clone));
                }
            })
            .applied_objects()
    };
    let controller = Controller::for_stream(clone_stream, clones.clone()).with_config(
        controller::Config::default()
            .concurrency(config.concurrency)
            .debounce(DEBOUNCE),
    );

    let (snapshots, snapshots_synced, snapshot_stream) = cached_watch(
        api::<VirtualMachineSnapshot>(&client, ns),
        project::snapshot,
    );
    let snapshot_stream = changes_only(snapshot_stream, snapshots.clone());
    let (restores, restores_synced, restore_stream) =
        cached_watch(api::<VirtualMachineRestore>(&client, ns), project::restore);
    let restore_stream = changes_only(restore_stream, restores.clone());
    let (vms, vms_synced, vm_stream) = cached_watch(
        api::<PartialObjectMeta<VirtualMachine>>(&client, ns),
        |vm| project::vm_metadata(&mut vm.metadata),
    );
    let (kubevirts, kubevirts_synced, kubevirt_stream) =
        cached_watch(Api::<KubeVirt>::all(client.clone()), slim);
    // Every change of the KubeVirt CR may start or stop upstream's clone controller.
    let (upstream_signals, upstream_resumed) = upstream::Signals::new();
    let kubevirt_stream = {
        let changed = upstream_signals.changed.clone();
        kubevirt_stream.inspect(move |_| changed.notify_one())
    };
    // Targets live in their clone's namespace, so their DataVolumes are in scope.
    let (data_volumes, _, data_volume_stream) = cached_watch(api::<DataVolume>(&client, ns), slim);
    let (claims, claims_synced, claim_stream) =
        cached_watch(api::<PersistentVolumeClaim>(&client, ns), project::claim);
    let claim_stream = changes_only(claim_stream, claims.clone());
    // A content's status moves only its resourceVersion here: only its creation and deletion wake
    // (the snapshot's readiness follows the content's and wakes the clone itself).
    let (contents, contents_synced, content_stream) = cached_watch(
        api::<PartialObjectMeta<VirtualMachineSnapshotContent>>(&client, ns),
        |content| project::content_metadata(&mut content.metadata),
    );
    let content_stream = changes_only(content_stream, contents.clone());

    let caches = Caches {
        clones: clones.clone(),
        index: index.clone(),
        snapshots: snapshots.clone(),
        restores: restores.clone(),
        vms: vms.clone(),
        contents,
        claims,
        kubevirts: kubevirts.clone(),
        data_volumes,
        synced: vec![
            clones_synced,
            snapshots_synced,
            restores_synced,
            vms_synced,
            contents_synced,
            claims_synced,
            kubevirts_synced,
        ],
    };
    let (events, events_flushed) = Publisher::start(client.clone(), config.instance.clone());
    telemetry.watch_clones(clones.clone());
    tokio::spawn({
        let (caches, telemetry) = (caches.clone(), telemetry.clone());
        async move {
            caches.ready().await;
            telemetry.set_ready();
            info!("caches synced: ready");
        }
    });
    // Ended before the lease is released: it holds a leadership handle, and the lease manager
    // releases the lease only once every handle is gone.
    let leadership_log = tokio::spawn({
        let (leadership, metrics) = (leadership.clone(), telemetry.metrics.clone());
        metrics.leader.set(i64::from(leadership.is_leader()));
        async move {
            let mut changes = std::pin::pin!(leadership.changes());
            while let Some(leading) = changes.next().await {
                info!(leading, "leadership changed");
                metrics.leader.set(i64::from(leading));
            }
        }
    });
    let acquired = leader::on_acquired(&leadership);
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        caches,
        events,
        telemetry,
        leadership,
        memory,
    ));
    // Ended before the lease is released, like `leadership_log`.
    let upstream_watch = tokio::spawn(upstream::watch(ctx.clone(), upstream_signals));
    // Once its watch delivers a child this controller created (or its deletion), the cache is the
    // truth about it again.
    let snapshot_stream = snapshot_stream.inspect_ok({
        let ctx = ctx.clone();
        move |s| ctx.reads.snapshots.seen(s)
    });
    let restore_stream = restore_stream.inspect_ok({
        let ctx = ctx.clone();
        move |r| ctx.reads.restores.seen(r)
    });

    // Snapshot contents have no owner (as upstream's): the snapshot names its content, so the
    // snapshot watch keeps the way back.
    let content_owners = ContentOwners::default();
    let by_snapshot = {
        let (index, snapshots, content_owners, clones) = (
            index.clone(),
            snapshots.clone(),
            content_owners.clone(),
            clones.clone(),
        );
        let source_holds = ctx.source_holds.clone();
        move |snapshot: VirtualMachineSnapshot| {
            let present = snapshots.get(&ObjectRef::from_obj(&snapshot)).is_some();
            content_owners.note(&snapshot, present);
            let mut refs = owning_clone_for(&clones, &snapshot);
            // A freed VM wakes the clones waiting to snapshot it.
            if let Some(freed) = source_holds.note(&snapshot, present) {
                refs.extend(index.get(&freed));
            }
            let key = Key::SourceSnapshot(
                snapshot.namespace().unwrap_or_default(),
                snapshot.name_any(),
            );
            refs.extend(index.get(&key));
            refs
        }
    };
    let by_restore = {
        let clones = clones.clone();
        move |restore: VirtualMachineRestore| owning_clone_for(&clones, &restore)
    };
    // A VM wakes the clones it is the source of (only those before their snapshot: see the
    // index) and the clones it is the target of, where its change can matter to them.
    let by_vm = {
        let (index, clones, vms) = (index.clone(), clones.clone(), vms.clone());
        move |vm: PartialObjectMeta<VirtualMachine>| {
            let (ns, name) = (vm.namespace().unwrap_or_default(), vm.name_any());
            let deleted = vms.get(&ObjectRef::from_obj(&vm)).is_none();
            let mut refs = index.get(&Key::SourceVm(ns.clone(), name.clone()));
            refs.extend(
                index
                    .get(&Key::Target(ns, name))
                    .into_iter()
                    .filter(|r| wakes(&clones, r, deleted)),
            );
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
    // A DataVolume wakes the clone whose target VM owns it (KubeVirt owns the DataVolumes it
    // creates from a VM's templates).
    let by_data_volume = {
        let (index, clones) = (index.clone(), clones.clone());
        move |dv: DataVolume| {
            let ns = dv.namespace().unwrap_or_default();
            dv.metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.controller == Some(true) && o.kind == names::VIRTUAL_MACHINE_KIND)
                .flat_map(|o| index.get(&Key::Target(ns.clone(), o.name.clone())))
                .filter(|r| wakes(&clones, r, false))
                .collect::<Vec<_>>()
        }
    };
    let by_claim = {
        let index = index.clone();
        move |claim: PersistentVolumeClaim| {
            claim
                .annotations()
                .get(RESTORE_NAME_ANNOTATION)
                .and_then(|r| r.strip_prefix(TEMP_RESTORE_PREFIX))
                .map(|uid| index.get(&Key::Uid(uid.to_owned())))
                .unwrap_or_default()
        }
    };
    let by_content = {
        let (index, snapshots, clones) = (index.clone(), snapshots.clone(), clones.clone());
        move |content: PartialObjectMeta<VirtualMachineSnapshotContent>| {
            let ns = content.namespace().unwrap_or_default();
            let Some(snapshot) = content_owners
                .get(&ns, &content.name_any())
                .and_then(|name| snapshots.get(&ObjectRef::new(&name).within(&ns)))
            else {
                return Vec::new();
            };
            let mut refs = owning_clone_for(&clones, snapshot.as_ref());
            refs.extend(index.get(&Key::SourceSnapshot(ns, snapshot.name_any())));
            refs
        }
    };

    info!("clone controller starting");
    // Graceful shutdown lets in-flight reconciles finish, but kube-runtime's runner waits for the
    // first list of the clone cache, which never comes once the watches stop: a stop requested
    // before that would hang. So it gets a deadline.
    let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = fired_tx.send(());
    };
    let deadline = async move {
        if fired_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_DEADLINE).await;
            warn!(
                ?SHUTDOWN_DEADLINE,
                "in-flight work did not finish in time; stopping anyway"
            );
        } else {
            std::future::pending::<()>().await;
        }
    };
    let controller = controller
        .watches_stream(snapshot_stream, by_snapshot)
        .watches_stream(restore_stream, by_restore)
        .watches_stream(vm_stream, by_vm)
        .watches_stream(kubevirt_stream, by_kubevirt)
        .watches_stream(claim_stream, by_claim)
        .watches_stream(content_stream, by_content)
        .watches_stream(data_volume_stream, by_data_volume)
        .reconcile_all_on(acquired)
        .reconcile_all_on(upstream_resumed)
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
        });
    tokio::select! {
        () = controller => {}
        () = deadline => {}
    }
    info!("clone controller stopped");
    leadership_log.abort();
    let _ = leadership_log.await;
    upstream_watch.abort();
    let _ = upstream_watch.await;
    // Every publisher is gone with the controller's context: create what is queued.
    if tokio::time::timeout(FLUSH_DEADLINE, events_flushed)
        .await
        .is_err()
    {
        warn!(?FLUSH_DEADLINE, "queued events not all published in time");
    }
    if let Some(election) = election {
        election.release().await;
    }
    Ok(())
}

#[cfg(test)]
mod watch_backoff_tests {
    use super::*;
    use kube::runtime::utils::Backoff as _;

    #[test]
    fn doubles_up_to_five_seconds_and_resets() {
        let mut backoff = WatchBackoff::default();
        let ms: Vec<u128> = backoff.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(250)));
    }
}

#[cfg(test)]
mod changes_only_tests {
    use super::*;
    use futures::stream;

    fn snapshot(rv: &str, finalizer: bool, ready: bool) -> VirtualMachineSnapshot {
        let mut snapshot: VirtualMachineSnapshot = serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": rv,
                         "finalizers": if finalizer { vec!["snapshot.kubevirt.io/vmsnapshot-protection"] } else { vec![] }},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
            "status": {"readyToUse": ready},
        }))
        .expect("snapshot");
        project::snapshot(&mut snapshot);
        snapshot
    }

    #[tokio::test]
    async fn only_changes_a_pass_reads_get_through() {
        let (store, mut writer) = reflector::store::<VirtualMachineSnapshot>();
        writer.apply_watcher_event(&watcher::Event::Apply(snapshot("1", false, false)));
        let touched = vec![
            // First sight: through.
            snapshot("1", false, false),
            // A finalizer added: nothing a pass reads changed.
            snapshot("2", true, false),
            // Ready: through.
            snapshot("3", true, true),
            // The same again (a relist): nothing new.
            snapshot("3", true, true),
        ];
        let passed: Vec<String> = changes_only(stream::iter(touched.into_iter().map(Ok)), store)
            .map(|s| s.unwrap().metadata.resource_version.unwrap())
            .collect()
            .await;
        assert_eq!(passed, ["1", "3"]);
    }

    #[tokio::test]
    async fn a_deleted_object_gets_through() {
        let (store, mut writer) = reflector::store::<VirtualMachineSnapshot>();
        let gone = snapshot("1", false, false);
        writer.apply_watcher_event(&watcher::Event::Apply(gone.clone()));
        let mut stream = std::pin::pin!(changes_only(
            stream::iter([Ok(gone.clone()), Ok(gone.clone())]),
            store,
        ));
        assert!(stream.next().await.is_some());
        writer.apply_watcher_event(&watcher::Event::Delete(gone));
        assert!(stream.next().await.is_some(), "the deletion");
    }
}
