//! The lifecycle decision: from what the controller observed in one pass to the one step it
//! executes next, the complete new status and the events to publish.
//!
//! The state machine is controller.md's Snapshot strategy: preconditions → target name and guard →
//! snapshot (temporary, or the source snapshot) → content → restore → target VM → cleanup once
//! every restored PVC is bound. Each pass re-derives everything from the observation, so the
//! controller can crash and restart anywhere. Events belong to transitions (a phase change, a new
//! precondition, a failure), so a pass that changes nothing publishes nothing.
//!
//! Split by concern: `lookups` and `plan` (what a pass reads), `pass` (the state machine that turns the
//! observation into a status), `gate` (what holds or fails a clone before it acts), `snapshot`
//! and `data_volume` (each strategy's stages), `source` (the source checks) and `build` (the
//! child objects and the restore's patches).

use std::collections::BTreeMap;
use std::time::Duration;

use clone_api::kubevirt::{
    DataVolume, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};
use clone_api::names::EventReason;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VirtualMachineCloneStatus};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::datavolume::Choice;
use crate::refusal::{Refusal, classify, classify_dry_run};

mod build;
mod data_volume;
mod gate;
mod lookups;
mod pass;
mod plan;
pub mod project;
mod snapshot;
mod source;

pub use crate::gate::{FeatureGate, GateMode, snapshot_gate};
pub(crate) use build::with_run_strategy;
pub use build::{Restored, restore_patches, restored_vm, user_patch_conflict};
pub use lookups::{Lookups, content_name, held_source, lookups, source_matters, target_name};
pub use plan::ReadPlan;
pub use source::{
    Hold, check_content, data_volume_plan, data_volume_source_check, snapshot_source_check,
    spec_needs_backend_storage, target_exists, unknown_interface_message, vm_needs_backend_storage,
    volume_snapshot_problems,
};

/// Another clone that names the same target VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rival {
    /// Its name.
    pub name: String,
    /// Its UID (breaks ties between clones created in the same second).
    pub uid: String,
    /// When it was created.
    pub creation_timestamp: Option<Time>,
    /// Its phase.
    pub phase: ClonePhase,
}

/// Which creation the API server refused in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// The temporary snapshot.
    Snapshot,
    /// The restore.
    Restore,
    /// The server-side dry run of the target VM that precedes the restore.
    TargetDryRun,
    /// The target VM (DataVolume strategy).
    TargetVM,
}

/// The API server refused to create a child object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRejection {
    /// Which child.
    pub child: Child,
    /// The HTTP status code.
    pub code: u16,
    /// The status reason (`Invalid`, `BadRequest`, ...; empty for a webhook's own error).
    pub reason: String,
    /// The server's message.
    pub message: String,
}

impl CreateRejection {
    /// What the refusal means for the clone (see [`crate::refusal`]).
    pub fn refusal(&self) -> Refusal {
        match self.child {
            Child::TargetDryRun => classify_dry_run(self.code),
            Child::Snapshot | Child::Restore | Child::TargetVM => {
                classify(self.code, &self.reason, &self.message)
            }
        }
    }
}

/// Everything the controller read in one pass.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The clone.
    pub clone: &'a VirtualMachineClone,
    /// The time of this pass (for condition transition times).
    pub now: Time,
    /// The `Snapshot` feature gate.
    pub feature_gate: FeatureGate,
    /// The source VM (VM source).
    pub source_vm: Option<&'a VirtualMachine>,
    /// The source snapshot (snapshot source).
    pub source_snapshot: Option<&'a VirtualMachineSnapshot>,
    /// The temporary snapshot `tmp-snapshot-<uid>` (VM source).
    pub temp_snapshot: Option<&'a VirtualMachineSnapshot>,
    /// The content of the snapshot in use.
    pub content: Option<&'a VirtualMachineSnapshotContent>,
    /// The restore `tmp-restore-<uid>`.
    pub restore: Option<&'a VirtualMachineRestore>,
    /// The VM named like the target.
    pub target: Option<&'a VirtualMachine>,
    /// Phase of each PVC named in the restore's `status.restores` (absent: not found).
    pub claim_phases: BTreeMap<String, String>,
    /// Other clones in the namespace that name the same target.
    pub rivals: Vec<Rival>,
    /// A creation the API server refused earlier in this pass.
    pub rejection: Option<CreateRejection>,
    /// How long a restore may report the same KubeVirt error before the clone fails.
    pub restore_stall_timeout: Duration,
    /// DataVolume strategy: the source VM's claims by name, read in the source namespace before
    /// the target exists ([`crate::datavolume::source_claims`]; absent: not found).
    pub source_claims: BTreeMap<String, PersistentVolumeClaim>,
    /// DataVolume strategy: the whole target VM (its templates), once this clone created it.
    pub target_full: Option<&'a VirtualMachine>,
    /// DataVolume strategy: the target's DataVolumes by name.
    pub data_volumes: BTreeMap<String, DataVolume>,
    /// Cross-namespace: the answer to the [`AccessReview`] this pass asked for.
    pub access: Option<Access>,
    /// Another clone's temporary snapshot of the same source VM that is still in progress (its
    /// name). KubeVirt snapshots a VM one at a time, and a snapshot waiting for the VM runs down
    /// its `failureDeadline` (5 minutes) while it waits, so clones of one VM take their
    /// snapshots one after the other: this one waits before creating its own.
    pub source_held_by: Option<String>,
}

/// The `SubjectAccessReview`s a cross-namespace clone needs before anything is created: may the
/// identity KubeVirt uses for the target's DataVolume templates (the target VM's service account)
/// clone the source's claims and read the source VM?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessReview {
    /// `system:serviceaccount:<target namespace>:<account>`.
    pub user: String,
    /// The service account's groups.
    pub groups: Vec<String>,
    /// The source namespace.
    pub namespace: String,
    /// Every check must be allowed.
    pub checks: Vec<ResourceCheck>,
}

/// One access check: `verb` on `group`/`resource` (with `/subresource` when set) named `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceCheck {
    /// The verb.
    pub verb: &'static str,
    /// The API group.
    pub group: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// The subresource (empty: none).
    pub subresource: &'static str,
    /// The object's name.
    pub name: String,
}

/// The outcome of an [`AccessReview`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every check was allowed.
    Allowed,
    /// Some check was denied.
    Denied,
}

/// How often, at most, a clone's `Progressing` message is rewritten when only percentages moved:
/// CDI reports progress about every second per volume, and a status write per volume per second
/// costs the API server more than a user watching `kubectl get` gains. Five seconds keeps a
/// 100-volume golden-image fan-out under 20 status writes a second; the plugin reads DataVolumes
/// directly for live bars.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The default of [`Observed::restore_stall_timeout`]: ten minutes.
pub const DEFAULT_RESTORE_STALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a restore error must stand before the clone reports it as a hold (at most half the
/// stall timeout): KubeVirt's next retry often clears it.
pub const RESTORE_ERROR_GRACE: Duration = Duration::from_secs(15);

/// The one thing the controller does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to do; wait for a change.
    Nothing,
    /// Create this snapshot (`AlreadyExists` counts as success).
    CreateSnapshot(Box<VirtualMachineSnapshot>),
    /// Create this restore (`AlreadyExists` counts as success) — after the API server accepted
    /// the second value, the VM the restore will create, in a server-side dry run (`dryRun=All`):
    /// the API server's schema and, on a real cluster, KubeVirt's VM admission judge the exact
    /// object before anything exists. A refusal comes back as [`Child::TargetDryRun`].
    /// The dry run is left out when a generated patch does not apply in this controller's
    /// applier (the restore then shows what KubeVirt makes of it).
    CreateRestore(Box<VirtualMachineRestore>, Option<Box<Value>>),
    /// Delete the temporary objects (`NotFound` counts as success).
    Cleanup {
        /// The restore to delete.
        restore: Option<String>,
        /// The temporary snapshot to delete (never a source snapshot).
        snapshot: Option<String>,
    },
    /// Delete the clone (its target VM was deleted after success).
    DeleteClone,
    /// Create this VM (DataVolume strategy; `AlreadyExists` counts as success). A refusal comes
    /// back as [`Child::TargetVM`].
    CreateTargetVM(Box<Value>),
    /// Run these access reviews and decide again with [`Observed::access`] set.
    ReviewAccess(AccessReview),
}

/// An event to publish (type `Warning` when [`EventReason::is_warning`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneEvent {
    /// The reason.
    pub reason: EventReason,
    /// The note.
    pub message: String,
}

/// The outcome of one pass: execute `action`, then write `status`, then publish `events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The next step.
    pub action: Action,
    /// The complete new status.
    pub status: VirtualMachineCloneStatus,
    /// Events for the transitions this pass makes.
    pub events: Vec<CloneEvent>,
    /// Look at the clone again after this long even without a change: a deadline of the
    /// decision runs out then.
    pub recheck: Option<Duration>,
}

/// How far along a clone a Normal transition is: the reason of a pass's one event is its furthest
/// milestone (the "ready" transitions only lead to the next creation).
fn milestone(reason: EventReason) -> u8 {
    match reason {
        EventReason::SnapshotReady | EventReason::RestoreReady => 0,
        EventReason::VolumeCloned => 1,
        EventReason::SnapshotCreated => 2,
        EventReason::RestoreCreated => 3,
        EventReason::PVCBound => 4,
        EventReason::TargetVMCreated => 5,
        _ => 0,
    }
}

impl Decision {
    /// The one event this pass publishes, with its status write: the note names every transition
    /// of the pass (their messages, in order, joined by `; `); the reason is the first Warning
    /// transition's, else the furthest milestone's (so a successful clone shows `SnapshotCreated`,
    /// `RestoreCreated` and `TargetVMCreated`, the "ready" transitions in their notes).
    pub fn event(&self) -> Option<CloneEvent> {
        let warning = self.events.iter().find(|e| e.reason.is_warning());
        let reason = match warning {
            Some(event) => event.reason,
            None => {
                self.events
                    .iter()
                    .rev()
                    .max_by_key(|e| milestone(e.reason))?
                    .reason
            }
        };
        let message = self
            .events
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Some(CloneEvent { reason, message })
    }
}

/// How often a clone that is still working is looked at even without a change: a safety net, as
/// watches normally wake it sooner.
pub const RESYNC: Duration = Duration::from_secs(300);

impl Decision {
    /// When to look at the clone again if nothing changes: `None` once it is done (succeeded or
    /// failed, with no restore left to clean up); else after [`Decision::recheck`], at most
    /// [`RESYNC`].
    pub fn requeue_after(&self) -> Option<Duration> {
        if self.status.phase.is_terminal() && self.status.restore_name.is_none() {
            None
        } else {
            Some(self.recheck.map_or(RESYNC, |r| r.min(RESYNC)))
        }
    }
}

/// Decides the next step for a clone.
pub fn decide(observed: &Observed<'_>) -> Decision {
    let old = observed.clone.status.clone().unwrap_or_default();
    let mut pass = Pass {
        o: observed,
        names: lookups(observed.clone),
        status: old.clone(),
        events: Vec::new(),
        action: Action::Nothing,
        recheck: None,
        choice: None,
    };
    // A clone being deleted is left to the garbage collector.
    if observed.clone.metadata.deletion_timestamp.is_some() {
        return Decision {
            action: Action::Nothing,
            status: old,
            events: Vec::new(),
            recheck: None,
        };
    }
    // A failed clone is final; the pass after the failure releases its temporary objects.
    if old.phase == ClonePhase::Failed {
        return release_after_failure(&pass.names, old);
    }
    let situation = pass.run();
    pass.finish(&old, situation)
}

/// A failed clone keeps its outcome but not its temporary snapshot and restore: they hold
/// storage and their error text is already in the clone's status. A source snapshot is never
/// deleted. The failure is written first and the deletion follows in the next pass, so a crash in
/// between cannot turn the recorded reason into `SnapshotDeleted`.
fn release_after_failure(names: &Lookups, mut status: VirtualMachineCloneStatus) -> Decision {
    let restore = status
        .restore_name
        .take()
        .filter(|name| *name == names.restore_name);
    let snapshot = status
        .snapshot_name
        .take()
        .filter(|name| names.source_vm.is_some() && *name == names.snapshot_name);
    let action = if restore.is_some() || snapshot.is_some() {
        Action::Cleanup { restore, snapshot }
    } else {
        Action::Nothing
    };
    Decision {
        action,
        status,
        events: Vec::new(),
        recheck: None,
    }
}

/// One pass's working state: the observation, the names it reads, and the status, events,
/// action and recheck it builds up.
struct Pass<'o, 'a> {
    o: &'o Observed<'a>,
    names: Lookups,
    status: VirtualMachineCloneStatus,
    events: Vec<CloneEvent>,
    action: Action,
    recheck: Option<Duration>,
    /// The strategy of this pass, when `Auto` chose it (named in messages and the first event).
    choice: Option<Choice>,
}
