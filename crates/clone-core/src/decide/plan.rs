//! The read plan: what a pass must read for a clone, from the clone's spec and status and what
//! the pass has read so far. The controller's observe step follows it instead of re-deriving the
//! phase rules, so what is read and what `decide` looks at cannot drift apart.

use clone_api::kubevirt::{VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VirtualMachineCloneStatus};

use super::{Lookups, lookups};

/// Whether a clone in `phase` is still before its snapshot is ready (the phases in which the
/// source is checked and the snapshot followed).
pub(crate) fn before_snapshot_ready(phase: ClonePhase) -> bool {
    matches!(
        phase,
        ClonePhase::Unset | ClonePhase::SnapshotInProgress | ClonePhase::Unknown
    )
}

/// Whether a VM-source clone follows its temporary snapshot rather than its source VM: the
/// snapshot exists and the clone has started it (it is in `SnapshotInProgress`, or its status
/// names the snapshot). From then on the source is neither checked nor read: KubeVirt releases
/// it when the snapshot is done, and the user may delete it.
pub(crate) fn follows_snapshot(
    status: &VirtualMachineCloneStatus,
    temp_snapshot: Option<&VirtualMachineSnapshot>,
) -> bool {
    temp_snapshot.is_some()
        && (status.phase == ClonePhase::SnapshotInProgress || status.snapshot_name.is_some())
}

/// What to read for one clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// The names to read.
    pub names: Lookups,
    status: VirtualMachineCloneStatus,
}

impl ReadPlan {
    /// The plan for `clone`.
    pub fn of(clone: &VirtualMachineClone) -> ReadPlan {
        ReadPlan {
            names: lookups(clone),
            status: clone.status.clone().unwrap_or_default(),
        }
    }

    fn phase(&self) -> ClonePhase {
        self.status.phase
    }

    /// Nothing is read for a failed clone: `decide` only releases what its status names.
    pub fn reads_nothing(&self) -> bool {
        self.phase() == ClonePhase::Failed
    }

    /// The whole source VM (in the source namespace), given the temporary snapshot the cache
    /// shows: only a VM source, only before its snapshot is ready, and not once the clone follows
    /// its snapshot (the preconditions, `Auto`'s choice and the DataVolume strategy's target are
    /// built from the source until then).
    pub fn source_vm(&self, temp_snapshot: Option<&VirtualMachineSnapshot>) -> Option<&str> {
        self.names.source_vm.as_deref().filter(|_| {
            before_snapshot_ready(self.phase()) && !follows_snapshot(&self.status, temp_snapshot)
        })
    }

    /// Whether a temporary snapshot the cache does not show must be confirmed with a direct read:
    /// once the status names it, its absence fails the clone.
    pub fn confirm_temp_snapshot(&self) -> bool {
        self.status.snapshot_name.is_some()
    }

    /// Whether a restore the cache does not show must be confirmed with a direct read: once the
    /// status names it, its absence changes the decision.
    pub fn confirm_restore(&self) -> bool {
        self.status.restore_name.is_some()
    }

    /// The name of the snapshot content to read, given the snapshot in use and the restore read:
    /// only once the snapshot is ready, and only while the next step needs the content (checking
    /// it, or building the restore).
    pub fn content(
        &self,
        snapshot: Option<&VirtualMachineSnapshot>,
        restore: Option<&VirtualMachineRestore>,
    ) -> Option<String> {
        let needed = before_snapshot_ready(self.phase())
            || (self.phase() == ClonePhase::RestoreInProgress && restore.is_none());
        let snapshot = snapshot.filter(|s| s.status.as_ref().is_some_and(|s| s.is_ready()))?;
        needed.then(|| super::content_name(snapshot))
    }

    /// Whether a target VM the cache does not show must be confirmed with a direct read: only
    /// where its absence would change what the clone does. After success a missing target deletes
    /// the clone; while the status names a restore that is gone, a missing target makes the clone
    /// create the restore again. Anywhere else a missing target is waited for (the VM watch wakes
    /// the clone when it appears), so no read is spent on it.
    pub fn confirm_target(&self, restore: Option<&VirtualMachineRestore>) -> bool {
        self.phase() == ClonePhase::Succeeded
            || (restore.is_none() && self.status.restore_name.is_some())
    }

    /// The restored claims whose phases are read: once the target exists and the pass can reach
    /// the cleanup (the restore is complete, or the clone is past it), while the temporary objects
    /// may still be there (they go once every restored claim is bound). A clone that succeeded
    /// with nothing left to remove reads none.
    pub fn claims<'r>(
        &self,
        restore: Option<&'r VirtualMachineRestore>,
        target: Option<&VirtualMachine>,
    ) -> Vec<&'r str> {
        let phase = self.phase();
        let pending = self.status.restore_name.is_some() || self.status.snapshot_name.is_some();
        let done = phase == ClonePhase::Succeeded && !pending;
        let past_restore = matches!(phase, ClonePhase::CreatingTargetVM | ClonePhase::Succeeded);
        match restore.and_then(|r| r.status.as_ref()) {
            Some(status) if !done && target.is_some() && (past_restore || status.is_complete()) => {
                status.claims().collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether the other clones naming the same target are read: only while this clone could
    /// still create it (no target and no restore yet), where the earliest clone wins.
    pub fn rivals(
        &self,
        restore: Option<&VirtualMachineRestore>,
        target: Option<&VirtualMachine>,
    ) -> bool {
        restore.is_none() && target.is_none()
    }

    /// DataVolume strategy: whether a target the cache does not show must be confirmed with a
    /// direct read (the cache may lag behind this controller's own create).
    pub fn confirm_data_volume_target(&self) -> bool {
        self.phase() == ClonePhase::CreatingTargetVM
    }

    /// DataVolume strategy: whether the target's templates and DataVolumes are followed (until
    /// the clone succeeded).
    pub fn follows_data_volumes(&self) -> bool {
        self.phase() != ClonePhase::Succeeded
    }

    /// DataVolume strategy: the source VM to read again when the target is gone while the clone
    /// was creating it (it is built again from the source).
    pub fn source_vm_for_lost_target(&self) -> Option<&str> {
        self.names
            .source_vm
            .as_deref()
            .filter(|_| self.phase() == ClonePhase::CreatingTargetVM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clone_in(phase: &str, restore_name: Option<&str>) -> VirtualMachineClone {
        serde_json::from_value(json!({
            "apiVersion": "clone.kubevirt.io/v1beta1",
            "kind": "VirtualMachineClone",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
            "status": {"phase": phase, "restoreName": restore_name},
        }))
        .unwrap()
    }

    #[test]
    fn a_missing_target_is_confirmed_only_where_its_absence_decides() {
        let restore: VirtualMachineRestore = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1",
            "kind": "VirtualMachineRestore",
            "metadata": {"name": "tmp-restore-u", "namespace": "ns"},
            "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "t"},
                     "virtualMachineSnapshotName": "s"},
        }))
        .unwrap();
        let plan = |phase, name| ReadPlan::of(&clone_in(phase, name));
        // Succeeded: a missing target deletes the clone.
        assert!(plan("Succeeded", None).confirm_target(None));
        // The restore the status names is gone: a missing target re-creates it.
        assert!(plan("RestoreInProgress", Some("tmp-restore-u")).confirm_target(None));
        // Waiting for KubeVirt to create the target: nothing to confirm.
        assert!(!plan("RestoreInProgress", Some("tmp-restore-u")).confirm_target(Some(&restore)));
        assert!(!plan("CreatingTargetVM", Some("tmp-restore-u")).confirm_target(Some(&restore)));
        assert!(!plan("SnapshotInProgress", None).confirm_target(None));
    }
}
