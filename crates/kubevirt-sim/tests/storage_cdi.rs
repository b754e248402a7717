//! Storage binding and CDI DataVolume clones: a WaitForFirstConsumer PVC waits for a running VM;
//! a clone from a PVC a running VM uses waits with `CloneSourceInUse` until the VM stops; the
//! strict clone checks fail with the seed's messages.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;
use kubevirt_sim::SimConfig;
use serde_json::{Value, json};

fn clone_dv(name: &str, source_ns: &str, source: &str, storage: Value) -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": {"name": name},
        "spec": {"source": {"pvc": {"namespace": source_ns, "name": source}}, "storage": storage},
    })
}

#[tokio::test]
async fn a_wait_for_first_consumer_pvc_stays_pending_until_the_vm_starts() {
    let world = World::new("sim-wffc", SimConfig::default()).await;
    world
        .create(&world.pvcs(), pvc("late", "sim-wffc", "1Gi"))
        .await;
    world
        .create(&world.pvcs(), pvc("early", "sim-snapshot", "1Gi"))
        .await;
    let volumes = vec![
        json!({"name": "late", "persistentVolumeClaim": {"claimName": "late"}}),
        json!({"name": "early", "persistentVolumeClaim": {"claimName": "early"}}),
    ];
    world
        .create(&world.vms(), vm("vm", "Halted", volumes, vec![]))
        .await;

    // The binder has seen both claims (the Immediate one is bound) and the VM is stopped.
    world
        .wait(&world.pvcs(), "early", "bound", |p| phase(p) == "Bound")
        .await;
    world
        .wait(
            &world.vms(),
            "vm",
            "stopped with both volumes known",
            |vm| {
                vm["status"]["printableStatus"] == "Stopped"
                    && vm["status"]["volumeSnapshotStatuses"]
                        .as_array()
                        .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["enabled"] == true))
            },
        )
        .await;
    let late = serde_json::to_value(world.pvcs().get("late").await.unwrap()).unwrap();
    assert_eq!(phase(&late), "Pending", "{late:#}");
    assert!(world.vmis().get_opt("vm").await.unwrap().is_none());

    world
        .merge(
            &world.vms(),
            "vm",
            json!({"spec": {"runStrategy": "Always"}}),
        )
        .await;
    world
        .wait(&world.pvcs(), "late", "bound", |p| phase(p) == "Bound")
        .await;
    let vmi = world
        .wait(&world.vmis(), "vm", "running", |vmi| {
            phase(vmi) == "Running"
        })
        .await;
    assert_eq!(vmi["metadata"]["ownerReferences"][0]["name"], "vm");
    assert_eq!(
        vmi["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "late"
    );
    world
        .wait(&world.vms(), "vm", "running", |vm| {
            vm["status"]["printableStatus"] == "Running"
                && vm["status"]["ready"] == true
                && vm["status"]["created"] == true
        })
        .await;

    // Stopping the VM deletes its instance.
    world
        .merge(
            &world.vms(),
            "vm",
            json!({"spec": {"runStrategy": "Halted"}}),
        )
        .await;
    world
        .wait(&world.vms(), "vm", "stopped", |vm| {
            vm["status"]["printableStatus"] == "Stopped"
        })
        .await;
    assert!(world.vmis().get_opt("vm").await.unwrap().is_none());
}

#[tokio::test]
async fn a_clone_of_a_pvc_in_use_by_a_running_vm_waits_until_the_vm_stops() {
    let world = World::new("sim-inuse", SimConfig::default()).await;
    world
        .create(&world.pvcs(), pvc("golden", "sim-snapshot", "1Gi"))
        .await;
    let volumes = vec![json!({"name": "root", "persistentVolumeClaim": {"claimName": "golden"}})];
    world
        .create(&world.vms(), vm("user", "Always", volumes, vec![]))
        .await;
    world
        .wait(&world.vmis(), "user", "running", |vmi| {
            phase(vmi) == "Running"
        })
        .await;

    let ns = world.ns.clone();
    world
        .create(
            &world.dvs(),
            clone_dv(
                "copy",
                &ns,
                "golden",
                json!({"storageClassName": "sim-snapshot"}),
            ),
        )
        .await;
    let waiting = world
        .wait(
            &world.dvs(),
            "copy",
            "CloneScheduled, source in use",
            |dv| {
                phase(dv) == "CloneScheduled"
                    && condition(dv, "Running").is_some_and(|c| c["reason"] == "CloneSourceInUse")
            },
        )
        .await;
    assert!(
        condition(&waiting, "Running").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("using PersistentVolumeClaim golden"),
        "{waiting:#}"
    );
    let message = world.wait_event("copy", "CloneSourceInUse").await;
    assert!(message.contains("golden"), "{message}");
    assert!(
        world.pvcs().get_opt("copy").await.unwrap().is_none(),
        "no target while in use"
    );

    world
        .merge(
            &world.vms(),
            "user",
            json!({"spec": {"runStrategy": "Halted"}}),
        )
        .await;
    let done = world
        .wait(&world.dvs(), "copy", "Succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    assert_eq!(done["status"]["progress"], "100.0%");
    assert_eq!(done["status"]["claimName"], "copy");
    assert!(condition_is(&done, "Ready", "True"), "{done:#}");
    assert!(condition_is(&done, "Bound", "True"), "{done:#}");
    assert_eq!(condition(&done, "Running").unwrap()["reason"], "Completed");
    let target = world
        .wait(&world.pvcs(), "copy", "bound", |p| phase(p) == "Bound")
        .await;
    assert_eq!(
        target["metadata"]["ownerReferences"][0]["kind"],
        "DataVolume"
    );
    assert_eq!(target["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(
        target["metadata"]["annotations"]["k8s.io/CloneRequest"],
        format!("{ns}/golden")
    );
    let reasons: Vec<String> = world
        .event_reasons("copy")
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    for reason in ["CloneScheduled", "CloneInProgress", "CloneSucceeded"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
}

#[tokio::test]
async fn strict_clone_checks_fail_with_the_seeds_messages() {
    let world = World::new("sim-strict", SimConfig::default()).await;
    let mut block = pvc("block", "sim-snapshot", "2Gi");
    block["spec"]["volumeMode"] = json!("Block");
    world.create(&world.pvcs(), block).await;
    let ns = world.ns.clone();
    let cases = [
        (
            "to-filesystem",
            json!({"volumeMode": "Filesystem", "storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "2Gi"}}}),
            "source volumeMode (Block) and target volumeMode (Filesystem) do not match",
        ),
        (
            "too-small",
            json!({"volumeMode": "Block", "storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "1Gi"}}}),
            "target resources requests storage size is smaller than the source",
        ),
    ];
    for (name, storage, _) in &cases {
        world
            .create(&world.dvs(), clone_dv(name, &ns, "block", storage.clone()))
            .await;
    }
    for (name, _, message) in cases {
        let failed = world
            .wait(&world.dvs(), name, "Failed", |dv| phase(dv) == "Failed")
            .await;
        assert_eq!(
            condition(&failed, "Running").unwrap()["message"],
            message,
            "{failed:#}"
        );
        assert_eq!(
            condition(&failed, "Running").unwrap()["reason"],
            "CloneValidationFailed"
        );
        let event = world.wait_event(name, "CloneValidationFailed").await;
        assert_eq!(
            event,
            format!("The clone doesn't meet the validation requirements: {message}")
        );
        assert!(world.pvcs().get_opt(name).await.unwrap().is_none());
    }

    // Block clones as block, inheriting the source's mode and size through the storage API.
    world
        .create(
            &world.dvs(),
            clone_dv(
                "as-block",
                &ns,
                "block",
                json!({"storageClassName": "sim-snapshot"}),
            ),
        )
        .await;
    world
        .wait(&world.dvs(), "as-block", "Succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    let target = serde_json::to_value(world.pvcs().get("as-block").await.unwrap()).unwrap();
    assert_eq!(target["spec"]["volumeMode"], "Block");
    assert_eq!(target["spec"]["resources"]["requests"]["storage"], "2Gi");
}

#[tokio::test]
async fn lenient_clone_checks_fall_back_or_wait_like_todays_cdi() {
    let world = World::new(
        "sim-lenient",
        SimConfig::default().strict_clone_checks(false),
    )
    .await;
    let mut block = pvc("block", "sim-snapshot", "2Gi");
    block["spec"]["volumeMode"] = json!("Block");
    world.create(&world.pvcs(), block).await;
    let ns = world.ns.clone();
    world
        .create(
            &world.dvs(),
            clone_dv("to-filesystem", &ns, "block", json!({"volumeMode": "Filesystem", "storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "2Gi"}}})),
        )
        .await;
    world
        .create(
            &world.dvs(),
            clone_dv("too-small", &ns, "block", json!({"volumeMode": "Block", "storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "1Gi"}}})),
        )
        .await;
    world
        .wait(&world.dvs(), "to-filesystem", "Succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    let target = serde_json::to_value(world.pvcs().get("to-filesystem").await.unwrap()).unwrap();
    assert_eq!(
        target["metadata"]["annotations"]["cdi.kubevirt.io/cloneFallbackReason"],
        "The volume modes of source and target are incompatible"
    );
    let waiting = world
        .wait(&world.dvs(), "too-small", "waiting on validation", |dv| {
            condition(dv, "Running").is_some_and(|c| c["reason"] == "CloneValidationFailed")
        })
        .await;
    assert_eq!(phase(&waiting), "CloneScheduled");
    let event = world.wait_event("too-small", "CloneValidationFailed").await;
    assert!(event.contains("target resources requests storage size is smaller than the source 1073741824 < 2147483648"), "{event}");
}

#[tokio::test]
async fn a_data_volume_on_a_wait_for_first_consumer_class_waits_for_its_vm() {
    let world = World::new("sim-dvwffc", SimConfig::default()).await;
    let template = json!({
        "metadata": {"name": "vm-root"},
        "spec": {"source": {"blank": {}}, "storage": {"storageClassName": "sim-wffc", "resources": {"requests": {"storage": "1Gi"}}}},
    });
    let volumes = vec![json!({"name": "root", "dataVolume": {"name": "vm-root"}})];
    world
        .create(&world.vms(), vm("vm", "Halted", volumes, vec![template]))
        .await;
    world
        .wait(&world.dvs(), "vm-root", "WaitForFirstConsumer", |dv| {
            phase(dv) == "WaitForFirstConsumer"
        })
        .await;
    world
        .wait(
            &world.vms(),
            "vm",
            "stopped (WaitForFirstConsumer is ready enough)",
            |vm| vm["status"]["printableStatus"] == "Stopped",
        )
        .await;
    world
        .merge(
            &world.vms(),
            "vm",
            json!({"spec": {"runStrategy": "Always"}}),
        )
        .await;
    world
        .wait(&world.dvs(), "vm-root", "Succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    world
        .wait(&world.pvcs(), "vm-root", "bound", |p| phase(p) == "Bound")
        .await;
    world
        .wait(&world.vms(), "vm", "running", |vm| {
            vm["status"]["printableStatus"] == "Running"
        })
        .await;
}
