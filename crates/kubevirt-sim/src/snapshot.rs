//! KubeVirt's VirtualMachineSnapshot controller.
//!
//! Per snapshot: fail it (phase `Failed`, condition `Failure` = `snapshot deadline exceeded`)
//! when its `failureDeadline` (default 5m) passed or a failure is injected; otherwise lock the
//! source VM once all its claims exist and are bound and populated (`status.snapshotInProgress`
//! and a finalizer, as upstream), create the content `vmsnapshot-content-<snapshot UID>` with the VM
//! manifest and one volume backup per bound, snapshot-capable claim, mark the content ready,
//! mirror it into the snapshot's status (`Succeeded`, `readyToUse`) and unlock the VM.
//! A snapshot of a VM that does not exist waits (until its deadline), like upstream.
//!
//! Simplified: no VolumeSnapshot objects are created (their CRDs are not installed): each backup
//! records the `volumeSnapshotName` KubeVirt would use, and the content reports them ready at
//! once. No guest freeze; an online snapshot copies the live VM spec instead of the VMI's
//! controller revision; instance type revisions are not captured; the snapshot and content get no
//! finalizers — the content is garbage-collected through an owner reference to the snapshot
//! (absent with `deletionPolicy: Retain`, which keeps the content).

use std::sync::Arc;
use std::time::Duration;

use clone_api::kubevirt::{VirtualMachine, VirtualMachineSnapshot, VirtualMachineSnapshotContent};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::conditions;
use crate::ctx::{Component, Ctx};
use crate::error::Error;
use crate::meta::{self, annotation_true, controller_of, controller_ref};
use crate::names;
use crate::runtime::{ObjKey, Requeue};
use crate::units::{now_rfc3339, parse_go_duration, seconds_since};

/// Upstream's default `failureDeadline`.
const DEFAULT_FAILURE_DEADLINE: Duration = Duration::from_secs(5 * 60);

/// The snapshot holding the VM's snapshot lock, if any.
pub fn snapshot_in_progress(vm: &VirtualMachine) -> Option<&str> {
    vm.status
        .as_ref()?
        .extra
        .get("snapshotInProgress")
        .and_then(Value::as_str)
}

/// Whether the snapshot reached `Succeeded` or `Failed`.
pub fn is_terminal(snapshot: &VirtualMachineSnapshot) -> bool {
    matches!(
        snapshot.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Releases the VM's snapshot lock: finalizer first, then `status.snapshotInProgress`.
pub async fn unlock(ctx: &Ctx, vm: &VirtualMachine) -> Result<(), Error> {
    let namespace = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let api: Api<VirtualMachine> = ctx.api(&namespace);
    if meta::has_finalizer(&vm.metadata, names::SNAPSHOT_SOURCE_FINALIZER) {
        let current = vm.metadata.finalizers.as_ref();
        let desired = current
            .into_iter()
            .flatten()
            .filter(|f| *f != names::SNAPSHOT_SOURCE_FINALIZER)
            .cloned()
            .collect();
        meta::patch_finalizers(&api, &name, current, desired).await?;
    }
    if snapshot_in_progress(vm).is_some() {
        meta::patch_status(
            &api,
            &name,
            &json!({"status": {"snapshotInProgress": null}}),
        )
        .await?;
    }
    Ok(())
}

async fn lock(ctx: &Ctx, vm: &VirtualMachine, snapshot: &str) -> Result<(), Error> {
    let namespace = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let api: Api<VirtualMachine> = ctx.api(&namespace);
    if snapshot_in_progress(vm) != Some(snapshot) {
        meta::patch_status(
            &api,
            &name,
            &json!({"status": {"snapshotInProgress": snapshot}}),
        )
        .await?;
    }
    if !meta::has_finalizer(&vm.metadata, names::SNAPSHOT_SOURCE_FINALIZER) {
        let current = vm.metadata.finalizers.as_ref();
        let mut desired: Vec<String> = current.into_iter().flatten().cloned().collect();
        desired.push(names::SNAPSHOT_SOURCE_FINALIZER.to_owned());
        meta::patch_finalizers(&api, &name, current, desired).await?;
    }
    Ok(())
}

fn is_locked_by(vm: &VirtualMachine, snapshot: &str) -> bool {
    snapshot_in_progress(vm) == Some(snapshot)
        && meta::has_finalizer(&vm.metadata, names::SNAPSHOT_SOURCE_FINALIZER)
}

/// The claims of the VM's PVC, DataVolume and memory-dump volumes: `(volume, claim)`.
fn claims(vm: &VirtualMachine) -> Vec<(String, String)> {
    vm.spec
        .volumes()
        .iter()
        .filter_map(|v| {
            let memory_dump = v
                .extra
                .get("memoryDump")
                .and_then(|m| m.get("claimName"))
                .and_then(Value::as_str);
            v.claim_name()
                .or(memory_dump)
                .map(|c| (v.name.clone(), c.to_owned()))
        })
        .collect()
}

fn pvc_phase(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Why the VM cannot be locked yet (upstream's lock message suffix), or `None`.
fn lock_blocker(ctx: &Ctx, vm: &VirtualMachine, snapshot: &str) -> Option<String> {
    let namespace = vm.namespace().unwrap_or_default();
    let source = format!(" source {namespace}/{}", vm.name_any());
    let mut claim_names: Vec<String> = claims(vm).into_iter().map(|(_, c)| c).collect();
    claim_names.sort();
    claim_names.dedup();
    for claim in claim_names {
        let Some(pvc) = ctx.pvcs.get(&namespace, &claim) else {
            return Some(format!("{source} volume doesnt exist: {claim}"));
        };
        if pvc_phase(&pvc) != Some("Bound") {
            return Some(format!("{source} volume not bound: {claim}"));
        }
        if let Some(owner) = controller_of(&pvc.metadata).filter(|o| o.kind == "DataVolume") {
            let populated = ctx
                .dvs
                .get(&namespace, &owner.name)
                .and_then(|dv| dv.status.clone())
                .and_then(|s| s.phase)
                .as_deref()
                == Some("Succeeded");
            if !populated {
                return Some(format!("{source} volume not populated: {claim}"));
            }
        }
    }
    match snapshot_in_progress(vm) {
        Some(other) if other != snapshot => Some(format!(" snapshot {other:?} in progress")),
        _ => None,
    }
}

/// Whether a failure is injected for this snapshot (config, snapshot, VM or namespace).
fn failure_injected(
    ctx: &Ctx,
    snapshot: &VirtualMachineSnapshot,
    vm: Option<&VirtualMachine>,
) -> bool {
    let namespace = snapshot.namespace().unwrap_or_default();
    ctx.config.fail_snapshots
        || annotation_true(&snapshot.metadata, names::FAIL_SNAPSHOT_ANNOTATION)
        || vm.is_some_and(|vm| annotation_true(&vm.metadata, names::FAIL_SNAPSHOT_ANNOTATION))
        || ctx
            .namespace_annotation(&namespace, names::FAIL_SNAPSHOT_ANNOTATION)
            .as_deref()
            == Some("true")
}

/// The snapshot's deadline (`None` = no deadline, `failureDeadline: 0s`).
fn failure_deadline(snapshot: &VirtualMachineSnapshot) -> Option<Duration> {
    let deadline = match snapshot.spec.failure_deadline.as_deref() {
        None => DEFAULT_FAILURE_DEADLINE,
        Some(text) => parse_go_duration(text).unwrap_or(DEFAULT_FAILURE_DEADLINE),
    };
    (!deadline.is_zero()).then_some(deadline)
}

/// Seconds left until the deadline (negative once passed); `None` without a deadline.
fn time_left(snapshot: &VirtualMachineSnapshot) -> Option<f64> {
    let deadline = failure_deadline(snapshot)?;
    let created = snapshot.metadata.creation_timestamp.as_ref()?;
    Some(deadline.as_secs_f64() - seconds_since(&created.0))
}

/// Drops `null` members (the API server does not store them) so that stored and computed
/// statuses compare equal.
pub fn normalized(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Reconciles one VirtualMachineSnapshot.
pub async fn reconcile(ctx: Arc<Ctx>, key: ObjKey) -> Result<Requeue, Error> {
    let Some(snapshot) = ctx.snapshots.get_key(&key) else {
        return Ok(None);
    };
    if snapshot.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let namespace = key.namespace.clone();
    let name = key.name.clone();
    let vm = (snapshot.spec.source.kind == "VirtualMachine")
        .then(|| ctx.vms.get(&namespace, &snapshot.spec.source.name))
        .flatten();

    if is_terminal(&snapshot) {
        if let Some(vm) = &vm
            && snapshot_in_progress(vm) == Some(name.as_str())
        {
            unlock(&ctx, vm).await?;
        }
        return Ok(None);
    }
    if snapshot.spec.source.kind != "VirtualMachine" {
        // KubeVirt's admission (here: the snapshot admission policy) refuses other kinds.
        tracing::warn!(%key, kind = %snapshot.spec.source.kind, "unsupported snapshot source");
        return Ok(None);
    }

    let mut status = serde_json::to_value(snapshot.status.clone().unwrap_or_default())
        .unwrap_or_else(|_| json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if status.get("readyToUse").is_none() {
        status["readyToUse"] = json!(false);
    }
    if let Some(vm) = &vm {
        status["sourceUID"] = json!(vm.metadata.uid.clone().unwrap_or_default());
    }

    let left = time_left(&snapshot);
    if failure_injected(&ctx, &snapshot, vm.as_deref()) || left.is_some_and(|l| l <= 0.0) {
        ctx.pace().await;
        status["phase"] = json!("Failed");
        status["readyToUse"] = json!(false);
        status["error"] =
            json!({"time": now_rfc3339(), "message": names::SNAPSHOT_DEADLINE_EXCEEDED});
        conditions::set_kubevirt(
            &mut conditions,
            conditions::kubevirt("Failure", true, names::SNAPSHOT_DEADLINE_EXCEEDED),
        );
        conditions::set_kubevirt(
            &mut conditions,
            conditions::kubevirt("Progressing", false, "Operation failed"),
        );
        conditions::set_kubevirt(
            &mut conditions,
            conditions::kubevirt("Ready", false, "Not ready"),
        );
        status["conditions"] = json!(conditions);
        write_status(&ctx, &snapshot, status).await?;
        return Ok(None);
    }

    let content_name = format!(
        "{}{}",
        names::CONTENT_PREFIX,
        snapshot.metadata.uid.clone().unwrap_or_default()
    );
    let content = ctx.contents.get(&namespace, &content_name);
    let mut progressing: Option<(bool, String)> = None;
    match (&vm, &content) {
        (Some(vm), None) => {
            if is_locked_by(vm, &name) {
                ctx.pace().await;
                create_content(&ctx, &snapshot, vm, &content_name).await?;
                progressing = Some((true, "Source locked and operation in progress".into()));
            } else {
                match lock_blocker(&ctx, vm, &name) {
                    Some(reason) => {
                        progressing = Some((false, format!("Source not locked{reason}")))
                    }
                    None => {
                        ctx.pace().await;
                        lock(&ctx, vm, &name).await?;
                        progressing =
                            Some((true, "Source locked and operation in progress".into()));
                    }
                }
            }
            let online = ctx.vmis.get(&namespace, &vm.name_any()).is_some();
            set_indications(&mut status, online);
        }
        (None, None) => progressing = Some((false, "Source does not exist".into())),
        (_, Some(content)) => {
            let ready = content
                .status
                .as_ref()
                .is_some_and(|s| s.ready_to_use == Some(true) && s.creation_time.is_some());
            if !ready {
                ctx.pace().await;
                mark_content_ready(&ctx, content).await?;
                progressing = Some((true, "Source locked and operation in progress".into()));
            } else {
                let content_status = content.status.clone().unwrap_or_default();
                status["virtualMachineSnapshotContentName"] = json!(content_name);
                status["creationTime"] =
                    content_status.creation_time.clone().unwrap_or(Value::Null);
                status["readyToUse"] = json!(content_status.ready_to_use.unwrap_or(false));
                status["error"] = content_status
                    .error
                    .as_ref()
                    .map(|e| json!(e))
                    .unwrap_or(Value::Null);
            }
        }
    }

    let succeeded = status.get("creationTime").is_some_and(|t| !t.is_null());
    if succeeded {
        status["phase"] = json!("Succeeded");
        conditions::set_kubevirt(
            &mut conditions,
            conditions::kubevirt("Progressing", false, "Operation complete"),
        );
        if let Some(content) = &content {
            status["snapshotVolumes"] = snapshot_volumes(content);
        }
    } else {
        status["phase"] = json!("InProgress");
        if let Some((locked, reason)) = &progressing {
            conditions::set_kubevirt(
                &mut conditions,
                conditions::kubevirt("Progressing", *locked, reason),
            );
        }
    }
    let ready = status.get("readyToUse").and_then(Value::as_bool) == Some(true);
    conditions::set_kubevirt(
        &mut conditions,
        conditions::kubevirt("Ready", ready, if ready { "Ready" } else { "Not ready" }),
    );
    status["conditions"] = json!(conditions);
    write_status(&ctx, &snapshot, status).await?;

    if succeeded {
        if let Some(vm) = &vm
            && snapshot_in_progress(vm) == Some(name.as_str())
        {
            unlock(&ctx, vm).await?;
        }
        return Ok(None);
    }
    Ok(left.map(|l| Duration::from_secs_f64(l.max(0.0)) + Duration::from_millis(100)))
}

fn set_indications(status: &mut Value, online: bool) {
    if online {
        status["indications"] = json!(["Online", "NoGuestAgent"]);
        status["sourceIndications"] = json!([
            {"indication": "Online", "message": "Snapshot taken while the VM was running. Consistency depends on guest-agent quiescing."},
            {"indication": "NoGuestAgent", "message": "Guest agent was not available. Snapshot is crash-consistent and may not be application-consistent."},
        ]);
    } else {
        status["indications"] = Value::Null;
        status["sourceIndications"] = Value::Null;
    }
}

fn snapshot_volumes(content: &VirtualMachineSnapshotContent) -> Value {
    let backed_up: Vec<&str> = content
        .spec
        .volume_backups
        .iter()
        .flatten()
        .map(|b| b.volume_name.as_str())
        .collect();
    let volumes: Vec<String> = content
        .spec
        .source
        .virtual_machine
        .as_ref()
        .and_then(|vm| vm.pointer("/spec/template/spec/volumes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let (included, excluded): (Vec<String>, Vec<String>) = volumes
        .into_iter()
        .partition(|v| backed_up.contains(&v.as_str()));
    let mut out = json!({});
    if !included.is_empty() {
        out["includedVolumes"] = json!(included);
    }
    if !excluded.is_empty() {
        out["excludedVolumes"] = json!(excluded);
    }
    out
}

async fn write_status(
    ctx: &Ctx,
    snapshot: &VirtualMachineSnapshot,
    status: Value,
) -> Result<(), Error> {
    let current =
        serde_json::to_value(snapshot.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
    if normalized(&current) == normalized(&status) {
        return Ok(());
    }
    let api: Api<VirtualMachineSnapshot> = ctx.api(&snapshot.namespace().unwrap_or_default());
    meta::patch_status(&api, &snapshot.name_any(), &json!({ "status": status })).await
}

/// The VM as the content records it: metadata without server bookkeeping, the spec, an empty
/// status.
fn vm_manifest(vm: &VirtualMachine) -> Value {
    let mut metadata = json!({
        "name": vm.name_any(),
        "namespace": vm.namespace(),
        "uid": vm.metadata.uid,
        "generation": vm.metadata.generation,
    });
    if let Some(labels) = &vm.metadata.labels {
        metadata["labels"] = json!(labels);
    }
    if let Some(annotations) = &vm.metadata.annotations {
        metadata["annotations"] = json!(annotations);
    }
    json!({
        "metadata": metadata,
        "spec": serde_json::to_value(&vm.spec).unwrap_or_else(|_| json!({})),
        "status": {},
    })
}

async fn create_content(
    ctx: &Ctx,
    snapshot: &VirtualMachineSnapshot,
    vm: &VirtualMachine,
    content_name: &str,
) -> Result<(), Error> {
    let namespace = snapshot.namespace().unwrap_or_default();
    let uid = snapshot.metadata.uid.clone().unwrap_or_default();
    let mut backups = Vec::new();
    for (volume, claim) in claims(vm) {
        let Some(pvc) = ctx.pvcs.get(&namespace, &claim) else {
            continue;
        };
        let class = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref());
        let snapshottable =
            pvc_phase(&pvc) == Some("Bound") && class.is_some_and(|c| ctx.config.snapshottable(c));
        if !snapshottable {
            continue;
        }
        let mut metadata = json!({"name": claim, "namespace": namespace});
        if let Some(labels) = &pvc.metadata.labels {
            metadata["labels"] = json!(labels);
        }
        if let Some(annotations) = &pvc.metadata.annotations {
            metadata["annotations"] = json!(annotations);
        }
        if let Some(owners) = &pvc.metadata.owner_references {
            metadata["ownerReferences"] = json!(owners);
        }
        backups.push(json!({
            "volumeName": volume,
            "persistentVolumeClaim": {"metadata": metadata, "spec": pvc.spec},
            // Simplified: the VolumeSnapshot itself is never created (no snapshot CRDs here).
            "volumeSnapshotName": format!("vmsnapshot-{uid}-volume-{volume}"),
        }));
    }
    let mut metadata = json!({"name": content_name, "namespace": namespace});
    let retain = snapshot.spec.deletion_policy.as_deref() == Some("Retain");
    if !retain {
        metadata["ownerReferences"] = json!([controller_ref(
            names::SNAPSHOT_API_VERSION,
            "VirtualMachineSnapshot",
            &snapshot.metadata
        )]);
    }
    let content = json!({
        "apiVersion": names::SNAPSHOT_API_VERSION,
        "kind": "VirtualMachineSnapshotContent",
        "metadata": metadata,
        "spec": {
            "virtualMachineSnapshotName": snapshot.name_any(),
            "source": {"virtualMachine": vm_manifest(vm)},
            "volumeBackups": backups,
        },
    });
    let api: Api<VirtualMachineSnapshotContent> = ctx.api(&namespace);
    if meta::create_json(&api, content).await? {
        ctx.event(
            Component::KubeVirt,
            snapshot,
            false,
            "SuccessfulVirtualMachineSnapshotContentCreate",
            format!("Successfully created VirtualMachineSnapshotContent {content_name}"),
        )
        .await;
    }
    Ok(())
}

async fn mark_content_ready(
    ctx: &Ctx,
    content: &VirtualMachineSnapshotContent,
) -> Result<(), Error> {
    let now = now_rfc3339();
    let volume_statuses: Vec<Value> = content
        .spec
        .volume_backups
        .iter()
        .flatten()
        .filter_map(|b| b.volume_snapshot_name.as_ref())
        .map(|name| json!({"volumeSnapshotName": name, "readyToUse": true, "creationTime": now}))
        .collect();
    let api: Api<VirtualMachineSnapshotContent> = ctx.api(&content.namespace().unwrap_or_default());
    meta::patch_status(
        &api,
        &content.name_any(),
        &json!({"status": {
            "readyToUse": true,
            "creationTime": now,
            "volumeSnapshotStatus": volume_statuses,
        }}),
    )
    .await
}
