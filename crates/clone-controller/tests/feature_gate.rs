//! The Snapshot feature gate, read from the KubeVirt CR. A test binary of its own: the KubeVirt
//! CR is cluster-wide, so these steps cannot share a control plane with other tests.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use clone_api::v1beta1::ClonePhase;
use common::{Harness, clone_manifest, count, ensure_kubevirt};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_wait_for_kubevirt_and_its_snapshot_gate() {
    let mut h = Harness::with_kubevirt("gate", None).await.unwrap();
    h.start_controller();
    h.create_source_vm("vm", "sim-snapshot").unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
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

    // Turning the gate on resumes the clone (the KubeVirt CR is watched).
    ensure_kubevirt(&h.client, &["Snapshot"]).await.unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let events = h.events("c").await.unwrap();
    assert_eq!(count(&events, "KubeVirtNotFound"), 1, "{events:?}");
    assert_eq!(count(&events, "FeatureGateDisabled"), 1, "{events:?}");
    h.stop().await;
}
