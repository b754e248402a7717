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
    DataVolume, Lenient, VirtualMachine, VirtualMachineRestore, VirtualMachineRestoreSpec,
    VirtualMachineSnapshot, VirtualMachineSnapshotContent, VirtualMachineSnapshotSpec,
    VirtualMachineSpec,
};
use clone_api::names::{self, EventReason};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VirtualMachineCloneStatus};
use clone_api::validation;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, TypedLocalObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde_json::Value;

use crate::datavolume::{self, Choice, PlanError, PlanInput};
use crate::identity::{IdentityInput, IdentityPatches, identity_patches};
use crate::patch::{PatchError, apply_kubevirt};
use crate::refusal::{Refusal, classify, classify_dry_run};
use crate::status::Situation;
use crate::validate::validate;
use clone_api::extensions::{CloneExtensions, CloneStrategy, TargetRunStrategy};

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
    /// the target exists ([`datavolume::source_claims`]; absent: not found).
    pub source_claims: BTreeMap<String, PersistentVolumeClaim>,
    /// DataVolume strategy: the whole target VM (its templates), once this clone created it.
    pub target_full: Option<&'a VirtualMachine>,
    /// DataVolume strategy: the target's DataVolumes by name.
    pub data_volumes: BTreeMap<String, DataVolume>,
    /// Cross-namespace: the answer to the [`AccessReview`] this pass asked for.
    pub access: Option<Access>,
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

/// One access check: `verb` on `group`/`resource`[/`subresource`] named `name`.
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
    /// The source's namespace (`vmclone.dev/source-namespace`, else the clone's).
    pub source_namespace: String,
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
        source_namespace: clone
            .source_namespace()
            .or(clone.metadata.namespace.as_deref())
            .unwrap_or_default()
            .to_owned(),
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

    fn hold(&mut self, hold: Hold) -> Situation {
        if hold.fails {
            self.fail(hold.reason, hold.message)
        } else {
            Situation::Pending {
                reason: hold.reason,
                message: hold.message,
            }
        }
    }

    fn run(&mut self) -> Situation {
        self.status.target_name = Some(self.names.target_name.clone());
        if self.status.phase == ClonePhase::Succeeded {
            return self.after_success();
        }
        if let Err(errors) = validate(self.o.clone) {
            return self.fail(EventReason::InvalidSpec, errors.join("; "));
        }
        let choice = datavolume::choose(self.o.clone, self.o.source_vm, self.o.target);
        if choice.strategy == CloneStrategy::DataVolume {
            return self.data_volume_flow(&choice);
        }
        self.choice = Some(choice);
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
                    self.succeeded(vm);
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

    /// The DataVolume strategy: build the target from the source VM, check it, authorise a
    /// cross-namespace source, create the target, then follow its DataVolumes.
    fn data_volume_flow(&mut self, choice: &Choice) -> Situation {
        if let Some(situation) = self.unreadable() {
            return situation;
        }
        if let Some(situation) = self.target_guard() {
            return situation;
        }
        let label = choice.label();
        match (self.o.target, self.o.target_full) {
            (Some(_), Some(vm)) => self.follow_data_volumes(vm, &label),
            (Some(_), None) => self.working(format!(
                "{label}: waiting to read target VM {}",
                self.names.target_name
            )),
            (None, _) => self.create_target(choice, &label),
        }
    }

    /// Everything the DataVolume strategy checks before it creates the target, then the create.
    fn create_target(&mut self, choice: &Choice, label: &str) -> Situation {
        let pending = |reason, message| Situation::Pending { reason, message };
        let source_ns = self.names.source_namespace.clone();
        let source = &self.o.clone.spec.source;
        let Some(vm) = self.o.source_vm else {
            return pending(
                EventReason::SourceDoesNotExist,
                format!(
                    "Source doesnt exist: {} {source_ns}/{}",
                    source.kind, source.name
                ),
            );
        };
        if let Some(hold) = data_volume_source_check(vm, &source_ns, &source.name) {
            return self.hold(hold);
        }
        let plan = match data_volume_plan(&PlanInput {
            clone: self.o.clone,
            source_vm: vm,
            source_namespace: &source_ns,
            target_name: &self.names.target_name,
            claims: &self.o.source_claims,
        }) {
            Ok(plan) => plan,
            Err(hold) => return self.hold(hold),
        };
        if source_ns != self.namespace() {
            match self.o.access {
                None => {
                    self.action = Action::ReviewAccess(self.access_review(&plan));
                    return self
                        .working(format!("{label}: checking access to namespace {source_ns}"));
                }
                Some(Access::Denied) => {
                    let user = self.service_account_user(&plan.service_account);
                    return self.fail(
                        EventReason::Unauthorized,
                        validation::insufficient_clone_permissions(&user, &source_ns),
                    );
                }
                Some(Access::Allowed) => {}
            }
        }
        if let Some(situation) = self.rejection(Child::TargetVM) {
            return situation;
        }
        self.warn_unknown_interfaces(&plan.unknown_interfaces);
        let count = plan.volumes.len();
        let message = format!(
            "created target VM {}/{} for clone {} with the DataVolume strategy: {count} volume(s) cloned by CDI{}",
            self.namespace(),
            self.names.target_name,
            self.clone_name(),
            choice.event_note()
        );
        self.event(EventReason::TargetVMCreated, message);
        let progress = datavolume::Progress {
            items: plan
                .volumes
                .iter()
                .map(|v| format!("{} Pending", v.volume))
                .collect(),
            ..Default::default()
        };
        self.action = Action::CreateTargetVM(Box::new(plan.vm));
        self.status.phase = ClonePhase::CreatingTargetVM;
        self.working(format!(
            "{label}: {}",
            datavolume::progress_message(&progress)
        ))
    }

    /// The target exists: the clone succeeded, created when the target was.
    fn succeeded(&mut self, target: &VirtualMachine) {
        self.status.phase = ClonePhase::Succeeded;
        self.status.creation_time = target
            .metadata
            .creation_timestamp
            .clone()
            .or_else(|| Some(self.o.now.clone()));
    }

    /// One `UnknownInterface` warning per `newMacAddresses` key that names no interface.
    fn warn_unknown_interfaces(&mut self, interfaces: &[String]) {
        for interface in interfaces {
            let message = unknown_interface_message(self.o.clone, interface);
            self.event(EventReason::UnknownInterface, message);
        }
    }

    fn service_account_user(&self, account: &str) -> String {
        format!("system:serviceaccount:{}:{account}", self.namespace())
    }

    /// The checks of a cross-namespace clone: the target's service account may create
    /// `datavolumes/source` for every source claim (the OpenShift chapter's ClusterRole) and get
    /// the source VM (the target copies its spec, which can hold cloud-init secrets).
    fn access_review(&self, plan: &datavolume::Plan) -> AccessReview {
        let ns = self.namespace();
        let mut checks: Vec<ResourceCheck> = plan
            .volumes
            .iter()
            .map(|v| ResourceCheck {
                verb: "create",
                group: names::CDI_GROUP,
                resource: "datavolumes",
                subresource: "source",
                name: v.source_claim.clone(),
            })
            .collect();
        checks.push(ResourceCheck {
            verb: "get",
            group: names::KUBEVIRT_GROUP,
            resource: "virtualmachines",
            subresource: "",
            name: self.o.clone.spec.source.name.clone(),
        });
        AccessReview {
            user: self.service_account_user(&plan.service_account),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".to_owned(),
            ],
            namespace: self.names.source_namespace.clone(),
            checks,
        }
    }

    /// After the target exists: report each DataVolume's progress, fail with CDI's message when
    /// one fails, succeed when every one is done.
    fn follow_data_volumes(&mut self, vm: &VirtualMachine, label: &str) -> Situation {
        self.status.phase = ClonePhase::CreatingTargetVM;
        let progress = datavolume::progress(vm, &self.o.data_volumes);
        let old_message = self
            .o
            .clone
            .status
            .as_ref()
            .and_then(|s| s.condition(names::condition::PROGRESSING))
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        if let Some((volume, data_volume, why)) = progress.failed.clone() {
            return self.fail(
                EventReason::DataVolumeFailed,
                format!("DataVolume {data_volume} of volume {volume} failed: {why}"),
            );
        }
        for (volume, data_volume) in &progress.done {
            let item = progress
                .items
                .iter()
                .find(|i| i.starts_with(&format!("{volume} ")))
                .cloned()
                .unwrap_or_default();
            if !datavolume::lists(&old_message, &item) {
                let message = format!(
                    "volume {volume} of clone {} is cloned into DataVolume {data_volume}",
                    self.clone_name()
                );
                self.event(EventReason::VolumeCloned, message);
            }
        }
        if progress.complete {
            self.succeeded(vm);
            return self.after_success();
        }
        self.working(format!(
            "{label}: {}",
            datavolume::progress_message(&progress)
        ))
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
            if let Some(hold) = snapshot_source_check(vm, &ns, &source.name) {
                return Some(self.hold(hold));
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
                return Some(self.hold(target_exists(&ns, &target)));
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
        if datavolume::created_by(vm, self.uid()) {
            return true;
        }
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
            let note = self
                .choice
                .as_ref()
                .map(Choice::event_note)
                .unwrap_or_default();
            let message = format!(
                "created snapshot {name} for clone {}{note}",
                self.clone_name()
            );
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
            Child::TargetVM => (
                EventReason::TargetVMCreationFailed,
                format!(
                    "target VM {}/{} of clone {} is refused: {}",
                    self.namespace(),
                    self.names.target_name,
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
            Refusal::Spec if matches!(child, Child::TargetDryRun | Child::TargetVM) => {
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
            // Only a DataVolume-strategy clone may carry a patch KubeVirt's restore admission
            // refuses (validation allows it there); one that took the snapshot path anyway (upstream's
            // controller started it) cannot finish, so it fails here rather than at KubeVirt.
            if let Some((index, patch)) = self
                .o
                .clone
                .spec
                .patches
                .iter()
                .flatten()
                .enumerate()
                .find(|(_, p)| !crate::validate::passes_kubevirt_naive_check(p))
            {
                let message = validation::patch_rejected_by_kubevirt(index, patch);
                return Some(self.fail(EventReason::InvalidSpec, message));
            }
            let restore = restore_patches(self.o.clone, &self.names.target_name, &vm);
            self.warn_unknown_interfaces(&restore.unknown_interfaces);
            let patches = restore.patches;
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

    /// The VM the restore will create, checked: [`restored_vm`] of the snapshot's VM with every
    /// patch, under the target's name. A patch that does not apply is the user's (KubeVirt would
    /// retry such a restore for ever), so it fails the clone here.
    ///
    /// The VM leaves out `dataVolumeTemplates`: KubeVirt authorizes their clone sources against
    /// whoever creates the VM, and the restore (not this controller) creates it, with templates
    /// it rewrites to the restored volumes.
    fn trial_target(&self, vm: &Value, patches: &[String]) -> Result<Option<Value>, String> {
        let restored = restored_vm(
            vm,
            self.namespace(),
            &self.names.target_name,
            patches,
            &Restored::default(),
        );
        let mut trial = match restored {
            Ok(trial) => trial,
            Err(error) => {
                return match user_patch_conflict(
                    self.o.clone,
                    &self.names.snapshot_name,
                    &error,
                    patches,
                ) {
                    Some(message) => Err(message),
                    None => Ok(None),
                };
            }
        };
        if let Some(spec) = trial.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("dataVolumeTemplates");
        }
        Ok(Some(trial))
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
        let situation = match (situation, &self.choice) {
            (Situation::Working { phase, message }, Some(choice)) if choice.auto => {
                Situation::Working {
                    phase,
                    message: format!("{}: {message}", choice.label()),
                }
            }
            (situation, _) => situation,
        };
        let situation = self.pace_progress(old, situation);
        self.status.conditions = situation.conditions(&old.conditions, &self.o.now);
        self.stamp_progress(old);
        Decision {
            action: self.action,
            status: self.status,
            events: self.events,
            recheck: self.recheck,
        }
    }
}

impl Pass<'_, '_> {
    /// Keeps the old `Progressing` message when only its percentages moved and it was written
    /// less than [`PROGRESS_INTERVAL`] ago; the clone is looked at again when the interval ends.
    fn pace_progress(
        &mut self,
        old: &VirtualMachineCloneStatus,
        situation: Situation,
    ) -> Situation {
        let Situation::Working { phase, message } = situation else {
            return situation;
        };
        let previous = old
            .condition(names::condition::PROGRESSING)
            .filter(|_| old.phase == phase);
        let written = previous
            .and_then(|c| c.last_probe_time.as_ref())
            .and_then(|t| Duration::try_from(self.o.now.0.duration_since(t.0)).ok());
        match (previous.and_then(|c| c.message.as_deref()), written) {
            (Some(old_message), Some(age))
                if age < PROGRESS_INTERVAL
                    && datavolume::only_percentages_differ(old_message, &message) =>
            {
                let wait = PROGRESS_INTERVAL - age;
                self.recheck = Some(self.recheck.map_or(wait, |r| r.min(wait)));
                Situation::Working {
                    phase,
                    message: old_message.to_owned(),
                }
            }
            _ => Situation::Working { phase, message },
        }
    }

    /// `lastProbeTime` of `Progressing` records when its message was last written (the pace of
    /// progress updates is measured from it).
    fn stamp_progress(&mut self, old: &VirtualMachineCloneStatus) {
        let previous = old.condition(names::condition::PROGRESSING);
        if let Some(progressing) = self
            .status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == names::condition::PROGRESSING)
        {
            progressing.last_probe_time = match previous {
                Some(p) if p.message == progressing.message && p.status == progressing.status => {
                    p.last_probe_time.clone()
                }
                _ => Some(self.o.now.clone()),
            };
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

/// Why a clone cannot go on: it fails, or it waits (a `Pending` hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The reason.
    pub reason: EventReason,
    /// The message.
    pub message: String,
    /// Whether the clone fails (else it waits).
    pub fails: bool,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = if self.fails { "fail" } else { "wait" };
        write!(
            f,
            "the clone would {outcome} ({}): {}",
            self.reason, self.message
        )
    }
}

/// The Snapshot strategy's checks of a source VM `namespace/name` before its snapshot is taken: a
/// VM that needs backend storage fails the clone, volumes that cannot be snapshotted (or whose
/// support KubeVirt has not reported yet) hold it.
pub fn snapshot_source_check(vm: &VirtualMachine, namespace: &str, name: &str) -> Option<Hold> {
    if let Some(hold) = backend_storage_hold(vm, namespace, name) {
        return Some(hold);
    }
    let problems = volume_snapshot_problems(vm);
    (!problems.is_empty()).then(|| Hold {
        reason: EventReason::VMVolumeSnapshotsInvalid,
        message: problems.join("; "),
        fails: false,
    })
}

/// A source VM that needs backend storage (persistent TPM or EFI, changed-block tracking) fails
/// the clone with either strategy.
fn backend_storage_hold(vm: &VirtualMachine, namespace: &str, name: &str) -> Option<Hold> {
    vm_needs_backend_storage(vm).then(|| Hold {
        reason: EventReason::SourceVMWithBackendStorageInvalid,
        message: format!(
            "Clone of source with backendstorage is not supported: VM {namespace}/{name}"
        ),
        fails: true,
    })
}

/// A VM of the target's name that the clone did not create fails the clone.
pub fn target_exists(namespace: &str, target: &str) -> Hold {
    Hold {
        reason: EventReason::TargetExists,
        message: format!("target VirtualMachine {namespace}/{target} already exists"),
        fails: true,
    }
}

/// The DataVolume strategy's checks of the source VM `namespace/name` before its target is built:
/// a VM that needs backend storage fails the clone, a running one holds it until it stops.
pub fn data_volume_source_check(vm: &VirtualMachine, namespace: &str, name: &str) -> Option<Hold> {
    if let Some(hold) = backend_storage_hold(vm, namespace, name) {
        return Some(hold);
    }
    if datavolume::is_running(vm) {
        return Some(Hold {
            reason: EventReason::SourceVMRunning,
            message: format!(
                "source VM {namespace}/{name} is running: the DataVolume strategy clones only a stopped VM (stop it, for example with virtctl stop {name} -n {namespace})"
            ),
            fails: false,
        });
    }
    None
}

/// The DataVolume strategy's target ([`datavolume::plan`]), or what its failure means for the
/// clone: a missing source claim holds it, a patch that does not apply or a template that fails
/// CDI's checks fails it.
pub fn data_volume_plan(input: &PlanInput<'_>) -> Result<datavolume::Plan, Hold> {
    datavolume::plan(input).map_err(|error| match error {
        PlanError::MissingClaim { volume, claim } => Hold {
            reason: EventReason::SourceDoesNotExist,
            message: format!(
                "source PVC {}/{claim} of volume {volume} does not exist",
                input.source_namespace
            ),
            fails: false,
        },
        PlanError::Patch(message) => Hold {
            reason: EventReason::InvalidSpec,
            message,
            fails: true,
        },
        PlanError::Check(message) => Hold {
            reason: EventReason::DataVolumeInvalid,
            message,
            fails: true,
        },
    })
}

/// The `UnknownInterface` warning for a `newMacAddresses` key that names no interface.
pub fn unknown_interface_message(clone: &VirtualMachineClone, interface: &str) -> String {
    let source = &clone.spec.source;
    format!(
        "newMacAddresses names interface {interface}, which the VM of {} {} does not have",
        source.kind, source.name
    )
}

/// The restore's patches for `vm`, the VM a snapshot holds: the identity patches
/// ([`identity_patches`]), then, when `vmclone.dev/target-run-strategy` is set, the patches that
/// set the run strategy, then the user's patches, last. Also the `newMacAddresses` keys that name
/// no interface of `vm`. The controller puts exactly this list into the restore; the plugin's
/// preview ([`crate::preview`]) applies it with [`restored_vm`].
pub fn restore_patches(
    clone: &VirtualMachineClone,
    target_name: &str,
    vm: &Value,
) -> IdentityPatches {
    let input = IdentityInput {
        spec: &clone.spec,
        namespace: clone.metadata.namespace.as_deref().unwrap_or_default(),
        target_name,
        clone_uid: clone.metadata.uid.as_deref().unwrap_or_default(),
    };
    let identity = identity_patches(&input, vm);
    let patches = match clone.target_run_strategy() {
        Ok(Some(strategy)) => with_run_strategy(identity.patches, vm, clone, strategy),
        // Unset: KubeVirt's restore leaves the target halted. Unknown: failed validation.
        _ => identity.patches,
    };
    IdentityPatches {
        patches,
        unknown_interfaces: identity.unknown_interfaces,
    }
}

/// What KubeVirt's restore writes into the VM it creates that exists only once the restore does:
/// the restore's UID and the restored claims. Left at their defaults, [`restored_vm`] keeps the
/// snapshot VM's own values there.
#[derive(Default)]
pub struct Restored<'a> {
    /// The value of `restore.kubevirt.io/lastRestoreUID` (`<restore name>-<restore UID>`).
    pub last_restore_uid: Option<String>,
    /// The claim a volume (by name) is restored into; `None` keeps the snapshot's claim.
    pub claim: Option<&'a dyn Fn(&str) -> String>,
}

impl std::fmt::Debug for Restored<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored")
            .field("last_restore_uid", &self.last_restore_uid)
            .field("claim", &self.claim.map(|_| "fn"))
            .finish()
    }
}

/// The VM KubeVirt's restore creates from `vm`, the VM a snapshot holds, when the target does not
/// exist yet, in KubeVirt's order: the target's name and namespace with the snapshot VM's labels
/// and annotations; the spec, halted (`running: false` where the VM uses `running`, else
/// `runStrategy: Halted`), without `memoryDump` volumes, and (with [`Restored::claim`]) with
/// every claim volume pointing at its restored claim (a `dataVolume` volume renames its template
/// too, or becomes a `persistentVolumeClaim` volume when the VM has no template for it); then
/// `patches` ([`restore_patches`]) with KubeVirt's applier. No status.
///
/// The controller dry-runs this VM before it creates the restore (without restored names,
/// which do not exist yet); the plugin's preview shows it.
pub fn restored_vm(
    vm: &Value,
    namespace: &str,
    target_name: &str,
    patches: &[String],
    restored: &Restored<'_>,
) -> Result<Value, PatchError> {
    let source_meta = vm.get("metadata").unwrap_or(&Value::Null);
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), target_name.into());
    meta.insert("namespace".into(), namespace.into());
    for field in ["labels", "annotations"] {
        if let Some(value) = source_meta.get(field).filter(|v| v.is_object()) {
            meta.insert(field.into(), value.clone());
        }
    }
    if let Some(uid) = &restored.last_restore_uid {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(
                names::LAST_RESTORE_UID_ANNOTATION.into(),
                uid.clone().into(),
            );
        }
    }
    let mut spec = vm
        .get("spec")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    if let Some(spec) = spec.as_object_mut() {
        if spec.get("running").is_some_and(|r| !r.is_null()) {
            spec.insert("running".into(), Value::Bool(false));
        } else {
            spec.insert("runStrategy".into(), "Halted".into());
        }
    }
    restore_volumes(&mut spec, restored.claim);
    let mut target = serde_json::json!({
        "apiVersion": format!("{}/v1", names::KUBEVIRT_GROUP),
        "kind": names::VIRTUAL_MACHINE_KIND,
        "metadata": meta,
        "spec": spec,
    });
    apply_kubevirt(&mut target, patches)?;
    Ok(target)
}

/// The restore's changes to the volumes: `memoryDump` volumes dropped, claim volumes pointed at
/// their restored claims (when `claim` names them).
fn restore_volumes(spec: &mut Value, claim: Option<&dyn Fn(&str) -> String>) {
    let Some(volumes) = spec
        .pointer("/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
    else {
        return;
    };
    let mut templates = spec
        .get("dataVolumeTemplates")
        .and_then(Value::as_array)
        .cloned();
    let mut kept = Vec::with_capacity(volumes.len());
    for mut volume in volumes {
        if volume.get("memoryDump").is_some() {
            continue;
        }
        let name = volume
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(claim) = claim {
            let new = claim(&name);
            if let Some(pvc) = volume
                .get_mut("persistentVolumeClaim")
                .and_then(Value::as_object_mut)
            {
                pvc.insert("claimName".into(), new.into());
            } else if let Some(dv) = volume.get("dataVolume").and_then(Value::as_object) {
                let dv_name = dv.get("name").and_then(Value::as_str).unwrap_or_default();
                let template = templates
                    .iter_mut()
                    .flatten()
                    .find(|t| t.pointer("/metadata/name").and_then(Value::as_str) == Some(dv_name));
                match template
                    .and_then(|t| t.get_mut("metadata"))
                    .and_then(Value::as_object_mut)
                {
                    Some(metadata) => {
                        metadata.insert("name".into(), new.clone().into());
                        volume["dataVolume"]["name"] = new.into();
                    }
                    None => {
                        volume = serde_json::json!({
                            "name": name,
                            "persistentVolumeClaim": {"claimName": new},
                        });
                    }
                }
            }
        }
        kept.push(volume);
    }
    if let (Some(spec), Some(templates)) = (spec.as_object_mut(), templates) {
        spec.insert("dataVolumeTemplates".into(), Value::Array(templates));
    }
    if let Some(template_spec) = spec
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
    {
        if kept.is_empty() {
            template_spec.remove("volumes");
        } else {
            template_spec.insert("volumes".into(), Value::Array(kept));
        }
    }
}

/// Why the restore's patches would not apply to the snapshot's VM, when one of the user's patches
/// is at fault (for example removing a label the VM does not have, or one the filters already
/// removed). The user's patches come last, so a failure past the generated ones is theirs.
pub fn user_patch_conflict(
    clone: &VirtualMachineClone,
    snapshot_name: &str,
    error: &PatchError,
    patches: &[String],
) -> Option<String> {
    let user = clone.spec.patches.as_ref().map_or(0, Vec::len);
    let generated = patches.len().checked_sub(user)?;
    let (index, why) = match error {
        PatchError::Apply { index, source, .. } => (*index, source.to_string()),
        PatchError::Unparsable { index, source } => (*index, source.to_string()),
        _ => return None,
    };
    let user_index = index.checked_sub(generated)?;
    let patch = patches.get(index)?;
    Some(validation::patch_does_not_apply(
        user_index,
        snapshot_name,
        &why,
        patch,
    ))
}

/// Inserts the patches that set the target's run strategy before the user's patches (which stay
/// last).
pub(crate) fn with_run_strategy(
    patches: Vec<String>,
    vm: &Value,
    clone: &VirtualMachineClone,
    strategy: TargetRunStrategy,
) -> Vec<String> {
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
