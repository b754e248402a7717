//! The snapshot and restore contract a clone relies on (research §5): a snapshot becomes ready
//! with a content holding the VM and its volume backups; a restore creates a new, halted VM with
//! renamed volumes, the restore's patches and the `lastRestoreUID` annotation; a different VM in
//! the way is upstream's non-terminal error; the API server refuses what KubeVirt's restore
//! admission refuses, with KubeVirt's messages.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;
use kube::api::PostParams;
use kubevirt_sim::SimConfig;
use serde_json::{Value, json};

/// A VM `name` with a DataVolume template (`root`, snapshot-capable), a PVC (`data`,
/// snapshot-capable), a PVC without snapshot support (`scratch`) and a containerDisk; waits
/// until the sim reports its volume snapshot support.
async fn source_vm(world: &World, name: &str) -> Value {
    world
        .create(
            &world.pvcs(),
            pvc(&format!("{name}-data"), "sim-snapshot", "1Gi"),
        )
        .await;
    world
        .create(
            &world.pvcs(),
            pvc(&format!("{name}-scratch"), "sim-nosnapshot", "1Gi"),
        )
        .await;
    let template = json!({
        "metadata": {"name": format!("{name}-root")},
        "spec": {
            "source": {"blank": {}},
            "storage": {"storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "2Gi"}}},
        },
    });
    let volumes = vec![
        json!({"name": "root", "dataVolume": {"name": format!("{name}-root")}}),
        json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("{name}-data")}}),
        json!({"name": "scratch", "persistentVolumeClaim": {"claimName": format!("{name}-scratch")}}),
        json!({"name": "cd", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}}),
    ];
    world
        .create(&world.vms(), vm(name, "Halted", volumes, vec![template]))
        .await;
    world
        .wait(
            &world.vms(),
            name,
            "volume snapshot statuses of every volume",
            |vm| {
                let statuses = vm["status"]["volumeSnapshotStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let enabled = |n: &str| {
                    statuses
                        .iter()
                        .any(|s| s["name"] == n && s["enabled"] == true)
                };
                statuses.len() == 4 && enabled("root") && enabled("data")
            },
        )
        .await
}

#[tokio::test]
async fn a_vm_snapshot_becomes_ready_with_a_content_holding_the_vm_and_its_volume_backups() {
    let world = World::new("sim-snap", SimConfig::default()).await;
    let vm = source_vm(&world, "vm").await;
    let statuses = vm["status"]["volumeSnapshotStatuses"]
        .as_array()
        .unwrap()
        .clone();
    let status_of = |n: &str| statuses.iter().find(|s| s["name"] == n).unwrap().clone();
    assert_eq!(
        status_of("scratch")["reason"],
        "No VolumeSnapshotClass: Volume snapshots are not configured for this StorageClass [sim-nosnapshot] [scratch]"
    );
    assert_eq!(status_of("cd")["enabled"], false);
    assert_eq!(
        status_of("cd")["reason"],
        "Snapshot is not supported for this volumeSource type [cd]"
    );
    let dv = world
        .wait(
            &world.dvs(),
            "vm-root",
            "the template's DataVolume succeeded",
            |dv| phase(dv) == "Succeeded",
        )
        .await;
    assert_eq!(dv["metadata"]["ownerReferences"][0]["name"], "vm");
    assert_eq!(
        dv["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachine"
    );
    // Provisioning while the DataVolume fills, then Stopped (halted VM).
    world
        .wait(
            &world.vms(),
            "vm",
            "the VM to be Stopped once its DataVolume is done",
            |vm| vm["status"]["printableStatus"] == "Stopped",
        )
        .await;

    let created = world
        .create(&world.snapshots(), snapshot("snap", "vm"))
        .await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
    let snap = world
        .wait(&world.snapshots(), "snap", "readyToUse", |s| {
            s["status"]["readyToUse"] == true
        })
        .await;
    assert_eq!(phase(&snap), "Succeeded");
    assert_eq!(snap["status"]["sourceUID"], vm["metadata"]["uid"]);
    let content_name = format!("vmsnapshot-content-{uid}");
    assert_eq!(
        snap["status"]["virtualMachineSnapshotContentName"],
        content_name
    );
    assert!(snap["status"]["creationTime"].is_string(), "{snap:#}");
    assert!(condition_is(&snap, "Ready", "True"), "{snap:#}");
    assert_eq!(
        condition(&snap, "Progressing").unwrap()["reason"],
        "Operation complete"
    );
    assert_eq!(
        snap["status"]["snapshotVolumes"]["excludedVolumes"],
        json!(["scratch", "cd"])
    );

    let content = world
        .wait(&world.contents(), &content_name, "readyToUse", |c| {
            c["status"]["readyToUse"] == true
        })
        .await;
    assert_eq!(content["spec"]["virtualMachineSnapshotName"], "snap");
    assert_eq!(
        content["metadata"]["ownerReferences"][0]["uid"],
        uid.as_str()
    );
    let source_vm = &content["spec"]["source"]["virtualMachine"];
    assert_eq!(source_vm["metadata"]["name"], "vm");
    assert_eq!(source_vm["metadata"]["uid"], vm["metadata"]["uid"]);
    assert_eq!(source_vm["metadata"]["labels"]["app"], "demo");
    assert!(source_vm["metadata"].get("managedFields").is_none());
    assert!(source_vm["metadata"].get("resourceVersion").is_none());
    assert_eq!(source_vm["spec"]["template"], vm["spec"]["template"]);
    let backups = content["spec"]["volumeBackups"].as_array().unwrap();
    let names: Vec<&str> = backups
        .iter()
        .map(|b| b["volumeName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["root", "data"]);
    assert_eq!(
        backups[1]["persistentVolumeClaim"]["metadata"]["name"],
        "vm-data"
    );
    assert_eq!(
        backups[1]["persistentVolumeClaim"]["metadata"]["labels"]["disk"],
        "vm-data"
    );
    assert_eq!(
        backups[1]["persistentVolumeClaim"]["spec"]["storageClassName"],
        "sim-snapshot"
    );
    assert_eq!(
        backups[0]["volumeSnapshotName"],
        format!("vmsnapshot-{uid}-volume-root")
    );

    // The snapshot lock is released once the snapshot is done.
    world
        .wait(&world.vms(), "vm", "the snapshot lock released", |vm| {
            vm["status"].get("snapshotInProgress").is_none()
                && !vm["metadata"]["finalizers"].as_array().is_some_and(|f| {
                    f.iter()
                        .any(|f| f == "snapshot.kubevirt.io/snapshot-source-protection")
                })
        })
        .await;
}

/// A ready snapshot `snap` of the VM `vm` of `source_vm`.
async fn ready_snapshot(world: &World) -> Value {
    source_vm(world, "vm").await;
    world
        .create(&world.snapshots(), snapshot("snap", "vm"))
        .await;
    world
        .wait(&world.snapshots(), "snap", "readyToUse", |s| {
            s["status"]["readyToUse"] == true
        })
        .await
}

#[tokio::test]
async fn a_restore_to_a_new_vm_renames_volumes_applies_patches_and_halts_it() {
    let world = World::new("sim-restore", SimConfig::default()).await;
    ready_snapshot(&world).await;
    let mac = r#"{"op": "replace", "path": "/spec/template/spec/domain/devices/interfaces/0/macAddress", "value": "02-00-00-00-00-02"}"#;
    let remove_label = r#"{"op": "remove", "path": "/metadata/labels/remove-me"}"#;
    let random = world
        .create(
            &world.restores(),
            restore("to-random", "snap", "random", None, &[mac, remove_label]),
        )
        .await;
    world
        .create(
            &world.restores(),
            restore(
                "to-prefixed",
                "snap",
                "prefixed",
                Some("PrefixTargetName"),
                &[mac, remove_label],
            ),
        )
        .await;

    let uid = random["metadata"]["uid"].as_str().unwrap();
    for (restore_name, target, prefix) in [
        ("to-random", "random", format!("restore-{uid}")),
        ("to-prefixed", "prefixed", "prefixed".to_owned()),
    ] {
        let done = world
            .wait(&world.restores(), restore_name, "complete", |r| {
                r["status"]["complete"] == true
            })
            .await;
        assert!(condition_is(&done, "Ready", "True"), "{done:#}");
        assert!(condition(&done, "Failure").is_none(), "{done:#}");
        assert!(done["status"]["restoreTime"].is_string());
        let restores = done["status"]["restores"].as_array().unwrap();
        let claims: Vec<&str> = restores
            .iter()
            .map(|r| r["persistentVolumeClaim"].as_str().unwrap())
            .collect();
        assert_eq!(claims, [format!("{prefix}-root"), format!("{prefix}-data")]);
        assert_eq!(restores[0]["dataVolumeName"], format!("{prefix}-root"));

        let vm = world.vms().get(target).await.unwrap();
        let vm = serde_json::to_value(vm).unwrap();
        let restore_uid = done["metadata"]["uid"].as_str().unwrap();
        assert_eq!(
            vm["metadata"]["annotations"]["restore.kubevirt.io/lastRestoreUID"],
            format!("{restore_name}-{restore_uid}")
        );
        assert_eq!(vm["metadata"]["annotations"]["note"], "kept");
        assert_eq!(vm["metadata"]["labels"]["app"], "demo");
        assert!(
            vm["metadata"]["labels"].get("remove-me").is_none(),
            "{vm:#}"
        );
        assert!(vm["metadata"].get("ownerReferences").is_none(), "{vm:#}");
        assert_eq!(vm["spec"]["runStrategy"], "Halted");
        let spec = &vm["spec"]["template"]["spec"];
        assert_eq!(
            spec["domain"]["devices"]["interfaces"][0]["macAddress"],
            "02-00-00-00-00-02"
        );
        assert_eq!(
            spec["volumes"][0]["dataVolume"]["name"],
            format!("{prefix}-root")
        );
        assert_eq!(
            spec["volumes"][1]["persistentVolumeClaim"]["claimName"],
            format!("{prefix}-data")
        );
        assert_eq!(
            spec["volumes"][2]["persistentVolumeClaim"]["claimName"],
            "vm-scratch"
        );
        assert_eq!(
            spec["volumes"][3]["containerDisk"]["image"],
            "quay.io/containerdisks/fedora:latest"
        );
        assert_eq!(
            vm["spec"]["dataVolumeTemplates"][0]["metadata"]["name"],
            format!("{prefix}-root")
        );

        let pvc = world
            .wait(&world.pvcs(), &format!("{prefix}-data"), "bound", |p| {
                phase(p) == "Bound"
            })
            .await;
        assert_eq!(
            pvc["metadata"]["annotations"]["restore.kubevirt.io/name"],
            restore_name
        );
        assert_eq!(
            pvc["metadata"]["annotations"]["restore.kubevirt.io/lastRestoreUID"],
            format!("{restore_name}-{restore_uid}")
        );
        assert_eq!(
            pvc["metadata"]["labels"]["restore.kubevirt.io/source-vm-name"],
            "vm"
        );
        assert_eq!(
            pvc["metadata"]["labels"]["restore.kubevirt.io/source-vm-namespace"],
            world.ns.as_str()
        );
        assert_eq!(pvc["metadata"]["labels"]["disk"], "vm-data");
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert!(pvc["spec"].get("dataSource").is_none());
        // The restored DataVolume adopts its pre-populated PVC; the new VM adopts the DataVolume.
        let dv = world
            .wait(
                &world.dvs(),
                &format!("{prefix}-root"),
                "owned by the new VM",
                |dv| {
                    phase(dv) == "Succeeded"
                        && dv["metadata"]["ownerReferences"][0]["name"] == target
                },
            )
            .await;
        assert_eq!(
            dv["metadata"]["annotations"]["cdi.kubevirt.io/storage.prePopulated"],
            "true"
        );
        world
            .wait(&world.vms(), target, "stopped", |vm| {
                vm["status"]["printableStatus"] == "Stopped"
            })
            .await;
    }
}

#[tokio::test]
async fn a_restore_onto_a_different_existing_vm_reports_upstreams_error_and_leaves_it_alone() {
    let world = World::new("sim-exists", SimConfig::default()).await;
    ready_snapshot(&world).await;
    world
        .create(&world.vms(), vm("occupied", "Halted", vec![], vec![]))
        .await;
    let before = serde_json::to_value(world.vms().get("occupied").await.unwrap()).unwrap();
    world
        .create(
            &world.restores(),
            restore("onto-occupied", "snap", "occupied", None, &[]),
        )
        .await;
    let stuck = world
        .wait(&world.restores(), "onto-occupied", "upstream's error", |r| {
            condition(r, "Ready").is_some_and(|c| {
                c["reason"] == "restore source and restore target are different but restore target already exists"
            })
        })
        .await;
    assert!(condition(&stuck, "Failure").is_none(), "{stuck:#}");
    assert_eq!(condition(&stuck, "Progressing").unwrap()["status"], "False");
    assert_ne!(stuck["status"]["complete"], true);
    world
        .wait_event("onto-occupied", "VirtualMachineRestoreError")
        .await;
    let after = serde_json::to_value(world.vms().get("occupied").await.unwrap()).unwrap();
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    assert_eq!(
        after["metadata"]["annotations"],
        before["metadata"]["annotations"]
    );
    let restored = world
        .pvcs()
        .list(&kube::api::ListParams::default().labels("restore.kubevirt.io/source-vm-name=vm"))
        .await
        .unwrap();
    assert!(
        restored.items.is_empty(),
        "no volume was restored for a refused target"
    );
}

/// `(patch, the message KubeVirt's restore admission answers)`.
fn refused_patches() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r#"{"op": "replace", "path": "/spec/template/spec/domain/devices/interfaces/0/macAddress", "value": "02:00:00:00:00:01"}"#,
            r#"patch format is not valid - one ":" expected in a single key-value json patch:  "value": "02:00:00:00:00:01""#,
        ),
        (
            r#"{"op": "replace", "path": "/status/printableStatus", "value": "Running"}"#,
            r#"patching is valid only for elements under /spec/ only:  "path": "/status/printableStatus""#,
        ),
        (
            r#"{"op": "add", "path": "/metadata/name", "value": "x"}"#,
            r#"patching is valid only for elements under /spec/ only:  "path": "/metadata/name""#,
        ),
    ]
}

#[tokio::test]
async fn the_api_server_refuses_restores_that_kubevirts_admission_refuses() {
    let world = World::new("sim-admit", SimConfig::default()).await;
    for (i, (patch, message)) in refused_patches().into_iter().enumerate() {
        // kubectl, as a user would.
        let manifest = restore(&format!("kubectl-{i}"), "snap", "target", None, &[patch]);
        let out = world
            .env
            .kubectl_output(
                &["create", "-n", &world.ns, "-f", "-"],
                Some(&manifest.to_string()),
            )
            .unwrap();
        assert!(!out.success(), "kubectl created {manifest}");
        assert!(
            out.stderr.contains(message),
            "expected {message:?} in {:?}",
            out.stderr
        );

        // The kube client, as the controller does.
        let manifest = restore(&format!("client-{i}"), "snap", "target", None, &[patch]);
        let typed: kube::api::DynamicObject = serde_json::from_value(manifest).unwrap();
        let err = world
            .restores()
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert!(
            status.message.contains(message),
            "expected {message:?} in {:?}",
            status.message
        );
        assert_eq!(status.code, 422, "{status:?}");
    }

    // Target rules.
    let cases = [
        (
            json!({"kind": "VirtualMachine", "name": "t"}),
            "missing apiGroup",
        ),
        (
            json!({"apiGroup": "example.com", "kind": "VirtualMachine", "name": "t"}),
            "invalid apiGroup",
        ),
        (
            json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachineInstance", "name": "t"}),
            "invalid kind",
        ),
    ];
    for (i, (target, message)) in cases.into_iter().enumerate() {
        let mut manifest = restore(&format!("target-{i}"), "snap", "t", None, &[]);
        manifest["spec"]["target"] = target;
        let typed: kube::api::DynamicObject = serde_json::from_value(manifest).unwrap();
        let err = world
            .restores()
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(message),
            "expected {message:?} in {err}"
        );
    }

    // What KubeVirt accepts: a dash MAC, label and annotation paths.
    let accepted = [
        r#"{"op": "replace", "path": "/spec/template/spec/domain/devices/interfaces/0/macAddress", "value": "02-00-00-00-00-01"}"#,
        r#"{"op": "add", "path": "/metadata/labels/team", "value": "blue"}"#,
        r#"{"op": "remove", "path": "/metadata/annotations/note"}"#,
    ];
    world
        .create(
            &world.restores(),
            restore("accepted", "snap", "target", None, &accepted),
        )
        .await;

    // The spec is immutable.
    let err = world
        .restores()
        .patch(
            "accepted",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"virtualMachineSnapshotName": "other"}})),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("spec in immutable after creation"),
        "{err}"
    );

    // The snapshot admission too.
    let mut bad_snapshot = snapshot("bad", "vm");
    bad_snapshot["spec"]["source"]["kind"] = json!("Pod");
    let typed: kube::api::DynamicObject = serde_json::from_value(bad_snapshot).unwrap();
    let err = world
        .snapshots()
        .create(&PostParams::default(), &typed)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid kind"), "{err}");
}
