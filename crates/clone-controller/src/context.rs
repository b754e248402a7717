//! What every reconcile shares: the client, the caches, the event publisher, the settings and the
//! per-clone backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clone_api::kubevirt::{
    DataVolume, KubeVirt, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};
use clone_api::v1beta1::{VirtualMachineClone, VirtualMachineCloneStatus};
use clone_core::decide::GateMode;
use clone_core::upstream::{UpstreamCloneController, UpstreamMode, upstream_clone_controller};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

/// Settings of a controller instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Clones reconciled at the same time.
    pub concurrency: u16,
    /// How the `Snapshot` feature gate is read (`None`: by the rule of the KubeVirt release in the
    /// `KubeVirt` CR's status).
    pub gate_mode: Option<GateMode>,
    /// Whether to act on no clone while upstream KubeVirt's clone controller runs.
    pub upstream: UpstreamMode,
    /// This instance's name in events (the pod name when running several replicas).
    pub instance: Option<String>,
    /// Lease-based leader election (`None`: this instance always reconciles).
    pub leader_election: Option<crate::leader::LeaderElection>,
    /// How long a restore may report the same KubeVirt error before its clone fails.
    pub restore_stall_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            concurrency: 16,
            gate_mode: None,
            upstream: UpstreamMode::Detect,
            instance: None,
            leader_election: None,
            restore_stall_timeout: clone_core::decide::DEFAULT_RESTORE_STALL_TIMEOUT,
        }
    }
}

/// The caches the controller reads instead of the API server.
#[derive(Debug, Clone)]
pub struct Caches {
    /// Every clone in scope.
    pub clones: Store<VirtualMachineClone>,
    /// The clones by what they refer to (fed by the same watch as `clones`).
    pub index: crate::index::CloneIndex,
    /// Every VM snapshot in scope (temporary ones and golden images), projected to what
    /// `decide` reads.
    pub snapshots: Store<VirtualMachineSnapshot>,
    /// Every VM restore in scope, projected to what `decide` reads.
    pub restores: Store<VirtualMachineRestore>,
    /// The metadata of every VM in scope (not their specs: a cluster may hold thousands),
    /// projected to what `decide` reads.
    pub vms: Store<PartialObjectMeta<VirtualMachine>>,
    /// The metadata of every snapshot content in scope (a content holds a whole VM).
    pub contents: Store<PartialObjectMeta<VirtualMachineSnapshotContent>>,
    /// Every PVC in scope, projected to its phase and the restore that created it.
    pub claims: Store<PersistentVolumeClaim>,
    /// The `KubeVirt` CRs (feature gates).
    pub kubevirts: Store<KubeVirt>,
    /// DataVolumes (the DataVolume strategy follows its targets' DataVolumes). Not among
    /// `synced`: a cluster without CDI has no DataVolume API, and the rest must work there.
    pub data_volumes: Store<DataVolume>,
    /// One signal per cache: true once it holds its first full list.
    pub synced: Vec<Synced>,
}

impl Caches {
    /// The `KubeVirt` CR that configures the cluster (`None`: there is none).
    pub fn kubevirt(&self) -> Option<Arc<KubeVirt>> {
        let state = self.kubevirts.state();
        let picked = clone_core::gate::kubevirt_in_use(state.iter().map(AsRef::as_ref))?;
        state
            .iter()
            .find(|kv| std::ptr::eq(kv.as_ref(), picked))
            .cloned()
    }

    /// Waits until every cache holds its first full list.
    pub async fn ready(&self) {
        for synced in &self.synced {
            synced.wait().await;
        }
    }
}

/// Whether a watch-fed cache has received its first full list.
///
/// `Store::wait_until_ready` is not used for this: it wakes only the most recent of several
/// concurrent waiters (a oneshot receiver behind a mutex), so a second waiter could sleep forever
/// or steal the wake-up from the controller's own runner. A watch channel wakes every waiter.
#[derive(Debug, Clone)]
pub struct Synced(tokio::sync::watch::Receiver<bool>);

impl Synced {
    /// A signal, and the function to feed every watch event to (it flips on the first
    /// `InitDone`).
    pub fn new<K>() -> (
        Synced,
        impl Fn(&kube::runtime::watcher::Event<K>) + Send + Sync + 'static,
    ) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mark = move |event: &kube::runtime::watcher::Event<K>| {
            if matches!(event, kube::runtime::watcher::Event::InitDone) {
                tx.send_if_modified(|synced| !std::mem::replace(synced, true));
            }
        };
        (Synced(rx), mark)
    }

    /// Waits until synced (returns at once if the watch is gone: the controller is stopping).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|synced| *synced).await;
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Settings.
    pub config: Config,
    /// The caches.
    pub caches: Caches,
    /// Publishes events (events.k8s.io), off the pass.
    pub events: crate::events::Publisher,
    /// Metrics and readiness.
    pub telemetry: crate::telemetry::Telemetry,
    /// Whether this replica may reconcile.
    pub leadership: crate::leader::Leadership,
    /// What the controller remembers per clone between passes.
    pub memory: Arc<CloneMemory>,
    /// Whole objects reused while unchanged, and children created but not cached yet.
    pub reads: crate::reads::Reads,
    /// The source VMs our temporary snapshots hold.
    pub source_holds: crate::index::SourceHolds,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Whether upstream KubeVirt's clone controller runs (then no clone is acted on), from the
    /// cached `KubeVirt` CR.
    pub fn upstream(&self) -> UpstreamCloneController {
        upstream_clone_controller(self.caches.kubevirt().as_deref(), self.config.upstream)
    }

    /// A context over these caches.
    pub fn new(
        client: Client,
        config: Config,
        caches: Caches,
        events: crate::events::Publisher,
        telemetry: crate::telemetry::Telemetry,
        leadership: crate::leader::Leadership,
        memory: Arc<CloneMemory>,
    ) -> Self {
        Context {
            client,
            config,
            caches,
            events,
            telemetry,
            leadership,
            memory,
            reads: crate::reads::Reads::default(),
            source_holds: crate::index::SourceHolds::default(),
        }
    }
}

/// The last status this controller wrote for a clone.
#[derive(Debug, Clone)]
struct Written {
    /// The resourceVersion of the clone the write was based on.
    read: String,
    /// The resourceVersion the API server answered the write with.
    written: String,
    /// The status written.
    status: VirtualMachineCloneStatus,
}

/// What the controller remembers per clone between passes: its backoff and the last status it
/// wrote. Bounded: a backoff goes with the clone's next successful pass, a remembered status as
/// soon as the cache shows any other version of the clone (the watch event of the write itself
/// wakes that pass), and both when the clone is deleted. A controller that has seen a million
/// clones keeps entries only for the few that are failing or whose write is in flight.
#[derive(Debug)]
pub struct CloneMemory {
    backoff: Mutex<HashMap<ObjectRef<VirtualMachineClone>, u32>>,
    written: Mutex<HashMap<ObjectRef<VirtualMachineClone>, Written>>,
    entries: prometheus_client::metrics::gauge::Gauge,
}

impl CloneMemory {
    /// An empty memory that reports its size through `entries`.
    pub fn new(entries: prometheus_client::metrics::gauge::Gauge) -> Self {
        CloneMemory {
            backoff: Mutex::default(),
            written: Mutex::default(),
            entries,
        }
    }

    fn report(&self) {
        self.entries
            .set(i64::try_from(self.len()).unwrap_or(i64::MAX));
    }

    /// Remembers the status this controller wrote for a clone: the resourceVersion the write was
    /// based on and the one the API server answered with.
    pub fn remember_status(
        &self,
        clone: &VirtualMachineClone,
        written: String,
        status: VirtualMachineCloneStatus,
    ) {
        let Some(read) = clone.metadata.resource_version.clone() else {
            return;
        };
        if let Ok(mut map) = self.written.lock() {
            let entry = Written {
                read,
                written,
                status,
            };
            map.insert(ObjectRef::from_obj(clone), entry);
        }
        self.report();
    }

    /// The clone as this controller last knew it. While the cache still holds the very version
    /// our last status write was based on, that write's status replaces the cached one: without
    /// this a pass woken by a child object could redo the last transition (and publish its
    /// events again) from a stale status. resourceVersions are opaque, so they are compared for
    /// equality only: any other version means the cache has caught up (or moved past), and the
    /// memory is dropped.
    pub fn freshest(&self, clone: &VirtualMachineClone) -> Option<VirtualMachineClone> {
        let cached = clone.metadata.resource_version.as_deref()?;
        let key = ObjectRef::from_obj(clone);
        let fresher = {
            let mut map = self.written.lock().ok()?;
            let entry = map.get(&key)?;
            if entry.read == cached {
                let mut fresher = clone.clone();
                fresher.status = Some(entry.status.clone());
                fresher.metadata.resource_version = Some(entry.written.clone());
                Some(fresher)
            } else {
                map.remove(&key);
                None
            }
        };
        self.report();
        fresher
    }

    /// Forgets a clone (deleted, or finished with nothing left to do).
    pub fn forget(&self, clone: &ObjectRef<VirtualMachineClone>) {
        if let Ok(mut map) = self.written.lock() {
            map.remove(clone);
        }
        if let Ok(mut map) = self.backoff.lock() {
            map.remove(clone);
        }
        self.report();
    }

    /// The delay before retrying a clone that failed `n` times in a row: 1 s doubling to 5 min.
    pub fn next_backoff(&self, clone: ObjectRef<VirtualMachineClone>) -> Duration {
        let failures = match self.backoff.lock() {
            Ok(mut map) => {
                let n = map.entry(clone).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        self.report();
        backoff_delay(failures)
    }

    /// Forgets the failures of a clone that reconciled successfully.
    pub fn reset_backoff(&self, clone: &ObjectRef<VirtualMachineClone>) {
        if let Ok(mut map) = self.backoff.lock() {
            map.remove(clone);
        }
        self.report();
    }

    /// How many entries the memory holds (backoffs plus remembered statuses).
    pub fn len(&self) -> usize {
        self.backoff.lock().map_or(0, |m| m.len()) + self.written.lock().map_or(0, |m| m.len())
    }

    /// Whether the memory is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 1 s after the first failure, doubling up to 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(9);
    Duration::from_secs((1u64 << exponent).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone_at(rv: &str) -> VirtualMachineClone {
        let mut clone: VirtualMachineClone = serde_json::from_value(serde_json::json!({
            "apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u", "resourceVersion": rv},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
        }))
        .expect("clone");
        clone.status = None;
        clone
    }

    #[test]
    fn a_stale_cache_reads_our_last_write_until_it_catches_up() {
        let memory = CloneMemory::new(Default::default());
        let read = clone_at("100");
        let status = VirtualMachineCloneStatus {
            target_name: Some("t".into()),
            ..Default::default()
        };
        memory.remember_status(&read, "107".into(), status.clone());
        // The cache still holds the version the write was based on.
        let fresher = memory.freshest(&clone_at("100")).expect("our write");
        assert_eq!(fresher.status, Some(status));
        assert_eq!(fresher.metadata.resource_version.as_deref(), Some("107"));
        assert_eq!(memory.len(), 1);
        // Any other version (ours, or a later one) means the cache caught up: forgotten.
        assert!(memory.freshest(&clone_at("107")).is_none());
        assert!(memory.is_empty());
    }

    #[test]
    fn forgetting_a_clone_drops_all_its_entries() {
        let memory = CloneMemory::new(Default::default());
        let clone = clone_at("1");
        memory.remember_status(&clone, "2".into(), VirtualMachineCloneStatus::default());
        let _ = memory.next_backoff(ObjectRef::from_obj(&clone));
        assert_eq!(memory.len(), 2);
        memory.forget(&ObjectRef::from_obj(&clone));
        assert!(memory.is_empty());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let delays: Vec<u64> = (1..=11).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
