//! What `decide` reads of the objects the controller caches, and which of their changes can
//! matter to a clone.
//!
//! The controller keeps only these projections in its caches (smaller caches, shared by every
//! pass) and wakes a clone for a cached object only when its projection changed, so writes that
//! touch nothing `decide` reads (a finalizer, a label, a managed-fields entry) wake nobody. The
//! property test `the_read_plan_reads_everything_decide_looks_at` decides on projected objects,
//! so a projection that drops something `decide` reads fails it.

use std::collections::BTreeMap;

use clone_api::kubevirt::{CONDITION_FAILURE, VirtualMachineRestore, VirtualMachineSnapshot};
use clone_api::names::{
    CREATED_BY_CLONE_ANNOTATION, LAST_RESTORE_UID_ANNOTATION, RESTORE_NAME_ANNOTATION,
};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Keeps of `meta` what identifies an object and who owns it, and the annotations named.
fn keep_metadata(meta: &mut ObjectMeta, annotations: &[&str]) {
    meta.managed_fields = None;
    meta.labels = None;
    meta.finalizers = None;
    meta.generate_name = None;
    meta.annotations = meta
        .annotations
        .take()
        .map(|all| {
            all.into_iter()
                .filter(|(key, _)| annotations.contains(&key.as_str()))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|kept| !kept.is_empty());
}

/// A snapshot as `decide` reads it: its identity, owners and spec, and of its status the phase,
/// readiness, error, `Failure` condition (without its times) and content name. KubeVirt rewrites
/// the rest (the `Progressing` and `Ready` conditions, indications, volume lists, times) as the
/// snapshot progresses; none of it decides.
pub fn snapshot(snapshot: &mut VirtualMachineSnapshot) {
    keep_metadata(&mut snapshot.metadata, &[]);
    if let Some(status) = &mut snapshot.status {
        status.source_uid = None;
        status.creation_time = None;
        status.extra = Default::default();
        status.conditions.retain(|c| c.type_ == CONDITION_FAILURE);
        for condition in &mut status.conditions {
            condition.last_probe_time = None;
            condition.last_transition_time = None;
        }
    }
}

/// A restore as `decide` reads it: without `spec.patches` (the clone wrote them; nothing reads
/// them back), the restore time and the status fields it does not model, and the metadata it
/// never reads. Condition times stay: a restore stalled on one error times out from them.
pub fn restore(restore: &mut VirtualMachineRestore) {
    keep_metadata(&mut restore.metadata, &[]);
    restore.spec.patches = None;
    if let Some(status) = &mut restore.status {
        status.restore_time = None;
        status.extra = Default::default();
    }
}

/// A snapshot content's metadata as the controller keeps it: identity and owners (its
/// resourceVersion says when to read it again).
pub fn content_metadata(meta: &mut ObjectMeta) {
    keep_metadata(meta, &[]);
}

/// A VM's metadata as `decide` reads it (the target guard): identity, owners and the two
/// annotations that say which clone or restore created it.
pub fn vm_metadata(meta: &mut ObjectMeta) {
    keep_metadata(
        meta,
        &[CREATED_BY_CLONE_ANNOTATION, LAST_RESTORE_UID_ANNOTATION],
    );
}

/// A claim as the controller reads it: its phase, and the annotation that names the restore that
/// created it (which maps it back to its clone).
pub fn claim(claim: &mut PersistentVolumeClaim) {
    keep_metadata(&mut claim.metadata, &[RESTORE_NAME_ANNOTATION]);
    claim.spec = None;
    claim.status = claim
        .status
        .take()
        .map(|status| PersistentVolumeClaimStatus {
            phase: status.phase,
            ..PersistentVolumeClaimStatus::default()
        });
}

/// Whether a change of the clone's target VM (or of a DataVolume it owns) can change what the
/// clone does: until it finishes, any change; after it succeeded, only the target's deletion
/// (which deletes the clone); after it failed, none.
pub fn wakes_on_target_change(clone: &VirtualMachineClone, deleted: bool) -> bool {
    match clone.status.as_ref().map(|s| s.phase).unwrap_or_default() {
        ClonePhase::Succeeded => deleted,
        ClonePhase::Failed => false,
        _ => true,
    }
}

/// Whether a change of the temporary snapshot or restore `child` (or of the snapshot's content)
/// can change what the clone does: not once the clone finished and its status no longer names
/// it (it released it: the child's own deletion is then of no interest).
pub fn wakes_on_child_change(clone: &VirtualMachineClone, child: &str) -> bool {
    let Some(status) = &clone.status else {
        return true;
    };
    !status.phase.is_terminal()
        || status.snapshot_name.as_deref() == Some(child)
        || status.restore_name.as_deref() == Some(child)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claim_keeps_its_phase_and_restore_name_only() {
        let mut pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "finalizers": ["kubernetes.io/pvc-protection"],
                         "labels": {"a": "b"},
                         "annotations": {"restore.kubevirt.io/name": "tmp-restore-u", "other": "x"}},
            "spec": {"accessModes": ["ReadWriteOnce"]},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}},
        }))
        .unwrap();
        claim(&mut pvc);
        assert_eq!(
            serde_json::to_value(&pvc).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "p", "namespace": "ns",
                             "annotations": {"restore.kubevirt.io/name": "tmp-restore-u"}},
                "status": {"phase": "Bound"},
            })
        );
    }

    #[test]
    fn a_vm_keeps_only_the_annotations_of_its_creator() {
        let mut meta: ObjectMeta = serde_json::from_value(json!({
            "name": "t", "labels": {"app": "x"},
            "annotations": {"vmclone.dev/created-by-clone": "u", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        }))
        .unwrap();
        vm_metadata(&mut meta);
        assert_eq!(meta.labels, None);
        assert_eq!(
            meta.annotations,
            Some(BTreeMap::from([(
                "vmclone.dev/created-by-clone".to_owned(),
                "u".to_owned()
            )]))
        );
    }

    #[test]
    fn a_finished_clone_wakes_only_for_its_targets_deletion() {
        let clone = |phase: &str| -> VirtualMachineClone {
            serde_json::from_value(json!({
                "apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
                "metadata": {"name": "c", "namespace": "ns"},
                "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
                "status": {"phase": phase},
            }))
            .unwrap()
        };
        assert!(wakes_on_target_change(&clone("RestoreInProgress"), false));
        assert!(!wakes_on_target_change(&clone("Succeeded"), false));
        assert!(wakes_on_target_change(&clone("Succeeded"), true));
        assert!(!wakes_on_target_change(&clone("Failed"), true));
    }

    #[test]
    fn a_finished_clone_wakes_for_the_children_it_still_names_only() {
        let clone = |status: serde_json::Value| -> VirtualMachineClone {
            serde_json::from_value(json!({
                "apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
                "metadata": {"name": "c", "namespace": "ns"},
                "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
                "status": status,
            }))
            .unwrap()
        };
        let working = clone(json!({"phase": "SnapshotInProgress", "snapshotName": "s"}));
        assert!(wakes_on_child_change(&working, "s"));
        assert!(wakes_on_child_change(&working, "r"));
        let cleaning = clone(json!({"phase": "Succeeded", "restoreName": "r"}));
        assert!(wakes_on_child_change(&cleaning, "r"));
        assert!(!wakes_on_child_change(&cleaning, "s"));
        let released = clone(json!({"phase": "Failed"}));
        assert!(!wakes_on_child_change(&released, "s"));
    }
}
