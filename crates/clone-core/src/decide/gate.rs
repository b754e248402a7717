//! The gate: what holds or fails a clone before it acts — the feature gate and source
//! preconditions, the target guard (never touch a VM this clone did not create; the earliest clone
//! claiming a target wins), and what a refused creation means.

use clone_api::kubevirt::VirtualMachine;
use clone_api::names::{self, EventReason};

use super::{Child, FeatureGate, Pass, snapshot_source_check, target_exists};
use crate::datavolume;
use crate::refusal::Refusal;
use crate::status::Situation;

impl Pass<'_, '_> {
    /// The checks that hold a clone until its snapshot is ready.
    pub(super) fn preconditions(&mut self) -> Option<Situation> {
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
    pub(super) fn target_guard(&mut self) -> Option<Situation> {
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
}

impl Pass<'_, '_> {
    /// What a refused creation of `child` means for the clone: a spec the user must fix fails it;
    /// the feature gate, another restore in progress or an error of the API server or a webhook
    /// holds it (one event when the hold starts; the controller retries with backoff).
    pub(super) fn rejection(&mut self, child: Child) -> Option<Situation> {
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
}
