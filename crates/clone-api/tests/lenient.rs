//! One KubeVirt or CDI object of a shape these views do not expect (a newer KubeVirt, a field
//! changing type) must not fail the list it comes in: a watcher whose list fails never syncs, and
//! every clone waits on it. The odd object decodes as unreadable, says why, and loses nothing.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::kubevirt::{
    DataVolume, KubeVirt, Lenient, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};
use kube::core::{ObjectList, WatchEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Decodes `[good, bad]` as one list, as a watcher's initial list does, and checks that both
/// objects come out and that each serialises back to exactly what was read.
fn decode_pair<K>(good: &Value, bad: &Value) -> (K, K)
where
    K: Clone + DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [good, bad]});
    let list: ObjectList<K> = serde_json::from_value(list)
        .unwrap_or_else(|e| panic!("one odd object failed the whole list: {e}"));
    assert_eq!(list.items.len(), 2);
    let mut items = list.items.into_iter();
    let (good_typed, bad_typed) = (items.next().unwrap(), items.next().unwrap());
    for (typed, original) in [(&good_typed, good), (&bad_typed, bad)] {
        let json = serde_json::to_value(typed).expect("serialises");
        assert_eq!(&json, original, "re-serialisation changed the object");
        let again: K = serde_json::from_value(json).expect("re-reads");
        assert_eq!(&again, typed, "a second read differs from the first");
    }
    (good_typed, bad_typed)
}

/// Asserts `value` was read (`None`) or names `path` in its reason (`Some`).
#[track_caller]
fn assert_unreadable(value: Option<&impl Lenient>, path: Option<&str>) {
    let why = value.and_then(|v| v.unreadable());
    match (path, why) {
        (None, None) => {}
        (None, Some(why)) => panic!("a readable value was marked unreadable: {why}"),
        (Some(path), None) => panic!("no reason given; expected one naming {path}"),
        (Some(path), Some(why)) => assert!(
            why.contains(path),
            "the reason {why:?} does not name {path}"
        ),
    }
}

fn snapshot(name: &str, status: Value) -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
        "status": status
    })
}

fn good_snapshot() -> Value {
    snapshot(
        "good",
        json!({
            "sourceUID": "uid-1",
            "virtualMachineSnapshotContentName": "vmsnapshot-content-1",
            "creationTime": "2024-01-01T00:00:00Z",
            "phase": "Succeeded",
            "readyToUse": true,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Operation complete",
                 "lastTransitionTime": "2024-01-01T00:00:00Z"}
            ],
            "indications": ["Online"],
            "futureField": {"a": 1}
        }),
    )
}

#[test]
fn a_snapshot_with_readytouse_yes_does_not_fail_the_list() {
    let bad = snapshot("bad", json!({"phase": "Succeeded", "readyToUse": "yes"}));
    let (good, bad) = decode_pair::<VirtualMachineSnapshot>(&good_snapshot(), &bad);

    let status = good.status.as_ref().expect("good status");
    assert_unreadable(Some(status), None);
    assert!(status.is_ready());
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));

    let status = bad.status.as_ref().expect("bad status");
    assert_unreadable(Some(status), Some("status.readyToUse"));
    // Typed fields are at their defaults; the raw object is kept.
    assert!(!status.is_ready());
    assert_eq!(status.phase, None);
    assert_eq!(status.extra["readyToUse"], "yes");
    assert_eq!(
        bad.spec.source.name, "vm",
        "the spec was readable and stays typed"
    );
    assert_unreadable(Some(&bad.spec), None);
}

#[test]
fn a_snapshot_whose_conditions_are_not_a_list_does_not_fail_the_list() {
    let bad = snapshot(
        "bad",
        json!({"readyToUse": true, "conditions": {"Ready": "True"}}),
    );
    let (_, bad) = decode_pair::<VirtualMachineSnapshot>(&good_snapshot(), &bad);
    assert_unreadable(bad.status.as_ref(), Some("status.conditions"));
    assert!(!bad.status.unwrap().is_ready());
}

#[test]
fn a_snapshot_whose_error_message_is_an_object_does_not_fail_the_list() {
    let bad = snapshot(
        "bad",
        json!({"phase": "Failed", "error": {"message": {"text": "boom"}}}),
    );
    let (_, bad) = decode_pair::<VirtualMachineSnapshot>(&good_snapshot(), &bad);
    assert_unreadable(bad.status.as_ref(), Some("status.error.message"));
    assert_eq!(bad.status.unwrap().failure(), None);
}

#[test]
fn a_snapshot_with_an_odd_spec_does_not_fail_the_list() {
    let mut bad = snapshot("bad", json!({"readyToUse": true}));
    bad["spec"]["deletionPolicy"] = json!({"retain": true});
    let (_, bad) = decode_pair::<VirtualMachineSnapshot>(&good_snapshot(), &bad);
    assert_unreadable(Some(&bad.spec), Some("spec.deletionPolicy"));
    assert_eq!(
        bad.spec.source.name, "",
        "typed fields of an unreadable spec are defaults"
    );
    assert_unreadable(bad.status.as_ref(), None);
    assert!(bad.status.unwrap().is_ready());
}

#[test]
fn a_watch_event_with_an_odd_snapshot_decodes() {
    let bad = snapshot("bad", json!({"readyToUse": "yes"}));
    let event: WatchEvent<VirtualMachineSnapshot> =
        serde_json::from_value(json!({"type": "MODIFIED", "object": bad}))
            .expect("one odd object must not fail a watch event");
    let WatchEvent::Modified(snapshot) = event else {
        panic!("not a MODIFIED event");
    };
    assert_unreadable(snapshot.status.as_ref(), Some("status.readyToUse"));
}

fn restore(name: &str, status: Value) -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineRestore",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "target"},
            "virtualMachineSnapshotName": "snap"
        },
        "status": status
    })
}

fn good_restore() -> Value {
    restore(
        "good",
        json!({
            "complete": true,
            "restoreTime": "2024-01-01T00:00:00Z",
            "restores": [{"volumeName": "root", "persistentVolumeClaim": "restore-root",
                          "volumeSnapshotName": "vmsnapshot-root"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "deletedDataVolumes": ["x"]
        }),
    )
}

#[test]
fn a_restore_with_an_odd_status_does_not_fail_the_list() {
    let bad = restore(
        "bad",
        json!({"complete": true, "restores": [{"volumeName": "root",
               "persistentVolumeClaim": {"name": "restore-root"}}]}),
    );
    let (good, bad) = decode_pair::<VirtualMachineRestore>(&good_restore(), &bad);
    let status = good.status.expect("good status");
    assert_unreadable(Some(&status), None);
    assert!(status.is_complete());
    assert_eq!(status.claims().collect::<Vec<_>>(), vec!["restore-root"]);

    let status = bad.status.expect("bad status");
    assert_unreadable(
        Some(&status),
        Some("status.restores[0].persistentVolumeClaim"),
    );
    assert!(!status.is_complete());
    assert_eq!(status.claims().count(), 0);
}

#[test]
fn a_restore_whose_conditions_are_not_a_list_does_not_fail_the_list() {
    let bad = restore("bad", json!({"complete": "true", "conditions": "Ready"}));
    let (_, bad) = decode_pair::<VirtualMachineRestore>(&good_restore(), &bad);
    // The first field that does not fit is the one named.
    assert_unreadable(bad.status.as_ref(), Some("status.complete"));
}

#[test]
fn a_restore_with_an_odd_spec_does_not_fail_the_list() {
    let mut bad = restore("bad", json!({"complete": true}));
    bad["spec"]["patches"] = json!("[{\"op\": \"replace\"}]");
    let (_, bad) = decode_pair::<VirtualMachineRestore>(&good_restore(), &bad);
    assert_unreadable(Some(&bad.spec), Some("spec.patches"));
    assert_eq!(bad.spec.virtual_machine_snapshot_name, "");
}

fn content(name: &str, spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshotContent",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
        "status": status
    })
}

fn good_content() -> Value {
    content(
        "good",
        json!({
            "virtualMachineSnapshotName": "snap",
            "source": {"virtualMachine": {"metadata": {"name": "vm"}, "spec": {}}},
            "volumeBackups": [{"volumeName": "root", "volumeSnapshotName": "vmsnapshot-root",
                               "persistentVolumeClaim": {"metadata": {"name": "root"}}}]
        }),
        json!({"readyToUse": true, "creationTime": "2024-01-01T00:00:00Z"}),
    )
}

#[test]
fn a_content_with_an_odd_spec_does_not_fail_the_list() {
    let bad = content(
        "bad",
        json!({"virtualMachineSnapshotName": "snap", "source": {},
               "volumeBackups": {"root": "vmsnapshot-root"}}),
        json!({"readyToUse": true}),
    );
    let (good, bad) = decode_pair::<VirtualMachineSnapshotContent>(&good_content(), &bad);
    assert_unreadable(Some(&good.spec), None);
    assert_eq!(good.spec.volume_backups.as_ref().map(Vec::len), Some(1));

    assert_unreadable(Some(&bad.spec), Some("spec.volumeBackups"));
    assert_eq!(bad.spec.virtual_machine_snapshot_name, None);
    assert_eq!(bad.spec.volume_backups, None);
    assert_unreadable(bad.status.as_ref(), None);
}

#[test]
fn a_content_with_an_odd_status_does_not_fail_the_list() {
    let bad = content(
        "bad",
        json!({"source": {}}),
        json!({"readyToUse": "true", "error": {"message": "x"}}),
    );
    let (_, bad) = decode_pair::<VirtualMachineSnapshotContent>(&good_content(), &bad);
    assert_unreadable(bad.status.as_ref(), Some("status.readyToUse"));
    assert_eq!(bad.status.unwrap().error, None);
}

fn vm(name: &str, interfaces: Value, status: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {
                "domain": {"devices": {"interfaces": interfaces}},
                "volumes": [{"name": "root", "dataVolume": {"name": "root-dv"}}]
            }}
        },
        "status": status
    })
}

fn good_vm() -> Value {
    vm(
        "good",
        json!([{"name": "default", "masquerade": {}}]),
        json!({"printableStatus": "Stopped",
               "volumeSnapshotStatuses": [{"name": "root", "enabled": true}]}),
    )
}

#[test]
fn a_vm_with_an_odd_spec_does_not_fail_the_list() {
    let bad = vm(
        "bad",
        json!({"default": {"masquerade": {}}}),
        json!({"printableStatus": "Stopped"}),
    );
    let (good, bad) = decode_pair::<VirtualMachine>(&good_vm(), &bad);
    assert_unreadable(Some(&good.spec), None);
    assert_eq!(good.spec.interfaces()[0].name, "default");
    assert_eq!(good.spec.volumes().len(), 1);

    assert_unreadable(
        Some(&bad.spec),
        Some("spec.template.spec.domain.devices.interfaces"),
    );
    assert_eq!(bad.spec.run_strategy, None);
    assert!(bad.spec.volumes().is_empty());
    assert_unreadable(bad.status.as_ref(), None);
    assert_eq!(
        bad.status.unwrap().printable_status.as_deref(),
        Some("Stopped")
    );
}

#[test]
fn a_vm_with_an_odd_status_does_not_fail_the_list() {
    let bad = vm(
        "bad",
        json!([{"name": "default"}]),
        json!({"printableStatus": "Stopped",
               "volumeSnapshotStatuses": [{"name": "root", "enabled": "true"}]}),
    );
    let (_, bad) = decode_pair::<VirtualMachine>(&good_vm(), &bad);
    assert_unreadable(
        bad.status.as_ref(),
        Some("status.volumeSnapshotStatuses[0].enabled"),
    );
    assert_eq!(
        bad.status.as_ref().and_then(|s| s.unreadable()),
        Some(
            r#"status.volumeSnapshotStatuses[0].enabled: invalid type: string "true", expected a boolean"#
        ),
    );
    assert_eq!(bad.status.unwrap().printable_status, None);
    assert_unreadable(Some(&bad.spec), None);
}

fn data_volume(name: &str, spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
        "status": status
    })
}

#[test]
fn a_data_volume_with_an_odd_spec_or_status_does_not_fail_the_list() {
    let good = data_volume(
        "good",
        json!({"source": {"pvc": {"namespace": "default", "name": "src"}}, "storage": {}}),
        json!({"phase": "Succeeded", "progress": "100.0%",
               "conditions": [{"type": "Ready", "status": "True"}]}),
    );
    let bad = data_volume(
        "bad",
        json!({"source": {"pvc": {"namespace": "default", "name": 7}}}),
        json!({"phase": {"name": "Succeeded"}}),
    );
    let (good, bad) = decode_pair::<DataVolume>(&good, &bad);
    assert_unreadable(Some(&good.spec), None);
    assert_unreadable(good.status.as_ref(), None);
    assert_eq!(good.status.unwrap().phase.as_deref(), Some("Succeeded"));

    assert_unreadable(Some(&bad.spec), Some("spec.source.pvc.name"));
    assert_unreadable(bad.status.as_ref(), Some("status.phase"));
    assert_eq!(bad.status.unwrap().phase, None);
}

#[test]
fn a_kubevirt_cr_with_odd_feature_gates_does_not_fail_the_list() {
    let kubevirt = |name: &str, gates: Value| {
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "KubeVirt",
            "metadata": {"name": name, "namespace": "kubevirt"},
            "spec": {"configuration": {"developerConfiguration": {"featureGates": gates}}}
        })
    };
    let (good, bad) = decode_pair::<KubeVirt>(
        &kubevirt("good", json!(["Snapshot"])),
        &kubevirt("bad", json!("Snapshot")),
    );
    assert!(good.spec.enables("Snapshot"));
    assert_unreadable(
        Some(&bad.spec),
        Some("spec.configuration.developerConfiguration.featureGates"),
    );
    assert!(!bad.spec.enables("Snapshot"));
}

#[test]
fn a_kubevirt_cr_with_odd_flags_or_status_does_not_fail_the_list() {
    let kubevirt = |name: &str, flags: Value, status: Value| {
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "KubeVirt",
            "metadata": {"name": name, "namespace": "kubevirt"},
            "spec": {"customizeComponents": {"flags": {"controller": flags}}},
            "status": status,
        })
    };
    let (good, bad) = decode_pair::<KubeVirt>(
        &kubevirt(
            "good",
            json!({"clone-controller-threads": "0"}),
            json!({"observedKubeVirtVersion": "v1.7.0", "phase": "Deployed"}),
        ),
        &kubevirt(
            "bad",
            json!({"clone-controller-threads": 0}),
            json!({"observedKubeVirtVersion": ["v1.7.0"]}),
        ),
    );
    assert_eq!(
        good.spec.controller_flag("clone-controller-threads"),
        Some("0")
    );
    assert_eq!(good.observed_version(), Some("v1.7.0"));
    assert_unreadable(
        Some(&bad.spec),
        Some("spec.customizeComponents.flags.controller.clone-controller-threads"),
    );
    assert_eq!(bad.spec.controller_flag("clone-controller-threads"), None);
    assert_unreadable(bad.status.as_ref(), Some("status.observedKubeVirtVersion"));
    assert_eq!(bad.observed_version(), None);
}

/// A status that is not even an object (no API server with KubeVirt's CRDs would store one)
/// still decodes: unreadable, empty, and written back as `{}`.
#[test]
fn a_status_that_is_not_an_object_decodes_as_unreadable() {
    let list = json!({"apiVersion": "v1", "kind": "List",
                      "items": [good_snapshot(), snapshot("bad", json!("Ready"))]});
    let list: ObjectList<VirtualMachineSnapshot> =
        serde_json::from_value(list).expect("one odd object must not fail the list");
    let status = list.items[1].status.as_ref().expect("a status");
    assert_unreadable(Some(status), Some("status"));
    assert!(status.extra.is_empty());
}

/// A readable object is written back exactly as before, key order included, so manifests
/// compared byte for byte elsewhere do not change.
#[test]
fn a_readable_object_serialises_byte_for_byte_as_read() {
    let text = r#"{"apiVersion":"snapshot.kubevirt.io/v1beta1","kind":"VirtualMachineSnapshot","metadata":{"name":"s","namespace":"default"},"spec":{"source":{"apiGroup":"kubevirt.io","kind":"VirtualMachine","name":"vm"},"deletionPolicy":"Retain","x":1},"status":{"sourceUID":"u","phase":"Succeeded","readyToUse":true,"conditions":[{"type":"Ready","status":"True"}],"y":2}}"#;
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{text},{{"apiVersion":"snapshot.kubevirt.io/v1beta1","kind":"VirtualMachineSnapshot","metadata":{{"name":"bad"}},"spec":{{"source":{{"name":"vm"}}}},"status":{{"readyToUse":"yes"}}}}]}}"#
    );
    let list: ObjectList<VirtualMachineSnapshot> =
        serde_json::from_str(&list).expect("one odd object must not fail the list");
    assert_eq!(serde_json::to_string(&list.items[0]).unwrap(), text);
    assert_eq!(
        serde_json::to_string(&list.items[1].status).unwrap(),
        r#"{"readyToUse":"yes"}"#
    );
}
