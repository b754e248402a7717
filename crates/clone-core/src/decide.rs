//! The lifecycle decision: from what the controller observed in one pass to the one step it
//! executes next, the complete new status and the events to publish.
//!
//! The state machine is controller.md's Snapshot strategy: preconditions → target name and guard →
//! snapshot (temporary, or the source snapshot) → content → restore → target VM → cleanup once
//! every restored PVC is bound. Each pass re-derives everything from the observation, so the
//! controller can crash and restart anywhere. Events belong to transitions (a phase change, a new
//! precondition, a failure), so a pass that changes nothing publishes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use clone_api::kubevirt::{
    Lenient, VirtualMachine, VirtualMachineRestore, VirtualMachineRestoreSpec,
    VirtualMachineSnapshot, VirtualMachineSnapshotContent, VirtualMachineSnapshotSpec,
    VirtualMachineSpec,
};
use clone_api::names::{self, EventReason};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VirtualMachineCloneStatus};
use clone_api::validation;
use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde_json::Value;

use crate::identity::{IdentityInput, identity_patches};
use crate::patch::{PatchError, apply_kubevirt};
use crate::refusal::{Refusal, classify, classify_dry_run};
use crate::status::Situation;
use crate::validate::validate;
use clone_api::extensions::{CloneExtensions, CloneStrategy};

pub use crate::gate::{FeatureGate, GateMode, snapshot_gate};

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
            Child::Snapshot | Child::Restore => classify(self.code, &self.reason, &self.message),
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
}

/// The default of [`Observed::restore_stall_timeout`]: ten minutes.
pub const DEFAULT_RESTORE_STALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a restore error must stand before the clone reports it as a hold (at most half the
/// stall timeout): KubeVirt's next retry often clears it.
pub const RESTORE_ERROR_GRACE: Duration = Duration::from_secs(15);

/// What to read for a clone before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookups {
    /// The target VM's name.
    pub target_name: String,
    /// The temporary snapshot (VM source) or the source snapshot.
    pub snapshot_name: String,
    /// The temporary restore.
    pub restore_name: String,
    /// The source VM (VM source).
    pub source_vm: Option<String>,
    /// The source snapshot (snapshot source).
    pub source_snapshot: Option<String>,
}

/// The names a clone needs looked up.
pub fn lookups(clone: &VirtualMachineClone) -> Lookups {
    let uid = clone.metadata.uid.as_deref().unwrap_or_default();
    let source = &clone.spec.source;
    let vm_source = source.kind != names::VIRTUAL_MACHINE_SNAPSHOT_KIND;
    Lookups {
        target_name: target_name(clone),
        snapshot_name: if vm_source {
            crate::names::temp_snapshot_name(uid)
        } else {
            source.name.clone()
        },
        restore_name: crate::names::temp_restore_name(uid),
        source_vm: vm_source.then(|| source.name.clone()),
        source_snapshot: (!vm_source).then(|| source.name.clone()),
    }
}

/// Whether a change of the clone's source (the VM, or the source snapshot and its content) can
/// change the clone's next decision.
///
/// A VM source is read for the preconditions and the snapshot until the clone has created its
/// snapshot; from then on the clone follows the snapshot, and once that is ready the source is not
/// needed at all. A source snapshot is the snapshot in use, so it matters until the restore
/// exists. Watches use this to wake only the clones a change concerns: a golden VM or snapshot
/// shared by thousands of clones would otherwise wake all of them on every status write.
pub fn source_matters(clone: &VirtualMachineClone) -> bool {
    let phase = clone.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let vm_source = clone.spec.source.kind != names::VIRTUAL_MACHINE_SNAPSHOT_KIND;
    match phase {
        ClonePhase::Unset | ClonePhase::Unknown => true,
        ClonePhase::SnapshotInProgress => !vm_source,
        _ => false,
    }
}

/// The target name: the spec's, the one recorded in status, or one derived from the UID.
pub fn target_name(clone: &VirtualMachineClone) -> String {
    if let Some(target) = clone.spec.target.as_ref().filter(|t| !t.name.is_empty()) {
        return target.name.clone();
    }
    if let Some(name) = clone.status.as_ref().and_then(|s| s.target_name.clone()) {
        return name;
    }
    crate::names::target_name(
        &clone.spec.source.name,
        clone.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// The name of a snapshot's content.
pub fn content_name(snapshot: &VirtualMachineSnapshot) -> String {
    snapshot
        .status
        .as_ref()
        .and_then(|s| s.virtual_machine_snapshot_content_name.clone())
        .unwrap_or_else(|| {
            crate::names::snapshot_content_name(
                snapshot.metadata.uid.as_deref().unwrap_or_default(),
            )
        })
}

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

struct Pass<'o, 'a> {
    o: &'o Observed<'a>,
    names: Lookups,
    status: VirtualMachineCloneStatus,
    events: Vec<CloneEvent>,
    action: Action,
    recheck: Option<Duration>,
}

impl<'a> Pass<'_, 'a> {
    fn clone_name(&self) -> &str {
        self.o.clone.metadata.name.as_deref().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.o
            .clone
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default()
    }

    fn uid(&self) -> &str {
        self.o.clone.metadata.uid.as_deref().unwrap_or_default()
    }

    fn vm_source(&self) -> bool {
        self.names.source_vm.is_some()
    }

    fn event(&mut self, reason: EventReason, message: String) {
        self.events.push(CloneEvent { reason, message });
    }

    fn working(&self, message: String) -> Situation {
        Situation::Working {
            phase: self.status.phase,
            message,
        }
    }

    fn fail(&mut self, reason: EventReason, message: String) -> Situation {
        self.status.phase = ClonePhase::Failed;
        self.action = Action::Nothing;
        Situation::Failed { reason, message }
    }

    fn run(&mut self) -> Situation {
        self.status.target_name = Some(self.names.target_name.clone());
        if self.status.phase == ClonePhase::Succeeded {
            return self.after_success();
        }
        if let Err(errors) = validate(self.o.clone) {
            return self.fail(EventReason::InvalidSpec, errors.join("; "));
        }
        let clone = &self.o.clone;
        if clone
            .source_namespace()
            .is_some_and(|ns| ns != self.namespace())
        {
            return self.fail(
                EventReason::InvalidSpec,
                format!("{} needs the DataVolume strategy, which this version of the controller does not support yet", clone_api::extensions::SOURCE_NAMESPACE),
            );
        }
        if clone.strategy() == Ok(CloneStrategy::DataVolume) {
            return self.fail(
                EventReason::InvalidSpec,
                format!("{} DataVolume is not supported by this version of the controller; use Snapshot or Auto", clone_api::extensions::STRATEGY),
            );
        }
        if let Some(situation) = self.unreadable() {
            return situation;
        }

        let before_snapshot_ready = matches!(
            self.status.phase,
            ClonePhase::Unset | ClonePhase::SnapshotInProgress | ClonePhase::Unknown
        );
        // Once the temporary snapshot exists the clone follows it: ready → restore, failed →
        // failed. The source may vanish the moment KubeVirt releases it (when the snapshot is
        // done); its absence alone changes nothing.
        let snapshot_taken = self.vm_source() && self.o.temp_snapshot.is_some();
        if before_snapshot_ready
            && !snapshot_taken
            && let Some(situation) = self.preconditions()
        {
            return situation;
        }
        if let Some(situation) = self.target_guard() {
            return situation;
        }
        if before_snapshot_ready && let Some(situation) = self.snapshot_stage() {
            return situation;
        }
        if self.status.phase == ClonePhase::RestoreInProgress
            && let Some(situation) = self.restore_stage()
        {
            return situation;
        }
        if self.status.phase == ClonePhase::CreatingTargetVM {
            match self.o.target {
                Some(vm) => {
                    self.status.phase = ClonePhase::Succeeded;
                    self.status.creation_time = vm
                        .metadata
                        .creation_timestamp
                        .clone()
                        .or_else(|| Some(self.o.now.clone()));
                    let message = format!(
                        "created target VM {} for clone {}",
                        self.names.target_name,
                        self.clone_name()
                    );
                    self.event(EventReason::TargetVMCreated, message);
                }
                None => {
                    return self.working(format!(
                        "waiting for restore {} to create target VM {}",
                        self.names.restore_name, self.names.target_name
                    ));
                }
            }
        }
        self.after_success()
    }

    /// An object this pass would read that could not be decoded holds the clone, with a message
    /// naming the object and the field: acting on its defaults could be a false outcome, and a
    /// controller that reads it may come with the next release.
    fn unreadable(&self) -> Option<Situation> {
        let ns = self.namespace();
        let vm =
            |o: &VirtualMachine| unreadable_in("VirtualMachine", &o.metadata, &o.spec, &o.status);
        let snapshot = |o: &VirtualMachineSnapshot| {
            unreadable_in("VirtualMachineSnapshot", &o.metadata, &o.spec, &o.status)
        };
        let content = |o: &VirtualMachineSnapshotContent| {
            unreadable_in(
                "VirtualMachineSnapshotContent",
                &o.metadata,
                &o.spec,
                &o.status,
            )
        };
        let restore = |o: &VirtualMachineRestore| {
            unreadable_in("VirtualMachineRestore", &o.metadata, &o.spec, &o.status)
        };
        let (kind, name, why) = self
            .o
            .source_vm
            .and_then(vm)
            .or_else(|| self.o.source_snapshot.and_then(snapshot))
            .or_else(|| self.o.temp_snapshot.and_then(snapshot))
            .or_else(|| self.o.content.and_then(content))
            .or_else(|| self.o.restore.and_then(restore))?;
        Some(Situation::Pending {
            reason: EventReason::ObjectUnreadable,
            message: format!(
                "cannot read {kind} {ns}/{name}: {why} (written by a newer KubeVirt? this controller waits until it can read it)"
            ),
        })
    }

    /// The checks that hold a clone until its snapshot is ready.
    fn preconditions(&mut self) -> Option<Situation> {
        let pending = |reason, message| Some(Situation::Pending { reason, message });
        match self.o.feature_gate {
            FeatureGate::Enabled => {}
            FeatureGate::Disabled => {
                return pending(
                    EventReason::FeatureGateDisabled,
                    "snapshot feature gate is not enabled".into(),
                );
            }
            FeatureGate::KubeVirtNotFound => {
                return pending(
                    EventReason::KubeVirtNotFound,
                    "no KubeVirt CR found: cannot read the Snapshot feature gate".into(),
                );
            }
        }
        let ns = self.namespace().to_owned();
        let source = &self.o.clone.spec.source;
        if self.vm_source() {
            let Some(vm) = self.o.source_vm else {
                return pending(
                    EventReason::SourceDoesNotExist,
                    format!("Source doesnt exist: {} {ns}/{}", source.kind, source.name),
                );
            };
            if vm_needs_backend_storage(vm) {
                let message = format!(
                    "Clone of source with backendstorage is not supported: VM {ns}/{}",
                    source.name
                );
                return Some(self.fail(EventReason::SourceVMWithBackendStorageInvalid, message));
            }
            let problems = volume_snapshot_problems(vm);
            if !problems.is_empty() {
                return pending(EventReason::VMVolumeSnapshotsInvalid, problems.join("; "));
            }
        } else if self.o.source_snapshot.is_none() {
            return pending(
                EventReason::SourceDoesNotExist,
                format!("Source doesnt exist: {} {ns}/{}", source.kind, source.name),
            );
        }
        None
    }

    /// Never touch a VM this clone did not create; the earliest clone claiming a target wins.
    fn target_guard(&mut self) -> Option<Situation> {
        let ns = self.namespace().to_owned();
        let target = self.names.target_name.clone();
        if let Some(vm) = self.o.target {
            if !self.created_by_us(vm) {
                let message = format!("target VirtualMachine {ns}/{target} already exists");
                return Some(self.fail(EventReason::TargetExists, message));
            }
            return None;
        }
        // Once our restore exists, KubeVirt's restore admission and the check above settle races.
        if self.o.restore.is_some() {
            return None;
        }
        let me = (
            self.o.clone.metadata.creation_timestamp.clone(),
            self.uid().to_owned(),
        );
        let o = self.o;
        let winner = o
            .rivals
            .iter()
            .filter(|r| !r.phase.is_terminal() && r.uid != me.1)
            .filter(|r| (r.creation_timestamp.clone(), r.uid.clone()) < me)
            .min_by(|a, b| (&a.creation_timestamp, &a.uid).cmp(&(&b.creation_timestamp, &b.uid)));
        if let Some(rival) = winner {
            let message = format!(
                "target VirtualMachine {ns}/{target} is the target of clone {}",
                rival.name
            );
            return Some(self.fail(EventReason::TargetExists, message));
        }
        None
    }

    fn created_by_us(&self, vm: &VirtualMachine) -> bool {
        let prefix = format!("{}-", self.names.restore_name);
        vm.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::LAST_RESTORE_UID_ANNOTATION))
            .is_some_and(|v| v.starts_with(&prefix))
    }

    fn snapshot_in_use(&self) -> Option<&'a VirtualMachineSnapshot> {
        if self.vm_source() {
            self.o.temp_snapshot
        } else {
            self.o.source_snapshot
        }
    }

    /// Take the snapshot (VM source) and wait until it and its content are ready.
    fn snapshot_stage(&mut self) -> Option<Situation> {
        let name = self.names.snapshot_name.clone();
        let Some(snapshot) = self.snapshot_in_use() else {
            // Only a VM source gets here (a missing source snapshot is a precondition).
            if self.status.snapshot_name.is_some() {
                return Some(self.fail(
                    EventReason::SnapshotDeleted,
                    format!("snapshot {name} does not exist anymore"),
                ));
            }
            if let Some(rejection) = self.rejection(Child::Snapshot) {
                return Some(rejection);
            }
            self.action = Action::CreateSnapshot(Box::new(self.build_snapshot()));
            self.status.phase = ClonePhase::SnapshotInProgress;
            self.status.snapshot_name = Some(name.clone());
            let message = format!("created snapshot {name} for clone {}", self.clone_name());
            self.event(EventReason::SnapshotCreated, message);
            return Some(self.working(format!("waiting for snapshot {name} to be ready")));
        };
        if self.vm_source() {
            self.status.snapshot_name = Some(name.clone());
        }
        self.status.phase = ClonePhase::SnapshotInProgress;
        let status = snapshot.status.clone().unwrap_or_default();
        if let Some(failure) = status.failure() {
            return Some(self.fail(
                EventReason::SnapshotFailed,
                format!("snapshot {name} failed: {failure}"),
            ));
        }
        if !status.is_ready() {
            return Some(self.working(format!("waiting for snapshot {name} to be ready")));
        }
        if let Err(situation) = self.checked_content(snapshot) {
            return Some(situation);
        }
        self.status.phase = ClonePhase::RestoreInProgress;
        let message = format!(
            "snapshot {name} for clone {} is ready to use",
            self.clone_name()
        );
        self.event(EventReason::SnapshotReady, message);
        None
    }

    /// The content of a ready snapshot, checked; or what to report instead.
    fn checked_content(&mut self, snapshot: &VirtualMachineSnapshot) -> Result<Value, Situation> {
        let expected = content_name(snapshot);
        let Some(content) = self
            .o
            .content
            .filter(|c| c.metadata.name.as_deref() == Some(expected.as_str()))
        else {
            return Err(self.working(format!("waiting for snapshot content {expected}")));
        };
        let ns = self.namespace().to_owned();
        match check_content(content, &ns) {
            Ok(vm) => Ok(vm),
            Err(message) => Err(self.fail(EventReason::SnapshotContentInvalid, message)),
        }
    }

    /// What a refused creation of `child` means for the clone: a spec the user must fix fails it;
    /// the feature gate, another restore in progress or an error of the API server or a webhook
    /// holds it (one event when the hold starts; the controller retries with backoff).
    fn rejection(&mut self, child: Child) -> Option<Situation> {
        let rejection = self
            .o
            .rejection
            .as_ref()
            .filter(|r| r.child == child)?
            .clone();
        let (reason, message) = match child {
            Child::Snapshot => (
                EventReason::SnapshotCreationFailed,
                format!(
                    "failed creating snapshot {} for clone {}: {}",
                    self.names.snapshot_name,
                    self.clone_name(),
                    rejection.message
                ),
            ),
            Child::Restore => (
                EventReason::RestoreCreationFailed,
                format!(
                    "failed creating restore {} for clone {}: {}",
                    self.names.restore_name,
                    self.clone_name(),
                    rejection.message
                ),
            ),
            Child::TargetDryRun => (
                EventReason::RestoreCreationFailed,
                format!(
                    "target VM {}/{} of clone {} would be refused: {}",
                    self.namespace(),
                    self.names.target_name,
                    self.clone_name(),
                    rejection.message
                ),
            ),
        };
        let pending = |reason, message| Some(Situation::Pending { reason, message });
        match rejection.refusal() {
            // The dry run judged the target the user's spec produces.
            Refusal::Spec if child == Child::TargetDryRun => {
                Some(self.fail(EventReason::InvalidSpec, message))
            }
            Refusal::Spec => Some(self.fail(reason, message)),
            Refusal::FeatureGateOff => pending(
                EventReason::FeatureGateDisabled,
                format!("snapshot feature gate is not enabled: {message}"),
            ),
            Refusal::RestoreInProgress | Refusal::Transient => pending(reason, message),
        }
    }

    /// Create the restore and wait until it completes.
    fn restore_stage(&mut self) -> Option<Situation> {
        let name = self.names.restore_name.clone();
        let Some(restore) = self.o.restore else {
            if self.o.target.is_some() {
                // The restore did its work and is gone (deleted after a crash mid-cleanup).
                self.status.phase = ClonePhase::CreatingTargetVM;
                return None;
            }
            let Some(snapshot) = self.snapshot_in_use() else {
                let message = format!(
                    "snapshot {} does not exist anymore",
                    self.names.snapshot_name
                );
                return Some(self.fail(EventReason::SnapshotDeleted, message));
            };
            let vm = match self.checked_content(snapshot) {
                Ok(vm) => vm,
                Err(situation) => return Some(situation),
            };
            if let Some(situation) = self
                .rejection(Child::TargetDryRun)
                .or_else(|| self.rejection(Child::Restore))
            {
                return Some(situation);
            }
            let input = IdentityInput {
                spec: &self.o.clone.spec,
                namespace: self.namespace(),
                target_name: &self.names.target_name,
                clone_uid: self.uid(),
            };
            let identity = identity_patches(&input, &vm);
            for interface in &identity.unknown_interfaces {
                let source = &self.o.clone.spec.source;
                let message = format!(
                    "newMacAddresses names interface {interface}, which the VM of {} {} does not have",
                    source.kind, source.name
                );
                self.event(EventReason::UnknownInterface, message);
            }
            let patches = with_run_strategy(identity.patches, &vm, self.o.clone);
            let target = match self.trial_target(&vm, &patches) {
                Ok(target) => target,
                Err(message) => return Some(self.fail(EventReason::InvalidSpec, message)),
            };
            self.action =
                Action::CreateRestore(Box::new(self.build_restore(patches)), target.map(Box::new));
            self.status.restore_name = Some(name.clone());
            let message = format!("created restore {name} for clone {}", self.clone_name());
            self.event(EventReason::RestoreCreated, message);
            return Some(self.working(format!("waiting for restore {name} to complete")));
        };
        self.status.restore_name = Some(name.clone());
        let status = restore.status.clone().unwrap_or_default();
        if let Some(failure) = status.failure() {
            return Some(self.fail(
                EventReason::RestoreFailed,
                format!("restore {name} failed: {failure}"),
            ));
        }
        if !status.is_complete() {
            if let Some(stall) = restore_stall(restore) {
                return Some(self.stalled_restore(&stall));
            }
            return Some(self.working(format!("waiting for restore {name} to complete")));
        }
        self.status.phase = ClonePhase::CreatingTargetVM;
        let message = format!(
            "restore {name} for clone {} is ready to use",
            self.clone_name()
        );
        self.event(EventReason::RestoreReady, message);
        None
    }

    /// A restore on which KubeVirt reports an error and retries: the clone shows KubeVirt's text
    /// and waits (one event), and fails with `RestoreFailed` once the error has stood for
    /// [`Observed::restore_stall_timeout`]. Without this the clone would say "waiting for restore"
    /// for ever while KubeVirt retried a VM the API server never admits.
    fn stalled_restore(&mut self, stall: &Stall) -> Situation {
        let name = &self.names.restore_name;
        let timeout = self.o.restore_stall_timeout;
        let stood = stall
            .since
            .as_ref()
            .map(|since| self.o.now.0.duration_since(since.0))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default();
        // KubeVirt often reports an error that its next retry clears (its cache lagging behind
        // its own PVC create: `persistentvolumeclaims "restore-..." already exists`): shown in
        // the message at once, reported as a hold (and an event) only once it has stood a while.
        let grace = RESTORE_ERROR_GRACE.min(timeout / 2);
        if stood < grace {
            self.recheck = Some(grace - stood);
            return self.working(format!(
                "waiting for restore {name} to complete (KubeVirt reports, and retries: {})",
                stall.error
            ));
        }
        if stood >= timeout {
            let message = format!(
                "restore {name} made no progress for {}: {}",
                seconds(timeout),
                stall.error
            );
            return self.fail(EventReason::RestoreFailed, message);
        }
        self.recheck = Some(timeout - stood);
        Situation::Pending {
            reason: EventReason::RestoreError,
            message: format!(
                "restore {name} reports an error and is retried by KubeVirt (the clone fails if it makes no progress for {}): {}",
                seconds(timeout),
                stall.error
            ),
        }
    }

    /// The VM the restore will create, checked: the generated and the user's patches applied to
    /// the snapshot's VM under the target's name. A patch that does not apply is the user's
    /// (KubeVirt would retry such a restore for ever), so it fails the clone here.
    ///
    /// The VM leaves out `dataVolumeTemplates`: KubeVirt authorizes their clone sources against
    /// whoever creates the VM, and the restore (not this controller) creates it, with templates
    /// it rewrites to the restored volumes.
    fn trial_target(&self, vm: &Value, patches: &[String]) -> Result<Option<Value>, String> {
        let mut trial = vm.clone();
        if let Err(error) = apply_kubevirt(&mut trial, patches) {
            return match self.user_patch_conflict(&error, patches) {
                Some(message) => Err(message),
                None => Ok(None),
            };
        }
        let metadata = trial.get("metadata").cloned().unwrap_or(Value::Null);
        let mut meta = serde_json::Map::new();
        meta.insert("name".into(), self.names.target_name.clone().into());
        meta.insert("namespace".into(), self.namespace().into());
        for field in ["labels", "annotations"] {
            if let Some(value) = metadata.get(field).filter(|v| v.is_object()) {
                meta.insert(field.into(), value.clone());
            }
        }
        let mut spec = trial.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(spec) = spec.as_object_mut() {
            spec.remove("dataVolumeTemplates");
        }
        Ok(Some(serde_json::json!({
            "apiVersion": format!("{}/v1", names::KUBEVIRT_GROUP),
            "kind": names::VIRTUAL_MACHINE_KIND,
            "metadata": meta,
            "spec": spec,
        })))
    }

    /// Why the restore's patches would not apply to the snapshot's VM, when one of the user's
    /// patches is at fault (for example removing a label the VM does not have, or one the filters
    /// already removed). The user's patches come last, so a failure past the generated ones is
    /// theirs.
    fn user_patch_conflict(&self, error: &PatchError, patches: &[String]) -> Option<String> {
        let generated = patches.len() - self.o.clone.spec.patches.as_ref().map_or(0, Vec::len);
        let (index, why) = match error {
            PatchError::Apply { index, source, .. } => (*index, source.to_string()),
            PatchError::Unparsable { index, source } => (*index, source.to_string()),
            _ => return None,
        };
        let user_index = index.checked_sub(generated)?;
        let patch = patches.get(index)?;
        Some(validation::patch_does_not_apply(
            user_index,
            &self.names.snapshot_name,
            &why,
            patch,
        ))
    }

    /// After success: delete the clone when its target is gone, else clean up once every
    /// restored PVC is bound.
    fn after_success(&mut self) -> Situation {
        let ns = self.namespace().to_owned();
        let target = self.names.target_name.clone();
        let created = format!("target VM {ns}/{target} created");
        if self.o.target.is_none() {
            self.action = Action::DeleteClone;
            return Situation::Succeeded {
                message: format!("{created}; it was deleted since, so the clone is deleted too"),
            };
        }
        if self.status.restore_name.is_none() && self.status.snapshot_name.is_none() {
            return Situation::Succeeded { message: created };
        }
        if let Some(restore) = self.o.restore {
            let status = restore.status.clone().unwrap_or_default();
            let waiting: Vec<&str> = status
                .claims()
                .filter(|c| self.o.claim_phases.get(*c).map(String::as_str) != Some("Bound"))
                .collect();
            if !waiting.is_empty() {
                return Situation::Succeeded {
                    message: format!(
                        "{created}; waiting for PVCs {} to be bound before removing the temporary snapshot and restore",
                        waiting.join(", ")
                    ),
                };
            }
        }
        let snapshot = (self.vm_source() && self.o.temp_snapshot.is_some())
            .then(|| self.names.snapshot_name.clone());
        let restore = self.o.restore.map(|_| self.names.restore_name.clone());
        if restore.is_some() || snapshot.is_some() {
            self.action = Action::Cleanup { restore, snapshot };
        }
        self.status.restore_name = None;
        self.status.snapshot_name = None;
        let message = format!("all PVC for clone {} are bound", self.clone_name());
        self.event(EventReason::PVCBound, message);
        Situation::Succeeded { message: created }
    }

    fn owner_reference(&self) -> Vec<OwnerReference> {
        vec![OwnerReference {
            api_version: format!("{}/{}", names::GROUP, names::STORAGE_VERSION),
            kind: names::KIND.to_owned(),
            name: self.clone_name().to_owned(),
            uid: self.uid().to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    }

    fn child_meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace().to_owned()),
            owner_references: Some(self.owner_reference()),
            ..Default::default()
        }
    }

    fn build_snapshot(&self) -> VirtualMachineSnapshot {
        VirtualMachineSnapshot {
            metadata: self.child_meta(&self.names.snapshot_name),
            spec: VirtualMachineSnapshotSpec {
                source: TypedLocalObjectReference {
                    api_group: Some(names::KUBEVIRT_GROUP.to_owned()),
                    kind: names::VIRTUAL_MACHINE_KIND.to_owned(),
                    name: self.o.clone.spec.source.name.clone(),
                },
                ..Default::default()
            },
            status: None,
        }
    }

    fn build_restore(&self, patches: Vec<String>) -> VirtualMachineRestore {
        VirtualMachineRestore {
            metadata: self.child_meta(&self.names.restore_name),
            spec: VirtualMachineRestoreSpec {
                target: TypedLocalObjectReference {
                    api_group: Some(names::KUBEVIRT_GROUP.to_owned()),
                    kind: names::VIRTUAL_MACHINE_KIND.to_owned(),
                    name: self.names.target_name.clone(),
                },
                virtual_machine_snapshot_name: self.names.snapshot_name.clone(),
                volume_restore_policy: self
                    .o
                    .clone
                    .spec
                    .volume_name_policy
                    .as_ref()
                    .map(|p| p.as_str().to_owned()),
                patches: (!patches.is_empty()).then_some(patches),
                extra: Default::default(),
                unreadable: None,
            },
            status: None,
        }
    }

    /// Turns the situation into the complete status and the events of this pass.
    fn finish(mut self, old: &VirtualMachineCloneStatus, situation: Situation) -> Decision {
        let old_ready_reason = old
            .condition(names::condition::READY)
            .and_then(|c| c.reason.clone());
        match &situation {
            Situation::Pending { reason, message } | Situation::Failed { reason, message } => {
                // Once per transition: a precondition reports when it starts holding the clone,
                // a failure when the clone fails.
                let new = old_ready_reason.as_deref() != Some(reason.as_str())
                    || old.phase != self.status.phase;
                if new {
                    self.event(*reason, message.clone());
                }
            }
            Situation::Working { .. } | Situation::Succeeded { .. } => {}
        }
        self.status.conditions = situation.conditions(&old.conditions, &self.o.now);
        Decision {
            action: self.action,
            status: self.status,
            events: self.events,
            recheck: self.recheck,
        }
    }
}

/// Whether a VM spec needs backend storage that a clone cannot copy: a persistent TPM or
/// persistent EFI variables.
pub fn spec_needs_backend_storage(spec: &VirtualMachineSpec) -> bool {
    let domain = spec.instance_spec().and_then(|s| s.domain.as_ref());
    let tpm = domain
        .and_then(|d| d.devices.as_ref())
        .and_then(|d| d.tpm.as_ref())
        .and_then(|t| t.persistent)
        .unwrap_or(false);
    let efi = domain
        .and_then(|d| d.firmware.as_ref())
        .and_then(|f| f.bootloader.as_ref())
        .and_then(|b| b.efi.as_ref())
        .and_then(|e| e.persistent)
        .unwrap_or(false);
    tpm || efi
}

/// Whether a VM needs backend storage a clone cannot copy: persistent TPM or EFI, or
/// changed-block tracking that is not disabled.
pub fn vm_needs_backend_storage(vm: &VirtualMachine) -> bool {
    let cbt = vm
        .status
        .as_ref()
        .and_then(|s| s.changed_block_tracking.as_ref())
        .is_some_and(|cbt| {
            let state = cbt.get("state").and_then(Value::as_str).unwrap_or_default();
            !matches!(state, "" | "Disabled")
        });
    spec_needs_backend_storage(&vm.spec) || cbt
}

/// Why a VM's claim volumes cannot be snapshotted (empty: they all can).
pub fn volume_snapshot_problems(vm: &VirtualMachine) -> Vec<String> {
    let statuses = vm
        .status
        .as_ref()
        .and_then(|s| s.volume_snapshot_statuses.as_deref())
        .unwrap_or_default();
    vm.spec
        .volumes()
        .iter()
        .filter(|v| v.is_claim())
        .filter_map(|v| match statuses.iter().find(|s| s.name == v.name) {
            Some(s) if s.enabled => None,
            Some(_) => Some(format!(
                "Virtual Machine volume {} does not support snapshots",
                v.name
            )),
            None => Some(format!(
                "Virtual Machine volume {} snapshot support unknown",
                v.name
            )),
        })
        .collect()
}

/// Checks a snapshot content and returns the VM manifest it holds.
pub fn check_content(
    content: &VirtualMachineSnapshotContent,
    namespace: &str,
) -> Result<Value, String> {
    let name = content.metadata.name.as_deref().unwrap_or_default();
    let Some(snapshot_name) = content.spec.virtual_machine_snapshot_name.as_deref() else {
        return Err(format!("cannot get snapshot name from content {name}"));
    };
    let Some(vm) = content.spec.source.virtual_machine.clone() else {
        return Err(format!("content {name} holds no VirtualMachine"));
    };
    let spec_json = vm
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let spec: VirtualMachineSpec = serde_json::from_value(spec_json)
        .map_err(|e| format!("cannot read the VirtualMachine in content {name}: {e}"))?;
    if spec.template.is_none() {
        return Ok(vm);
    }
    if spec_needs_backend_storage(&spec) {
        return Err(format!(
            "Clone of source with backendstorage is not supported: snapshot {namespace}/{snapshot_name}"
        ));
    }
    let backups = content.spec.volume_backups.as_deref().unwrap_or_default();
    let missing: Vec<String> = spec
        .volumes()
        .iter()
        .filter(|v| v.is_claim() && !backups.iter().any(|b| b.volume_name == v.name))
        .map(|v| {
            format!(
                "volume {} is not backed up in snapshot {snapshot_name}",
                v.name
            )
        })
        .collect();
    if missing.is_empty() {
        Ok(vm)
    } else {
        Err(missing.join("; "))
    }
}

/// Inserts the `vmclone.dev/target-run-strategy` patches before the user's patches (which stay last).
fn with_run_strategy(patches: Vec<String>, vm: &Value, clone: &VirtualMachineClone) -> Vec<String> {
    // An unknown value already failed validation.
    let Ok(Some(strategy)) = clone.target_run_strategy() else {
        return patches;
    };
    let user = clone.spec.patches.as_deref().unwrap_or_default().len();
    let split = patches.len().saturating_sub(user);
    let mut ops = Vec::new();
    // KubeVirt's restore turns `running` into `running: false`; a VM cannot have both fields.
    if vm.pointer("/spec/running").is_some() {
        ops.push(r#"{"op":"remove","path":"/spec/running"}"#.to_owned());
    }
    ops.push(format!(
        r#"{{"op":"add","path":"/spec/runStrategy","value":"{}"}}"#,
        strategy.as_str()
    ));
    let mut out = patches;
    let tail = out.split_off(split);
    out.extend(ops);
    out.extend(tail);
    out
}

/// KubeVirt's report of a restore error it retries.
#[derive(Debug, Clone, PartialEq)]
struct Stall {
    /// KubeVirt's text.
    error: String,
    /// When the error was first reported (the condition's transition time).
    since: Option<Time>,
}

/// The error KubeVirt reports on a restore that is not complete, if any: upstream's
/// `doUpdateError` sets `Progressing` to `False` with the error's text as its reason (v1.7.0,
/// `pkg/storage/snapshot/restore.go`) and keeps the transition time while the text stays the same.
/// A restore that is working keeps `Progressing` true.
fn restore_stall(restore: &VirtualMachineRestore) -> Option<Stall> {
    let status = restore.status.as_ref()?;
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing" && c.status == "False")?;
    let error = [&progressing.message, &progressing.reason]
        .into_iter()
        .flatten()
        .find(|t| !t.is_empty())?
        .clone();
    let since = progressing
        .last_transition_time
        .clone()
        .and_then(|t| serde_json::from_value::<Time>(t).ok())
        .or_else(|| restore.metadata.creation_timestamp.clone());
    Some(Stall { error, since })
}

/// A duration for messages: whole seconds as `90s`, whole minutes as `10m`.
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Why an object's spec or status cannot be read: (kind, name, why), if it cannot.
fn unreadable_in(
    kind: &'static str,
    meta: &ObjectMeta,
    spec: &impl Lenient,
    status: &Option<impl Lenient>,
) -> Option<(&'static str, String, String)> {
    let why = spec
        .unreadable()
        .or_else(|| status.as_ref().and_then(Lenient::unreadable))?;
    Some((kind, meta.name.clone().unwrap_or_default(), why.to_owned()))
}
