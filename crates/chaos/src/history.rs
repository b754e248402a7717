//! What the run saw of each clone's status over time: a background task lists the clones every
//! [`PERIOD`] and records, per clone, each change of its phase or Ready reason.
//!
//! The checks hold the clones' events against it. The controller publishes a hold's event when a
//! clone enters the hold — its Ready reason becomes the hold's, or its phase changes while it
//! holds — so a clone may carry as many events of a hold's reason as times it entered such a
//! hold. The record can miss a state that came and went between two lists (an API server restart
//! blinds it for a few seconds); a missed entry makes the checks stricter, never looser.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;

use crate::check::ready_reason;

/// How often the clones are listed.
pub const PERIOD: Duration = Duration::from_millis(100);

/// One state of a clone as listed: its phase and its Ready reason.
pub type State = (ClonePhase, Option<String>);

type Record = BTreeMap<String, Vec<State>>;

/// The running record; the task stops when this is dropped.
#[derive(Debug)]
pub struct History {
    record: Arc<Mutex<Record>>,
    task: JoinHandle<()>,
}

impl History {
    /// Starts listing the clones of `ns`.
    pub fn start(client: Client, ns: &str) -> History {
        let record: Arc<Mutex<Record>> = Arc::default();
        let api: Api<VirtualMachineClone> = Api::namespaced(client, ns);
        let task = tokio::spawn({
            let record = record.clone();
            async move {
                loop {
                    // While the API server restarts a list fails; the next one catches up.
                    if let Ok(list) = api.list(&ListParams::default()).await {
                        let mut record = record.lock().unwrap_or_else(PoisonError::into_inner);
                        for clone in &list.items {
                            let state = (
                                clone.status.as_ref().map(|s| s.phase).unwrap_or_default(),
                                ready_reason(clone),
                            );
                            let states = record.entry(clone.uid().unwrap_or_default()).or_default();
                            if states.last() != Some(&state) {
                                states.push(state);
                            }
                        }
                    }
                    tokio::time::sleep(PERIOD).await;
                }
            }
        });
        History { record, task }
    }

    /// The states seen of the clone with this UID, oldest first.
    pub fn states(&self, uid: &str) -> Vec<State> {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    /// How many times the clone with this UID was seen entering a hold with Ready reason
    /// `reason` (the reason appearing, or the phase changing while it stays).
    pub fn entries(&self, uid: &str, reason: &str) -> usize {
        entries(&self.states(uid), reason)
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Consecutive states always differ, so every state with the reason is an entry: the reason
/// appeared, or the phase changed under it.
fn entries(states: &[State], reason: &str) -> usize {
    states
        .iter()
        .filter(|(_, r)| r.as_deref() == Some(reason))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(phase: ClonePhase, reason: &str) -> State {
        (phase, Some(reason.to_owned()))
    }

    #[test]
    fn an_entry_is_the_reason_appearing_or_the_phase_changing_under_it() {
        let states = [
            s(ClonePhase::SnapshotInProgress, "SnapshotInProgress"),
            s(ClonePhase::RestoreInProgress, "RestoreCreationFailed"),
            s(ClonePhase::RestoreInProgress, "RestoreInProgress"),
            s(ClonePhase::RestoreInProgress, "RestoreCreationFailed"),
            s(ClonePhase::CreatingTargetVM, "RestoreCreationFailed"),
            s(ClonePhase::Succeeded, "Succeeded"),
        ];
        assert_eq!(entries(&states, "RestoreCreationFailed"), 3);
        assert_eq!(entries(&states, "SnapshotInProgress"), 1);
        assert_eq!(entries(&states, "FeatureGateDisabled"), 0);
        assert_eq!(entries(&[], "RestoreCreationFailed"), 0);
    }
}
