//! The OpenShift chapter's cross-namespace clone through `dataVolumeTemplates`: without RBAC the
//! VM controller refuses (event `UnauthorizedDataVolumeCreate`, no DataVolume); with the
//! chapter's ClusterRole and a RoleBinding for the VM's service account in the source namespace,
//! the DataVolume is created and the clone succeeds.
//!
//! Its own test binary (so its own control plane): the sim here is not scoped to one namespace.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use kubevirt_sim::{Sim, SimConfig};
use serde_json::json;

#[tokio::test]
async fn an_unauthorised_cross_namespace_template_clone_is_refused_until_rbac_allows_it() {
    let world = World::without_sim("sim-xns-dst").await;
    let golden = world.env.namespace("sim-xns-src").await.unwrap();
    let sim = Sim::start(world.client.clone(), SimConfig::default())
        .await
        .unwrap();

    world
        .create(
            &world.pvcs_in(&golden),
            pvc("golden-disk", "sim-snapshot", "1Gi"),
        )
        .await;
    let template = json!({
        "metadata": {"name": "vm-root"},
        "spec": {
            "source": {"pvc": {"namespace": golden, "name": "golden-disk"}},
            "storage": {"storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "1Gi"}}},
        },
    });
    let volumes = vec![json!({"name": "root", "dataVolume": {"name": "vm-root"}})];
    world
        .create(&world.vms(), vm("vm", "Halted", volumes, vec![template]))
        .await;

    let message = world.wait_event("vm", "UnauthorizedDataVolumeCreate").await;
    assert_eq!(
        message,
        format!(
            "Not authorized to create DataVolume vm-root: User system:serviceaccount:{}:default has insufficient permissions in clone source namespace {golden}",
            world.ns
        )
    );
    assert!(world.dvs().get_opt("vm-root").await.unwrap().is_none());
    world
        .wait(&world.vms(), "vm", "provisioning", |vm| {
            vm["status"]["printableStatus"] == "Provisioning"
        })
        .await;

    // The chapter's RBAC: a ClusterRole for datavolumes/source, bound in the source namespace to
    // the default service account of the VM's namespace.
    let roles: Api<ClusterRole> = Api::all(world.client.clone());
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": format!("datavolume-cloner-{}", world.ns)},
        "rules": [{"apiGroups": ["cdi.kubevirt.io"], "resources": ["datavolumes/source"], "verbs": ["*"]}],
    }))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(world.client.clone(), &golden);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "allow-clone-to-user"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": world.ns}],
        "roleRef": {"kind": "ClusterRole", "name": format!("datavolume-cloner-{}", world.ns), "apiGroup": "rbac.authorization.k8s.io"},
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let dv = world
        .wait(&world.dvs(), "vm-root", "the clone succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    assert_eq!(dv["spec"]["source"]["pvc"]["namespace"], golden.as_str());
    assert_eq!(dv["metadata"]["ownerReferences"][0]["name"], "vm");
    assert_eq!(
        dv["metadata"]["annotations"]["cdi.kubevirt.io/allowClaimAdoption"],
        "true"
    );
    world.wait_event("vm", "SuccessfulDataVolumeCreate").await;
    world
        .wait(&world.vms(), "vm", "stopped", |vm| {
            vm["status"]["printableStatus"] == "Stopped"
        })
        .await;
    sim.stop().await;
}
