//! An object the controller cannot decode must not block its caches nor stall other clones; the
//! clone whose own object it is waits, saying which object and why, and resumes once the object
//! reads again.
//!
//! A test binary of its own: it relaxes the `virtualmachinesnapshots.snapshot.kubevirt.io` CRD
//! (its `status` becomes free-form, as a newer KubeVirt's might hold a shape this controller does
//! not know), which no other test may see, and runs the controller for all namespaces. Each test
//! binary is its own process, so [`testenv::TestEnv::shared`] here is this binary's own control
//! plane.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use common::{CLONE_TIMEOUT, Harness, clone_manifest, count};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use testenv::wait_for;

const SNAPSHOT_CRD: &str = "virtualmachinesnapshots.snapshot.kubevirt.io";
/// The clone whose source snapshot cannot be read, and that snapshot.
const ODD_CLONE: &str = "odd";
const ODD_SNAPSHOT: &str = "odd-snap";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_snapshot_holds_only_its_own_clone() {
    let started = Instant::now();
    // The sim (KubeVirt's stand-in) runs in `h.ns` only; the odd snapshot lives in a namespace of
    // its own where no sim runs, so nothing but this test ever writes its status.
    let mut h = Harness::without_controller("unread").await.unwrap();
    relax_snapshot_status_schema(&h.client).await.unwrap();
    let odd_ns = h.env.namespace("unread-odd").await.unwrap();
    // For failure messages only: blocking is fine then.
    let dump = |ns: &str| {
        h.env
            .kubectl()
            .args(["-n", ns, "get", "vmclone,vmsnapshot", "-o", "yaml"])
            .output()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text).into_owned()
            })
            .unwrap_or_else(|e| format!("kubectl failed: {e:#}"))
    };

    // A snapshot as a newer KubeVirt might write it: `readyToUse` is a string.
    let snapshots = snapshot_api(&h.client, &odd_ns);
    let snapshot: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": ODD_SNAPSHOT},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "gone"}},
    }))
    .unwrap();
    snapshots
        .create(&PostParams::default(), &snapshot)
        .await
        .unwrap();
    set_ready_to_use(&snapshots, json!("yes")).await.unwrap();

    // Its clone, in the same namespace; both exist before the controller's first list.
    h.env
        .kubectl_output(
            &["-n", &odd_ns, "create", "-f", "-"],
            Some(&clone_manifest(
                ODD_CLONE,
                "VirtualMachineSnapshot",
                ODD_SNAPSHOT,
                Some("odd-target"),
                json!({}),
            )),
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    h.start_controller_with(|config| config.namespace = None);

    // A normal clone in the same controller completes: the snapshot cache is not blocked.
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
    let normal = Instant::now();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let normal = normal.elapsed();

    // The odd clone is held, naming the object and the field, with one Warning event.
    let clones: Api<VirtualMachineClone> = Api::namespaced(h.client.clone(), &odd_ns);
    let (phase, message) = wait_ready(&clones, "ObjectUnreadable", |_| true)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", dump(&odd_ns)))
        .unwrap();
    assert_eq!(phase, ClonePhase::Unset, "the hold must not move the phase");
    let object = format!("cannot read VirtualMachineSnapshot {odd_ns}/{ODD_SNAPSHOT}: ");
    assert!(message.starts_with(&object), "{message}");
    assert!(
        message.contains("status.readyToUse") && message.contains("\"yes\""),
        "the message names the field and the value: {message}"
    );
    assert!(
        message
            .ends_with("(written by a newer KubeVirt? this controller waits until it can read it)"),
        "{message}"
    );
    let events = wait_events(&h.client, &odd_ns, |e| count(e, "ObjectUnreadable") >= 1)
        .await
        .unwrap();
    let unreadable: Vec<_> = events
        .iter()
        .filter(|e| e.1 == "ObjectUnreadable")
        .collect();
    assert_eq!(unreadable.len(), 1, "{events:?}");
    assert_eq!(unreadable[0].0, "Warning", "{events:?}");
    assert_eq!(unreadable[0].2, message, "{events:?}");

    // Another shape the controller cannot read either: the message follows the object, and the
    // hold, already started, makes no second event.
    set_ready_to_use(&snapshots, json!(7)).await.unwrap();
    let (phase, message) = wait_ready(&clones, "ObjectUnreadable", |m| m.contains("integer `7`"))
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", dump(&odd_ns)))
        .unwrap();
    assert_eq!(phase, ClonePhase::Unset);
    assert!(message.starts_with(&object), "{message}");

    // Fixed: the hold lifts and the clone waits for its snapshot like any other.
    set_ready_to_use(&snapshots, json!(false)).await.unwrap();
    let (phase, message) = wait_ready(&clones, "SnapshotInProgress", |_| true)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", dump(&odd_ns)))
        .unwrap();
    assert_eq!(phase, ClonePhase::SnapshotInProgress);
    assert_eq!(
        message,
        format!("waiting for snapshot {ODD_SNAPSHOT} to be ready")
    );
    let events = common::events_in(&h.client, &odd_ns, ODD_CLONE)
        .await
        .unwrap();
    assert_eq!(count(&events, "ObjectUnreadable"), 1, "{events:?}");

    h.stop().await;
    eprintln!(
        "unreadable: normal clone succeeded in {:.1}s; whole test {:.1}s",
        normal.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Makes `status` of every version of the snapshot CRD a free-form object (this test's own control
/// plane), and waits until the API server stores a status it used to refuse.
async fn relax_snapshot_status_schema(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = crds.get(SNAPSHOT_CRD).await?;
    let free_form = JSONSchemaProps {
        type_: Some("object".into()),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..JSONSchemaProps::default()
    };
    for version in &mut crd.spec.versions {
        let properties = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .with_context(|| format!("version {} has no schema properties", version.name))?;
        ensure!(
            properties.contains_key("status"),
            "version {} has no status schema",
            version.name
        );
        properties.insert("status".into(), free_form.clone());
    }
    crds.replace(SNAPSHOT_CRD, &PostParams::default(), &crd)
        .await?;
    Ok(())
}

fn snapshot_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("snapshot.kubevirt.io", "v1beta1", "VirtualMachineSnapshot");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Writes `status.readyToUse` through the status subresource (untyped: the test must not depend
/// on decoding what it writes) and waits until it is stored as given (the API server may take a
/// moment to serve a changed CRD schema).
async fn set_ready_to_use(snapshots: &Api<DynamicObject>, value: Value) -> Result<()> {
    let patch = json!({"status": {"readyToUse": value}});
    wait_for(
        &format!("snapshot {ODD_SNAPSHOT} to store status.readyToUse = {value}"),
        CLONE_TIMEOUT,
        || async {
            snapshots
                .patch_status(ODD_SNAPSHOT, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            let stored = snapshots.get(ODD_SNAPSHOT).await?;
            let seen = stored.data.pointer("/status/readyToUse").cloned();
            ensure!(seen.as_ref() == Some(&value), "stored: {seen:?}");
            Ok(())
        },
    )
    .await
}

/// Waits until the clone's Ready condition has `reason` and a message `message_ok` accepts;
/// returns the phase and that message.
async fn wait_ready(
    clones: &Api<VirtualMachineClone>,
    reason: &str,
    message_ok: impl Fn(&str) -> bool,
) -> Result<(ClonePhase, String)> {
    wait_for(
        &format!("clone {ODD_CLONE} Ready reason {reason}"),
        CLONE_TIMEOUT,
        || async {
            let status = clones.get(ODD_CLONE).await?.status.unwrap_or_default();
            let ready = status.condition("Ready").cloned().unwrap_or_default();
            let message = ready.message.clone().unwrap_or_default();
            ensure!(
                ready.reason.as_deref() == Some(reason) && message_ok(&message),
                "status: {}",
                serde_json::to_string(&status)?
            );
            Ok((status.phase, message))
        },
    )
    .await
}

/// Waits until the odd clone's events satisfy `done`; returns them.
async fn wait_events(
    client: &Client,
    ns: &str,
    done: impl Fn(&[(String, String, String)]) -> bool,
) -> Result<Vec<(String, String, String)>> {
    wait_for(
        &format!("events of clone {ns}/{ODD_CLONE}"),
        CLONE_TIMEOUT,
        || async {
            let events = common::events_in(client, ns, ODD_CLONE).await?;
            ensure!(done(&events), "events: {events:?}");
            Ok(events)
        },
    )
    .await
}
