//! The pass state machine: from the observation to one situation, then to the complete status,
//! the events and the pacing of progress messages.

use std::time::Duration;

use clone_api::kubevirt::{
    Lenient, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};
use clone_api::names::{self, EventReason};
use clone_api::v1beta1::{ClonePhase, VirtualMachineCloneStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::plan::{before_snapshot_ready, follows_snapshot};
use super::{
    Action, CloneEvent, Decision, Hold, PROGRESS_INTERVAL, Pass, unknown_interface_message,
};
use crate::datavolume;
use crate::status::Situation;
use crate::validate::validate;
use clone_api::extensions::CloneStrategy;

impl Pass<'_, '_> {
    pub(super) fn clone_name(&self) -> &str {
        self.o.clone.metadata.name.as_deref().unwrap_or_default()
    }

    pub(super) fn namespace(&self) -> &str {
        self.o
            .clone
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default()
    }

    pub(super) fn uid(&self) -> &str {
        self.o.clone.metadata.uid.as_deref().unwrap_or_default()
    }

    pub(super) fn vm_source(&self) -> bool {
        self.names.source_vm.is_some()
    }

    pub(super) fn event(&mut self, reason: EventReason, message: String) {
        self.events.push(CloneEvent { reason, message });
    }

    pub(super) fn working(&self, message: String) -> Situation {
        Situation::Working {
            phase: self.status.phase,
            message,
        }
    }

    pub(super) fn fail(&mut self, reason: EventReason, message: String) -> Situation {
        self.status.phase = ClonePhase::Failed;
        self.action = Action::Nothing;
        Situation::Failed { reason, message }
    }

    pub(super) fn hold(&mut self, hold: Hold) -> Situation {
        if hold.fails {
            self.fail(hold.reason, hold.message)
        } else {
            Situation::Pending {
                reason: hold.reason,
                message: hold.message,
            }
        }
    }

    pub(super) fn run(&mut self) -> Situation {
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

        let before_snapshot_ready = before_snapshot_ready(self.status.phase);
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

    /// The target exists: the clone succeeded, created when the target was.
    pub(super) fn succeeded(&mut self, target: &VirtualMachine) {
        self.status.phase = ClonePhase::Succeeded;
        self.status.creation_time = target
            .metadata
            .creation_timestamp
            .clone()
            .or_else(|| Some(self.o.now.clone()));
    }

    /// One `UnknownInterface` warning per `newMacAddresses` key that names no interface.
    pub(super) fn warn_unknown_interfaces(&mut self, interfaces: &[String]) {
        for interface in interfaces {
            let message = unknown_interface_message(self.o.clone, interface);
            self.event(EventReason::UnknownInterface, message);
        }
    }

    /// An object this pass would read that could not be decoded holds the clone, with a message
    /// naming the object and the field: acting on its defaults could be a false outcome, and a
    /// controller that reads it may come with the next release.
    pub(super) fn unreadable(&self) -> Option<Situation> {
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
        // A clone that follows its snapshot no longer reads its source (see `ReadPlan`).
        let old = self.o.clone.status.clone().unwrap_or_default();
        let source = self
            .o
            .source_vm
            .filter(|_| !follows_snapshot(&old, self.o.temp_snapshot));
        let (kind, name, why) = source
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

    /// After success: delete the clone when its target is gone, else clean up once every
    /// restored PVC is bound.
    pub(super) fn after_success(&mut self) -> Situation {
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

    /// Turns the situation into the complete status and the events of this pass.
    pub(super) fn finish(
        mut self,
        old: &VirtualMachineCloneStatus,
        situation: Situation,
    ) -> Decision {
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
