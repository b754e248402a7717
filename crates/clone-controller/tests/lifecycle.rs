//! The lifecycle of a VirtualMachineClone against the real API server and the real `kubectl`
//! where a user would use it, on both backends: KubeVirt v1.7.0's own virt-controller and
//! virt-api (`kubevirt::*`), and the stand-in kubevirt-sim (`sim::*`), from one test body each
//! (`on_both_backends!`). Tests that need what only the stand-in can inject (forced snapshot and
//! restore failures, refused restores) run on the stand-in alone; `docs/architecture.md` lists
//! them.
//!
//! Upstream scenarios covered (research/kubevirt-clone.md):
//! - §7.5 #114 simple clone (spec equal except identity, temp objects gone, target deletion
//!   deletes the clone): `the_seed_flow_with_kubectl`, `deleting_the_target_deletes_the_clone`;
//! - §7.5 #115 snapshot source, clone created before the snapshot: `golden_image_five_clones`,
//!   `a_clone_waits_for_its_source_and_warns_once`;
//! - §7.5 #116/#117 label/annotation and template filters, #118 new MAC, #119 serial, #120 UUID:
//!   `the_seed_flow_with_kubectl`;
//! - §7.5 #125 WaitForFirstConsumer storage: `wffc_storage_cleans_up_when_the_target_starts`;
//! - §7.1 #1–#4, #17, #20, #21 and the failure modes upstream gets wrong: one test each below.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use anyhow::ensure;
use clone_api::kubevirt::{VirtualMachine, VirtualMachineSnapshot};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use common::{Backend, CLONE_TIMEOUT, Harness, clone_manifest, count, seed_clone_manifest};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use testenv::wait_for;

/// The finalizer KubeVirt's snapshot controller holds a source VM with while it snapshots it.
const SOURCE_PROTECTION: &str = "snapshot.kubevirt.io/snapshot-source-protection";

/// A testbed whose storage (and, on the stand-in, every KubeVirt step) is `latency_secs` slow,
/// the controller running, and clone `c` of a fresh source `vm` into `t` created.
async fn slow_clone_of_vm(backend: Backend, prefix: &str, latency_secs: u64) -> Harness {
    let mut h = Harness::slow_on(
        backend,
        prefix,
        std::time::Duration::from_secs(latency_secs),
    )
    .await
    .unwrap();
    h.start_controller();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    h
}

async fn target_json(h: &Harness, name: &str) -> Value {
    let yaml = h
        .kubectl(&["get", "vm", name, "-o", "yaml"], None)
        .await
        .unwrap();
    let vm: Value = serde_saphyr::from_str(&yaml).unwrap();
    vm
}

async fn the_seed_flow_with_kubectl(backend: Backend) {
    let h = Harness::start_on(backend, "seed").await.unwrap();
    h.create_source_vm("vm-cirros", "sim-snapshot")
        .await
        .unwrap();
    // As a user would, clone a VM KubeVirt has looked at: before its first status, a clone would
    // rightly warn that the volumes' snapshot support is unknown.
    h.wait_snapshot_support_known("vm-cirros").await.unwrap();
    let source: Value =
        serde_json::to_value(h.api::<VirtualMachine>().get("vm-cirros").await.unwrap()).unwrap();

    h.create(&seed_clone_manifest()).await.unwrap();
    h.kubectl_wait_ready("vmclone", "testclone").await.unwrap();
    let target = target_json(&h, "vm-clone-target").await;

    // Identity: MACs, serial, UUID.
    let ifaces = &target["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"];
    assert_eq!(ifaces[0]["name"], "default");
    assert!(
        ifaces[0].get("macAddress").is_none(),
        "unlisted interface kept its MAC: {ifaces}"
    );
    assert_eq!(ifaces[1]["name"], "interfaceName");
    assert_eq!(ifaces[1]["macAddress"], "00-11-22-33-44-55");
    let firmware = &target["spec"]["template"]["spec"]["domain"]["firmware"];
    assert_eq!(firmware["serial"], "new-serial");
    let uuid = firmware["uuid"].as_str().unwrap();
    assert_ne!(
        uuid,
        source["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
            .as_str()
            .unwrap()
    );
    assert_eq!(uuid.len(), 36, "{uuid}");

    // Filters: labels ["*", "!somekey/*"], annotations ["anotherkey/*"], same for the template.
    let labels = target["metadata"]["labels"].as_object().unwrap();
    assert!(
        labels.contains_key("app") && labels.contains_key("kubevirt.io/vm"),
        "{labels:?}"
    );
    assert!(!labels.contains_key("somekey/owner"), "{labels:?}");
    let annotations = target["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(annotations.get("anotherkey/keep"), Some(&json!("yes")));
    assert!(!annotations.contains_key("description"), "{annotations:?}");
    assert!(annotations.contains_key("restore.kubevirt.io/lastRestoreUID"));
    let tlabels = target["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    assert!(
        tlabels.contains_key("app") && !tlabels.contains_key("somekey/template"),
        "{tlabels:?}"
    );
    let tannotations = target["spec"]["template"]["metadata"]["annotations"]
        .as_object()
        .unwrap();
    assert_eq!(tannotations.get("anotherkey/template"), Some(&json!("yes")));
    assert!(
        !tannotations.contains_key("ovn.kubernetes.io/ip_address"),
        "{tannotations:?}"
    );

    // Everything else equals the source (volumes point to the restored claim).
    let strip = |vm: &Value| {
        let mut spec = vm["spec"].clone();
        let t = &mut spec["template"];
        t.as_object_mut().unwrap().remove("metadata");
        let domain = &mut t["spec"]["domain"];
        domain.as_object_mut().unwrap().remove("firmware");
        for iface in domain["devices"]["interfaces"].as_array_mut().unwrap() {
            iface.as_object_mut().unwrap().remove("macAddress");
        }
        t["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = json!("<restored>");
        spec
    };
    assert_eq!(strip(&target), strip(&source));
    assert_ne!(
        target["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        source["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    );

    // Afterwards: names cleared, temporary objects gone, each transition in one event.
    h.wait_transition("testclone", "all PVC for clone testclone are bound")
        .await
        .unwrap();
    let done: VirtualMachineClone =
        wait_for("status names cleared", common::CLONE_TIMEOUT, || async {
            let c = h.api::<VirtualMachineClone>().get("testclone").await?;
            let s = c.status.clone().unwrap_or_default();
            anyhow::ensure!(
                s.snapshot_name.is_none() && s.restore_name.is_none(),
                "{s:?}"
            );
            Ok(c)
        })
        .await
        .unwrap();
    let uid = done.metadata.uid.clone().unwrap();
    let status = done.status.unwrap();
    assert_eq!(status.phase, ClonePhase::Succeeded);
    assert_eq!(status.target_name.as_deref(), Some("vm-clone-target"));
    assert!(status.creation_time.is_some());
    let (snaps, restores, _) =
        wait_for("temporary objects gone", common::CLONE_TIMEOUT, || async {
            let inv = h.inventory().await?;
            anyhow::ensure!(inv.0.is_empty() && inv.1.is_empty(), "{inv:?}");
            Ok(inv)
        })
        .await
        .unwrap();
    assert!(snaps.is_empty() && restores.is_empty());
    // One event per status write: the milestones name them, every transition is in exactly one
    // note (three or four events, not six).
    let events = h.events("testclone").await.unwrap();
    for reason in ["SnapshotCreated", "RestoreCreated", "TargetVMCreated"] {
        assert_eq!(count(&events, reason), 1, "{reason} in {events:?}");
    }
    assert!(
        events.len() == 3 || (events.len() == 4 && count(&events, "PVCBound") == 1),
        "{events:?}"
    );
    let (snapshot, restore) = (format!("tmp-snapshot-{uid}"), format!("tmp-restore-{uid}"));
    for transition in [
        format!("created snapshot {snapshot} for clone testclone"),
        format!("snapshot {snapshot} for clone testclone is ready to use"),
        format!("created restore {restore} for clone testclone"),
        format!("restore {restore} for clone testclone is ready to use"),
        "created target VM vm-clone-target for clone testclone".to_owned(),
        "all PVC for clone testclone are bound".to_owned(),
    ] {
        let notes = events.iter().filter(|e| e.2.contains(&transition)).count();
        assert_eq!(notes, 1, "{transition:?} in {events:?}");
    }
    assert!(events.iter().all(|e| e.0 == "Normal"), "{events:?}");
    // The source is untouched.
    let after: Value =
        serde_json::to_value(h.api::<VirtualMachine>().get("vm-cirros").await.unwrap()).unwrap();
    assert_eq!(after["spec"], source["spec"]);
    assert_eq!(after["metadata"]["labels"], source["metadata"]["labels"]);
    h.stop().await;
}

async fn golden_image_five_clones(backend: Backend) {
    let h = Harness::start_on(backend, "golden").await.unwrap();
    h.create_source_vm("golden-vm", "sim-snapshot")
        .await
        .unwrap();
    h.apply(
        &json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                "metadata": {"name": "golden"},
                "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "golden-vm"}}})
        .to_string(),
    ).await
    .unwrap();
    let snapshots = h.api::<VirtualMachineSnapshot>();
    let golden = wait_for("golden snapshot ready", common::CLONE_TIMEOUT, || async {
        let s = snapshots.get("golden").await?;
        anyhow::ensure!(
            s.status.as_ref().is_some_and(|s| s.is_ready()),
            "{:?}",
            s.status
        );
        Ok(s)
    })
    .await
    .unwrap();
    h.api::<VirtualMachine>()
        .delete("golden-vm", &DeleteParams::default())
        .await
        .unwrap();

    for i in 0..5 {
        h.create(&clone_manifest(
            &format!("golden-{i}"),
            "VirtualMachineSnapshot",
            "golden",
            None,
            json!({}),
        ))
        .await
        .unwrap();
    }
    let mut targets = BTreeSet::new();
    let mut uuids = BTreeSet::new();
    let mut serials = BTreeSet::new();
    for i in 0..5 {
        let c = h
            .wait_phase(&format!("golden-{i}"), ClonePhase::Succeeded)
            .await
            .unwrap();
        let target = c.status.unwrap().target_name.unwrap();
        let vm = target_json(&h, &target).await;
        uuids.insert(
            vm["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        serials.insert(
            vm["spec"]["template"]["spec"]["domain"]["firmware"]["serial"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        targets.insert(target);
    }
    assert_eq!(targets.len(), 5, "{targets:?}");
    assert_eq!(uuids.len(), 5, "{uuids:?}");
    assert_eq!(serials.len(), 5, "{serials:?}");
    let after = snapshots.get("golden").await.unwrap();
    assert_eq!(after.metadata.uid, golden.metadata.uid);
    assert_eq!(
        after.metadata.resource_version, golden.metadata.resource_version,
        "the golden snapshot changed"
    );
    h.stop().await;
}

/// KubeVirt snapshots a VM one at a time, and a snapshot waiting for its VM runs down its
/// `failureDeadline`: clones of one VM take their temporary snapshots one after the other. A
/// watch records every temporary snapshot: none appears while another still holds the VM.
async fn clones_of_one_vm_take_their_snapshots_one_at_a_time(backend: Backend) {
    // Each KubeVirt step a second slow on the stand-in (its storage on KubeVirt), so a snapshot
    // is still in progress when the next clone's pass comes.
    let mut h = Harness::slow_on(backend, "onevm", std::time::Duration::from_secs(1))
        .await
        .unwrap();
    h.start_controller();
    h.create_source_vm("vm-one", "sim-snapshot").await.unwrap();
    // Every snapshot event in order: (name, phase, deleted).
    let seen = Arc::new(Mutex::new(Vec::<(String, Option<String>, bool)>::new()));
    let recorder = tokio::spawn({
        let (seen, api) = (seen.clone(), h.api::<VirtualMachineSnapshot>());
        async move {
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(Ok(event)) = events.next().await {
                let (snapshot, deleted) = match event {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) => (s, false),
                    watcher::Event::Delete(s) => (s, true),
                    watcher::Event::Init | watcher::Event::InitDone => continue,
                };
                let phase = snapshot.status.as_ref().and_then(|s| s.phase.clone());
                seen.lock()
                    .unwrap()
                    .push((snapshot.name_any(), phase, deleted));
            }
        }
    });
    for i in 0..3 {
        let manifest = clone_manifest(
            &format!("one-{i}"),
            "VirtualMachine",
            "vm-one",
            None,
            json!({}),
        );
        h.create(&manifest).await.unwrap();
    }
    for i in 0..3 {
        h.wait_phase(&format!("one-{i}"), ClonePhase::Succeeded)
            .await
            .unwrap();
    }
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    let (mut holding, mut started) = (BTreeSet::new(), BTreeSet::new());
    for (name, phase, deleted) in &seen {
        if !name.starts_with("tmp-snapshot-") {
            continue;
        }
        if started.insert(name.clone()) {
            assert!(
                holding.is_empty(),
                "{name} was created while {holding:?} held vm-one: {seen:?}"
            );
        }
        if *deleted || matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            holding.remove(name);
        } else {
            holding.insert(name.clone());
        }
    }
    assert_eq!(started.len(), 3, "{seen:?}");
    h.stop().await;
}

async fn an_existing_vm_is_never_touched(backend: Backend) {
    let h = Harness::start_on(backend, "exists").await.unwrap();
    h.create_source_vm("vm-a", "sim-snapshot").await.unwrap();
    h.create_source_vm("vm-b", "sim-snapshot").await.unwrap();
    // Let KubeVirt (the sim) finish writing vm-b's status first: only the clone must leave it be.
    let vms = h.api::<VirtualMachine>();
    let before = wait_for("vm-b's status written", common::CLONE_TIMEOUT, || async {
        let vm = vms.get("vm-b").await?;
        let statuses = vm
            .status
            .as_ref()
            .and_then(|s| s.volume_snapshot_statuses.clone());
        anyhow::ensure!(statuses.is_some_and(|s| !s.is_empty()), "{:?}", vm.status);
        Ok(vm)
    })
    .await
    .unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm-a",
        Some("vm-b"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(ready.reason.as_deref(), Some("TargetExists"));
    assert_eq!(
        ready.message.as_deref(),
        Some(format!("target VirtualMachine {}/vm-b already exists", h.ns).as_str())
    );
    let events = h.wait_event("c", "TargetExists").await.unwrap();
    assert_eq!(count(&events, "TargetExists"), 1, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "TargetExists")
    );
    // KubeVirt may still write vm-b's status and its own `kubevirt.io/` bookkeeping
    // annotations (observed API versions); nobody may touch what the clone could have.
    let after = h.api::<VirtualMachine>().get("vm-b").await.unwrap();
    let users_annotations = |vm: &VirtualMachine| {
        let mut annotations = vm.metadata.annotations.clone().unwrap_or_default();
        annotations.retain(|key, _| !key.starts_with("kubevirt.io/"));
        annotations
    };
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(
        serde_json::to_value(&after.spec).unwrap(),
        serde_json::to_value(&before.spec).unwrap(),
        "vm-b's spec was modified"
    );
    assert_eq!(after.metadata.labels, before.metadata.labels);
    assert_eq!(users_annotations(&after), users_annotations(&before));
    assert_eq!(
        after.metadata.owner_references,
        before.metadata.owner_references
    );
    let managers: Vec<_> = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.manager.as_deref())
        .collect();
    assert!(
        !managers.contains(&clone_api::names::FIELD_MANAGER),
        "vmclone wrote to vm-b: {managers:?}"
    );
    let (snaps, restores, _) = h.inventory().await.unwrap();
    assert!(
        snaps.is_empty() && restores.is_empty(),
        "{snaps:?} {restores:?}"
    );
    h.stop().await;
}

async fn two_clones_racing_for_one_target(backend: Backend) {
    let h = Harness::start_on(backend, "race").await.unwrap();
    h.create_source_vm("vm-a", "sim-snapshot").await.unwrap();
    let both = common::list(&[
        clone_manifest("first", "VirtualMachine", "vm-a", Some("shared"), json!({})),
        clone_manifest(
            "second",
            "VirtualMachine",
            "vm-a",
            Some("shared"),
            json!({}),
        ),
    ]);
    h.create(&both).await.unwrap();
    let api = h.api::<VirtualMachineClone>();
    let phases = wait_for("both clones terminal", common::CLONE_TIMEOUT, || async {
        let mut phases = Vec::new();
        for name in ["first", "second"] {
            let c = api.get(name).await?;
            phases.push(c.status.map(|s| s.phase).unwrap_or_default());
        }
        anyhow::ensure!(phases.iter().all(|p| p.is_terminal()), "{phases:?}");
        Ok(phases)
    })
    .await
    .unwrap();
    let succeeded = phases
        .iter()
        .filter(|p| **p == ClonePhase::Succeeded)
        .count();
    let failed = phases.iter().filter(|p| **p == ClonePhase::Failed).count();
    assert_eq!((succeeded, failed), (1, 1), "{phases:?}");
    h.stop().await;
}

async fn a_clone_waits_for_its_source_and_warns_once(backend: Backend) {
    let h = Harness::start_on(backend, "nosource").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "late-vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h
        .wait_ready_reason("c", "SourceDoesNotExist")
        .await
        .unwrap();
    let status = c.status.unwrap();
    assert_eq!(status.phase, ClonePhase::Unset);
    assert_eq!(status.target_name.as_deref(), Some("t"));
    assert_eq!(
        status
            .condition("Progressing")
            .and_then(|c| c.reason.clone())
            .as_deref(),
        Some("Pending")
    );
    let message = format!("Source doesnt exist: VirtualMachine {}/late-vm", h.ns);
    assert_eq!(
        status.condition("Ready").and_then(|c| c.message.clone()),
        Some(message)
    );
    h.create_source_vm("late-vm", "sim-snapshot").await.unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "SourceDoesNotExist"), 1, "{events:?}");
    h.stop().await;
}

async fn volumes_without_snapshot_support_hold_the_clone(backend: Backend) {
    let h = Harness::start_on(backend, "nosnap").await.unwrap();
    h.create_source_vm("vm", "sim-nosnapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h
        .wait_ready_reason("c", "VMVolumeSnapshotsInvalid")
        .await
        .unwrap();
    let status = c.status.unwrap();
    assert_eq!(status.phase, ClonePhase::Unset);
    assert_eq!(
        status
            .condition("Ready")
            .and_then(|c| c.message.clone())
            .as_deref(),
        Some("Virtual Machine volume root does not support snapshots")
    );
    h.stop().await;
}

async fn a_source_with_backend_storage_fails(backend: Backend) {
    let h = Harness::start_on(backend, "tpm").await.unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.kubectl(
        &[
            "patch",
            "vm",
            "vm",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"spec":{"domain":{"devices":{"tpm":{"persistent":true}}}}}}}"#,
        ],
        None,
    )
    .await
    .unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(
        ready.reason.as_deref(),
        Some("SourceVMWithBackendStorageInvalid")
    );
    assert_eq!(
        ready.message,
        Some(format!(
            "Clone of source with backendstorage is not supported: VM {}/vm",
            h.ns
        ))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_fails_the_clone() {
    let h = Harness::start("snapfail").await.unwrap();
    h.annotate_namespace(kubevirt_sim::names::FAIL_SNAPSHOT_ANNOTATION, "true")
        .await
        .unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(ready.reason.as_deref(), Some("SnapshotFailed"));
    assert!(
        ready
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("failed"),
        "{ready:?}"
    );
    let events = h.wait_event("c", "SnapshotFailed").await.unwrap();
    assert_eq!(count(&events, "SnapshotFailed"), 1, "{events:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_fails_the_clone_and_never_succeeds() {
    let h = Harness::start("restorefail").await.unwrap();
    h.annotate_namespace(kubevirt_sim::names::FAIL_RESTORE_ANNOTATION, "true")
        .await
        .unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(ready.reason.as_deref(), Some("RestoreFailed"), "{ready:?}");
    // The failed clone releases its temporary snapshot and restore and keeps its outcome.
    wait_for(
        "the temporary objects to go",
        common::CLONE_TIMEOUT,
        || async {
            let (snaps, restores, _) = h.inventory().await?;
            anyhow::ensure!(
                snaps.is_empty() && restores.is_empty(),
                "left: {snaps:?} {restores:?}"
            );
            Ok::<_, anyhow::Error>(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h.dump()));
    let c: VirtualMachineClone = h.api().get("c").await.unwrap();
    let status = c.status.unwrap();
    assert_eq!(status.phase, ClonePhase::Failed);
    assert_eq!(
        (&status.snapshot_name, &status.restore_name),
        (&None, &None)
    );
    assert_eq!(
        status.condition("Ready").and_then(|c| c.reason.as_deref()),
        Some("RestoreFailed")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_restore_fails_the_clone_with_the_servers_message() {
    let h = Harness::start("restorereject").await.unwrap();
    kubevirt_sim::reject_restores_in(h.client.clone(), &h.ns, "restores are refused here")
        .await
        .unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(
        ready.reason.as_deref(),
        Some("RestoreCreationFailed"),
        "{ready:?}"
    );
    assert!(
        ready
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("restores are refused here"),
        "{ready:?}"
    );
    h.stop().await;
}

async fn deleting_the_target_deletes_the_clone(backend: Backend) {
    let h = Harness::start_on(backend, "deltarget").await.unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    h.api::<VirtualMachine>()
        .delete("t", &DeleteParams::default())
        .await
        .unwrap();
    let clones = h.api::<VirtualMachineClone>();
    wait_for(
        "clone deleted after its target",
        common::CLONE_TIMEOUT,
        || async {
            anyhow::ensure!(clones.get_opt("c").await?.is_none(), "still there");
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(
        h.api::<VirtualMachine>()
            .get_opt("vm")
            .await
            .unwrap()
            .is_some(),
        "the source was deleted"
    );
    h.stop().await;
}

async fn deleting_a_clone_midway_leaves_no_temporary_objects(backend: Backend) {
    let h = Harness::start_on(backend, "delclone").await.unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    // Delete the clone as soon as its temporary snapshot exists.
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let snaps = h.api::<VirtualMachineSnapshot>();
    wait_for("temp snapshot created", common::CLONE_TIMEOUT, || async {
        anyhow::ensure!(
            !snaps
                .list_metadata(&Default::default())
                .await?
                .items
                .is_empty(),
            "none yet"
        );
        Ok(())
    })
    .await
    .unwrap();
    h.api::<VirtualMachineClone>()
        .delete("c", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "garbage collector removes temp objects",
        common::CLONE_TIMEOUT,
        || async {
            let inv = h.inventory().await?;
            anyhow::ensure!(inv.0.is_empty() && inv.1.is_empty(), "{inv:?}");
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(
        h.api::<VirtualMachine>()
            .get_opt("vm")
            .await
            .unwrap()
            .is_some(),
        "the source was deleted"
    );
    h.stop().await;
}

async fn wffc_storage_cleans_up_when_the_target_starts(backend: Backend) {
    let h = Harness::start_on(backend, "wffc").await.unwrap();
    h.create_source_vm("vm", "sim-wffc").await.unwrap();
    // A WaitForFirstConsumer source PVC binds only when a consumer runs: start and stop the
    // source once so it can be snapshotted.
    h.kubectl(
        &[
            "patch",
            "vm",
            "vm",
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Always"}}"#,
        ],
        None,
    )
    .await
    .unwrap();
    let pvcs = h.api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>();
    wait_for("source PVC bound", common::CLONE_TIMEOUT, || async {
        let p = pvcs.get("vm-root").await?;
        anyhow::ensure!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
            "{:?}",
            p.status
        );
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h.dump()));
    h.kubectl(
        &[
            "patch",
            "vm",
            "vm",
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Halted"}}"#,
        ],
        None,
    )
    .await
    .unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let status = c.status.unwrap();
    assert!(
        status.restore_name.is_some(),
        "cleanup ran before the restored PVC was bound"
    );
    let (snaps, restores, _) = h.inventory().await.unwrap();
    assert_eq!((snaps.len(), restores.len()), (1, 1));
    h.kubectl(
        &[
            "patch",
            "vm",
            "t",
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Always"}}"#,
        ],
        None,
    )
    .await
    .unwrap();
    wait_for(
        "cleanup after the target started",
        common::CLONE_TIMEOUT,
        || async {
            let inv = h.inventory().await?;
            anyhow::ensure!(inv.0.is_empty() && inv.1.is_empty(), "{inv:?}");
            Ok(())
        },
    )
    .await
    .unwrap();
    h.wait_transition("c", "all PVC for clone c are bound")
        .await
        .unwrap();
    h.stop().await;
}

async fn a_controller_killed_midway_completes_after_restart_with_one_of_everything(
    backend: Backend,
) {
    let mut h = Harness::without_controller_on(backend, "kill9")
        .await
        .unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let mut child = h.spawn_controller_process().unwrap();
    // The clone has started once its snapshot exists or its status says it moved on (with no
    // sim latency the whole clone can finish before a poll sees the short-lived snapshot).
    let snaps = h.api::<VirtualMachineSnapshot>();
    let clones = h.api::<VirtualMachineClone>();
    wait_for(
        "the controller started the clone",
        common::CLONE_TIMEOUT,
        || async {
            let snapshot = !snaps
                .list_metadata(&Default::default())
                .await?
                .items
                .is_empty();
            let status = clones.get("c").await?.status.unwrap_or_default();
            anyhow::ensure!(
                snapshot || status.snapshot_name.is_some() || status.phase != ClonePhase::Unset,
                "no snapshot yet"
            );
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\ncontroller log:\n{}\n{}",
            h.controller_log_text(),
            h.dump()
        )
    });
    child.stop(); // SIGKILL
    let mut child = h.spawn_controller_process().unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let vms: Api<VirtualMachine> = h.api();
    let targets: Vec<_> = vms
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|v| v.metadata.name.as_deref() != Some("vm"))
        .collect();
    assert_eq!(targets.len(), 1, "{targets:?}");
    let events = h.wait_event("c", "TargetVMCreated").await.unwrap();
    // A kill between a creation and its event may lose the event; it never duplicates it.
    assert!(count(&events, "SnapshotCreated") <= 1, "{events:?}");
    assert!(count(&events, "RestoreCreated") <= 1, "{events:?}");
    assert_eq!(count(&events, "TargetVMCreated"), 1, "{events:?}");
    child.stop();
    h.stop_controller().await;
    h.stop().await;
}

async fn a_temp_snapshot_deleted_midway_fails_the_clone(backend: Backend) {
    let h = slow_clone_of_vm(backend, "snapdel", 3).await;
    let c = h
        .wait_phase("c", ClonePhase::SnapshotInProgress)
        .await
        .unwrap();
    let snapshot = c.status.unwrap().snapshot_name.unwrap();
    h.api::<VirtualMachineSnapshot>()
        .delete(&snapshot, &DeleteParams::default())
        .await
        .unwrap();
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(ready.reason.as_deref(), Some("SnapshotDeleted"));
    assert_eq!(
        ready.message,
        Some(format!("snapshot {snapshot} does not exist anymore"))
    );
    // The event follows the status write.
    let events = h.wait_event("c", "SnapshotDeleted").await.unwrap();
    assert_eq!(count(&events, "SnapshotDeleted"), 1, "{events:?}");
    assert!(
        h.api::<VirtualMachine>()
            .get_opt("t")
            .await
            .unwrap()
            .is_none(),
        "a target was created"
    );
    h.stop().await;
}

async fn the_source_may_go_once_the_snapshot_is_ready(backend: Backend) {
    let h = slow_clone_of_vm(backend, "srcdel", 2).await;
    h.wait_phase("c", ClonePhase::RestoreInProgress)
        .await
        .unwrap();
    h.api::<VirtualMachine>()
        .delete("vm", &DeleteParams::default())
        .await
        .unwrap();
    let c = h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    assert_eq!(c.status.unwrap().target_name.as_deref(), Some("t"));
    assert!(
        h.api::<VirtualMachine>()
            .get_opt("t")
            .await
            .unwrap()
            .is_some()
    );
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "SourceDoesNotExist"), 0, "{events:?}");
    h.stop().await;
}

async fn a_source_with_data_volume_templates_clones(backend: Backend) {
    let h = Harness::start_on(backend, "dvtemplates").await.unwrap();
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "dv-vm", "labels": {"app": "dv"}},
        "spec": {
            "runStrategy": "Halted",
            "dataVolumeTemplates": [{
                "metadata": {"name": "dv-vm-root"},
                "spec": {
                    "source": {"blank": {}},
                    "storage": {"storageClassName": "sim-snapshot", "accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": "1Gi"}}},
                },
            }],
            "template": {"spec": {
                "domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                           "resources": {"requests": {"memory": "128Mi"}}},
                "volumes": [{"name": "root", "dataVolume": {"name": "dv-vm-root"}}],
            }},
        },
    });
    h.apply(&vm.to_string()).await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "dv-vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let target = target_json(&h, "t").await;
    let template = target["spec"]["dataVolumeTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no DataVolume template: {target}"))
        .to_owned();
    assert_ne!(
        template, "dv-vm-root",
        "the target shares the source's disk"
    );
    assert_eq!(
        target["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"],
        json!(template),
        "{target}"
    );
    let pvcs = h.api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>();
    wait_for("the target's disk bound", common::CLONE_TIMEOUT, || async {
        let p = pvcs.get(&template).await?;
        anyhow::ensure!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
            "{:?}",
            p.status
        );
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h.dump()));
    h.stop().await;
}

/// KubeVirt holds the source with a finalizer until its snapshot is done, then lets it go: the
/// VM can vanish in the same instant the snapshot becomes ready. The clone follows its snapshot.
async fn a_source_deleted_mid_snapshot_still_clones(backend: Backend) {
    let h = slow_clone_of_vm(backend, "srcmid", 3).await;
    h.wait_phase("c", ClonePhase::SnapshotInProgress)
        .await
        .unwrap();
    // Delete the source once the snapshot holds it: it goes when the snapshot is done.
    let vms = h.api::<VirtualMachine>();
    wait_for(
        "the snapshot to lock its source",
        common::CLONE_TIMEOUT,
        || async {
            let vm = vms.get("vm").await?;
            let finalizers = vm.metadata.finalizers.clone().unwrap_or_default();
            anyhow::ensure!(
                finalizers.iter().any(|f| f == SOURCE_PROTECTION),
                "finalizers: {finalizers:?}"
            );
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h.dump()));
    vms.delete("vm", &DeleteParams::default()).await.unwrap();
    let c = h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    assert_eq!(c.status.unwrap().target_name.as_deref(), Some("t"));
    wait_for("the source VM gone", common::CLONE_TIMEOUT, || async {
        anyhow::ensure!(vms.get_opt("vm").await?.is_none(), "still there");
        Ok(())
    })
    .await
    .unwrap();
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "SourceDoesNotExist"), 0, "{events:?}");
    h.stop().await;
}

/// KubeVirt v1.7.0 knows only `RandomizeNames` and `InPlace` as restore volume policies, and its
/// clone CRD has no `volumeNamePolicy` (upstream added it in v1.8). On the real backend (upstream's
/// v1.7.0 CRD) `kubectl create` refuses the field; on the stand-in's backend (the generated CRD,
/// v1.9's field set) a clone asking for v1.8's `PrefixTargetName` fails with KubeVirt's own
/// refusal of the restore instead of hanging.
async fn a_volume_name_policy_kubevirt_does_not_know_fails_with_its_message(backend: Backend) {
    let h = Harness::start_on(backend, "prefixpolicy").await.unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    let created = h
        .create(&clone_manifest(
            "c",
            "VirtualMachine",
            "vm",
            Some("t"),
            json!({"volumeNamePolicy": "PrefixTargetName"}),
        ))
        .await;
    if backend == Backend::KubeVirt {
        let error = format!("{:#}", created.unwrap_err());
        assert!(
            error.contains(r#"unknown field "spec.volumeNamePolicy""#),
            "{error}"
        );
        h.stop().await;
        return;
    }
    created.unwrap();
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(
        ready.reason.as_deref(),
        Some("RestoreCreationFailed"),
        "{ready:?}"
    );
    let message = ready.message.unwrap_or_default();
    assert!(
        message.contains(r#"volume restore policy "PrefixTargetName" doesn't exist"#),
        "{message}"
    );
    assert!(
        h.api::<VirtualMachine>()
            .get_opt("t")
            .await
            .unwrap()
            .is_none(),
        "a target was created"
    );
    h.stop().await;
}

/// A restore refused by KubeVirt's admission for an error of its own (HTTP 400) is retried with
/// backoff, with one event for the whole hold, and the clone succeeds once the error passes.
/// Stand-in only: virt-api's internal errors cannot be provoked on demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_refused_by_an_internal_error_is_retried_with_one_event() {
    let mut h = Harness::without_controller("internalerror").await.unwrap();
    h.annotate_namespace(kubevirt_sim::names::ADMISSION_ERROR_ANNOTATION, "")
        .await
        .unwrap();
    let telemetry = h.start_controller_with(|_| {});
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h
        .wait_ready_reason("c", "RestoreCreationFailed")
        .await
        .unwrap();
    let status = c.status.unwrap();
    assert_eq!(status.phase, ClonePhase::RestoreInProgress);
    let progressing = status.condition("Progressing").cloned().unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("Pending"));
    let message = progressing.message.unwrap_or_default();
    assert!(
        message.contains(kubevirt_sim::names::ADMISSION_INTERNAL_ERROR),
        "{message}"
    );
    // Three refusals (backoff 1 s, 2 s, 4 s), still one event.
    let refused = telemetry
        .metrics
        .reconciles
        .get_or_create(&clone_controller::telemetry::ResultLabel {
            result: "refused".into(),
        })
        .clone();
    wait_for("three refused attempts", CLONE_TIMEOUT, || async {
        ensure!(refused.get() >= 3, "{} refusals", refused.get());
        Ok(())
    })
    .await
    .unwrap();
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "RestoreCreationFailed"), 1, "{events:?}");

    h.unannotate_namespace(kubevirt_sim::names::ADMISSION_ERROR_ANNOTATION)
        .await
        .unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "RestoreCreationFailed"), 1, "{events:?}");
    assert_eq!(count(&events, "RestoreCreated"), 1, "{events:?}");
    h.stop().await;
}

/// A patch the API server's schema refuses (reproduced from the field: KubeVirt retried the
/// restore for ever) fails the clone up front: the target VM is dry-run first.
async fn a_patch_the_api_server_refuses_fails_before_anything_is_restored(backend: Backend) {
    let h = Harness::start_on(backend, "dryrun").await.unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    let patch = r#"{"op":"replace","path":"/spec/template/spec/domain/resources/requests/memory","value":"lots"}"#;
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({"patches": [patch]}),
    ))
    .await
    .unwrap();
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(ready.reason.as_deref(), Some("InvalidSpec"), "{ready:?}");
    let message = ready.message.unwrap_or_default();
    // The API server's schema names the field and the value; on a real cluster KubeVirt's VM
    // mutating webhook answers first, unable to decode the quantity.
    let judged = match backend {
        Backend::Sim => message.contains("memory") && message.contains("lots"),
        Backend::KubeVirt => message.contains("quantities must match the regular expression"),
    };
    let prefix = format!("target VM {}/t of clone c would be refused: ", h.ns);
    assert!(message.starts_with(&prefix) && judged, "{message}");
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "RestoreCreated"), 0, "{events:?}");
    // The failure releases the temporary snapshot; no restore and no target ever existed.
    wait_for("the temporary snapshot released", CLONE_TIMEOUT, || async {
        let (snapshots, restores, vms) = h.inventory().await?;
        ensure!(snapshots.is_empty(), "snapshots {snapshots:?}");
        ensure!(restores.is_empty(), "restores {restores:?}");
        ensure!(vms == ["vm"], "vms {vms:?}");
        Ok(())
    })
    .await
    .unwrap();
    h.stop().await;
}

/// A target VM the API server admits in a dry run but refuses for real (here a policy; on a
/// cluster a quota or a policy that skips dry runs): KubeVirt's restore reports the refusal and
/// retries for ever. The clone shows KubeVirt's text with one event, then fails after the stall
/// timeout and releases its temporary objects.
async fn a_restore_kubevirt_keeps_retrying_fails_after_the_stall_timeout(backend: Backend) {
    let mut h = Harness::without_controller_on(backend, "stall")
        .await
        .unwrap();
    let policy = RefuseRealCreates::install(&h, "t").await;
    h.start_controller_with(|config| {
        config.restore_stall_timeout = std::time::Duration::from_secs(20);
    });
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let c = h.wait_ready_reason("c", "RestoreError").await.unwrap();
    let status = c.status.unwrap();
    assert_eq!(status.phase, ClonePhase::RestoreInProgress);
    let message = status
        .condition("Progressing")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("retried by KubeVirt") && message.contains(RefuseRealCreates::MESSAGE),
        "{message}"
    );
    let c = h.wait_phase("c", ClonePhase::Failed).await.unwrap();
    let ready = c.status.unwrap().condition("Ready").cloned().unwrap();
    assert_eq!(ready.reason.as_deref(), Some("RestoreFailed"), "{ready:?}");
    let message = ready.message.unwrap_or_default();
    assert!(
        message.contains("made no progress for 20s")
            && message.contains(RefuseRealCreates::MESSAGE),
        "{message}"
    );
    // Events are published off the pass, after the status write the test saw: wait for them.
    let events = wait_for("the RestoreFailed event", CLONE_TIMEOUT, || async {
        let events = h.events("c").await?;
        ensure!(count(&events, "RestoreFailed") > 0, "{events:?}");
        Ok(events)
    })
    .await
    .unwrap();
    assert_eq!(count(&events, "RestoreError"), 1, "{events:?}");
    assert_eq!(count(&events, "RestoreFailed"), 1, "{events:?}");
    wait_for("the temporary objects released", CLONE_TIMEOUT, || async {
        let (snapshots, restores, vms) = h.inventory().await?;
        ensure!(snapshots.is_empty(), "snapshots {snapshots:?}");
        ensure!(restores.is_empty(), "restores {restores:?}");
        ensure!(vms == ["vm"], "vms {vms:?}");
        Ok(())
    })
    .await
    .unwrap();
    policy.remove(&h).await;
    h.stop().await;
}

/// A ValidatingAdmissionPolicy that refuses creating the VM `name` in the test's namespace
/// unless the request is a dry run.
struct RefuseRealCreates {
    name: String,
}

impl RefuseRealCreates {
    const MESSAGE: &'static str = "no room for this VM (refused by the test's policy)";

    async fn install(h: &Harness, vm: &str) -> RefuseRealCreates {
        let name = format!("refuse-real-creates-{}", h.ns);
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": ["kubevirt.io"], "apiVersions": ["*"],
                    "operations": ["CREATE"], "resources": ["virtualmachines"]}]},
                "validations": [{
                    "expression": format!("request.dryRun == true || !object.metadata.name.startsWith('{vm}')"),
                    "message": Self::MESSAGE,
                }],
            },
        });
        let binding = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": h.ns}}}},
        });
        h.apply(&common::list(&[policy.to_string(), binding.to_string()]))
            .await
            .unwrap();
        // Policies take effect a moment after they are stored: wait until a probe is refused
        // (a probe admitted before that is deleted, finalizers and all, before the next try).
        let probe = format!("{vm}-probe");
        let probe_manifest = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": probe},
            "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}},
        })
        .to_string();
        wait_for("the policy to refuse VMs", CLONE_TIMEOUT, || async {
            match h.create(&probe_manifest).await {
                Ok(_) => {
                    h.kubectl(
                        &["delete", "vm", &probe, "--wait=true", "--timeout=60s"],
                        None,
                    )
                    .await?;
                    anyhow::bail!("the probe VM was admitted")
                }
                Err(e) if e.to_string().contains(Self::MESSAGE) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .unwrap();
        RefuseRealCreates { name }
    }

    async fn remove(self, h: &Harness) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            h.kubectl(&["delete", kind, &self.name], None)
                .await
                .unwrap();
        }
    }
}

/// A controller context over caches fed by hand, not by watches: these clones, these VMs'
/// metadata and the cluster's KubeVirt CR, everything else empty. Its API calls go through
/// `client`. Also the handle that completes once the context is dropped and every event it queued
/// is created.
async fn hand_fed_context(
    h: &Harness,
    client: kube::Client,
    clones: &[VirtualMachineClone],
    vms: Vec<kube::core::PartialObjectMeta<VirtualMachine>>,
) -> (
    Arc<clone_controller::context::Context>,
    tokio::task::JoinHandle<()>,
) {
    use clone_api::kubevirt::KubeVirt;
    use clone_controller::context::{Caches, CloneMemory, Context, Synced};
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    let (synced, mark) = Synced::new::<()>();
    mark(&Event::InitDone);
    let (clone_store, mut clone_writer) = reflector::store::<VirtualMachineClone>();
    for clone in clones {
        clone_writer.apply_watcher_event(&Event::Apply(clone.clone()));
    }
    let (vm_store, mut vm_writer) = reflector::store();
    for vm in vms {
        vm_writer.apply_watcher_event(&Event::Apply(vm));
    }
    let (kubevirts, mut kubevirt_writer) = reflector::store::<KubeVirt>();
    for kv in Api::<KubeVirt>::all(h.client.clone())
        .list(&Default::default())
        .await
        .unwrap()
    {
        kubevirt_writer.apply_watcher_event(&Event::Apply(kv));
    }
    let caches = Caches {
        clones: clone_store,
        index: Default::default(),
        snapshots: reflector::store().0,
        restores: reflector::store().0,
        vms: vm_store,
        contents: reflector::store().0,
        claims: reflector::store().0,
        kubevirts,
        data_volumes: reflector::store().0,
        synced: vec![synced],
    };
    let telemetry = clone_controller::telemetry::Telemetry::default();
    // Events are published off the pass.
    let (publisher, flushed) =
        clone_controller::events::Publisher::start(h.client.clone(), Some("hand-fed".into()));
    let ctx = Context::new(
        client,
        clone_controller::Config {
            namespace: Some(h.ns.clone()),
            ..Default::default()
        },
        caches,
        publisher,
        telemetry.clone(),
        clone_controller::leader::Leadership::always(),
        Arc::new(CloneMemory::new(
            telemetry.metrics.clone_state_entries.clone(),
        )),
    );
    (Arc::new(ctx), flushed)
}

/// A pass woken from a cache that still holds the clone as it was before our last status write
/// must not redo that write's transition: here the same stale clone is reconciled twice, as a
/// wake-up by the new snapshot would before the clone's watch delivers the write. Without the
/// remembered write the second pass would create the snapshot again (`AlreadyExists`) and publish
/// `SnapshotCreated` a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_from_a_stale_cache_does_not_repeat_the_last_transition() {
    let h = Harness::without_controller("stale").await.unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.wait_snapshot_support_known("vm").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    let stale = std::sync::Arc::new(h.api::<VirtualMachineClone>().get("c").await.unwrap());

    // Caches fed by hand: the KubeVirt CR, the clone as first seen, nothing else (yet).
    let (ctx, flushed) = hand_fed_context(&h, h.client.clone(), &[(*stale).clone()], vec![]).await;

    clone_controller::reconcile::reconcile(stale.clone(), ctx.clone())
        .await
        .unwrap();
    let written = h.api::<VirtualMachineClone>().get("c").await.unwrap();
    assert_eq!(
        written.status.unwrap().phase,
        ClonePhase::SnapshotInProgress
    );
    // The cache has not caught up: the same stale object again.
    clone_controller::reconcile::reconcile(stale.clone(), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        ctx.memory.len(),
        1,
        "the write is remembered until the cache catches up"
    );
    // Once the cache shows the written version, the memory is dropped.
    let caught_up = std::sync::Arc::new(h.api::<VirtualMachineClone>().get("c").await.unwrap());
    clone_controller::reconcile::reconcile(caught_up, ctx.clone())
        .await
        .unwrap();
    assert!(ctx.memory.is_empty(), "{} entries", ctx.memory.len());
    // Three passes, one transition: one event, once every queued event is created.
    drop(ctx);
    flushed.await.unwrap();
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "SnapshotCreated"), 1, "{events:?}");
}

/// A client that records every request it sends (`METHOD /path`).
async fn recording_client(env: &testenv::TestEnv) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let layer = tower::util::MapRequestLayer::new({
        let sent = sent.clone();
        move |request: http::Request<kube::client::Body>| {
            let line = format!("{} {}", request.method(), request.uri().path());
            sent.lock().unwrap().push(line);
            request
        }
    });
    let kubeconfig = kube::config::Kubeconfig::read_from(env.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&layer)
        .build();
    (client, sent)
}

/// The passes that follow their own creates read nothing again: a source VM shared by three
/// clones is read once while the VM cache shows it unchanged, and the pass right after a
/// snapshot's create, before the snapshot's watch event arrived, takes it as created instead of
/// reading it back (the other two clones wait for that snapshot). Every request the controller
/// sends is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_read_a_shared_source_once_and_trust_their_own_creates() {
    let h = Harness::without_controller("reads").await.unwrap();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.wait_snapshot_support_known("vm").await.unwrap();
    let mut clones = Vec::new();
    for name in ["a", "b", "c"] {
        h.create(&clone_manifest(
            name,
            "VirtualMachine",
            "vm",
            Some(&format!("t-{name}")),
            json!({}),
        ))
        .await
        .unwrap();
        clones.push(Arc::new(
            h.api::<VirtualMachineClone>().get(name).await.unwrap(),
        ));
    }

    // Caches fed by hand: the clones as created, the source VM's metadata, the KubeVirt CR.
    let source = h.api::<VirtualMachine>().get_metadata("vm").await.unwrap();
    let (client, sent) = recording_client(h.env).await;
    let clone_objects: Vec<_> = clones.iter().map(|c| (**c).clone()).collect();
    let (ctx, _) = hand_fed_context(&h, client, &clone_objects, vec![source]).await;

    // Each clone twice: its first pass takes the snapshot, its second (from the same stale
    // caches) follows it.
    for _ in 0..2 {
        for clone in &clones {
            clone_controller::reconcile::reconcile(clone.clone(), ctx.clone())
                .await
                .unwrap();
        }
    }
    // `a` took the snapshot; `b` and `c` wait for it (clones of one VM snapshot it one at a time).
    let a = h.api::<VirtualMachineClone>().get("a").await.unwrap();
    assert_eq!(a.status.unwrap().phase, ClonePhase::SnapshotInProgress);
    let held_by = format!("tmp-snapshot-{}", a.metadata.uid.unwrap());
    for name in ["b", "c"] {
        let status = h
            .api::<VirtualMachineClone>()
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(status.phase, ClonePhase::Unset, "{name}");
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        let message = ready.message.as_deref().unwrap_or_default();
        assert!(
            message.contains(&format!("waiting for snapshot {held_by} of VM vm")),
            "{name}: {ready:?}"
        );
    }
    let sent = sent.lock().unwrap().clone();
    let gets = |resource: &str| {
        sent.iter()
            .filter(|line| line.starts_with("GET ") && line.contains(resource))
            .count()
    };
    assert_eq!(gets("/virtualmachines/vm"), 1, "{sent:#?}");
    assert_eq!(gets("/virtualmachinesnapshots/"), 0, "{sent:#?}");
    let creates = sent
        .iter()
        .filter(|line| line.starts_with("POST ") && line.ends_with("/virtualmachinesnapshots"))
        .count();
    assert_eq!(creates, 1, "one snapshot of the VM at a time: {sent:#?}");
}

/// Per-clone state is bounded: clones that keep failing hold a backoff entry each, and deleting
/// them removes every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_failing_clones_leave_no_state_behind() {
    let mut h = Harness::without_controller("memory").await.unwrap();
    h.annotate_namespace(kubevirt_sim::names::ADMISSION_ERROR_ANNOTATION, "")
        .await
        .unwrap();
    let telemetry = h.start_controller_with(|_| {});
    let entries = telemetry.metrics.clone_state_entries.clone();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    for name in ["a", "b", "c"] {
        h.create(&clone_manifest(
            name,
            "VirtualMachine",
            "vm",
            Some(&format!("t-{name}")),
            json!({}),
        ))
        .await
        .unwrap();
    }
    wait_for(
        "a backoff entry per refused clone",
        CLONE_TIMEOUT,
        || async {
            ensure!(entries.get() >= 3, "{} entries", entries.get());
            Ok(())
        },
    )
    .await
    .unwrap();
    h.kubectl(&["delete", "vmclone", "a", "b", "c"], None)
        .await
        .unwrap();
    wait_for("no per-clone state left", CLONE_TIMEOUT, || async {
        ensure!(entries.get() == 0, "{} entries", entries.get());
        Ok(())
    })
    .await
    .unwrap();
    h.stop().await;
}

testenv::on_both_backends!(
    the_seed_flow_with_kubectl,
    golden_image_five_clones,
    clones_of_one_vm_take_their_snapshots_one_at_a_time,
    an_existing_vm_is_never_touched,
    two_clones_racing_for_one_target,
    a_clone_waits_for_its_source_and_warns_once,
    volumes_without_snapshot_support_hold_the_clone,
    a_source_with_backend_storage_fails,
    deleting_the_target_deletes_the_clone,
    deleting_a_clone_midway_leaves_no_temporary_objects,
    wffc_storage_cleans_up_when_the_target_starts,
    a_controller_killed_midway_completes_after_restart_with_one_of_everything,
    a_temp_snapshot_deleted_midway_fails_the_clone,
    a_patch_the_api_server_refuses_fails_before_anything_is_restored,
    a_restore_kubevirt_keeps_retrying_fails_after_the_stall_timeout,
    the_source_may_go_once_the_snapshot_is_ready,
    a_source_with_data_volume_templates_clones,
    a_source_deleted_mid_snapshot_still_clones,
    a_volume_name_policy_kubevirt_does_not_know_fails_with_its_message,
);
