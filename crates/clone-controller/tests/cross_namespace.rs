//! A clone across namespaces (`vmclone.dev/source-namespace`), as `docs/user-guide.md` shows it:
//! refused with `Unauthorized` until the OpenShift chapter's ClusterRole and RoleBinding exist,
//! then cloned through DataVolumes that KubeVirt authorises again on its own.
//!
//! Its own test binary: the namespaces have the guide's fixed names (`golden-images`, `team-a`),
//! and the stand-in acts in both, so one test per backend (each backend is its own control plane).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use clone_api::v1beta1::ClonePhase;
use common::{Backend, Harness, count, ensure_namespace};
use serde_json::Value;

const SOURCE_NS: &str = "golden-images";
const TARGET_NS: &str = "team-a";

fn example(name: &str) -> String {
    let path = format!(
        "{}/../../manifests/examples/datavolume/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn a_cross_namespace_clone_needs_the_chapters_rbac(backend: Backend) {
    let mut h = Harness::cluster_wide_on(backend, TARGET_NS).await.unwrap();
    h.start_controller();
    ensure_namespace(h.env, SOURCE_NS).await.unwrap();
    h.env
        .kubectl_output(
            &["create", "-n", SOURCE_NS, "-f", "-"],
            Some(&example("source-vms.yaml")),
        )
        .await
        .unwrap()
        .ok()
        .unwrap();

    // Without the RoleBinding: refused before anything is created, with the exact message.
    h.create(&example("clone-cross-namespace.yaml"))
        .await
        .unwrap();
    let failed = h
        .wait_phase("db-from-golden", ClonePhase::Failed)
        .await
        .unwrap();
    let ready = failed
        .status
        .as_ref()
        .and_then(|s| s.condition("Ready"))
        .cloned()
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("Unauthorized"));
    assert_eq!(
        ready.message.as_deref(),
        Some(
            "User system:serviceaccount:team-a:default has insufficient permissions in clone source namespace golden-images"
        )
    );
    let (_, _, vms) = h.inventory().await.unwrap();
    assert!(vms.is_empty(), "created without permission: {vms:?}");
    let events = h
        .wait_event("db-from-golden", "Unauthorized")
        .await
        .unwrap();
    assert_eq!(count(&events, "Unauthorized"), 1, "{events:?}");

    // With the chapter's ClusterRole and RoleBinding: the same clone succeeds.
    h.kubectl(&["delete", "vmclone", "db-from-golden", "--wait"], None)
        .await
        .unwrap();
    h.env
        .kubectl_output(
            &["create", "-f", "-"],
            Some(&example("datavolume-cloner.yaml")),
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    h.create(&example("clone-cross-namespace.yaml"))
        .await
        .unwrap();
    h.kubectl_wait_ready("vmclone", "db-from-golden")
        .await
        .unwrap();
    let yaml = h
        .kubectl(&["get", "vm", "db-copy", "-o", "yaml"], None)
        .await
        .unwrap();
    let vm: Value = serde_saphyr::from_str(&yaml).unwrap();
    let source = &vm["spec"]["dataVolumeTemplates"][0]["spec"]["source"]["pvc"];
    assert_eq!(source["namespace"], SOURCE_NS);
    assert_eq!(source["name"], "db-root");
    let dv = vm["spec"]["dataVolumeTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let yaml = h
        .kubectl(&["get", "datavolume", &dv, "-o", "yaml"], None)
        .await
        .unwrap();
    let dv: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(dv["status"]["phase"], "Succeeded", "{dv}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_a_cross_namespace_clone_needs_the_chapters_rbac() {
    a_cross_namespace_clone_needs_the_chapters_rbac(Backend::Sim).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubevirt_a_cross_namespace_clone_needs_the_chapters_rbac() {
    a_cross_namespace_clone_needs_the_chapters_rbac(Backend::KubeVirt).await
}
