//! The Snapshot feature gate, read from the KubeVirt CR by the rule of the KubeVirt release it
//! reports. A test binary of its own: the KubeVirt CR is cluster-wide, so these steps cannot
//! share a control plane with other tests.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use clone_api::kubevirt::KubeVirt;
use clone_api::v1beta1::ClonePhase;
use common::{Harness, clone_manifest, count, ensure_kubevirt};
use kube::api::{Api, Patch, PatchParams};
use kubevirt_sim::names::HOLD_SNAPSHOT_READY_ANNOTATION;
use serde_json::json;

/// Sets the KubeVirt CR's `status.observedKubeVirtVersion`, as virt-operator does after an
/// upgrade.
async fn set_observed_version(h: &Harness, version: &str) {
    Api::<KubeVirt>::namespaced(h.client.clone(), "kubevirt")
        .patch_status(
            "kubevirt",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedKubeVirtVersion": version}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_wait_for_kubevirt_and_its_snapshot_gate() {
    let mut h = Harness::with_kubevirt("gate", None).await.unwrap();
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

    let c = h.wait_ready_reason("c", "KubeVirtNotFound").await.unwrap();
    assert_eq!(c.status.unwrap().phase, ClonePhase::Unset);

    ensure_kubevirt(&h.client, &[]).await.unwrap();
    let c = h
        .wait_ready_reason("c", "FeatureGateDisabled")
        .await
        .unwrap();
    let status = c.status.unwrap();
    assert_eq!(status.phase, ClonePhase::Unset);
    assert_eq!(
        status
            .condition("Ready")
            .and_then(|c| c.message.clone())
            .as_deref(),
        Some("snapshot feature gate is not enabled")
    );

    // From KubeVirt v1.9 a Beta gate is on unless disabled: once the CR says it runs v1.9.0,
    // the clone goes ahead (its snapshot is held at its first step here, so it stays there).
    h.annotate_namespace(HOLD_SNAPSHOT_READY_ANNOTATION, "true")
        .await
        .unwrap();
    set_observed_version(&h, "v1.9.0").await;
    let c = h
        .wait_phase("c", ClonePhase::SnapshotInProgress)
        .await
        .unwrap();
    assert!(c.status.unwrap().snapshot_name.is_some());

    // Back to v1.7.0 with the gate listed (the stand-in plays v1.7.0's restore admission, which
    // reads the list): the clone finishes.
    set_observed_version(&h, "v1.7.0").await;
    ensure_kubevirt(&h.client, &["Snapshot"]).await.unwrap();
    h.unannotate_namespace(HOLD_SNAPSHOT_READY_ANNOTATION)
        .await
        .unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "KubeVirtNotFound"), 1, "{events:?}");
    assert_eq!(count(&events, "FeatureGateDisabled"), 1, "{events:?}");
    h.stop().await;
}
