//! Failure injection produces upstream's failure shapes: a failed snapshot (phase `Failed`,
//! `Failure` condition `snapshot deadline exceeded`), a failed restore (`Failure` condition of
//! the target-readiness policy), a refused restore (the API server's answer with the injected
//! message), virt-api's internal error (400 from the restore webhook) — per object or namespace
//! through annotations, or for a whole sim by configuration. And the failures KubeVirt v1.7.0
//! retries for ever: a restore whose patches do not apply or whose VM cannot be created.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kubevirt_sim::SimConfig;
use kubevirt_sim::webhook::{RestoreWebhook, WebhookConfig};
use serde_json::{Value, json};
use testenv::wait_for;

const RESTORE_FAILED: &str = "Restore target VMI must be powered off before restore operation";

fn container_disk_vm(name: &str, annotations: Value) -> Value {
    let volumes = vec![
        json!({"name": "cd", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}}),
    ];
    let mut vm = vm(name, "Halted", volumes, vec![]);
    if let Some(map) = annotations.as_object() {
        for (k, v) in map {
            vm["metadata"]["annotations"][k] = v.clone();
        }
    }
    vm
}

fn assert_snapshot_failed(snapshot: &Value) {
    assert_eq!(phase(snapshot), "Failed", "{snapshot:#}");
    let failure = condition(snapshot, "Failure").expect("a Failure condition");
    assert_eq!(failure["status"], "True");
    assert_eq!(failure["reason"], "snapshot deadline exceeded");
    assert_eq!(
        condition(snapshot, "Progressing").unwrap()["reason"],
        "Operation failed"
    );
    assert!(condition_is(snapshot, "Ready", "False"));
    assert_eq!(snapshot["status"]["readyToUse"], false);
    // Upstream writes no `status.error` for a passed deadline (only a content's errors).
    assert!(snapshot["status"].get("error").is_none(), "{snapshot:#}");
}

fn assert_restore_failed(restore: &Value) {
    let failure = condition(restore, "Failure").expect("a Failure condition");
    assert_eq!(failure["status"], "True", "{restore:#}");
    assert_eq!(failure["reason"], RESTORE_FAILED);
    assert_eq!(
        condition(restore, "Ready").unwrap()["reason"],
        RESTORE_FAILED
    );
    assert!(condition_is(restore, "Progressing", "False"));
    assert_ne!(restore["status"]["complete"], true);
}

#[tokio::test]
async fn an_annotated_vm_fails_its_snapshots_and_others_are_unaffected() {
    let world = World::new("sim-failsnap", SimConfig::default()).await;
    world
        .create(
            &world.vms(),
            container_disk_vm("doomed", json!({"sim.vmclone.dev/fail-snapshot": "true"})),
        )
        .await;
    world
        .create(&world.vms(), container_disk_vm("fine", json!({})))
        .await;
    world
        .create(&world.snapshots(), snapshot("doomed-snap", "doomed"))
        .await;
    world
        .create(&world.snapshots(), snapshot("fine-snap", "fine"))
        .await;
    let failed = world
        .wait(&world.snapshots(), "doomed-snap", "Failed", |s| {
            phase(s) == "Failed"
        })
        .await;
    assert_snapshot_failed(&failed);
    world
        .wait(&world.snapshots(), "fine-snap", "ready", |s| {
            s["status"]["readyToUse"] == true
        })
        .await;
}

#[tokio::test]
async fn a_sim_configured_to_fail_snapshots_fails_them_all() {
    let world = World::new("sim-failsnaps", SimConfig::default().fail_snapshots(true)).await;
    world
        .create(&world.vms(), container_disk_vm("vm", json!({})))
        .await;
    world
        .create(&world.snapshots(), snapshot("snap", "vm"))
        .await;
    let failed = world
        .wait(&world.snapshots(), "snap", "Failed", |s| {
            phase(s) == "Failed"
        })
        .await;
    assert_snapshot_failed(&failed);
}

#[tokio::test]
async fn a_snapshot_of_a_missing_vm_waits_then_fails_after_its_deadline() {
    let world = World::new("sim-deadline", SimConfig::default()).await;
    let mut waiting = snapshot("waits", "missing");
    waiting["spec"]["failureDeadline"] = json!("1h");
    world.create(&world.snapshots(), waiting).await;
    let mut short = snapshot("short", "missing");
    short["spec"]["failureDeadline"] = json!("3s");
    world.create(&world.snapshots(), short).await;

    let in_progress = world
        .wait(&world.snapshots(), "waits", "InProgress", |s| {
            phase(s) == "InProgress"
        })
        .await;
    assert_eq!(
        condition(&in_progress, "Progressing").unwrap()["reason"],
        "Source does not exist"
    );
    assert_eq!(in_progress["status"]["readyToUse"], false);
    let failed = world
        .wait(&world.snapshots(), "short", "Failed", |s| {
            phase(s) == "Failed"
        })
        .await;
    assert_snapshot_failed(&failed);
    let still = serde_json::to_value(world.snapshots().get("waits").await.unwrap()).unwrap();
    assert_eq!(phase(&still), "InProgress");
}

/// A ready snapshot `snap` of a containerDisk VM `vm` with `annotations`.
async fn ready_snapshot(world: &World, annotations: Value) {
    world
        .create(&world.vms(), container_disk_vm("vm", annotations))
        .await;
    world
        .create(&world.snapshots(), snapshot("snap", "vm"))
        .await;
    world
        .wait(&world.snapshots(), "snap", "ready", |s| {
            s["status"]["readyToUse"] == true
        })
        .await;
}

#[tokio::test]
async fn restores_fail_when_annotated_on_the_restore_or_on_the_snapshotted_vm() {
    let world = World::new("sim-failrestore", SimConfig::default()).await;
    ready_snapshot(&world, json!({})).await;
    let mut doomed = restore("doomed", "snap", "target-1", None, &[]);
    doomed["metadata"]["annotations"] = json!({"sim.vmclone.dev/fail-restore": "true"});
    world.create(&world.restores(), doomed).await;
    world
        .create(
            &world.restores(),
            restore("fine", "snap", "target-2", None, &[]),
        )
        .await;
    let failed = world
        .wait(&world.restores(), "doomed", "Failure", |r| {
            condition(r, "Failure").is_some()
        })
        .await;
    assert_restore_failed(&failed);
    let message = world.wait_event("doomed", "Operation failed").await;
    assert_eq!(
        message,
        format!("VirtualMachineRestore failed {RESTORE_FAILED}")
    );
    assert!(world.vms().get_opt("target-1").await.unwrap().is_none());
    world
        .wait(&world.restores(), "fine", "complete", |r| {
            r["status"]["complete"] == true
        })
        .await;

    // The annotation travels with the VM into the snapshot content.
    let other = World::new("sim-failsrc", SimConfig::default()).await;
    ready_snapshot(&other, json!({"sim.vmclone.dev/fail-restore": "true"})).await;
    other
        .create(
            &other.restores(),
            restore("from-doomed-vm", "snap", "target", None, &[]),
        )
        .await;
    let failed = other
        .wait(&other.restores(), "from-doomed-vm", "Failure", |r| {
            condition(r, "Failure").is_some()
        })
        .await;
    assert_restore_failed(&failed);
}

#[tokio::test]
async fn a_sim_configured_to_fail_restores_fails_them_all() {
    let world = World::new("sim-failrestores", SimConfig::default().fail_restores(true)).await;
    ready_snapshot(&world, json!({})).await;
    world
        .create(&world.restores(), restore("r", "snap", "target", None, &[]))
        .await;
    let failed = world
        .wait(&world.restores(), "r", "Failure", |r| {
            condition(r, "Failure").is_some()
        })
        .await;
    assert_restore_failed(&failed);
}

#[tokio::test]
async fn a_running_target_fails_a_fail_immediate_restore() {
    let world = World::new("sim-running", SimConfig::default()).await;
    ready_snapshot(&world, json!({})).await;
    let mut running = container_disk_vm("running", json!({}));
    running["spec"]["runStrategy"] = json!("Always");
    world.create(&world.vms(), running).await;
    world
        .wait(&world.vmis(), "running", "running", |vmi| {
            phase(vmi) == "Running"
        })
        .await;
    let mut r = restore("onto-running", "snap", "running", None, &[]);
    r["spec"]["targetReadinessPolicy"] = json!("FailImmediate");
    world.create(&world.restores(), r).await;
    let failed = world
        .wait(&world.restores(), "onto-running", "Failure", |r| {
            condition(r, "Failure").is_some()
        })
        .await;
    assert_restore_failed(&failed);
    // A restore that is not complete, failed ones included, holds its target (v1.7.0's
    // admission refuses another one with `... in progress`): the user deletes it first.
    let restores = world.restores();
    restores
        .delete("onto-running", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    testenv::wait_for(
        "the failed restore to go",
        std::time::Duration::from_secs(60),
        || async {
            anyhow::ensure!(
                restores.get_opt("onto-running").await?.is_none(),
                "still there"
            );
            anyhow::Ok(())
        },
    )
    .await
    .unwrap();
    let mut r = restore("waiting", "snap", "running", None, &[]);
    r["spec"]["targetReadinessPolicy"] = json!("WaitEventually");
    world.create(&world.restores(), r).await;
    world
        .wait(&world.restores(), "waiting", "waiting for the target to stop", |r| {
            condition(r, "Ready").is_some_and(|c| {
                c["reason"]
                    == "Waiting for target VM to be powered off. Please stop the restore target to proceed with restore"
            })
        })
        .await;
    world.wait_event("waiting", "RestoreTargetNotReady").await;
}

async fn create_restore(world: &World, name: &str) -> Result<(), String> {
    let typed: DynamicObject =
        serde_json::from_value(restore(name, "snap", name, None, &[])).unwrap();
    world
        .restores()
        .create(&PostParams::default(), &typed)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_annotated_namespace_or_restore_is_refused_by_the_api_server() {
    let world = World::new("sim-reject", SimConfig::default()).await;
    let message = "restores are switched off in this namespace";
    kubevirt_sim::reject_restores_in(world.client.clone(), &world.ns, message)
        .await
        .unwrap();
    let err = create_restore(&world, "refused").await.unwrap_err();
    assert!(err.contains(message), "{err}");
    let out = world
        .env
        .kubectl_output(
            &["create", "-n", &world.ns, "-f", "-"],
            Some(&restore("refused-kubectl", "snap", "t", None, &[]).to_string()),
        )
        .await
        .unwrap();
    assert!(!out.success());
    assert!(out.stderr.contains(message), "{}", out.stderr);

    kubevirt_sim::allow_restores_in(world.client.clone(), &world.ns)
        .await
        .unwrap();
    create_restore(&world, "admitted").await.unwrap();

    let mut annotated = restore("annotated", "snap", "t", None, &[]);
    annotated["metadata"]["annotations"] =
        json!({"sim.vmclone.dev/reject-restore": "not this one"});
    let typed: DynamicObject = serde_json::from_value(annotated).unwrap();
    let err = world
        .restores()
        .create(&PostParams::default(), &typed)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not this one"), "{err}");
}

#[tokio::test]
async fn a_sim_configured_to_reject_restores_has_them_refused_until_it_stops() {
    let world = World::without_sim("sim-rejects").await;
    let message = "the sim rejects restores";
    let sim = kubevirt_sim::Sim::start(
        world.client.clone(),
        SimConfig::default()
            .namespace(world.ns.clone())
            .reject_restores(message),
    )
    .await
    .unwrap();
    let err = create_restore(&world, "refused").await.unwrap_err();
    assert!(err.contains(message), "{err}");
    // Other namespaces are unaffected.
    let other = World::without_sim("sim-rejects-other").await;
    create_restore(&other, "admitted-elsewhere").await.unwrap();

    sim.stop().await;
    create_restore(&world, "admitted").await.unwrap();
}

#[tokio::test]
async fn an_annotated_namespace_fails_its_snapshots_and_restores() {
    let world = World::new("sim-failns", SimConfig::default()).await;
    ready_snapshot(&world, json!({})).await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(world.client.clone());
    namespaces
        .patch(
            &world.ns,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                "sim.vmclone.dev/fail-snapshot": "true",
                "sim.vmclone.dev/fail-restore": "true",
            }}})),
        )
        .await
        .unwrap();
    world
        .create(&world.snapshots(), snapshot("later", "vm"))
        .await;
    let failed = world
        .wait(&world.snapshots(), "later", "Failed", |s| {
            phase(s) == "Failed"
        })
        .await;
    assert_snapshot_failed(&failed);
    world
        .create(&world.restores(), restore("r", "snap", "target", None, &[]))
        .await;
    let failed = world
        .wait(&world.restores(), "r", "Failure", |r| {
            condition(r, "Failure").is_some()
        })
        .await;
    assert_restore_failed(&failed);
}

#[tokio::test]
async fn a_patch_that_does_not_apply_is_a_non_terminal_restore_error() {
    let world = World::new("sim-badpatch", SimConfig::default()).await;
    ready_snapshot(&world, json!({})).await;
    let missing = r#"{"op": "remove", "path": "/spec/template/spec/hostname"}"#;
    world
        .create(
            &world.restores(),
            restore("r", "snap", "target", None, &[missing]),
        )
        .await;
    let stuck = world
        .wait(&world.restores(), "r", "a patch error", |r| {
            condition(r, "Ready").is_some_and(|c| {
                c["reason"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("error patching VM target:"))
            })
        })
        .await;
    // KubeVirt's words: its patchVM around the JSON Patch library's error.
    assert_eq!(
        condition(&stuck, "Ready").unwrap()["reason"],
        format!(
            "error patching VM target: failed to apply patch for VM [\n{missing}\n]: error in remove for path: '/spec/template/spec/hostname': Unable to remove nonexistent key: hostname: missing value"
        )
    );
    assert!(condition(&stuck, "Failure").is_none(), "{stuck:#}");
    assert!(condition_is(&stuck, "Progressing", "False"));
    assert!(world.vms().get_opt("target").await.unwrap().is_none());
}

/// How often KubeVirt reported `reason` about `name` (events and their series).
async fn occurrences(world: &World, name: &str, reason: &str) -> i32 {
    let api: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(world.client.clone(), &world.ns);
    let list = api
        .list(&kube::api::ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| {
            let series = e.series.as_ref().and_then(|s| s.count).unwrap_or(1);
            series.max(e.count.unwrap_or(1))
        })
        .sum()
}

#[tokio::test]
async fn a_restore_whose_vm_kubevirt_cannot_unmarshal_is_retried_for_ever() {
    let world = World::new("sim-lots", SimConfig::default()).await;
    ready_snapshot(&world, json!({})).await;
    let lots = r#"{"op": "replace", "path": "/spec/template/spec/domain/resources/requests/memory", "value": "lots"}"#;
    world
        .create(
            &world.restores(),
            restore("r", "snap", "target", None, &[lots]),
        )
        .await;
    let stuck = world
        .wait(&world.restores(), "r", "the unmarshal error", |r| {
            condition(r, "Ready").is_some_and(|c| {
                c["reason"].as_str().is_some_and(|m| {
                    m.starts_with(
                        "error patching VM target: cannot unmarshal modified marshalled vm {",
                    )
                })
            })
        })
        .await;
    let reason = condition(&stuck, "Ready").unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.ends_with(
            "}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        ),
        "{reason}"
    );
    assert!(reason.contains(r#""memory":"lots""#), "{reason}");
    assert_eq!(condition(&stuck, "Progressing").unwrap()["reason"], reason);
    assert!(condition_is(&stuck, "Progressing", "False"));
    assert!(condition(&stuck, "Failure").is_none(), "{stuck:#}");
    assert_ne!(stuck["status"]["complete"], true);
    // Retried, with backoff, and never created.
    wait_for("a retried restore error", TIMEOUT, || async {
        let n = occurrences(&world, "r", "VirtualMachineRestoreError").await;
        (n >= 3).then_some(()).ok_or(n)
    })
    .await
    .unwrap();
    let message = world.wait_event("r", "VirtualMachineRestoreError").await;
    assert!(
        message.starts_with("VirtualMachineRestore encountered error error patching VM target:"),
        "{message}"
    );
    assert!(world.vms().get_opt("target").await.unwrap().is_none());
    let after = serde_json::to_value(world.restores().get("r").await.unwrap()).unwrap();
    assert_ne!(after["status"]["complete"], true);
    assert!(condition(&after, "Failure").is_none());
}

#[tokio::test]
async fn a_restore_whose_vm_the_api_server_refuses_says_so_and_retries_until_admitted() {
    let world = World::new("sim-vmrefused", SimConfig::default()).await;
    ready_snapshot(&world, json!({})).await;
    // An admission policy refusing the restored VM, in this namespace only.
    let policy_name = format!("{}-no-target", world.ns);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(world.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(world.client.clone());
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy_name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["kubevirt.io"], "apiVersions": ["*"],
                "operations": ["CREATE"], "resources": ["virtualmachines"],
            }]},
            "validations": [{"expression": "object.metadata.name != 'target'", "message": "no target here"}],
        },
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy_name},
        "spec": {
            "policyName": policy_name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": world.ns}}},
        },
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let probe: DynamicObject =
        serde_json::from_value(container_disk_vm("target", json!({}))).unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let refused = wait_for("the policy to refuse the target", TIMEOUT, || async {
        match world.vms().create(&dry_run, &probe).await {
            Err(kube::Error::Api(status)) => Ok(status.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert!(refused.contains("no target here"), "{refused}");

    world
        .create(&world.restores(), restore("r", "snap", "target", None, &[]))
        .await;
    // Upstream's text is the API server's answer as it came.
    let stuck = world
        .wait(&world.restores(), "r", "the API server's refusal", |r| {
            condition(r, "Ready").is_some_and(|c| c["reason"] == refused.as_str())
        })
        .await;
    assert!(condition(&stuck, "Failure").is_none(), "{stuck:#}");
    assert!(condition_is(&stuck, "Progressing", "False"));

    // Nothing the sim watches changes: only its retries find the VM admitted.
    bindings
        .delete(&policy_name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await
        .unwrap();
    world
        .wait(&world.restores(), "r", "complete", |r| {
            r["status"]["complete"] == true
        })
        .await;
    assert!(world.vms().get_opt("target").await.unwrap().is_some());
}

#[tokio::test]
async fn the_restore_webhook_answers_virt_apis_internal_error_when_told() {
    let world = World::without_sim("sim-internal").await;
    let kubevirts = world.api("kubevirt.io/v1", "KubeVirt", "kubevirts");
    let cr = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"},
        "spec": {"configuration": {"developerConfiguration": {"featureGates": ["Snapshot"]}}},
    });
    world.create(&kubevirts, cr).await;
    kubevirts
        .patch_status(
            "kubevirt",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Deployed"}})),
        )
        .await
        .unwrap();
    let hook = RestoreWebhook::start(
        world.client.clone(),
        WebhookConfig::default()
            .namespace(world.ns.clone())
            .kubevirt_namespace(world.ns.clone()),
    )
    .await
    .unwrap();
    let denied = "admission webhook \"virtualmachinerestore-validator.snapshot.kubevirt.io\" denied the request: ";
    for (value, message) in [
        ("etcd is on fire", "etcd is on fire"),
        ("", "kubevirt-sim: injected internal error"),
    ] {
        let mut manifest = restore("r", "snap", "t", None, &[]);
        manifest["metadata"]["annotations"] = json!({"sim.vmclone.dev/admission-error": value});
        let typed: DynamicObject = serde_json::from_value(manifest).unwrap();
        let err = world
            .restores()
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert_eq!(status.code, 400, "{status:?}");
        assert_eq!(status.message, format!("{denied}{message}"));
    }
    // Without the annotation the same restore is admitted (its snapshot is missing).
    create_restore(&world, "admitted").await.unwrap();
    hook.stop().await;
}

#[tokio::test]
async fn latency_paces_every_step() {
    let world = World::new(
        "sim-latency",
        SimConfig::default().latency(std::time::Duration::from_millis(400)),
    )
    .await;
    world
        .create(&world.vms(), container_disk_vm("vm", json!({})))
        .await;
    let started = std::time::Instant::now();
    world
        .create(&world.snapshots(), snapshot("snap", "vm"))
        .await;
    world
        .wait(&world.snapshots(), "snap", "ready", |s| {
            s["status"]["readyToUse"] == true
        })
        .await;
    // Lock, content, content ready: three paced steps at least.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(1200),
        "{elapsed:?}"
    );
}
