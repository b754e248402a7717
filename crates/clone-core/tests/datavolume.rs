//! `decide` with the DataVolume strategy (and `Auto`): the target VM built from the source VM, the
//! seed's checks, cross-namespace access, progress and its pace.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use clone_api::kubevirt::{DataVolume, VirtualMachine};
use clone_api::names::EventReason;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use clone_core::decide::{Access, Child, CreateRejection, FeatureGate};
use clone_core::{Action, Decision, Observed, decide};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

const UID: &str = "clone-uid";

fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn clone(annotations: Value) -> VirtualMachineClone {
    serde_json::from_value(json!({
        "apiVersion": "clone.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClone",
        "metadata": {"name": "c", "namespace": "ns", "uid": UID, "annotations": annotations,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "target"},
        },
    }))
    .unwrap()
}

fn datavolume_clone() -> VirtualMachineClone {
    clone(json!({"vmclone.dev/strategy": "DataVolume"}))
}

fn source_vm(namespace: &str, run_strategy: &str, snapshottable: bool) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": namespace, "labels": {"app": "db"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"running": false, "runStrategy": run_strategy,
            "dataVolumeTemplates": [{"metadata": {"name": "root-dv"}, "spec": {"source": {"blank": {}}}}],
            "template": {"spec": {
                "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"}]}},
                "volumes": [
                    {"name": "root", "dataVolume": {"name": "root-dv"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}},
                    {"name": "cloudinit", "cloudInitNoCloud": {"userData": "x"}}
                ]}}},
        "status": {"printableStatus": if run_strategy == "Halted" { "Stopped" } else { "Running" },
                   "volumeSnapshotStatuses": [
                       {"name": "root", "enabled": snapshottable},
                       {"name": "data", "enabled": true},
                       {"name": "cloudinit", "enabled": false}]},
    }))
    .unwrap()
}

fn pvc(name: &str, mode: &str, size: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": mode, "storageClassName": "nosnap",
                 "resources": {"requests": {"storage": size}}},
    }))
    .unwrap()
}

fn claims(mode: &str) -> BTreeMap<String, PersistentVolumeClaim> {
    [
        ("root-dv".to_owned(), pvc("root-dv", mode, "2Gi")),
        ("data-pvc".to_owned(), pvc("data-pvc", "Filesystem", "1Gi")),
    ]
    .into()
}

struct World {
    clone: VirtualMachineClone,
    source_vm: Option<VirtualMachine>,
    target: Option<VirtualMachine>,
    claims: BTreeMap<String, PersistentVolumeClaim>,
    data_volumes: BTreeMap<String, DataVolume>,
    access: Option<Access>,
    rejection: Option<CreateRejection>,
    now: Time,
}

impl World {
    fn new(clone: VirtualMachineClone) -> Self {
        World {
            clone,
            source_vm: Some(source_vm("ns", "Halted", false)),
            target: None,
            claims: claims("Filesystem"),
            data_volumes: BTreeMap::new(),
            access: None,
            rejection: None,
            now: time("2026-01-01T00:10:00Z"),
        }
    }

    fn decide(&self) -> Decision {
        decide(&Observed {
            clone: &self.clone,
            now: self.now.clone(),
            feature_gate: FeatureGate::Disabled,
            source_vm: self.source_vm.as_ref(),
            source_snapshot: None,
            temp_snapshot: None,
            content: None,
            restore: None,
            target: self.target.as_ref(),
            claim_phases: BTreeMap::new(),
            rivals: vec![],
            rejection: self.rejection.clone(),
            restore_stall_timeout: clone_core::decide::DEFAULT_RESTORE_STALL_TIMEOUT,
            source_claims: self.claims.clone(),
            target_full: self.target.as_ref(),
            data_volumes: self.data_volumes.clone(),
            access: self.access,
            source_held_by: None,
        })
    }

    /// The world after the target VM of `first` exists, with DataVolumes in these phases.
    fn created(&mut self, first: &Decision, phases: &[(&str, &str, Option<&str>)]) {
        let Action::CreateTargetVM(vm) = &first.action else {
            panic!("no target created: {:?}", first.action)
        };
        let mut vm = (**vm).clone();
        vm["metadata"]["creationTimestamp"] = json!("2026-01-01T00:09:00Z");
        self.target = Some(serde_json::from_value(vm).unwrap());
        self.clone.status = Some(first.status.clone());
        self.data_volumes = phases
            .iter()
            .map(|(name, phase, progress)| {
                let dv: DataVolume = serde_json::from_value(json!({
                    "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                    "metadata": {"name": name, "namespace": "ns"},
                    "spec": {},
                    "status": {"phase": phase, "progress": progress,
                               "conditions": [{"type": "Running", "status": "False",
                                               "message": "Clone pod failed: no space left"}]},
                }))
                .unwrap();
                ((*name).to_owned(), dv)
            })
            .collect();
    }
}

fn ready(d: &Decision) -> (String, String) {
    let c = d.status.condition("Ready").unwrap();
    (c.reason.clone().unwrap(), c.message.clone().unwrap())
}

fn progressing(d: &Decision) -> String {
    d.status
        .condition("Progressing")
        .unwrap()
        .message
        .clone()
        .unwrap()
}

fn reasons(d: &Decision) -> Vec<EventReason> {
    d.events.iter().map(|e| e.reason).collect()
}

fn target_of(d: &Decision) -> Value {
    match &d.action {
        Action::CreateTargetVM(vm) => (**vm).clone(),
        other => panic!("expected a target VM, got {other:?}"),
    }
}

#[test]
fn the_target_clones_every_claim_with_the_source_claims_shape() {
    let d = World::new(datavolume_clone()).decide();
    assert_eq!(d.status.phase, ClonePhase::CreatingTargetVM);
    assert_eq!(reasons(&d), [EventReason::TargetVMCreated]);
    assert_eq!(
        progressing(&d),
        "DataVolume strategy: cloning 2 volumes: root Pending, data Pending"
    );
    let vm = target_of(&d);
    assert_eq!(vm["metadata"]["name"], "target");
    assert_eq!(vm["metadata"]["namespace"], "ns");
    assert_eq!(
        vm["metadata"]["annotations"]["vmclone.dev/created-by-clone"],
        UID
    );
    assert!(
        vm["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .is_none()
    );
    assert_eq!(vm["metadata"]["labels"]["app"], "db");
    assert_eq!(vm["spec"]["runStrategy"], "Halted");
    assert!(
        vm["spec"].get("running").is_none(),
        "both running and runStrategy"
    );
    let volumes = &vm["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[0],
        json!({"name": "root", "dataVolume": {"name": "clone-clone-uid-root"}})
    );
    assert_eq!(
        volumes[1],
        json!({"name": "data", "dataVolume": {"name": "clone-clone-uid-data"}})
    );
    assert_eq!(volumes[2]["cloudInitNoCloud"]["userData"], "x");
    assert_eq!(
        vm["spec"]["dataVolumeTemplates"],
        json!([
            {"metadata": {"name": "clone-clone-uid-root"}, "spec": {
                "source": {"pvc": {"namespace": "ns", "name": "root-dv"}},
                "pvc": {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem",
                        "storageClassName": "nosnap", "resources": {"requests": {"storage": "2Gi"}}}}},
            {"metadata": {"name": "clone-clone-uid-data"}, "spec": {
                "source": {"pvc": {"namespace": "ns", "name": "data-pvc"}},
                "pvc": {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem",
                        "storageClassName": "nosnap", "resources": {"requests": {"storage": "1Gi"}}}}},
        ])
    );
    let interface = &vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0];
    assert!(
        interface.get("macAddress").is_none(),
        "the source's MAC was kept"
    );
    let firmware = &vm["spec"]["template"]["spec"]["domain"]["firmware"];
    assert!(firmware["uuid"].is_string() && firmware["serial"].is_string());
}

#[test]
fn block_volumes_clone_as_block_and_names_follow_the_policy() {
    let mut w = World::new(datavolume_clone());
    w.claims = claims("Block");
    w.clone.spec.volume_name_policy = Some(clone_api::v1beta1::VolumeNamePolicy::PrefixTargetName);
    let vm = target_of(&w.decide());
    let template = &vm["spec"]["dataVolumeTemplates"][0];
    assert_eq!(template["metadata"]["name"], "target-root");
    assert_eq!(template["spec"]["pvc"]["volumeMode"], "Block");
}

#[test]
fn the_run_strategy_annotation_and_user_patches_come_last() {
    let mut w = World::new(clone(json!({
        "vmclone.dev/strategy": "DataVolume",
        "vmclone.dev/target-run-strategy": "Always",
    })));
    w.clone.spec.patches = Some(vec![
        r#"{"op":"replace","path":"/spec/dataVolumeTemplates/1/spec/pvc/resources/requests/storage","value":"5Gi"}"#.into(),
    ]);
    let vm = target_of(&w.decide());
    assert_eq!(vm["spec"]["runStrategy"], "Always");
    assert_eq!(
        vm["spec"]["dataVolumeTemplates"][1]["spec"]["pvc"]["resources"]["requests"]["storage"],
        "5Gi"
    );
}

#[test]
fn a_running_source_waits_with_its_name_once() {
    let mut w = World::new(datavolume_clone());
    w.source_vm = Some(source_vm("ns", "Always", false));
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.status.phase, ClonePhase::Unset);
    let (reason, message) = ready(&d);
    assert_eq!(reason, "SourceVMRunning");
    assert!(
        message.starts_with("source VM ns/vm is running"),
        "{message}"
    );
    assert_eq!(reasons(&d), [EventReason::SourceVMRunning]);
    w.clone.status = Some(d.status);
    assert!(w.decide().events.is_empty(), "warned twice");
    // Stopped: it proceeds.
    w.source_vm = Some(source_vm("ns", "Halted", false));
    assert!(matches!(w.decide().action, Action::CreateTargetVM(_)));
}

#[test]
fn a_volume_mode_mismatch_and_a_smaller_target_fail_with_the_chapters_messages() {
    let mut w = World::new(datavolume_clone());
    w.clone.spec.patches = Some(vec![
        r#"{"op":"replace","path":"/spec/dataVolumeTemplates/0/spec/pvc/volumeMode","value":"Block"}"#.into(),
    ]);
    let d = w.decide();
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(
        ready(&d),
        (
            "DataVolumeInvalid".to_owned(),
            "source volumeMode (Filesystem) and target volumeMode (Block) do not match (volume root)"
                .to_owned()
        )
    );
    w.clone.spec.patches = Some(vec![
        r#"{"op":"replace","path":"/spec/dataVolumeTemplates/0/spec/pvc/resources/requests/storage","value":"1Gi"}"#.into(),
    ]);
    assert_eq!(
        ready(&w.decide()).1,
        "target resources requests storage size is smaller than the source (volume root)"
    );
    // The same size in another notation is not smaller.
    w.clone.spec.patches = Some(vec![
        r#"{"op":"replace","path":"/spec/dataVolumeTemplates/0/spec/pvc/resources/requests/storage","value":"2048Mi"}"#.into(),
    ]);
    assert!(matches!(w.decide().action, Action::CreateTargetVM(_)));
}

#[test]
fn a_missing_source_claim_holds_the_clone() {
    let mut w = World::new(datavolume_clone());
    w.claims.remove("data-pvc");
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(
        ready(&d),
        (
            "SourceDoesNotExist".to_owned(),
            "source PVC ns/data-pvc of volume data does not exist".to_owned()
        )
    );
}

#[test]
fn a_cross_namespace_clone_asks_for_access_first_and_fails_when_denied() {
    let mut w = World::new(clone(json!({
        "vmclone.dev/strategy": "DataVolume",
        "vmclone.dev/source-namespace": "golden",
    })));
    w.source_vm = Some(source_vm("golden", "Halted", false));
    let d = w.decide();
    let Action::ReviewAccess(review) = &d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(review.user, "system:serviceaccount:ns:default");
    assert_eq!(review.namespace, "golden");
    let checks: Vec<_> = review
        .checks
        .iter()
        .map(|c| (c.verb, c.resource, c.subresource, c.name.as_str()))
        .collect();
    assert_eq!(
        checks,
        [
            ("create", "datavolumes", "source", "root-dv"),
            ("create", "datavolumes", "source", "data-pvc"),
            ("get", "virtualmachines", "", "vm"),
        ]
    );
    w.access = Some(Access::Denied);
    let d = w.decide();
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_eq!(
        ready(&d),
        (
            "Unauthorized".to_owned(),
            "User system:serviceaccount:ns:default has insufficient permissions in clone source namespace golden".to_owned()
        )
    );
    w.access = Some(Access::Allowed);
    let vm = target_of(&w.decide());
    assert_eq!(
        vm["spec"]["dataVolumeTemplates"][0]["spec"]["source"]["pvc"]["namespace"],
        "golden"
    );
}

#[test]
fn the_service_account_volume_is_the_identity_checked() {
    let mut w = World::new(clone(json!({
        "vmclone.dev/strategy": "DataVolume",
        "vmclone.dev/source-namespace": "golden",
    })));
    let mut vm = source_vm("golden", "Halted", false);
    vm.spec
        .template
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .volumes
        .as_mut()
        .unwrap()
        .push(
            serde_json::from_value(
                json!({"name": "sa", "serviceAccount": {"serviceAccountName": "cloner"}}),
            )
            .unwrap(),
        );
    w.source_vm = Some(vm);
    let Action::ReviewAccess(review) = w.decide().action else {
        panic!()
    };
    assert_eq!(review.user, "system:serviceaccount:ns:cloner");
}

#[test]
fn progress_lists_each_volume_and_success_waits_for_every_data_volume() {
    let mut w = World::new(datavolume_clone());
    let first = w.decide();
    w.created(
        &first,
        &[
            ("clone-clone-uid-root", "CloneInProgress", Some("45.5%")),
            ("clone-clone-uid-data", "Succeeded", Some("100.0%")),
        ],
    );
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.status.phase, ClonePhase::CreatingTargetVM);
    assert_eq!(
        progressing(&d),
        "DataVolume strategy: cloning 2 volumes: root 45.5%, data Succeeded"
    );
    assert_eq!(reasons(&d), [EventReason::VolumeCloned]);
    assert_eq!(
        d.events[0].message,
        "volume data of clone c is cloned into DataVolume clone-clone-uid-data"
    );
    w.clone.status = Some(d.status);
    w.now = time("2026-01-01T00:10:30Z");
    w.data_volumes
        .get_mut("clone-clone-uid-root")
        .unwrap()
        .status = Some(serde_json::from_value(json!({"phase": "WaitForFirstConsumer"})).unwrap());
    let done = w.decide();
    assert_eq!(done.status.phase, ClonePhase::Succeeded);
    assert_eq!(
        reasons(&done),
        [EventReason::VolumeCloned],
        "data reported twice"
    );
    assert_eq!(
        done.status.creation_time,
        Some(time("2026-01-01T00:09:00Z"))
    );
    assert_eq!(ready(&done).1, "target VM ns/target created");
}

#[test]
fn a_failed_data_volume_fails_the_clone_with_cdis_message() {
    let mut w = World::new(datavolume_clone());
    let first = w.decide();
    w.created(
        &first,
        &[
            ("clone-clone-uid-root", "Failed", None),
            ("clone-clone-uid-data", "CloneInProgress", Some("10.0%")),
        ],
    );
    let d = w.decide();
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_eq!(
        ready(&d),
        (
            "DataVolumeFailed".to_owned(),
            "DataVolume clone-clone-uid-root of volume root failed: Clone pod failed: no space left"
                .to_owned()
        )
    );
}

#[test]
fn percentages_are_rewritten_at_most_every_five_seconds() {
    let mut w = World::new(datavolume_clone());
    let first = w.decide();
    w.created(
        &first,
        &[
            ("clone-clone-uid-root", "CloneInProgress", Some("10.0%")),
            ("clone-clone-uid-data", "CloneInProgress", Some("20.0%")),
        ],
    );
    let d = w.decide();
    let written = d
        .status
        .condition("Progressing")
        .unwrap()
        .last_probe_time
        .clone();
    assert_eq!(written, Some(w.now.clone()));
    w.clone.status = Some(d.status);
    w.data_volumes
        .get_mut("clone-clone-uid-root")
        .unwrap()
        .status = Some(
        serde_json::from_value(json!({"phase": "CloneInProgress", "progress": "30.0%"})).unwrap(),
    );
    // Two seconds later: the old message stays; a look again in three seconds.
    w.now = time("2026-01-01T00:10:02Z");
    let held = w.decide();
    assert_eq!(
        progressing(&held),
        "DataVolume strategy: cloning 2 volumes: root 10.0%, data 20.0%"
    );
    assert_eq!(held.recheck, Some(std::time::Duration::from_secs(3)));
    // A volume that finishes is reported at once.
    w.data_volumes
        .get_mut("clone-clone-uid-data")
        .unwrap()
        .status =
        Some(serde_json::from_value(json!({"phase": "Succeeded", "progress": "100.0%"})).unwrap());
    assert_eq!(
        progressing(&w.decide()),
        "DataVolume strategy: cloning 2 volumes: root 30.0%, data Succeeded"
    );
    // Six seconds after the write: the new percentage is written.
    w.data_volumes
        .get_mut("clone-clone-uid-data")
        .unwrap()
        .status = Some(
        serde_json::from_value(json!({"phase": "CloneInProgress", "progress": "20.0%"})).unwrap(),
    );
    w.now = time("2026-01-01T00:10:06Z");
    let moved = w.decide();
    assert_eq!(
        progressing(&moved),
        "DataVolume strategy: cloning 2 volumes: root 30.0%, data 20.0%"
    );
    assert_eq!(
        moved
            .status
            .condition("Progressing")
            .unwrap()
            .last_probe_time,
        Some(w.now.clone())
    );
}

#[test]
fn auto_chooses_by_snapshot_support_and_namespace_and_says_so() {
    // A volume without snapshot support: DataVolume.
    let mut w = World::new(clone(json!({"vmclone.dev/strategy": "Auto"})));
    let d = w.decide();
    assert!(matches!(d.action, Action::CreateTargetVM(_)));
    assert!(
        d.events[0].message.ends_with(
            "(vmclone.dev/strategy Auto chose DataVolume: volume root does not support snapshots)"
        ),
        "{}",
        d.events[0].message
    );
    assert!(progressing(&d).starts_with("DataVolume strategy, chosen by Auto: cloning 2 volumes"));
    // Every volume snapshottable: Snapshot, which needs the gate (disabled in this world).
    w.source_vm = Some(source_vm("ns", "Halted", true));
    let d = w.decide();
    assert_eq!(ready(&d).0, "FeatureGateDisabled");
    // A source in another namespace: DataVolume even when snapshottable.
    let mut w = World::new(clone(json!({
        "vmclone.dev/strategy": "Auto",
        "vmclone.dev/source-namespace": "golden",
    })));
    w.source_vm = Some(source_vm("golden", "Halted", true));
    assert!(matches!(w.decide().action, Action::ReviewAccess(_)));
}

#[test]
fn a_refused_target_vm_fails_a_spec_error_and_holds_a_transient_one() {
    let mut w = World::new(datavolume_clone());
    w.rejection = Some(CreateRejection {
        child: Child::TargetVM,
        code: 422,
        reason: "Invalid".into(),
        message: "admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: spec.template.spec.domain.devices.disks[0].Name 'root' not found".into(),
    });
    let d = w.decide();
    assert_eq!(d.action, Action::Nothing);
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_eq!(ready(&d).0, "InvalidSpec");
    w.rejection = Some(CreateRejection {
        child: Child::TargetVM,
        code: 429,
        reason: "TooManyRequests".into(),
        message: "slow down".into(),
    });
    let d = w.decide();
    assert_eq!(d.status.phase, ClonePhase::Unset);
    assert_eq!(ready(&d).0, "TargetVMCreationFailed");
}

#[test]
fn a_vm_this_clone_did_not_create_is_never_followed() {
    let mut w = World::new(datavolume_clone());
    w.target = Some(
        serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "target", "namespace": "ns",
                         "annotations": {"vmclone.dev/created-by-clone": "another-clone"}}, "spec": {}}))
        .unwrap(),
    );
    let d = w.decide();
    assert_eq!(d.status.phase, ClonePhase::Failed);
    assert_eq!(ready(&d).0, "TargetExists");
}
