//! What every reconcile shares: the client, the caches, the event recorder, the settings and the
//! per-clone backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use clone_api::kubevirt::{
    KubeVirt, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
};
use clone_api::v1beta1::{VirtualMachineClone, VirtualMachineCloneStatus};
use clone_core::decide::GateMode;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};

/// Settings of a controller instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Clones reconciled at the same time.
    pub concurrency: u16,
    /// How the `Snapshot` feature gate is read.
    pub gate_mode: GateMode,
    /// This instance's name in events (the pod name when running several replicas).
    pub instance: Option<String>,
    /// Lease-based leader election (`None`: this instance always reconciles).
    pub leader_election: Option<crate::leader::LeaderElection>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            concurrency: 16,
            gate_mode: GateMode::Listed,
            instance: None,
            leader_election: None,
        }
    }
}

/// The caches the controller reads instead of the API server.
#[derive(Debug, Clone)]
pub struct Caches {
    /// Every clone in scope.
    pub clones: Store<VirtualMachineClone>,
    /// Every VM snapshot in scope (temporary ones and golden images).
    pub snapshots: Store<VirtualMachineSnapshot>,
    /// Every VM restore in scope.
    pub restores: Store<VirtualMachineRestore>,
    /// The metadata of every VM in scope (not their specs: a cluster may hold thousands).
    pub vms: Store<PartialObjectMeta<VirtualMachine>>,
    /// The `KubeVirt` CRs (feature gates).
    pub kubevirts: Store<KubeVirt>,
    /// One signal per cache: true once it holds its first full list.
    pub synced: Vec<Synced>,
}

impl Caches {
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
    /// Publishes events (events.k8s.io, with series de-duplication).
    pub recorder: Recorder,
    /// Metrics and readiness.
    pub telemetry: crate::telemetry::Telemetry,
    /// Whether this replica may reconcile.
    pub leadership: crate::leader::Leadership,
    backoff: Mutex<HashMap<ObjectRef<VirtualMachineClone>, u32>>,
    written: Mutex<HashMap<String, (u64, VirtualMachineCloneStatus)>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context over these caches.
    pub fn new(
        client: Client,
        config: Config,
        caches: Caches,
        recorder: Recorder,
        telemetry: crate::telemetry::Telemetry,
        leadership: crate::leader::Leadership,
    ) -> Self {
        Context {
            client,
            config,
            caches,
            recorder,
            telemetry,
            leadership,
            backoff: Mutex::default(),
            written: Mutex::default(),
        }
    }

    /// Remembers the status this controller wrote for a clone (by UID) and the resourceVersion
    /// the API server answered with.
    pub fn remember_status(
        &self,
        uid: &str,
        resource_version: u64,
        status: VirtualMachineCloneStatus,
    ) {
        if let Ok(mut map) = self.written.lock() {
            map.insert(uid.to_owned(), (resource_version, status));
        }
    }

    /// The clone as this controller last knew it: when the cache still holds a version older
    /// than our own last status write, that write's status replaces the cached one. Without this
    /// a pass woken by a child object could redo the last transition (and publish its events
    /// again) from a stale status.
    pub fn freshest(&self, clone: &VirtualMachineClone) -> Option<VirtualMachineClone> {
        let uid = clone.metadata.uid.as_deref()?;
        let cached: u64 = clone.metadata.resource_version.as_deref()?.parse().ok()?;
        let map = self.written.lock().ok()?;
        let (written, status) = map.get(uid)?;
        (*written > cached).then(|| {
            let mut fresher = clone.clone();
            fresher.status = Some(status.clone());
            fresher.metadata.resource_version = Some(written.to_string());
            fresher
        })
    }

    /// Forgets a deleted clone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.written.lock() {
            map.remove(uid);
        }
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
        backoff_delay(failures)
    }

    /// Forgets the failures of a clone that reconciled successfully.
    pub fn reset_backoff(&self, clone: &ObjectRef<VirtualMachineClone>) {
        if let Ok(mut map) = self.backoff.lock() {
            map.remove(clone);
        }
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

    #[test]
    fn backoff_doubles_and_caps() {
        let delays: Vec<u64> = (1..=11).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
