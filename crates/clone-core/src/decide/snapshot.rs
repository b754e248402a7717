//! The Snapshot strategy's stages: take (or use) the snapshot, check its content, create the
//! restore and follow it, including KubeVirt's retried restore errors.

use std::time::Duration;

use clone_api::kubevirt::{VirtualMachineRestore, VirtualMachineSnapshot};
use clone_api::names::EventReason;
use clone_api::v1beta1::ClonePhase;
use clone_api::validation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::{Action, Child, Pass, RESTORE_ERROR_GRACE, Restored, check_content, content_name};
use super::{restore_patches, restored_vm, user_patch_conflict};
use crate::datavolume::Choice;
use crate::status::Situation;

impl<'a> Pass<'_, 'a> {
    fn snapshot_in_use(&self) -> Option<&'a VirtualMachineSnapshot> {
        if self.vm_source() {
            self.o.temp_snapshot
        } else {
            self.o.source_snapshot
        }
    }

    /// Take the snapshot (VM source) and wait until it and its content are ready.
    pub(super) fn snapshot_stage(&mut self) -> Option<Situation> {
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
            if let Some(holder) = &self.o.source_held_by {
                let vm = &self.o.clone.spec.source.name;
                return Some(self.working(format!(
                    "waiting for snapshot {holder} of VM {vm} to finish: KubeVirt takes one \
                     snapshot of a VM at a time"
                )));
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
}

impl Pass<'_, '_> {
    /// Create the restore and wait until it completes.
    pub(super) fn restore_stage(&mut self) -> Option<Situation> {
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
            // A snapshot that stopped being ready (KubeVirt rewrote its status) is waited for:
            // KubeVirt restores only a ready snapshot, and its content is read only then.
            if !snapshot.status.as_ref().is_some_and(|s| s.is_ready()) {
                let name = &self.names.snapshot_name;
                return Some(self.working(format!("waiting for snapshot {name} to be ready")));
            }
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
