//! `decide`, one row per transition and per failure of controller.md.
//!
//! Each test builds the world the controller would observe (`World`), decides once, and asserts
//! the action, the phase, both conditions (reason and message) and the events. Upstream's
//! controller unit tests (research §7.1) that apply are covered; their numbers are noted.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use clone_api::kubevirt::{
    VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot, VirtualMachineSnapshotContent,
};
use clone_api::names::EventReason::{self, *};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VirtualMachineCloneStatus};
use clone_core::decide::{Child, CreateRejection, FeatureGate, GateMode, Rival, snapshot_gate};
use clone_core::status::status_changed;
use clone_core::{Action, Decision, Observed, decide};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

const UID: &str = "clone-uid";
const SNAP: &str = "tmp-snapshot-clone-uid";
const RESTORE: &str = "tmp-restore-clone-uid";

fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn clone_with(spec: Value) -> VirtualMachineClone {
    serde_json::from_value(json!({
        "apiVersion": "clone.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClone",
        "metadata": {"name": "testclone", "namespace": "ns", "uid": UID, "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
    }))
    .unwrap()
}

/// The clone with the `vmclone.dev/*` annotations given.
fn annotated(mut clone: VirtualMachineClone, annotations: &[(&str, &str)]) -> VirtualMachineClone {
    let map = clone.metadata.annotations.get_or_insert_default();
    for (key, value) in annotations {
        map.insert((*key).to_owned(), (*value).to_owned());
    }
    clone
}

fn vm_spec() -> Value {
    json!({
        "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-cirros"},
        "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-clone-target"},
    })
}

fn snapshot_source_spec() -> Value {
    json!({
        "source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": "golden"},
        "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-clone-target"},
    })
}

fn source_vm(volume_status: Value) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm-cirros", "namespace": "ns", "labels": {"app": "cirros"}},
        "spec": {"runStrategy": "Halted", "template": {"spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"}]}},
            "volumes": [
                {"name": "root", "dataVolume": {"name": "root-dv"}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "x"}}
            ]}}},
        "status": {"volumeSnapshotStatuses": volume_status},
    }))
    .unwrap()
}

fn snapshottable_vm() -> VirtualMachine {
    source_vm(json!([{"name": "root", "enabled": true}, {"name": "cloudinit", "enabled": false}]))
}

fn snapshot(name: &str, status: Value) -> VirtualMachineSnapshot {
    serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": "ns", "uid": "snapshot-UID"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-cirros"}},
        "status": status,
    }))
    .unwrap()
}

fn ready_snapshot(name: &str) -> VirtualMachineSnapshot {
    snapshot(name, json!({"readyToUse": true, "phase": "Succeeded"}))
}

fn content(
    snapshot_name: Option<&str>,
    vm: Value,
    backups: Value,
) -> VirtualMachineSnapshotContent {
    let mut spec = json!({"source": {"virtualMachine": vm}, "volumeBackups": backups});
    if let Some(n) = snapshot_name {
        spec["virtualMachineSnapshotName"] = json!(n);
    }
    serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent",
        "metadata": {"name": "vmsnapshot-content-snapshot-UID", "namespace": "ns"},
        "spec": spec,
    }))
    .unwrap()
}

fn good_content(snapshot_name: &str) -> VirtualMachineSnapshotContent {
    let vm = serde_json::to_value(snapshottable_vm()).unwrap();
    content(
        Some(snapshot_name),
        vm,
        json!([{"volumeName": "root", "volumeSnapshotName": "vs"}]),
    )
}

fn restore(status: Value) -> VirtualMachineRestore {
    serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
        "metadata": {"name": RESTORE, "namespace": "ns"},
        "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-clone-target"},
                 "virtualMachineSnapshotName": SNAP},
        "status": status,
    }))
    .unwrap()
}

fn complete_restore() -> VirtualMachineRestore {
    restore(
        json!({"complete": true, "restores": [{"volumeName": "root", "persistentVolumeClaim": "restore-root"}]}),
    )
}

fn target_vm(last_restore_uid: Option<&str>) -> VirtualMachine {
    let mut meta = json!({"name": "vm-clone-target", "namespace": "ns", "creationTimestamp": "2026-01-01T00:05:00Z"});
    if let Some(v) = last_restore_uid {
        meta["annotations"] = json!({"restore.kubevirt.io/lastRestoreUID": v});
    }
    serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": meta, "spec": {}}))
        .unwrap()
}

fn our_target() -> VirtualMachine {
    target_vm(Some("tmp-restore-clone-uid-8d7c"))
}

/// The world the controller observed, owned so tests can build it piecewise.
struct World {
    clone: VirtualMachineClone,
    gate: FeatureGate,
    source_vm: Option<VirtualMachine>,
    source_snapshot: Option<VirtualMachineSnapshot>,
    temp_snapshot: Option<VirtualMachineSnapshot>,
    content: Option<VirtualMachineSnapshotContent>,
    restore: Option<VirtualMachineRestore>,
    target: Option<VirtualMachine>,
    claims: BTreeMap<String, String>,
    rivals: Vec<Rival>,
    rejection: Option<CreateRejection>,
    source_held_by: Option<String>,
}

impl World {
    fn vm_source() -> Self {
        World {
            clone: clone_with(vm_spec()),
            gate: FeatureGate::Enabled,
            source_vm: Some(snapshottable_vm()),
            source_snapshot: None,
            temp_snapshot: None,
            content: None,
            restore: None,
            target: None,
            claims: BTreeMap::new(),
            rivals: vec![],
            rejection: None,
            source_held_by: None,
        }
    }

    fn snapshot_source() -> Self {
        World {
            clone: clone_with(snapshot_source_spec()),
            source_vm: None,
            source_snapshot: Some(ready_snapshot("golden")),
            ..Self::vm_source()
        }
    }

    fn phase(mut self, phase: ClonePhase, snapshot: Option<&str>, restore: Option<&str>) -> Self {
        self.clone.status = Some(VirtualMachineCloneStatus {
            phase,
            snapshot_name: snapshot.map(str::to_owned),
            restore_name: restore.map(str::to_owned),
            target_name: Some("vm-clone-target".into()),
            ..Default::default()
        });
        self
    }

    fn decide(&self) -> Decision {
        decide(&Observed {
            clone: &self.clone,
            now: time("2026-01-01T00:10:00Z"),
            feature_gate: self.gate,
            source_vm: self.source_vm.as_ref(),
            source_snapshot: self.source_snapshot.as_ref(),
            temp_snapshot: self.temp_snapshot.as_ref(),
            content: self.content.as_ref(),
            restore: self.restore.as_ref(),
            target: self.target.as_ref(),
            claim_phases: self.claims.clone(),
            rivals: self.rivals.clone(),
            rejection: self.rejection.clone(),
            restore_stall_timeout: clone_core::decide::DEFAULT_RESTORE_STALL_TIMEOUT,
            source_claims: Default::default(),
            target_full: None,
            data_volumes: Default::default(),
            access: None,
            source_held_by: self.source_held_by.clone(),
        })
    }

    /// Decide, then decide again on the written status: the second pass must publish nothing new
    /// for the same situation (events once per transition).
    fn decide_twice(&mut self) -> (Decision, Decision) {
        let first = self.decide();
        self.clone.status = Some(first.status.clone());
        let second = self.decide();
        (first, second)
    }
}

fn reasons(d: &Decision) -> Vec<EventReason> {
    d.events.iter().map(|e| e.reason).collect()
}

fn condition(d: &Decision, type_: &str) -> (String, String, String) {
    let c = d
        .status
        .condition(type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    )
}

fn assert_pending(d: &Decision, reason: EventReason, message: &str) {
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.status.phase, ClonePhase::Unset);
    assert_eq!(
        condition(d, "Progressing"),
        ("False".into(), "Pending".into(), message.into())
    );
    assert_eq!(
        condition(d, "Ready"),
        ("False".into(), reason.as_str().into(), message.into())
    );
    assert_eq!(reasons(d), vec![reason]);
    assert_eq!(d.events[0].message, message);
}

fn assert_failed(d: &Decision, reason: EventReason, message: &str) {
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_eq!(
        condition(d, "Progressing"),
        ("False".into(), "Failed".into(), message.into())
    );
    assert_eq!(
        condition(d, "Ready"),
        ("False".into(), reason.as_str().into(), message.into())
    );
    assert!(reasons(d).contains(&reason), "events: {:?}", d.events);
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == reason && e.message == message)
    );
}

fn assert_working(d: &Decision, phase: ClonePhase, message: &str) {
    assert_eq!(d.status.phase, phase);
    let reason = phase.as_str().to_owned();
    assert_eq!(
        condition(d, "Progressing"),
        ("True".into(), reason.clone(), message.into())
    );
    assert_eq!(
        condition(d, "Ready"),
        ("False".into(), reason, message.into())
    );
}

// ---------------------------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------------------------

#[test]
fn feature_gate_off_holds_the_clone_and_warns_once() {
    let mut w = World::vm_source();
    w.gate = FeatureGate::Disabled;
    let (first, second) = w.decide_twice();
    assert_pending(
        &first,
        FeatureGateDisabled,
        "snapshot feature gate is not enabled",
    );
    assert!(
        second.events.is_empty(),
        "warned twice: {:?}",
        second.events
    );
    assert!(!status_changed(&first.status, &second.status));
}

#[test]
fn no_kubevirt_cr_holds_the_clone() {
    let mut w = World::vm_source();
    w.gate = FeatureGate::KubeVirtNotFound;
    assert_pending(
        &w.decide(),
        KubeVirtNotFound,
        "no KubeVirt CR found: cannot read the Snapshot feature gate",
    );
}

#[test]
fn feature_gate_modes() {
    let kv = |gates: Value| -> clone_api::kubevirt::KubeVirtSpec {
        serde_json::from_value(json!({"configuration": {"developerConfiguration": gates}})).unwrap()
    };
    let listed = kv(json!({"featureGates": ["Snapshot"]}));
    let unlisted = kv(json!({}));
    let disabled = kv(json!({"disabledFeatureGates": ["Snapshot"]}));
    assert_eq!(
        snapshot_gate(Some(&listed), GateMode::Listed),
        FeatureGate::Enabled
    );
    assert_eq!(
        snapshot_gate(Some(&unlisted), GateMode::Listed),
        FeatureGate::Disabled
    );
    assert_eq!(
        snapshot_gate(Some(&unlisted), GateMode::DefaultOn),
        FeatureGate::Enabled
    );
    assert_eq!(
        snapshot_gate(Some(&disabled), GateMode::DefaultOn),
        FeatureGate::Disabled
    );
    assert_eq!(
        snapshot_gate(None, GateMode::Listed),
        FeatureGate::KubeVirtNotFound
    );
}

/// Upstream §7.1 #1.
#[test]
fn missing_source_vm_holds_the_clone_and_records_the_target() {
    let mut w = World::vm_source();
    w.source_vm = None;
    let (first, second) = w.decide_twice();
    assert_pending(
        &first,
        SourceDoesNotExist,
        "Source doesnt exist: VirtualMachine ns/vm-cirros",
    );
    assert_eq!(first.status.target_name.as_deref(), Some("vm-clone-target"));
    assert!(second.events.is_empty());
}

/// Upstream §7.1 #22.
#[test]
fn missing_source_snapshot_holds_the_clone() {
    let mut w = World::snapshot_source();
    w.source_snapshot = None;
    assert_pending(
        &w.decide(),
        SourceDoesNotExist,
        "Source doesnt exist: VirtualMachineSnapshot ns/golden",
    );
}

/// Upstream §7.1 #2.
#[test]
fn source_with_backend_storage_fails() {
    for (path, value) in [
        (
            "/spec/template/spec/domain/devices/tpm",
            json!({"persistent": true}),
        ),
        (
            "/spec/template/spec/domain/firmware",
            json!({"bootloader": {"efi": {"persistent": true}}}),
        ),
        ("/status/changedBlockTracking", json!({"state": "Enabled"})),
    ] {
        let mut w = World::vm_source();
        let mut vm = serde_json::to_value(snapshottable_vm()).unwrap();
        let (parent, key) = path.rsplit_once('/').unwrap();
        vm.pointer_mut(parent).unwrap()[key] = value;
        w.source_vm = Some(serde_json::from_value(vm).unwrap());
        assert_failed(
            &w.decide(),
            SourceVMWithBackendStorageInvalid,
            "Clone of source with backendstorage is not supported: VM ns/vm-cirros",
        );
    }
}

/// Upstream §7.1 #3 and #4; a containerDisk or cloud-init volume never matters.
#[test]
fn volumes_without_snapshot_support_hold_the_clone() {
    let mut w = World::vm_source();
    w.source_vm = Some(source_vm(json!([])));
    assert_pending(
        &w.decide(),
        VMVolumeSnapshotsInvalid,
        "Virtual Machine volume root snapshot support unknown",
    );
    w.source_vm = Some(source_vm(json!([{"name": "root", "enabled": false}])));
    w.clone.status = None;
    assert_pending(
        &w.decide(),
        VMVolumeSnapshotsInvalid,
        "Virtual Machine volume root does not support snapshots",
    );
}

#[test]
fn a_precondition_that_clears_lets_the_clone_start() {
    let mut w = World::vm_source();
    w.source_vm = None;
    let pending = w.decide();
    w.clone.status = Some(pending.status);
    w.source_vm = Some(snapshottable_vm());
    let d = w.decide();
    assert!(matches!(d.action, Action::CreateSnapshot(_)));
    assert_eq!(reasons(&d), vec![SnapshotCreated]);
}

#[test]
fn an_invalid_spec_beyond_cel_fails() {
    let mut spec = vm_spec();
    // Passes CEL's approximation (looks like an object with op and path), is not JSON.
    spec["patches"] = json!([r#"{"op":"add","path":"/spec/x","value":"a"}}"#]);
    let mut w = World::vm_source();
    w.clone = clone_with(spec);
    let d = w.decide();
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_eq!(condition(&d, "Ready").1, "InvalidSpec");
    assert!(
        condition(&d, "Ready").2.contains("patch is not valid JSON"),
        "{:?}",
        condition(&d, "Ready")
    );
}

// ---------------------------------------------------------------------------------------------
// Target name and guard
// ---------------------------------------------------------------------------------------------

/// Upstream §7.1 #41 and §7.3: the name comes from the clone's UID, not from randomness.
#[test]
fn a_target_name_is_generated_and_recorded_at_once() {
    let mut spec = vm_spec();
    spec.as_object_mut().unwrap().remove("target");
    let mut w = World::vm_source();
    w.clone = clone_with(spec);
    let d = w.decide();
    let name = d.status.target_name.clone().unwrap();
    assert!(
        name.starts_with("clone-vm-cirros-") && name.len() == "clone-vm-cirros-".len() + 5,
        "{name}"
    );
    assert_eq!(w.decide().status.target_name, Some(name));
}

#[test]
fn an_existing_vm_with_the_target_name_fails_the_clone_and_is_left_alone() {
    for annotation in [None, Some("tmp-restore-other-uid-123")] {
        let mut w = World::vm_source();
        w.target = Some(target_vm(annotation));
        let d = w.decide();
        assert_failed(
            &d,
            TargetExists,
            "target VirtualMachine ns/vm-clone-target already exists",
        );
        assert_eq!(d.action, Action::Nothing);
    }
}

#[test]
fn an_existing_vm_fails_the_clone_in_any_phase_before_success() {
    let mut w = World::vm_source().phase(ClonePhase::CreatingTargetVM, Some(SNAP), Some(RESTORE));
    w.restore = Some(complete_restore());
    w.target = Some(target_vm(Some("tmp-restore-someone-else-1")));
    assert_failed(
        &w.decide(),
        TargetExists,
        "target VirtualMachine ns/vm-clone-target already exists",
    );
}

#[test]
fn the_earliest_clone_claiming_a_target_wins() {
    let rival = |uid: &str, created: &str, phase| Rival {
        name: format!("clone-{uid}"),
        uid: uid.into(),
        creation_timestamp: Some(time(created)),
        phase,
    };
    // Created earlier and still working: it wins.
    let mut w = World::vm_source();
    w.rivals = vec![rival(
        "a",
        "2025-12-31T00:00:00Z",
        ClonePhase::SnapshotInProgress,
    )];
    assert_failed(
        &w.decide(),
        TargetExists,
        "target VirtualMachine ns/vm-clone-target is the target of clone clone-a",
    );
    // Created later, or earlier but already failed: we go on.
    for r in [
        rival("b", "2026-01-02T00:00:00Z", ClonePhase::SnapshotInProgress),
        rival("c", "2025-12-31T00:00:00Z", ClonePhase::Failed),
    ] {
        let mut w = World::vm_source();
        w.rivals = vec![r];
        assert!(matches!(w.decide().action, Action::CreateSnapshot(_)));
    }
    // Same second: the smaller UID wins, deterministically on both sides.
    let mut w = World::vm_source();
    w.rivals = vec![rival(
        "a-smaller",
        "2026-01-01T00:00:00Z",
        ClonePhase::Unset,
    )];
    assert_eq!(w.decide().status.phase, ClonePhase::Failed);
    w.rivals = vec![rival("z-bigger", "2026-01-01T00:00:00Z", ClonePhase::Unset)];
    assert!(matches!(w.decide().action, Action::CreateSnapshot(_)));
}

// ---------------------------------------------------------------------------------------------
// Snapshot
// ---------------------------------------------------------------------------------------------

/// KubeVirt takes one snapshot of a VM at a time, and a snapshot waiting for its VM runs down
/// its `failureDeadline`: a clone whose source is held by another clone's snapshot waits before
/// creating its own, and creates it once the source is free.
#[test]
fn a_clone_waits_while_another_clones_snapshot_holds_its_source() {
    let mut w = World::vm_source();
    w.source_held_by = Some("tmp-snapshot-other".into());
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.status.phase, ClonePhase::Unset);
    let message = "waiting for snapshot tmp-snapshot-other of VM vm-cirros to finish: KubeVirt \
                   takes one snapshot of a VM at a time";
    assert_eq!(
        condition(&d, "Ready"),
        ("False".into(), "NotStarted".into(), message.into())
    );
    assert_eq!(d.status.snapshot_name, None);
    assert!(d.events.is_empty());

    // A clone whose snapshot exists follows it whatever holds the source.
    let mut started = World::vm_source().phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
    started.temp_snapshot = Some(snapshot(
        SNAP,
        json!({"readyToUse": false, "phase": "InProgress"}),
    ));
    started.source_held_by = Some("tmp-snapshot-other".into());
    let d = started.decide();
    assert_working(
        &d,
        ClonePhase::SnapshotInProgress,
        &format!("waiting for snapshot {SNAP} to be ready"),
    );

    w.source_held_by = None;
    assert!(matches!(w.decide().action, Action::CreateSnapshot(_)));
}

/// Upstream §7.1 #5 and #6.
#[test]
fn a_fresh_clone_creates_its_snapshot_owned_by_the_clone() {
    for start in [None, Some(ClonePhase::SnapshotInProgress)] {
        let mut w = World::vm_source();
        if let Some(p) = start {
            w = w.phase(p, None, None);
        }
        let d = w.decide();
        let Action::CreateSnapshot(s) = &d.action else {
            panic!("{:?}", d.action)
        };
        assert_eq!(s.metadata.name.as_deref(), Some(SNAP));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(s.spec.source.kind, "VirtualMachine");
        assert_eq!(s.spec.source.api_group.as_deref(), Some("kubevirt.io"));
        assert_eq!(s.spec.source.name, "vm-cirros");
        let owners = s.metadata.owner_references.clone().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].api_version, "clone.kubevirt.io/v1beta1");
        assert_eq!(owners[0].kind, "VirtualMachineClone");
        assert_eq!(
            (owners[0].name.as_str(), owners[0].uid.as_str()),
            ("testclone", UID)
        );
        assert_eq!(
            (owners[0].controller, owners[0].block_owner_deletion),
            (Some(true), Some(true))
        );
        assert_working(
            &d,
            ClonePhase::SnapshotInProgress,
            &format!("waiting for snapshot {SNAP} to be ready"),
        );
        assert_eq!(d.status.snapshot_name.as_deref(), Some(SNAP));
        assert_eq!(reasons(&d), vec![SnapshotCreated]);
        assert_eq!(
            d.events[0].message,
            format!("created snapshot {SNAP} for clone testclone")
        );
    }
}

/// Upstream §7.1 #7 and #18: an existing snapshot is adopted, a pending one awaited, silently.
#[test]
fn an_unready_snapshot_is_awaited_without_events() {
    let mut w = World::vm_source();
    w.temp_snapshot = Some(snapshot(
        SNAP,
        json!({"readyToUse": false, "phase": "InProgress"}),
    ));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert!(d.events.is_empty());
    assert_working(
        &d,
        ClonePhase::SnapshotInProgress,
        &format!("waiting for snapshot {SNAP} to be ready"),
    );
    assert_eq!(d.status.snapshot_name.as_deref(), Some(SNAP));
}

#[test]
fn a_failed_snapshot_fails_the_clone_with_its_error() {
    let mut w = World::vm_source().phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
    w.temp_snapshot = Some(snapshot(
        SNAP,
        json!({"phase": "Failed", "readyToUse": false, "conditions": [
        {"type": "Failure", "status": "True", "reason": "snapshot deadline exceeded"}]}),
    ));
    assert_failed(
        &w.decide(),
        SnapshotFailed,
        &format!("snapshot {SNAP} failed: snapshot deadline exceeded"),
    );
}

#[test]
fn a_deleted_temp_snapshot_fails_the_clone() {
    let w = World::vm_source().phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
    assert_failed(
        &w.decide(),
        SnapshotDeleted,
        &format!("snapshot {SNAP} does not exist anymore"),
    );
}

/// Upstream made a content cache miss terminal; we wait.
#[test]
fn a_missing_content_is_awaited_not_failed() {
    let mut w = World::vm_source().phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert!(d.events.is_empty());
    assert_working(
        &d,
        ClonePhase::SnapshotInProgress,
        "waiting for snapshot content vmsnapshot-content-snapshot-UID",
    );
}

/// Upstream §7.1 #24–#26.
#[test]
fn an_invalid_content_fails_the_clone() {
    let vm = serde_json::to_value(snapshottable_vm()).unwrap();
    let mut tpm_vm = vm.clone();
    tpm_vm["spec"]["template"]["spec"]["domain"]["devices"]["tpm"] = json!({"persistent": true});
    let backups = json!([{"volumeName": "root"}]);
    for (content, message) in [
        (
            content(None, vm.clone(), backups.clone()),
            "cannot get snapshot name from content vmsnapshot-content-snapshot-UID".to_owned(),
        ),
        (
            content(Some("golden"), vm.clone(), json!([])),
            "volume root is not backed up in snapshot golden".to_owned(),
        ),
        (
            content(Some("golden"), tpm_vm, backups),
            "Clone of source with backendstorage is not supported: snapshot ns/golden".to_owned(),
        ),
    ] {
        let mut w = World::snapshot_source();
        w.content = Some(content);
        assert_failed(&w.decide(), SnapshotContentInvalid, &message);
    }
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// Upstream §7.1 #8, #11 and #12.
#[test]
fn a_ready_snapshot_creates_the_restore_with_the_identity_patches() {
    for (policy, expected) in [
        (None, None),
        (Some("RandomizeNames"), Some("RandomizeNames")),
        (Some("PrefixTargetName"), Some("PrefixTargetName")),
    ] {
        let mut spec = vm_spec();
        if let Some(p) = policy {
            spec["volumeNamePolicy"] = json!(p);
        }
        let mut w = World::vm_source().phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
        w.clone = World {
            clone: clone_with(spec),
            ..World::vm_source()
        }
        .clone;
        w.clone.status = Some(VirtualMachineCloneStatus {
            phase: ClonePhase::SnapshotInProgress,
            snapshot_name: Some(SNAP.into()),
            ..Default::default()
        });
        w.temp_snapshot = Some(ready_snapshot(SNAP));
        w.content = Some(good_content(SNAP));
        let d = w.decide();
        let Action::CreateRestore(r, _) = &d.action else {
            panic!("{:?}", d.action)
        };
        assert_eq!(r.metadata.name.as_deref(), Some(RESTORE));
        assert_eq!(r.metadata.owner_references.as_ref().unwrap()[0].uid, UID);
        assert_eq!(r.spec.target.name, "vm-clone-target");
        assert_eq!(r.spec.target.kind, "VirtualMachine");
        assert_eq!(r.spec.virtual_machine_snapshot_name, SNAP);
        assert_eq!(r.spec.volume_restore_policy.as_deref(), expected);
        let patches = r.spec.patches.clone().unwrap();
        assert!(
            patches.iter().any(|p| p.contains("macAddress")),
            "{patches:?}"
        );
        assert!(
            patches.iter().any(|p| p.contains("/firmware/uuid")),
            "{patches:?}"
        );
        assert_working(
            &d,
            ClonePhase::RestoreInProgress,
            &format!("waiting for restore {RESTORE} to complete"),
        );
        assert_eq!(d.status.restore_name.as_deref(), Some(RESTORE));
        assert_eq!(reasons(&d), vec![SnapshotReady, RestoreCreated]);
        assert_eq!(
            d.events[0].message,
            format!("snapshot {SNAP} for clone testclone is ready to use")
        );
        assert_eq!(
            d.events[1].message,
            format!("created restore {RESTORE} for clone testclone")
        );
    }
}

/// Upstream §7.1 #27 and #23: the source snapshot is used as it is; nothing is created for it.
#[test]
fn a_snapshot_source_goes_straight_to_the_restore() {
    let mut w = World::snapshot_source();
    w.content = Some(good_content("golden"));
    let d = w.decide();
    let Action::CreateRestore(r, _) = &d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(r.spec.virtual_machine_snapshot_name, "golden");
    assert_eq!(d.status.snapshot_name, None);
    assert_eq!(reasons(&d), vec![SnapshotReady, RestoreCreated]);

    let mut w = World::snapshot_source();
    w.source_snapshot = Some(snapshot("golden", json!({"readyToUse": false})));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert!(d.events.is_empty());
    assert_working(
        &d,
        ClonePhase::SnapshotInProgress,
        "waiting for snapshot golden to be ready",
    );
}

#[test]
fn a_mac_for_an_unknown_interface_is_reported() {
    let mut spec = snapshot_source_spec();
    spec["newMacAddresses"] = json!({"eth9": "02:00:00:00:00:09"});
    let mut w = World::snapshot_source();
    w.clone = clone_with(spec);
    w.content = Some(good_content("golden"));
    let d = w.decide();
    assert_eq!(
        reasons(&d),
        vec![SnapshotReady, UnknownInterface, RestoreCreated]
    );
    assert_eq!(
        d.events[1].message,
        "newMacAddresses names interface eth9, which the VM of VirtualMachineSnapshot golden does not have"
    );
    // Published as one Warning event that still names the restore.
    let event = d.event().unwrap();
    assert_eq!(event.reason, UnknownInterface);
    assert_eq!(
        event.message,
        format!(
            "snapshot golden for clone testclone is ready to use; {}; created restore {RESTORE} for clone testclone",
            d.events[1].message
        )
    );
}

/// One event per pass: the furthest milestone names it, the note lists every transition.
#[test]
fn a_pass_publishes_one_event_naming_every_transition() {
    let mut w = World::snapshot_source();
    w.content = Some(good_content("golden"));
    let d = w.decide();
    assert_eq!(reasons(&d), vec![SnapshotReady, RestoreCreated]);
    let event = d.event().unwrap();
    assert_eq!(event.reason, RestoreCreated);
    assert_eq!(
        event.message,
        format!(
            "snapshot golden for clone testclone is ready to use; created restore {RESTORE} for clone testclone"
        )
    );

    // The last pass: restore ready, target created, claims bound.
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), Some(RESTORE));
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.restore = Some(complete_restore());
    w.target = Some(our_target());
    w.claims = [
        ("restore-root".to_owned(), "Bound".to_owned()),
        ("restore-data".to_owned(), "Bound".to_owned()),
    ]
    .into();
    let d = w.decide();
    assert_eq!(reasons(&d), vec![RestoreReady, TargetVMCreated, PVCBound]);
    assert_eq!(d.event().unwrap().reason, TargetVMCreated);

    // A pass without transitions publishes nothing.
    w.clone.status = Some(d.status.clone());
    assert_eq!(w.decide().event(), None);
}

const RESTORE_HOOK: &str = "admission webhook \"virtualmachinerestore-validator.snapshot.kubevirt.io\" denied the request: ";

fn refused(child: Child, code: u16, reason: &str, message: &str) -> Option<CreateRejection> {
    Some(CreateRejection {
        child,
        code,
        reason: reason.into(),
        message: message.into(),
    })
}

/// A refusal that passes by itself holds the clone with one event for the whole hold; the
/// controller retries with backoff.
fn assert_held(w: &mut World, reason: EventReason, message: &str) {
    let (first, second) = w.decide_twice();
    for d in [&first, &second] {
        assert_eq!(d.action, Action::Nothing);
        assert_eq!(d.status.phase, ClonePhase::RestoreInProgress);
        assert_eq!(d.status.restore_name, None);
        assert_eq!(
            condition(d, "Progressing"),
            ("False".into(), "Pending".into(), message.into())
        );
        assert_eq!(
            condition(d, "Ready"),
            ("False".into(), reason.as_str().into(), message.into())
        );
    }
    assert_eq!(reasons(&first), vec![SnapshotReady, reason]);
    assert_eq!(
        reasons(&second),
        Vec::<EventReason>::new(),
        "one event per hold"
    );
}

/// Upstream §7.1 #20, classified: another restore in progress and a webhook's internal error
/// (HTTP 400) are retried, the gate waits, anything else fails.
#[test]
fn a_restore_refused_while_another_is_in_progress_is_retried() {
    let mut w = World::snapshot_source();
    w.content = Some(good_content("golden"));
    let text = format!("{RESTORE_HOOK}VirtualMachineRestore \"other\" in progress");
    w.rejection = refused(Child::Restore, 422, "Invalid", &text);
    assert_held(
        &mut w,
        RestoreCreationFailed,
        &format!("failed creating restore {RESTORE} for clone testclone: {text}"),
    );
}

#[test]
fn a_restore_refused_by_a_webhook_internal_error_is_retried() {
    let mut w = World::snapshot_source();
    w.content = Some(good_content("golden"));
    let text = format!("{RESTORE_HOOK}snapshot content name is nil in vmSnapshot status");
    w.rejection = refused(Child::Restore, 400, "", &text);
    assert_held(
        &mut w,
        RestoreCreationFailed,
        &format!("failed creating restore {RESTORE} for clone testclone: {text}"),
    );
}

#[test]
fn a_restore_refused_because_the_gate_is_off_waits_for_the_gate() {
    let mut w = World::snapshot_source();
    w.content = Some(good_content("golden"));
    let text = format!("{RESTORE_HOOK}Snapshot/Restore feature gate not enabled");
    w.rejection = refused(Child::Restore, 400, "", &text);
    assert_held(
        &mut w,
        FeatureGateDisabled,
        &format!(
            "snapshot feature gate is not enabled: failed creating restore {RESTORE} for clone testclone: {text}"
        ),
    );
}

#[test]
fn a_snapshot_refused_because_the_gate_is_off_waits_for_the_gate() {
    let mut w = World::vm_source();
    let text = "admission webhook \"virtualmachinesnapshot-validator.snapshot.kubevirt.io\" denied the request: snapshot feature gate not enabled";
    w.rejection = refused(Child::Snapshot, 400, "", text);
    let (first, second) = w.decide_twice();
    let message = format!(
        "snapshot feature gate is not enabled: failed creating snapshot {SNAP} for clone testclone: {text}"
    );
    assert_pending(&first, FeatureGateDisabled, &message);
    assert_eq!(second.status.snapshot_name, None);
    assert_eq!(reasons(&second), Vec::<EventReason>::new());
}

#[test]
fn a_restore_refused_for_its_spec_fails() {
    let mut w = World::snapshot_source();
    w.content = Some(good_content("golden"));
    let text = format!(
        "{RESTORE_HOOK}patching is valid only for elements under /spec/ only: \"path\": \"/x\""
    );
    w.rejection = refused(Child::Restore, 422, "Invalid", &text);
    assert_failed(
        &w.decide(),
        RestoreCreationFailed,
        &format!("failed creating restore {RESTORE} for clone testclone: {text}"),
    );
}

/// The restore is created only after the VM it will create passed a server-side dry run; the
/// trial VM is the snapshot's VM with every patch applied, under the target's name.
#[test]
fn the_restore_comes_with_the_target_vm_to_dry_run() {
    let mut spec = snapshot_source_spec();
    spec["patches"] = json!([
        r#"{"op":"replace","path":"/spec/template/spec/domain/resources/requests/memory","value":"lots"}"#
    ]);
    let mut w = World::snapshot_source();
    w.clone = clone_with(spec);
    let mut content = good_content("golden");
    let vm = content.spec.source.virtual_machine.as_mut().unwrap();
    vm["spec"]["template"]["spec"]["domain"]["resources"] = json!({"requests": {"memory": "1Gi"}});
    vm["spec"]["dataVolumeTemplates"] = json!([{"metadata": {"name": "root-dv"}}]);
    vm["metadata"]["resourceVersion"] = json!("42");
    w.content = Some(content);
    let d = w.decide();
    let Action::CreateRestore(_, Some(target)) = &d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(target["metadata"]["name"], "vm-clone-target");
    assert_eq!(target["metadata"]["namespace"], "ns");
    assert_eq!(target["metadata"].get("resourceVersion"), None);
    assert_eq!(target["kind"], "VirtualMachine");
    assert_eq!(target["apiVersion"], "kubevirt.io/v1");
    assert_eq!(
        target.pointer("/spec/template/spec/domain/resources/requests/memory"),
        Some(&json!("lots"))
    );
    assert_eq!(target["spec"].get("dataVolumeTemplates"), None);
    assert_eq!(target.get("status"), None);
}

#[test]
fn a_target_the_dry_run_refuses_fails_the_clone_as_invalid_spec() {
    let mut w = World::snapshot_source();
    w.content = Some(good_content("golden"));
    let text = "VirtualMachine.kubevirt.io \"vm-clone-target\" is invalid: spec.template.spec.domain.resources.requests.memory: Invalid value: \"lots\"";
    w.rejection = refused(Child::TargetDryRun, 422, "Invalid", text);
    let d = w.decide();
    assert_failed(
        &d,
        InvalidSpec,
        &format!("target VM ns/vm-clone-target of clone testclone would be refused: {text}"),
    );
    assert_eq!(d.status.restore_name, None, "nothing was created");
}

/// KubeVirt's `doUpdateError`: Progressing false with the error's text as reason, kept while
/// KubeVirt retries.
fn erring_restore(since: &str) -> VirtualMachineRestore {
    restore(json!({"complete": false, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ApiError: VirtualMachine \"t\" is invalid", "lastTransitionTime": since},
        {"type": "Ready", "status": "False", "reason": "ApiError: VirtualMachine \"t\" is invalid", "lastTransitionTime": since},
    ]}))
}

#[test]
fn a_restore_kubevirt_keeps_retrying_shows_its_error_then_fails() {
    let mut w = World::snapshot_source().phase(ClonePhase::RestoreInProgress, None, Some(RESTORE));
    // The pass runs at 00:10:00; the error stands since 00:05:00, half the default timeout.
    w.restore = Some(erring_restore("2026-01-01T00:05:00Z"));
    let (first, second) = w.decide_twice();
    let message = format!(
        "restore {RESTORE} reports an error and is retried by KubeVirt (the clone fails if it makes no progress for 10m): ApiError: VirtualMachine \"t\" is invalid"
    );
    assert_eq!(first.status.phase, ClonePhase::RestoreInProgress);
    assert_eq!(
        condition(&first, "Progressing"),
        ("False".into(), "Pending".into(), message.clone())
    );
    assert_eq!(condition(&first, "Ready").1, "RestoreError");
    assert_eq!(reasons(&first), vec![RestoreError]);
    assert_eq!(reasons(&second), Vec::<EventReason>::new(), "one event");
    assert_eq!(first.recheck, Some(std::time::Duration::from_secs(300)));

    w.restore = Some(erring_restore("2026-01-01T00:00:00Z"));
    let failed = w.decide();
    assert_failed(
        &failed,
        RestoreFailed,
        &format!(
            "restore {RESTORE} made no progress for 10m: ApiError: VirtualMachine \"t\" is invalid"
        ),
    );
    // The next pass releases the temporary objects.
    w.clone.status = Some(failed.status);
    assert_eq!(
        w.decide().action,
        Action::Cleanup {
            restore: Some(RESTORE.into()),
            snapshot: None
        }
    );
}

/// KubeVirt's passing errors (its next retry clears them) show in the message but are no hold.
#[test]
fn a_restore_error_that_just_appeared_is_shown_but_not_yet_a_hold() {
    let mut w = World::snapshot_source().phase(ClonePhase::RestoreInProgress, None, Some(RESTORE));
    // The pass runs at 00:10:00; the error appeared 5 s ago.
    w.restore = Some(erring_restore("2026-01-01T00:09:55Z"));
    let d = w.decide();
    assert_working(
        &d,
        ClonePhase::RestoreInProgress,
        &format!(
            "waiting for restore {RESTORE} to complete (KubeVirt reports, and retries: ApiError: VirtualMachine \"t\" is invalid)"
        ),
    );
    assert_eq!(reasons(&d), Vec::<EventReason>::new());
    assert_eq!(d.recheck, Some(std::time::Duration::from_secs(10)));
}

#[test]
fn a_restore_that_is_working_is_not_stalled() {
    let mut w = World::snapshot_source().phase(ClonePhase::RestoreInProgress, None, Some(RESTORE));
    w.restore = Some(restore(json!({"complete": false, "conditions": [
        {"type": "Progressing", "status": "True", "reason": "Creating new PVCs", "lastTransitionTime": "2025-01-01T00:00:00Z"},
    ]})));
    let d = w.decide();
    assert_working(
        &d,
        ClonePhase::RestoreInProgress,
        &format!("waiting for restore {RESTORE} to complete"),
    );
    assert_eq!(d.recheck, None);
}

#[test]
fn target_run_strategy_is_patched_before_the_users_patches() {
    let mut spec = snapshot_source_spec();
    spec["patches"] = json!([r#"{"op": "add", "path": "/metadata/labels/x", "value": "y"}"#]);
    let mut w = World::snapshot_source();
    w.clone = annotated(
        clone_with(spec),
        &[("vmclone.dev/target-run-strategy", "Always")],
    );
    w.content = Some(good_content("golden"));
    let Action::CreateRestore(r, _) = w.decide().action else {
        panic!()
    };
    let patches = r.spec.patches.unwrap();
    let n = patches.len();
    assert_eq!(
        patches[n - 2],
        r#"{"op":"add","path":"/spec/runStrategy","value":"Always"}"#
    );
    assert!(patches[n - 1].contains("/labels/x"));
}

/// Upstream §7.1 #9.
#[test]
fn a_running_restore_is_awaited_without_events() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), Some(RESTORE));
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.restore = Some(restore(json!({"complete": false})));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert!(d.events.is_empty());
    assert_working(
        &d,
        ClonePhase::RestoreInProgress,
        &format!("waiting for restore {RESTORE} to complete"),
    );
}

/// Upstream treated a failed restore as ready and could report success; we fail.
#[test]
fn a_failed_restore_fails_the_clone() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), Some(RESTORE));
    w.restore = Some(restore(json!({"complete": false, "conditions": [
        {"type": "Failure", "status": "True", "reason": "Operation failed", "message": "target not ready"}]})));
    w.target = Some(target_vm(None));
    let d = w.decide();
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_ne!(d.status.phase, ClonePhase::Succeeded);
    // The unrelated VM is reported first (it is never touched).
    assert_eq!(condition(&d, "Ready").1, "TargetExists");

    w.target = None;
    assert_failed(
        &w.decide(),
        RestoreFailed,
        &format!("restore {RESTORE} failed: target not ready"),
    );
}

/// Upstream §7.1 #17.
#[test]
fn a_snapshot_deleted_before_the_restore_fails_the_clone() {
    let w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), None);
    assert_failed(
        &w.decide(),
        SnapshotDeleted,
        &format!("snapshot {SNAP} does not exist anymore"),
    );
}

/// A snapshot that reports itself not ready again before the restore exists (KubeVirt rewrote
/// its status) is waited for, even though its content is still there: KubeVirt restores only a
/// ready snapshot, and the controller reads the content only then (the read plan's property
/// test found the decision using a content the controller would not have read).
#[test]
fn a_snapshot_no_longer_ready_before_the_restore_is_waited_for() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), None);
    w.temp_snapshot = Some(snapshot(
        SNAP,
        json!({"readyToUse": false, "phase": "Unknown"}),
    ));
    w.content = Some(good_content(SNAP));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert_working(
        &d,
        ClonePhase::RestoreInProgress,
        &format!("waiting for snapshot {SNAP} to be ready"),
    );

    // Ready again: the restore is created from the content.
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    let d = w.decide();
    assert!(
        matches!(d.action, Action::CreateRestore(..)),
        "{:?}",
        d.action
    );
}

/// The requeue rule: a clone that is done is left alone; one still working is looked at again
/// after its recheck, at most after the resync interval.
#[test]
fn a_done_clone_waits_for_a_change_and_a_working_one_is_looked_at_again() {
    use clone_core::decide::RESYNC;
    use std::time::Duration;
    let decision = |phase, restore: Option<&str>, recheck| Decision {
        action: Action::Nothing,
        status: VirtualMachineCloneStatus {
            phase,
            restore_name: restore.map(str::to_owned),
            ..Default::default()
        },
        events: vec![],
        recheck,
    };
    assert_eq!(
        decision(ClonePhase::Succeeded, None, None).requeue_after(),
        None
    );
    assert_eq!(
        decision(ClonePhase::Failed, None, None).requeue_after(),
        None
    );
    assert_eq!(
        decision(ClonePhase::Succeeded, Some(RESTORE), None).requeue_after(),
        Some(RESYNC)
    );
    let soon = Duration::from_secs(5);
    assert_eq!(
        decision(ClonePhase::RestoreInProgress, None, Some(soon)).requeue_after(),
        Some(soon)
    );
    assert_eq!(
        decision(ClonePhase::RestoreInProgress, None, Some(RESYNC * 2)).requeue_after(),
        Some(RESYNC)
    );
}

/// Once the temporary snapshot exists the clone follows the snapshot, not the source: KubeVirt
/// releases the source's protection finalizer the moment the snapshot is done, so the VM may be
/// gone in the very pass that sees the snapshot ready (issue: source deleted mid-snapshot).
#[test]
fn a_source_deleted_while_the_snapshot_is_in_progress_follows_the_snapshot() {
    let mut w = World::vm_source().phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
    w.source_vm = None;
    w.temp_snapshot = Some(snapshot(
        SNAP,
        json!({"readyToUse": false, "phase": "InProgress"}),
    ));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert!(d.events.is_empty(), "{:?}", d.events);
    assert_working(
        &d,
        ClonePhase::SnapshotInProgress,
        &format!("waiting for snapshot {SNAP} to be ready"),
    );

    // Ready in the same pass the source vanished: the restore is created.
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.content = Some(good_content(SNAP));
    let d = w.decide();
    assert!(
        matches!(d.action, Action::CreateRestore(..)),
        "{:?}",
        d.action
    );
    assert_eq!(d.status.phase, ClonePhase::RestoreInProgress);

    // Failed: the clone fails with the snapshot's reason, not the source's absence.
    w.content = None;
    w.temp_snapshot = Some(snapshot(
        SNAP,
        json!({"phase": "Failed", "readyToUse": false, "conditions": [
        {"type": "Failure", "status": "True", "reason": "snapshot deadline exceeded"}]}),
    ));
    assert_failed(
        &w.decide(),
        SnapshotFailed,
        &format!("snapshot {SNAP} failed: snapshot deadline exceeded"),
    );
}

#[test]
fn a_source_deleted_after_the_snapshot_is_ready_does_not_stop_the_clone() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), None);
    w.source_vm = None;
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.content = Some(good_content(SNAP));
    assert!(matches!(w.decide().action, Action::CreateRestore(..)));
}

// ---------------------------------------------------------------------------------------------
// Target VM, success and cleanup
// ---------------------------------------------------------------------------------------------

/// Upstream §7.1 #10 and #13.
#[test]
fn a_complete_restore_waits_for_the_target_vm() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), Some(RESTORE));
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.restore = Some(complete_restore());
    let (first, second) = w.decide_twice();
    assert_eq!(reasons(&first), vec![RestoreReady]);
    assert_working(
        &first,
        ClonePhase::CreatingTargetVM,
        &format!("waiting for restore {RESTORE} to create target VM vm-clone-target"),
    );
    assert!(second.events.is_empty());
}

/// Upstream §7.1 #14 and #15.
#[test]
fn the_target_vm_means_success_and_cleanup_waits_for_bound_pvcs() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), Some(RESTORE));
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.restore = Some(complete_restore());
    w.target = Some(our_target());
    w.claims.insert("restore-root".into(), "Pending".into());
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.status.phase, ClonePhase::Succeeded);
    assert_eq!(d.status.creation_time, Some(time("2026-01-01T00:05:00Z")));
    assert_eq!(reasons(&d), vec![RestoreReady, TargetVMCreated]);
    assert_eq!(
        d.events[1].message,
        "created target VM vm-clone-target for clone testclone"
    );
    let (status, reason, message) = condition(&d, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Succeeded"));
    assert!(
        message.contains("waiting for PVCs restore-root to be bound"),
        "{message}"
    );
    assert_eq!(condition(&d, "Progressing").0, "False");
    assert_eq!(d.status.snapshot_name.as_deref(), Some(SNAP));
    assert_eq!(d.status.restore_name.as_deref(), Some(RESTORE));
}

/// Upstream §7.1 #16.
#[test]
fn bound_pvcs_clean_up_the_temporary_objects() {
    let mut w = World::vm_source().phase(ClonePhase::Succeeded, Some(SNAP), Some(RESTORE));
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.restore = Some(complete_restore());
    w.target = Some(our_target());
    w.claims.insert("restore-root".into(), "Bound".into());
    let (first, second) = w.decide_twice();
    assert_eq!(
        first.action,
        Action::Cleanup {
            restore: Some(RESTORE.into()),
            snapshot: Some(SNAP.into())
        }
    );
    assert_eq!(reasons(&first), vec![PVCBound]);
    assert_eq!(
        first.events[0].message,
        "all PVC for clone testclone are bound"
    );
    assert_eq!(
        (
            first.status.snapshot_name.clone(),
            first.status.restore_name.clone()
        ),
        (None, None)
    );
    assert_eq!(
        condition(&first, "Ready"),
        (
            "True".into(),
            "Succeeded".into(),
            "target VM ns/vm-clone-target created".into()
        )
    );
    // Stable afterwards (the cache may still show the deleted objects for a moment).
    assert!(second.events.is_empty());
    assert_eq!(second.action, Action::Nothing);
    assert!(!status_changed(&first.status, &second.status));
}

#[test]
fn everything_ready_at_once_completes_in_one_pass() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), Some(RESTORE));
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.restore = Some(restore(json!({"complete": true})));
    w.target = Some(our_target());
    let d = w.decide();
    assert_eq!(reasons(&d), vec![RestoreReady, TargetVMCreated, PVCBound]);
    assert_eq!(
        d.action,
        Action::Cleanup {
            restore: Some(RESTORE.into()),
            snapshot: Some(SNAP.into())
        }
    );
}

#[test]
fn a_source_snapshot_is_never_deleted() {
    let mut w = World::snapshot_source().phase(ClonePhase::Succeeded, None, Some(RESTORE));
    w.restore = Some(complete_restore());
    w.target = Some(our_target());
    w.claims.insert("restore-root".into(), "Bound".into());
    assert_eq!(
        w.decide().action,
        Action::Cleanup {
            restore: Some(RESTORE.into()),
            snapshot: None
        }
    );
}

#[test]
fn a_restore_gone_after_creating_the_target_still_succeeds() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), Some(RESTORE));
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.target = Some(our_target());
    let d = w.decide();
    assert_eq!(d.status.phase, ClonePhase::Succeeded);
    assert_eq!(
        d.action,
        Action::Cleanup {
            restore: None,
            snapshot: Some(SNAP.into())
        }
    );
}

/// Upstream §7.1 #21.
#[test]
fn deleting_the_target_after_success_deletes_the_clone() {
    let w = World::vm_source().phase(ClonePhase::Succeeded, None, None);
    assert_eq!(w.decide().action, Action::DeleteClone);
}

#[test]
fn terminal_phases_are_stable() {
    let mut w = World::vm_source();
    w.target = Some(target_vm(None));
    let failed = w.decide();
    w.clone.status = Some(failed.status.clone());
    // Whatever changes in the world, a failed clone stays as it is.
    w.target = None;
    let again = w.decide();
    assert_eq!(again.action, Action::Nothing);
    assert!(again.events.is_empty());
    assert_eq!(again.status, failed.status);

    let mut w = World::vm_source().phase(ClonePhase::Succeeded, None, None);
    w.target = Some(our_target());
    let (first, second) = w.decide_twice();
    assert_eq!(first.action, Action::Nothing);
    assert!(second.events.is_empty() && first.events.is_empty());
    assert!(!status_changed(&first.status, &second.status));
}

/// KubeVirt retries a restore whose patches do not apply, forever; the clone fails first, naming
/// the user's patch (found by the fuzz tests: a `remove` of a label the VM does not have).
#[test]
fn a_user_patch_that_cannot_apply_fails_the_clone_instead_of_hanging() {
    let mut spec = vm_spec();
    spec["patches"] = json!([
        r#"{"op":"add","path":"/metadata/labels/fine","value":"yes"}"#,
        r#"{"op":"remove","path":"/metadata/labels/no-such-label"}"#,
    ]);
    let mut w = World {
        clone: clone_with(spec),
        ..World::vm_source()
    }
    .phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.content = Some(good_content(SNAP));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    let (_, reason, message) = condition(&d, "Ready");
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.starts_with(&format!(
            "patch 1 does not apply to the VM in snapshot {SNAP}: "
        )) && message.ends_with(r#"({"op":"remove","path":"/metadata/labels/no-such-label"})"#),
        "{message}"
    );
    assert_eq!(reasons(&d), vec![SnapshotReady, InvalidSpec]);

    // The same patch over a label the VM has goes through.
    let mut spec = vm_spec();
    spec["patches"] = json!([r#"{"op":"remove","path":"/metadata/labels/app"}"#]);
    w.clone = World {
        clone: clone_with(spec),
        ..World::vm_source()
    }
    .phase(ClonePhase::SnapshotInProgress, Some(SNAP), None)
    .clone;
    assert!(matches!(w.decide().action, Action::CreateRestore(..)));
}

/// Upstream keeps a failed clone's temporary objects until the clone is deleted; they hold
/// storage, so the pass after the failure deletes them (the outcome stays as it was).
#[test]
fn a_failed_clone_releases_its_temporary_objects_in_the_next_pass() {
    let mut w = World::vm_source().phase(ClonePhase::RestoreInProgress, Some(SNAP), Some(RESTORE));
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.restore = Some(restore(json!({"complete": false, "conditions": [
        {"type": "Failure", "status": "True", "reason": "Operation failed", "message": "target not ready"}]})));
    let (failed, next) = w.decide_twice();
    // The failure is written first, with the names still recorded.
    assert_eq!(failed.action, Action::Nothing);
    assert_eq!(failed.status.phase, ClonePhase::Failed);
    assert_eq!(failed.status.restore_name.as_deref(), Some(RESTORE));
    assert_eq!(
        next.action,
        Action::Cleanup {
            restore: Some(RESTORE.into()),
            snapshot: Some(SNAP.into()),
        }
    );
    assert!(next.events.is_empty());
    assert_eq!(next.status.restore_name, None);
    assert_eq!(next.status.snapshot_name, None);
    assert_eq!(next.status.conditions, failed.status.conditions);
    assert_eq!(next.status.phase, ClonePhase::Failed);
    // Then nothing more.
    w.clone.status = Some(next.status.clone());
    let last = w.decide();
    assert_eq!(last.action, Action::Nothing);
    assert_eq!(last.status, next.status);
}

#[test]
fn a_failed_clone_never_deletes_a_source_snapshot_or_foreign_names() {
    let w = World::snapshot_source().phase(ClonePhase::Failed, Some("golden"), None);
    assert_eq!(w.decide().action, Action::Nothing);
    // Names that are not this clone's temporary objects are cleared, never deleted.
    let w = World::vm_source().phase(ClonePhase::Failed, Some("someone-else"), Some("other"));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(
        (d.status.snapshot_name, d.status.restore_name),
        (None, None)
    );
}

#[test]
fn a_clone_being_deleted_is_left_to_the_garbage_collector() {
    let mut w = World::vm_source();
    w.clone.metadata.deletion_timestamp = Some(time("2026-01-01T00:09:00Z"));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert!(d.events.is_empty());
}

#[test]
fn conditions_carry_their_transition_time() {
    let w = World::vm_source();
    let d = w.decide();
    for c in &d.status.conditions {
        assert_eq!(c.last_transition_time, Some(time("2026-01-01T00:10:00Z")));
    }
}

/// A snapshot written by a newer KubeVirt, with a field of a shape this controller does not know,
/// holds the clone with a message naming the object and the field; it never reads as "not ready"
/// (a silent wait) or as a failure.
#[test]
fn a_snapshot_that_cannot_be_read_holds_the_clone_and_says_why() {
    let mut w = World::vm_source().phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
    w.temp_snapshot = Some(snapshot(SNAP, json!({"readyToUse": "yes"})));
    let (first, second) = w.decide_twice();
    let message = format!(
        "cannot read VirtualMachineSnapshot ns/{SNAP}: status.readyToUse: invalid type: string \"yes\", expected a boolean (written by a newer KubeVirt? this controller waits until it can read it)"
    );
    assert_eq!(first.status.phase, ClonePhase::SnapshotInProgress);
    assert_eq!(
        condition(&first, "Ready"),
        ("False".into(), "ObjectUnreadable".into(), message)
    );
    assert_eq!(reasons(&first), vec![ObjectUnreadable]);
    assert_eq!(reasons(&second), Vec::<EventReason>::new());
    assert_eq!(first.action, Action::Nothing);
}

/// An unreadable source VM holds a clone only while the clone reads it: once the clone follows its
/// temporary snapshot, the controller no longer reads the source (the read plan), so the decision
/// must not depend on it either.
#[test]
fn an_unreadable_source_holds_the_clone_only_until_it_follows_its_snapshot() {
    let mut w = World::vm_source();
    let mut odd = snapshottable_vm();
    odd.status = Some(serde_json::from_value(json!({"printableStatus": 7})).unwrap());
    w.source_vm = Some(odd);
    let d = w.decide();
    assert_eq!(condition(&d, "Ready").1, "ObjectUnreadable", "{d:?}");

    let mut w = w.phase(ClonePhase::SnapshotInProgress, Some(SNAP), None);
    w.temp_snapshot = Some(snapshot(
        SNAP,
        json!({"readyToUse": false, "phase": "InProgress"}),
    ));
    let d = w.decide();
    assert_working(
        &d,
        ClonePhase::SnapshotInProgress,
        &format!("waiting for snapshot {SNAP} to be ready"),
    );
}

/// A clone annotated for the DataVolume strategy may carry a patch KubeVirt's restore admission
/// refuses; if upstream's controller started it on the snapshot path, it fails before the restore.
#[test]
fn a_datavolume_clone_started_on_snapshots_fails_on_a_patch_kubevirt_refuses() {
    let mut w = World::vm_source();
    w.clone = annotated(
        clone_with(vm_spec()),
        &[("vmclone.dev/strategy", "DataVolume")],
    );
    w = w.phase(ClonePhase::RestoreInProgress, Some(SNAP), None);
    w.clone.spec.patches = Some(vec![
        r#"{"op":"add","path":"/spec/x","value":"a,b"}"#.into(),
    ]);
    w.temp_snapshot = Some(ready_snapshot(SNAP));
    w.content = Some(good_content(SNAP));
    let d = w.decide();
    assert!(
        !matches!(d.action, Action::CreateRestore(..)),
        "{:?}",
        d.action
    );
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_eq!(condition(&d, "Ready").1, "InvalidSpec");
    assert_eq!(
        condition(&d, "Ready").2,
        r#"patch 0 is rejected by KubeVirt's restore admission (values must not contain ',' or ':'): {"op":"add","path":"/spec/x","value":"a,b"}"#
    );
}
