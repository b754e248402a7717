//! Lookups: the names a clone's pass reads, and which source changes concern it.

use clone_api::extensions::CloneExtensions;
use clone_api::kubevirt::VirtualMachineSnapshot;
use clone_api::names;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};

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

/// The source VM a temporary snapshot of this controller holds, while it holds it. KubeVirt takes
/// one snapshot of a VM at a time: it locks the VM when the snapshot starts and frees it when the
/// snapshot's phase leaves `InProgress` (`Succeeded` or `Failed`); a snapshot created meanwhile
/// waits for the VM while its `failureDeadline` runs. See [`super::Observed::source_held_by`].
pub fn held_source(snapshot: &VirtualMachineSnapshot) -> Option<&str> {
    let name = snapshot.metadata.name.as_deref()?;
    let source = &snapshot.spec.source;
    let phase = snapshot.status.as_ref().and_then(|s| s.phase.as_deref());
    let done = matches!(phase, Some("Succeeded" | "Failed"));
    (name.starts_with(names::TEMP_SNAPSHOT_PREFIX)
        && source.kind == names::VIRTUAL_MACHINE_KIND
        && !done)
        .then_some(source.name.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(name: &str, kind: &str, phase: Option<&str>) -> VirtualMachineSnapshot {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": kind, "name": "vm"}},
            "status": phase.map(|p| json!({"phase": p})),
        }))
        .expect("snapshot")
    }

    #[test]
    fn a_temporary_snapshot_holds_its_vm_until_it_succeeds_or_fails() {
        for phase in [None, Some("InProgress"), Some("Unknown")] {
            let held = snapshot("tmp-snapshot-1", "VirtualMachine", phase);
            assert_eq!(held_source(&held), Some("vm"), "{phase:?}");
        }
        for phase in ["Succeeded", "Failed"] {
            let done = snapshot("tmp-snapshot-1", "VirtualMachine", Some(phase));
            assert_eq!(held_source(&done), None, "{phase}");
        }
        // Only this controller's temporary snapshots count: a user's is KubeVirt's business.
        let users = snapshot("nightly", "VirtualMachine", Some("InProgress"));
        assert_eq!(held_source(&users), None);
    }
}
