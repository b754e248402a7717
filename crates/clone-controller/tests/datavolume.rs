//! The DataVolume strategy end to end, as the OpenShift chapter's flows and `docs/user-guide.md`
//! describe them, on both backends: the manifests of `manifests/examples/datavolume/` applied with
//! `kubectl` as the guide says. KubeVirt's VM controller (the real one, or the stand-in's) creates
//! the DataVolumes from the target's templates; the stand-in plays CDI on both.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use clone_api::v1beta1::ClonePhase;
use common::{Backend, Harness, count};
use serde_json::Value;
use testenv::wait_for;

fn example(name: &str) -> String {
    let path = format!(
        "{}/../../manifests/examples/datavolume/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn get_json(h: &Harness, kind: &str, name: &str) -> Value {
    let yaml = h
        .kubectl(&["get", kind, name, "-o", "yaml"], None)
        .await
        .unwrap();
    serde_saphyr::from_str(&yaml).unwrap()
}

/// The stopped source VMs `db` (Filesystem disk) and `db-block` (Block disk) of the guide.
async fn with_sources(backend: Backend, prefix: &str) -> Harness {
    let h = Harness::start_on(backend, prefix).await.unwrap();
    h.create(&example("source-vms.yaml")).await.unwrap();
    h
}

async fn ready(h: &Harness, clone: &str) -> (String, String) {
    let c = get_json(h, "vmclone", clone).await;
    let condition = c["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    (
        condition["reason"].as_str().unwrap_or_default().to_owned(),
        condition["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Filesystem and Block VMs cloned with the DataVolume strategy: the target's templates clone the
/// source claims with their shape, KubeVirt creates the DataVolumes, CDI fills them, and the
/// target is owned by nothing.
async fn filesystem_and_block_vms_clone_through_datavolumes(backend: Backend) {
    let h = with_sources(backend, "dvclone").await;
    h.create(&example("clone.yaml")).await.unwrap();
    h.create(&example("clone-block.yaml")).await.unwrap();
    h.kubectl_wait_ready("vmclone", "db-clone").await.unwrap();
    h.kubectl_wait_ready("vmclone", "db-block-clone")
        .await
        .unwrap();

    for (clone, target, claim, mode) in [
        ("db-clone", "db-copy", "db-root", "Filesystem"),
        ("db-block-clone", "db-block-copy", "db-block-root", "Block"),
    ] {
        let c = get_json(&h, "vmclone", clone).await;
        assert_eq!(c["status"]["phase"], "Succeeded");
        assert_eq!(c["status"]["targetName"], target);
        assert!(c["status"]["creationTime"].is_string());
        let vm = get_json(&h, "vm", target).await;
        assert!(
            vm["metadata"].get("ownerReferences").is_none(),
            "the target is owned: {vm}"
        );
        let template = &vm["spec"]["dataVolumeTemplates"][0];
        assert_eq!(template["spec"]["source"]["pvc"]["name"], claim);
        assert_eq!(
            template["spec"]["source"]["pvc"]["namespace"],
            h.ns.as_str()
        );
        assert_eq!(template["spec"]["pvc"]["volumeMode"], mode);
        assert_eq!(
            template["spec"]["pvc"]["resources"]["requests"]["storage"],
            "2Gi"
        );
        assert_eq!(vm["spec"]["runStrategy"], "Halted");
        let dv_name = template["metadata"]["name"].as_str().unwrap();
        let dv = get_json(&h, "datavolume", dv_name).await;
        assert_eq!(dv["status"]["phase"], "Succeeded", "{dv}");
        let pvc = get_json(&h, "pvc", dv_name).await;
        assert_eq!(pvc["spec"]["volumeMode"], mode);
        // The last volume's event follows the status write that says Succeeded.
        let events = h.wait_event(clone, "VolumeCloned").await.unwrap();
        assert_eq!(count(&events, "TargetVMCreated"), 1, "{events:?}");
        assert_eq!(count(&events, "VolumeCloned"), 1, "{events:?}");
    }
    // No snapshot, no restore: the DataVolume strategy needs neither.
    let (snapshots, restores, _) = h.inventory().await.unwrap();
    assert!(
        snapshots.is_empty() && restores.is_empty(),
        "{snapshots:?} {restores:?}"
    );
    // The sources are untouched and stay stopped.
    assert_eq!(
        get_json(&h, "vm", "db").await["spec"]["runStrategy"],
        "Halted"
    );
    h.stop().await;
}

/// `Auto` picks DataVolume for a disk without snapshot support and Snapshot for one with it, and
/// says which in the first event and the `Progressing` message.
async fn auto_chooses_each_strategy(backend: Backend) {
    let h = with_sources(backend, "dvauto").await;
    h.wait_snapshot_support_known("db").await.unwrap();
    h.create(&example("clone-auto.yaml")).await.unwrap();
    let events = h
        .wait_event("db-auto-clone", "TargetVMCreated")
        .await
        .unwrap();
    let created = events.iter().find(|e| e.1 == "TargetVMCreated").unwrap();
    assert!(
        created.2.ends_with(
            "(vmclone.dev/strategy Auto chose DataVolume: volume root does not support snapshots)"
        ),
        "{created:?}"
    );
    h.kubectl_wait_ready("vmclone", "db-auto-clone")
        .await
        .unwrap();

    // A VM on snapshot-capable storage: Snapshot.
    h.create_source_vm("snapvm", "sim-snapshot").await.unwrap();
    h.wait_snapshot_support_known("snapvm").await.unwrap();
    let auto = example("clone-auto.yaml")
        .replace("name: db-auto-clone", "name: snap-auto-clone")
        .replace("name: db\n", "name: snapvm\n")
        .replace("db-auto-copy", "snap-auto-copy");
    h.create(&auto).await.unwrap();
    let events = h
        .wait_event("snap-auto-clone", "SnapshotCreated")
        .await
        .unwrap();
    let created = events.iter().find(|e| e.1 == "SnapshotCreated").unwrap();
    assert!(
        created.2.ends_with(
            "(vmclone.dev/strategy Auto chose Snapshot: every volume supports snapshots)"
        ),
        "{created:?}"
    );
    h.kubectl_wait_ready("vmclone", "snap-auto-clone")
        .await
        .unwrap();
    let vm = get_json(&h, "vm", "snap-auto-copy").await;
    assert!(vm["spec"].get("dataVolumeTemplates").is_none(), "{vm}");
    h.stop().await;
}

/// The chapter's pre-flight checks: a smaller target and a volume-mode change fail before
/// anything is created, with CDI's messages.
async fn the_seeds_checks_fail_with_the_chapters_messages(backend: Backend) {
    let h = with_sources(backend, "dvchecks").await;
    h.create(&example("clone-too-small.yaml")).await.unwrap();
    h.create(&example("clone-wrong-mode.yaml")).await.unwrap();
    h.wait_phase("db-small-clone", ClonePhase::Failed)
        .await
        .unwrap();
    h.wait_phase("db-mode-clone", ClonePhase::Failed)
        .await
        .unwrap();
    assert_eq!(
        ready(&h, "db-small-clone").await,
        (
            "DataVolumeInvalid".to_owned(),
            "target resources requests storage size is smaller than the source (volume root)"
                .to_owned()
        )
    );
    assert_eq!(
        ready(&h, "db-mode-clone").await,
        (
            "DataVolumeInvalid".to_owned(),
            "source volumeMode (Block) and target volumeMode (Filesystem) do not match (volume root)"
                .to_owned()
        )
    );
    let (_, _, vms) = h.inventory().await.unwrap();
    assert_eq!(vms, ["db", "db-block"], "a VM was created");
    h.stop().await;
}

/// A running source holds the clone (`SourceVMRunning`, naming the VM) until it is stopped.
async fn a_running_source_waits_until_it_is_stopped(backend: Backend) {
    let h = with_sources(backend, "dvrunning").await;
    set_run_strategy(&h, "db", "Always").await;
    h.create(&example("clone.yaml")).await.unwrap();
    h.wait_ready_reason("db-clone", "SourceVMRunning")
        .await
        .unwrap();
    let (_, message) = ready(&h, "db-clone").await;
    assert_eq!(
        message,
        format!(
            "source VM {ns}/db is running: the DataVolume strategy clones only a stopped VM (stop it, for example with virtctl stop db -n {ns})",
            ns = h.ns
        )
    );
    let (_, _, vms) = h.inventory().await.unwrap();
    assert!(!vms.iter().any(|v| v == "db-copy"), "created while running");
    set_run_strategy(&h, "db", "Halted").await;
    if backend == Backend::KubeVirt {
        // Without virt-handler (it needs a node's hardware) nothing releases the stopped VMI's
        // finalizers; play its part, so that KubeVirt's VM controller reports `Stopped`.
        release_vmi(&h, "db").await;
    }
    h.kubectl_wait_ready("vmclone", "db-clone").await.unwrap();
    let events = h.events("db-clone").await.unwrap();
    assert_eq!(count(&events, "SourceVMRunning"), 1, "{events:?}");
    h.stop().await;
}

/// `kubectl patch` of a VM's run strategy.
async fn set_run_strategy(h: &Harness, vm: &str, strategy: &str) {
    let patch = format!(r#"{{"spec":{{"runStrategy":"{strategy}"}}}}"#);
    h.kubectl(&["patch", "vm", vm, "--type=merge", "-p", &patch], None)
        .await
        .unwrap();
}

/// Does virt-handler's part of stopping a VM: once KubeVirt deletes the VMI, drop its finalizers.
async fn release_vmi(h: &Harness, name: &str) {
    wait_for(
        &format!("VMI {name} released"),
        Duration::from_secs(120),
        || async {
            let found = h
                .kubectl(
                    &["get", "vmi", name, "--ignore-not-found", "-o", "yaml"],
                    None,
                )
                .await?;
            if found.trim().is_empty() {
                return Ok(());
            }
            let vmi: Value = serde_saphyr::from_str(&found)?;
            anyhow::ensure!(
                vmi["metadata"]["deletionTimestamp"].is_string(),
                "VMI {name} not deleted yet"
            );
            h.kubectl(
                &[
                    "patch",
                    "vmi",
                    name,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ],
                None,
            )
            .await?;
            anyhow::bail!("VMI {name} released, waiting for it to go")
        },
    )
    .await
    .unwrap();
}

/// While CDI copies slowly, `kubectl get vmclone -o yaml` shows each volume's percentage.
async fn progress_is_visible_while_cdi_is_slow(backend: Backend) {
    let h = with_sources(backend, "dvprogress").await;
    h.kubectl(
        &[
            "annotate",
            "pvc",
            "db-root",
            "sim.vmclone.dev/clone-seconds=20",
        ],
        None,
    )
    .await
    .unwrap();
    h.create(&example("clone.yaml")).await.unwrap();
    let seen = wait_for(
        "a percentage in the clone's Progressing message",
        Duration::from_secs(120),
        || async {
            let c = get_json(&h, "vmclone", "db-clone").await;
            let message = c["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Progressing")
                .and_then(|c| c["message"].as_str())
                .unwrap_or_default()
                .to_owned();
            let percent = message
                .strip_prefix("DataVolume strategy: cloning 1 volume: root ")
                .and_then(|p| p.strip_suffix('%'))
                .and_then(|p| p.parse::<f64>().ok());
            anyhow::ensure!(
                percent.is_some_and(|p| p > 0.0 && p < 100.0),
                "message: {message:?}"
            );
            Ok(message)
        },
    )
    .await
    .unwrap();
    assert!(seen.ends_with('%'), "{seen}");
    h.kubectl_wait_ready("vmclone", "db-clone").await.unwrap();
    h.stop().await;
}

testenv::on_both_backends!(
    filesystem_and_block_vms_clone_through_datavolumes,
    auto_chooses_each_strategy,
    the_seeds_checks_fail_with_the_chapters_messages,
    a_running_source_waits_until_it_is_stopped,
    progress_is_visible_while_cdi_is_slow,
);

/// The user guide shows the manifests these tests apply, verbatim.
#[test]
fn the_user_guide_quotes_every_manifest_verbatim() {
    let guide = std::fs::read_to_string(format!(
        "{}/../../docs/user-guide.md",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let dir = format!(
        "{}/../../manifests/examples/datavolume",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !guide.contains(&text) {
            missing.push(path.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "not quoted in docs/user-guide.md: {missing:?}"
    );
}
