//! The snapshot and restore contract a clone relies on (research §5), as KubeVirt v1.7.0 keeps
//! it: a snapshot becomes ready with a content holding the VM and its volume backups, in two
//! steps (content and unlock first, `readyToUse` later); snapshots, contents and restores carry
//! upstream's finalizers and go away asynchronously; a restore creates a new, halted VM with
//! renamed volumes, the restore's patches and the `lastRestoreUID` annotation; a different VM in
//! the way is upstream's non-terminal error; the API server refuses what KubeVirt's restore
//! admission refuses — through the sim's admission policy, or through its webhook with virt-api's
//! exact answers and status codes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use futures::StreamExt;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kubevirt_sim::SimConfig;
use kubevirt_sim::webhook::{RestoreWebhook, WebhookConfig};
use serde_json::{Value, json};
use testenv::wait_for;

const SNAPSHOT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshot-protection";
const CONTENT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshotcontent-protection";
const RESTORE_FINALIZER: &str = "snapshot.kubevirt.io/vmrestore-protection";
const SOURCE_FINALIZER: &str = "snapshot.kubevirt.io/snapshot-source-protection";
const DENIED: &str = "admission webhook \"virtualmachinerestore-validator.snapshot.kubevirt.io\" denied the request: ";

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

/// Whether the VM holds no snapshot lock.
fn unlocked(vm: &Value) -> bool {
    vm["status"].get("snapshotInProgress").is_none()
        && !finalizers(vm).iter().any(|f| f == SOURCE_FINALIZER)
}

/// Every version of one object the API server reports from when [`Recording::start`] returns,
/// and `"deleted"` once it is gone (a watch misses no change).
struct Recording {
    versions: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recording {
    async fn start(api: &Api<DynamicObject>, name: &str) -> Recording {
        let versions: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = versions.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher::watcher(api.clone(), config);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let version = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        serde_json::to_value(o).unwrap()
                    }
                    Ok(watcher::Event::Delete(_)) => json!("deleted"),
                    Ok(watcher::Event::InitDone) => json!("listed"),
                    _ => continue,
                };
                sink.lock().unwrap().push(version);
            }
        });
        let recording = Recording { versions, task };
        wait_for("the watch to list", TIMEOUT, || async {
            recording.seen().iter().any(|v| v == "listed").then_some(())
        })
        .await
        .unwrap();
        recording
    }

    fn seen(&self) -> Vec<Value> {
        self.versions.lock().unwrap().clone()
    }

    /// Waits until the object is gone; returns every version seen.
    async fn until_deleted(self) -> Vec<Value> {
        let seen = wait_for("the object to be deleted", TIMEOUT, || async {
            let seen = self.seen();
            if seen.iter().any(|v| v == "deleted") {
                Ok(seen)
            } else {
                Err(seen.last().cloned())
            }
        })
        .await
        .unwrap();
        self.task.abort();
        seen
    }
}

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

    assert_eq!(finalizers(&snap), [SNAPSHOT_FINALIZER]);
    let content = world
        .wait(&world.contents(), &content_name, "readyToUse", |c| {
            c["status"]["readyToUse"] == true
        })
        .await;
    assert_eq!(content["spec"]["virtualMachineSnapshotName"], "snap");
    // As upstream: no owner (the snapshot controller deletes it), a finalizer.
    assert!(
        content["metadata"].get("ownerReferences").is_none(),
        "{content:#}"
    );
    assert_eq!(finalizers(&content), [CONTENT_FINALIZER]);
    let statuses = content["status"]["volumeSnapshotStatus"]
        .as_array()
        .unwrap();
    assert_eq!(statuses.len(), 2, "{content:#}");
    assert!(
        statuses
            .iter()
            .all(|s| s["readyToUse"] == true && s["creationTime"].is_string()),
        "{content:#}"
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
        .wait(&world.vms(), "vm", "the snapshot lock released", unlocked)
        .await;
}

#[tokio::test]
async fn readiness_comes_in_two_steps_content_and_unlock_first() {
    let world = World::new("sim-twostep", SimConfig::default()).await;
    source_vm(&world, "vm").await;
    let mut held = snapshot("snap", "vm");
    held["metadata"]["annotations"] = json!({"sim.vmclone.dev/hold-snapshot-ready": "true"});
    let created = world.create(&world.snapshots(), held).await;
    let content_name = format!(
        "vmsnapshot-content-{}",
        created["metadata"]["uid"].as_str().unwrap()
    );

    // Step one: content cut, snapshot Succeeded, source unlocked — not ready yet.
    world
        .wait(&world.snapshots(), "snap", "Succeeded", |s| {
            phase(s) == "Succeeded"
        })
        .await;
    world
        .wait(&world.vms(), "vm", "the snapshot lock released", unlocked)
        .await;
    let snap = serde_json::to_value(world.snapshots().get("snap").await.unwrap()).unwrap();
    assert_eq!(snap["status"]["readyToUse"], false, "{snap:#}");
    assert!(snap["status"]["creationTime"].is_string(), "{snap:#}");
    assert_eq!(
        snap["status"]["virtualMachineSnapshotContentName"],
        content_name
    );
    assert_eq!(condition(&snap, "Ready").unwrap()["reason"], "Not ready");
    assert_eq!(condition(&snap, "Ready").unwrap()["status"], "False");
    assert_eq!(
        condition(&snap, "Progressing").unwrap()["reason"],
        "Operation complete"
    );
    let content = serde_json::to_value(world.contents().get(&content_name).await.unwrap()).unwrap();
    assert_eq!(content["status"]["readyToUse"], false, "{content:#}");
    assert!(content["status"]["creationTime"].is_string());
    let statuses = content["status"]["volumeSnapshotStatus"]
        .as_array()
        .unwrap();
    assert_eq!(statuses.len(), 2, "{content:#}");
    assert!(statuses.iter().all(|s| s["readyToUse"] == false));

    // Step two, once released: ready.
    world
        .merge(
            &world.snapshots(),
            "snap",
            json!({"metadata": {"annotations": {"sim.vmclone.dev/hold-snapshot-ready": null}}}),
        )
        .await;
    let ready = world
        .wait(&world.snapshots(), "snap", "readyToUse", |s| {
            s["status"]["readyToUse"] == true
        })
        .await;
    assert!(condition_is(&ready, "Ready", "True"), "{ready:#}");
    assert_eq!(
        ready["status"]["creationTime"],
        snap["status"]["creationTime"]
    );
    world
        .wait(&world.contents(), &content_name, "ready", |c| {
            c["status"]["readyToUse"] == true
        })
        .await;
}

#[tokio::test]
async fn a_content_without_volume_backups_is_ready_in_its_first_write() {
    let world = World::new("sim-onestep", SimConfig::default()).await;
    let volumes = vec![
        json!({"name": "cd", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}}),
    ];
    world
        .create(&world.vms(), vm("vm", "Halted", volumes, vec![]))
        .await;
    let created = world
        .create(&world.snapshots(), snapshot("snap", "vm"))
        .await;
    let content_name = format!(
        "vmsnapshot-content-{}",
        created["metadata"]["uid"].as_str().unwrap()
    );
    let recording = Recording::start(&world.contents(), &content_name).await;
    world
        .wait(&world.snapshots(), "snap", "readyToUse", |s| {
            s["status"]["readyToUse"] == true
        })
        .await;
    let seen = recording.seen();
    recording.task.abort();
    let with_status: Vec<&Value> = seen
        .iter()
        .filter(|v| v["status"]["creationTime"].is_string())
        .collect();
    assert!(!with_status.is_empty(), "{seen:#?}");
    assert!(
        with_status
            .iter()
            .all(|v| v["status"]["readyToUse"] == true),
        "{seen:#?}"
    );
}

#[tokio::test]
async fn deleting_snapshots_waits_for_kubevirt_which_deletes_or_retains_the_content() {
    let world = World::new("sim-snapdel", SimConfig::default()).await;
    let volumes = vec![
        json!({"name": "cd", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}}),
    ];
    world
        .create(&world.vms(), vm("vm", "Halted", volumes, vec![]))
        .await;
    let mut retained = snapshot("retained", "vm");
    retained["spec"]["deletionPolicy"] = json!("Retain");
    let mut contents = Vec::new();
    for manifest in [snapshot("deleted", "vm"), retained] {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
        world.create(&world.snapshots(), manifest).await;
        let ready = world
            .wait(&world.snapshots(), &name, "readyToUse", |s| {
                s["status"]["readyToUse"] == true
            })
            .await;
        contents.push(
            ready["status"]["virtualMachineSnapshotContentName"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        // One snapshot of the VM at a time: wait for the lock to go.
        world
            .wait(&world.vms(), "vm", "the snapshot lock released", unlocked)
            .await;
    }

    for name in ["deleted", "retained"] {
        let answer = world
            .snapshots()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        // Not deleted at once: KubeVirt's finalizer holds it.
        let still = answer.left().expect("the snapshot is still there");
        let still = serde_json::to_value(still).unwrap();
        assert!(still["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(finalizers(&still), [SNAPSHOT_FINALIZER]);
    }
    for name in ["deleted", "retained"] {
        wait_for(&format!("snapshot {name} gone"), TIMEOUT, || async {
            world
                .snapshots()
                .get_opt(name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await
        .unwrap();
    }
    wait_for("the deleted snapshot's content gone", TIMEOUT, || async {
        world
            .contents()
            .get_opt(&contents[0])
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    let kept = world
        .wait(&world.contents(), &contents[1], "released", |c| {
            finalizers(c).is_empty()
        })
        .await;
    assert_eq!(kept["status"]["readyToUse"], true, "{kept:#}");
    assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept:#}");
}

#[tokio::test]
async fn a_snapshot_deleted_in_progress_reports_deleting_before_it_goes() {
    let world = World::new("sim-snapdeling", SimConfig::default()).await;
    let mut waiting = snapshot("waiting", "missing");
    waiting["spec"]["failureDeadline"] = json!("1h");
    world.create(&world.snapshots(), waiting).await;
    world
        .wait(&world.snapshots(), "waiting", "in progress", |s| {
            phase(s) == "InProgress" && finalizers(s) == [SNAPSHOT_FINALIZER]
        })
        .await;
    let recording = Recording::start(&world.snapshots(), "waiting").await;
    world
        .snapshots()
        .delete("waiting", &DeleteParams::default())
        .await
        .unwrap();
    let seen = recording.until_deleted().await;
    let deleting = seen
        .iter()
        .find(|v| phase(v) == "Deleting")
        .unwrap_or_else(|| panic!("no Deleting phase in {seen:#?}"));
    assert_eq!(
        condition(deleting, "Progressing").unwrap()["reason"],
        "VM snapshot is deleting"
    );
    assert_eq!(
        condition(deleting, "Progressing").unwrap()["status"],
        "False"
    );
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
    // `RandomizeNames` spelled out names volumes as the default does. (v1.8's
    // `PrefixTargetName` is unknown to v1.7.0: its admission refuses it, see
    // `the_restore_webhook_answers_as_virt_api_with_its_messages_and_status_codes`.)
    let prefixed = world
        .create(
            &world.restores(),
            restore(
                "to-prefixed",
                "snap",
                "prefixed",
                Some("RandomizeNames"),
                &[mac, remove_label],
            ),
        )
        .await;

    let uid = random["metadata"]["uid"].as_str().unwrap();
    let prefixed_uid = prefixed["metadata"]["uid"].as_str().unwrap();
    for (restore_name, target, prefix) in [
        ("to-random", "random", format!("restore-{uid}")),
        ("to-prefixed", "prefixed", format!("restore-{prefixed_uid}")),
    ] {
        let done = world
            .wait(&world.restores(), restore_name, "complete", |r| {
                r["status"]["complete"] == true
            })
            .await;
        assert!(condition_is(&done, "Ready", "True"), "{done:#}");
        assert!(condition(&done, "Failure").is_none(), "{done:#}");
        assert_eq!(finalizers(&done), [RESTORE_FINALIZER]);
        // Upstream lets the VM it created own the restore that nothing else owns.
        assert_eq!(done["metadata"]["ownerReferences"][0]["name"], target);
        assert_eq!(
            done["metadata"]["ownerReferences"][0]["kind"],
            "VirtualMachine"
        );
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
async fn deleting_a_restore_waits_for_kubevirt_which_says_so_first() {
    let world = World::new("sim-restoredel", SimConfig::default()).await;
    let volumes = vec![
        json!({"name": "cd", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}}),
    ];
    world
        .create(&world.vms(), vm("vm", "Halted", volumes, vec![]))
        .await;
    world
        .create(&world.snapshots(), snapshot("snap", "vm"))
        .await;
    world
        .wait(&world.snapshots(), "snap", "readyToUse", |s| {
            s["status"]["readyToUse"] == true
        })
        .await;
    world
        .create(&world.restores(), restore("r", "snap", "new", None, &[]))
        .await;
    let done = world
        .wait(&world.restores(), "r", "complete", |r| {
            r["status"]["complete"] == true
        })
        .await;
    assert_eq!(finalizers(&done), [RESTORE_FINALIZER]);

    let recording = Recording::start(&world.restores(), "r").await;
    let answer = world
        .restores()
        .delete("r", &DeleteParams::default())
        .await
        .unwrap();
    let still = serde_json::to_value(answer.left().expect("the restore is still there")).unwrap();
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(finalizers(&still), [RESTORE_FINALIZER]);
    let seen = recording.until_deleted().await;
    let deleting = seen
        .iter()
        .find(|v| condition(v, "Ready").is_some_and(|c| c["reason"] == "VM restore is deleting"))
        .unwrap_or_else(|| panic!("no deleting condition in {seen:#?}"));
    assert!(condition_is(deleting, "Progressing", "False"));
    assert_eq!(
        condition(deleting, "Progressing").unwrap()["reason"],
        "VM restore is deleting"
    );
    // The VM it restored stays.
    assert!(world.vms().get_opt("new").await.unwrap().is_some());
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

// Two workers: kubectl blocks one while the sim's in-process webhook answers on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_restores_that_kubevirts_admission_refuses() {
    let world = World::new("sim-admit", SimConfig::default()).await;
    // KubeVirt drops the patch causes when the snapshot does not exist (it admits the restore).
    ready_snapshot(&world).await;
    for (i, (patch, message)) in refused_patches().into_iter().enumerate() {
        // kubectl, as a user would.
        let manifest = restore(&format!("kubectl-{i}"), "snap", "target", None, &[patch]);
        let out = world
            .env
            .kubectl_output(
                &["create", "-n", &world.ns, "-f", "-"],
                Some(&manifest.to_string()),
            )
            .await
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

// ---------------------------------------------------------------------------------------------
// The restore admission webhook (virt-api's, served by the sim)
// ---------------------------------------------------------------------------------------------

fn kubevirts(world: &World) -> Api<DynamicObject> {
    world.api("kubevirt.io/v1", "KubeVirt", "kubevirts")
}

/// A `KubeVirt` CR in the test's namespace (the webhook reads it there) listing `gates`, with the
/// `status.phase` virt-operator would give it.
async fn kubevirt_cr(world: &World, gates: &[&str]) {
    let cr = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt"},
        "spec": {"configuration": {"developerConfiguration": {"featureGates": gates}}},
    });
    world.create(&kubevirts(world), cr).await;
    kubevirts(world)
        .patch_status(
            "kubevirt",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Deployed"}})),
        )
        .await
        .unwrap();
}

/// A webhook for the test's namespace, reading the `KubeVirt` CR there.
async fn webhook(world: &World) -> RestoreWebhook {
    RestoreWebhook::start(
        world.client.clone(),
        WebhookConfig::default()
            .namespace(world.ns.clone())
            .kubevirt_namespace(world.ns.clone()),
    )
    .await
    .expect("the restore webhook starts")
}

/// The API server's answer to creating `manifest` (dry run: nothing is created).
async fn refusal(world: &World, manifest: Value, dry_run: bool) -> Option<kube::core::Status> {
    let typed: DynamicObject = serde_json::from_value(manifest).unwrap();
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    match world.restores().create(&params, &typed).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(*status),
        Err(err) => panic!("{err}"),
    }
}

/// Creates (dry run) until the answer is `code` with `message`: the webhook reads from caches.
async fn refused_with(world: &World, manifest: Value, code: u16, message: &str) {
    let expected = format!("{DENIED}{message}");
    wait_for(&format!("{code} {expected}"), TIMEOUT, || {
        let manifest = manifest.clone();
        async {
            match refusal(world, manifest, true).await {
                Some(s) if s.code == code && s.message == expected => Ok(()),
                other => Err(other),
            }
        }
    })
    .await
    .unwrap();
}

/// A snapshot `name` (of a VM `src` that need not exist) whose status the test writes, with a
/// content `content-<name>` holding `vm_spec` unless `content` is false.
async fn crafted_snapshot(
    world: &World,
    name: &str,
    status: Option<Value>,
    vm_spec: Option<Value>,
) {
    world
        .create(&world.snapshots(), snapshot(name, "src"))
        .await;
    if let Some(status) = status {
        world
            .snapshots()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
    }
    if let Some(spec) = vm_spec {
        let content = json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1",
            "kind": "VirtualMachineSnapshotContent",
            "metadata": {"name": format!("content-{name}")},
            "spec": {
                "virtualMachineSnapshotName": name,
                "source": {"virtualMachine": {"metadata": {"name": "src"}, "spec": spec}},
            },
        });
        world.create(&world.contents(), content).await;
    }
}

fn ready_status(name: &str) -> Value {
    json!({
        "sourceUID": "uid-of-src",
        "virtualMachineSnapshotContentName": format!("content-{name}"),
        "readyToUse": true,
        "phase": "Succeeded",
    })
}

#[tokio::test]
async fn the_restore_webhook_answers_as_virt_api_with_its_messages_and_status_codes() {
    // No sim: the test writes the snapshots' states itself.
    let world = World::without_sim("sim-webhook").await;
    kubevirt_cr(&world, &["Snapshot"]).await;
    let plain_vm = json!({"template": {"spec": {"domain": {"devices": {}}}}});
    let tpm_vm =
        json!({"template": {"spec": {"domain": {"devices": {"tpm": {"persistent": true}}}}}});
    crafted_snapshot(&world, "ready", Some(ready_status("ready")), Some(plain_vm)).await;
    crafted_snapshot(&world, "tpm", Some(ready_status("tpm")), Some(tpm_vm)).await;
    crafted_snapshot(&world, "pending", Some(json!({"readyToUse": false})), None).await;
    crafted_snapshot(&world, "lost", Some(ready_status("lost")), None).await;
    crafted_snapshot(&world, "fresh", None, None).await;
    let hook = webhook(&world).await;
    assert!(
        hook.url().starts_with("https://127.0.0.1:"),
        "{}",
        hook.url()
    );

    // 422 with causes, in upstream's words and order, the causes in the details.
    let mut manifest = restore("r", "ready", "t", None, &[]);
    manifest["spec"]["target"] = json!({"kind": "VirtualMachine", "name": "t"});
    let status = refusal(&world, manifest, false).await.unwrap();
    assert_eq!(status.code, 422, "{status:?}");
    assert_eq!(status.reason, "Invalid");
    assert_eq!(status.message, format!("{DENIED}missing apiGroup"));
    let cause = &status.details.as_ref().unwrap().causes[0];
    assert_eq!(cause.field, "spec.target.apiGroup");
    assert_eq!(cause.reason, "FieldValueNotFound");

    let patches = [
        r#"{"op": "replace", "path": "/status/printableStatus", "value": "Running"}"#,
        r#"{"op": "replace", "path": "/spec/template/spec/domain/devices/interfaces/0/macAddress", "value": "02:00:00:00:00:01"}"#,
    ];
    let mut manifest = restore("r", "ready", "t", Some("PrefixTargetName"), &patches);
    manifest["spec"]["volumeRestoreOverrides"] = json!([{"volumeName": "disk"}]);
    let status = refusal(&world, manifest, false).await.unwrap();
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        format!(
            "{DENIED}{}, {}, {}, {}",
            r#"patching is valid only for elements under /spec/ only:  "path": "/status/printableStatus""#,
            r#"patch format is not valid - one ":" expected in a single key-value json patch:  "value": "02:00:00:00:00:01""#,
            "must provide at least one overriden field",
            r#"volume restore policy "PrefixTargetName" doesn't exist"#,
        )
    );
    assert_eq!(status.details.unwrap().causes.len(), 4);

    // kubectl, as a user would (async: the webhook is served by this runtime meanwhile).
    let manifest = restore("kubectl", "tpm", "t", None, &[]).to_string();
    let out = world
        .env
        .kubectl_output(&["create", "-n", &world.ns, "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    assert!(!out.success());
    // kubectl prints an Invalid answer's causes with their fields.
    assert_eq!(
        out.stderr.trim(),
        "The request is invalid: spec: Restore to a different VM is not supported when snapshotted VM has backend storage (persistent TPM or EFI)"
    );

    // 400 for virt-api's errors: no content yet, the content gone.
    let status = refusal(&world, restore("r", "pending", "t", None, &[]), false)
        .await
        .unwrap();
    assert_eq!(status.code, 400, "{status:?}");
    assert_eq!(
        status.message,
        format!("{DENIED}snapshot content name is nil in vmSnapshot status")
    );
    let status = refusal(&world, restore("r", "lost", "t", None, &[]), false)
        .await
        .unwrap();
    assert_eq!(status.code, 400, "{status:?}");
    assert_eq!(
        status.message,
        format!(
            "{DENIED}virtualmachinesnapshotcontents.snapshot.kubevirt.io \"content-lost\" not found"
        )
    );
    // A snapshot without a status makes virt-api's admitter crash: the call fails.
    let status = refusal(&world, restore("r", "fresh", "t", None, &[]), false)
        .await
        .unwrap();
    assert_eq!(status.code, 500, "{status:?}");
    assert!(
        status.message.contains(
            "failed calling webhook \"virtualmachinerestore-validator.snapshot.kubevirt.io\""
        ),
        "{status:?}"
    );

    // A missing snapshot is admitted, and upstream's early return forgets the patch causes.
    assert!(
        refusal(
            &world,
            restore("orphan", "missing", "t-orphan", None, &patches),
            false
        )
        .await
        .is_none()
    );

    // Another restore of the same target in progress (no sim: it never completes); a repeated
    // create of the same restore meets itself.
    assert!(
        refusal(&world, restore("first", "ready", "busy", None, &[]), false)
            .await
            .is_none()
    );
    refused_with(
        &world,
        restore("second", "ready", "busy", None, &[]),
        422,
        "VirtualMachineRestore \"first\" in progress",
    )
    .await;
    refused_with(
        &world,
        restore("first", "ready", "busy", None, &[]),
        422,
        "VirtualMachineRestore \"first\" in progress",
    )
    .await;

    // UPDATE: the spec is immutable, metadata is not.
    let err = world
        .restores()
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"virtualMachineSnapshotName": "other"}})),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        format!("{DENIED}spec in immutable after creation")
    );
    world
        .merge(
            &world.restores(),
            "first",
            json!({"metadata": {"labels": {"edited": "yes"}}}),
        )
        .await;

    // The Snapshot gate off: every create is a 400.
    kubevirts(&world)
        .patch(
            "kubevirt",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"configuration": {"developerConfiguration": {"featureGates": []}}}})),
        )
        .await
        .unwrap();
    refused_with(
        &world,
        restore("gated", "ready", "t-gated", None, &[]),
        400,
        "Snapshot/Restore feature gate not enabled",
    )
    .await;

    // Stopped, the sim's admission policy takes over again.
    hook.stop().await;
    let mut manifest = restore("r", "ready", "t", None, &[]);
    manifest["spec"]["target"] = json!({"kind": "VirtualMachine", "name": "t"});
    wait_for("the admission policy to answer again", TIMEOUT, || {
        let manifest = manifest.clone();
        async {
            let status = refusal(&world, manifest, true).await;
            match status {
                Some(s) if s.message.contains("ValidatingAdmissionPolicy") => Ok(()),
                other => Err(other),
            }
        }
    })
    .await
    .unwrap();
}
