//! KubeVirt's VirtualMachineSnapshot controller and its content controller (v1.7.0's
//! `updateVMSnapshot` and `updateVMSnapshotContent`, one after the other in each pass).
//!
//! Per snapshot: while it is not terminating, the finalizer
//! `snapshot.kubevirt.io/vmsnapshot-protection`. While in progress, lock the source VM once all
//! its claims exist and are bound and populated (`status.snapshotInProgress` and the finalizer
//! `snapshot.kubevirt.io/snapshot-source-protection`, as upstream), then create the content
//! `vmsnapshot-content-<snapshot UID>` (finalizer `snapshot.kubevirt.io/vmsnapshotcontent-protection`,
//! no owner) with the VM manifest and one volume backup per bound, snapshot-capable claim.
//! Readiness comes in two steps, as with a CSI driver that cuts snapshots at once and finishes
//! them later: the content gets `creationTime` (`readyToUse: false`), the snapshot mirrors it
//! (`Succeeded`, `Ready` false `Not ready`) and the source is unlocked; only then does the content
//! become `readyToUse`, and the snapshot with it (`Ready` true). The annotation
//! [`HOLD_SNAPSHOT_READY_ANNOTATION`](crate::names::HOLD_SNAPSHOT_READY_ANNOTATION) on the
//! snapshot, its VM or its namespace holds the second step back. A content without volume
//! backups is ready in its first write, as upstream's. A snapshot of a VM that does not exist
//! waits (until its deadline), like upstream.
//!
//! Terminating (deleted, or failed: phase `Failed`, condition `Failure` = `snapshot deadline
//! exceeded` when its `failureDeadline` (default 5m) passes or a failure is injected): the content
//! is deleted unless `deletionPolicy: Retain` keeps a ready one, and loses its finalizer; the
//! source is unlocked once the content is gone (or kept); a deleted snapshot in progress is
//! phase `Deleting` (`VM snapshot is deleting`) and loses its finalizer on the pass after the
//! unlock. A content whose snapshot is gone loses its finalizer.
//!
//! Simplified: no VolumeSnapshot objects are created: each backup records the
//! `volumeSnapshotName` KubeVirt would use, and the content reports them itself. No guest freeze;
//! an online snapshot copies the live VM spec instead of the VMI's controller revision; instance
//! type revisions are not captured.

use std::sync::Arc;
use std::time::Duration;

use clone_api::kubevirt::{VirtualMachine, VirtualMachineSnapshot, VirtualMachineSnapshotContent};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::conditions;
use crate::ctx::{Component, Ctx};
use crate::error::{Error, KubeContext, is_not_found};
use crate::meta::{self, annotation_true, controller_of};
use crate::names;
use crate::runtime::{ObjKey, Requeue};
use crate::units::{now_rfc3339, parse_go_duration, seconds_since};

/// Upstream's default `failureDeadline`.
const DEFAULT_FAILURE_DEADLINE: Duration = Duration::from_secs(5 * 60);
/// Upstream's `snapshotRetryInterval`: another look after an attempt to lock the source.
const LOCK_RETRY: Duration = Duration::from_secs(5);
/// The lock message of a locked source.
const LOCKED: &str = "Source locked and operation in progress";

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

/// The name of the snapshot's content: from its status, else `vmsnapshot-content-<UID>`.
pub fn content_name(snapshot: &VirtualMachineSnapshot) -> String {
    snapshot
        .status
        .as_ref()
        .and_then(|s| s.virtual_machine_snapshot_content_name.clone())
        .unwrap_or_else(|| {
            format!(
                "{}{}",
                names::CONTENT_PREFIX,
                snapshot.metadata.uid.clone().unwrap_or_default()
            )
        })
}

fn phase(snapshot: &VirtualMachineSnapshot) -> Option<&str> {
    snapshot.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Upstream's `vmSnapshotProgressing`: neither `Succeeded` nor `Failed`.
fn progressing(snapshot: &VirtualMachineSnapshot) -> bool {
    !is_terminal(snapshot)
}

/// Upstream's `vmSnapshotDeadlineExceeded` (an injected failure counts as a passed deadline).
fn deadline_exceeded(
    ctx: &Ctx,
    snapshot: &VirtualMachineSnapshot,
    vm: Option<&VirtualMachine>,
) -> bool {
    match phase(snapshot) {
        Some("Failed") => true,
        Some("Succeeded") => false,
        _ => failure_injected(ctx, snapshot, vm) || time_left(snapshot).is_some_and(|l| l < 0.0),
    }
}

fn content_ready(content: &VirtualMachineSnapshotContent) -> bool {
    content.status.as_ref().and_then(|s| s.ready_to_use) == Some(true)
}

/// Upstream's `shouldDeleteContent`: the policy says so, or the content is not ready (no point
/// keeping it).
fn should_delete_content(
    snapshot: &VirtualMachineSnapshot,
    content: &VirtualMachineSnapshotContent,
) -> bool {
    snapshot.spec.deletion_policy.as_deref() != Some("Retain") || !content_ready(content)
}

/// Whether the content's second step (ready to use) is held back by the sim's knob.
fn readiness_held(
    ctx: &Ctx,
    snapshot: &VirtualMachineSnapshot,
    vm: Option<&VirtualMachine>,
) -> bool {
    let namespace = snapshot.namespace().unwrap_or_default();
    annotation_true(&snapshot.metadata, names::HOLD_SNAPSHOT_READY_ANNOTATION)
        || vm.is_some_and(|vm| annotation_true(&vm.metadata, names::HOLD_SNAPSHOT_READY_ANNOTATION))
        || ctx
            .namespace_annotation(&namespace, names::HOLD_SNAPSHOT_READY_ANNOTATION)
            .as_deref()
            == Some("true")
}

/// Reconciles one VirtualMachineSnapshot, and its content (upstream's `updateVMSnapshot` and
/// `updateVMSnapshotContent`, one pass after the other).
pub async fn reconcile(ctx: Arc<Ctx>, key: ObjKey) -> Result<Requeue, Error> {
    let Some(snapshot) = ctx.snapshots.get_key(&key) else {
        release_contents_of_missing_snapshot(&ctx, &key).await?;
        return Ok(None);
    };
    let namespace = key.namespace.clone();
    let name = key.name.clone();
    if snapshot.spec.source.kind != "VirtualMachine" {
        // KubeVirt's admission (here: the snapshot admission policy) refuses other kinds.
        tracing::warn!(%key, kind = %snapshot.spec.source.kind, "unsupported snapshot source");
        return Ok(None);
    }
    let vm = ctx.vms.get(&namespace, &snapshot.spec.source.name);
    let content = ctx.contents.get(&namespace, &content_name(&snapshot));
    let deleting = snapshot.metadata.deletion_timestamp.is_some();
    let terminating = deleting || deadline_exceeded(&ctx, &snapshot, vm.as_deref());
    let snapshots: Api<VirtualMachineSnapshot> = ctx.api(&namespace);
    if !terminating && !meta::has_finalizer(&snapshot.metadata, names::SNAPSHOT_FINALIZER) {
        ctx.pace().await;
        meta::add_finalizer(&snapshots, &snapshot.metadata, names::SNAPSHOT_FINALIZER).await?;
    }

    // The source lock.
    let locked_before = vm.as_deref().is_some_and(|vm| is_locked_by(vm, &name));
    let mut locked = locked_before;
    let mut lock_message = if locked {
        LOCKED.to_owned()
    } else {
        "Source not locked".to_owned()
    };
    let mut retry = None;
    let mut can_remove_finalizer = true;
    if snapshot.status.is_some()
        && let Some(vm) = &vm
    {
        if progressing(&snapshot) && !terminating {
            if !locked {
                match lock_blocker(&ctx, vm, &name) {
                    Some(reason) => lock_message.push_str(&reason),
                    None => {
                        ctx.pace().await;
                        lock(&ctx, vm, &name).await?;
                        locked = true;
                        lock_message = LOCKED.to_owned();
                    }
                }
                retry = Some(LOCK_RETRY);
            } else if content.is_none() {
                ctx.pace().await;
                create_content(&ctx, &snapshot, vm, &content_name(&snapshot)).await?;
            }
            can_remove_finalizer = false;
        } else {
            let content_gone_if_needed = content
                .as_deref()
                .is_none_or(|c| !should_delete_content(&snapshot, c));
            let can_unlock = !progressing(&snapshot) || (terminating && content_gone_if_needed);
            if can_unlock && snapshot_in_progress(vm) == Some(name.as_str()) {
                ctx.pace().await;
                unlock(&ctx, vm).await?;
            }
            // As upstream, judged by the lock as this pass found it: the finalizer goes on the
            // pass after the unlock.
            can_remove_finalizer = !locked_before;
        }
    }

    // A terminating snapshot deletes its content when it should.
    if terminating
        && let Some(content) = &content
        && should_delete_content(&snapshot, content)
        && content.metadata.deletion_timestamp.is_none()
    {
        ctx.pace().await;
        let contents: Api<VirtualMachineSnapshotContent> = ctx.api(&namespace);
        match contents
            .delete(&content.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(err).kube(|| format!("deleting {}", content.name_any())),
        }
    }

    // The content controller's part: release a terminating snapshot's content, else advance it.
    if let Some(content) = &content {
        let contents: Api<VirtualMachineSnapshotContent> = ctx.api(&namespace);
        if terminating {
            if meta::has_finalizer(&content.metadata, names::CONTENT_FINALIZER) {
                ctx.pace().await;
                meta::remove_finalizer(&contents, &content.metadata, names::CONTENT_FINALIZER)
                    .await?;
            }
        } else if content.metadata.deletion_timestamp.is_none() {
            let unlocked = vm
                .as_deref()
                .is_none_or(|vm| snapshot_in_progress(vm) != Some(name.as_str()));
            let second_step = phase(&snapshot) == Some("Succeeded")
                && unlocked
                && !readiness_held(&ctx, &snapshot, vm.as_deref());
            advance_content(&ctx, content, second_step).await?;
        }
    }

    let status = snapshot_status(
        &ctx,
        &snapshot,
        vm.as_deref(),
        content.as_deref(),
        (locked, &lock_message),
    );
    write_status(&ctx, &snapshot, status).await?;

    if deleting && can_remove_finalizer {
        ctx.pace().await;
        meta::remove_finalizer(&snapshots, &snapshot.metadata, names::SNAPSHOT_FINALIZER).await?;
    }
    if !progressing(&snapshot) || terminating {
        return Ok(retry);
    }
    let until_deadline = time_left(&snapshot)
        .map(|l| Duration::from_secs_f64(l.max(0.0)) + Duration::from_millis(100));
    Ok(match (retry, until_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Upstream's `updateSnapshotStatus`: the status as it follows from the content and the lock.
fn snapshot_status(
    ctx: &Ctx,
    snapshot: &VirtualMachineSnapshot,
    vm: Option<&VirtualMachine>,
    content: Option<&VirtualMachineSnapshotContent>,
    (locked, lock_message): (bool, &str),
) -> Value {
    let mut status = snapshot
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"readyToUse": false}));
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(vm) = vm {
        status["sourceUID"] = json!(vm.metadata.uid.clone().unwrap_or_default());
    }
    if let Some(content) = content
        && let Some(content_status) = &content.status
    {
        status["virtualMachineSnapshotContentName"] = json!(content.name_any());
        status["creationTime"] = content_status.creation_time.clone().unwrap_or(Value::Null);
        status["readyToUse"] = json!(content_status.ready_to_use);
        status["error"] = content_status
            .error
            .as_ref()
            .map(|e| json!(e))
            .unwrap_or(Value::Null);
    }
    let mut set = |type_: &str, value: bool, reason: &str| {
        conditions::set_kubevirt(&mut conditions, conditions::kubevirt(type_, value, reason));
    };
    let created = status.get("creationTime").is_some_and(|t| !t.is_null());
    if deadline_exceeded(ctx, snapshot, vm) {
        status["phase"] = json!("Failed");
        set("Failure", true, names::SNAPSHOT_DEADLINE_EXCEEDED);
        set("Progressing", false, "Operation failed");
    } else if phase(snapshot) == Some("Succeeded") || created {
        status["phase"] = json!("Succeeded");
        set("Progressing", false, "Operation complete");
        if let Some(content) = content {
            status["snapshotVolumes"] = snapshot_volumes(content);
        }
    } else {
        status["phase"] = json!("InProgress");
        match vm {
            Some(vm) => {
                set("Progressing", locked, lock_message);
                let online = ctx
                    .vmis
                    .get(&vm.namespace().unwrap_or_default(), &vm.name_any())
                    .is_some();
                set_indications(&mut status, online);
            }
            None => set("Progressing", false, "Source does not exist"),
        }
        if snapshot.metadata.deletion_timestamp.is_some() {
            status["phase"] = json!("Deleting");
            set("Progressing", false, names::SNAPSHOT_DELETING);
        }
    }
    let ready = status.get("readyToUse").and_then(Value::as_bool) == Some(true);
    set("Ready", ready, if ready { "Ready" } else { "Not ready" });
    if status.get("error").is_some_and(|e| !e.is_null()) {
        set("Progressing", false, "In error state");
    }
    status["conditions"] = json!(conditions);
    status
}

/// Upstream's content controller for a content whose snapshot is gone: it loses its finalizer
/// (and stays, when its snapshot retained it).
async fn release_contents_of_missing_snapshot(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let contents: Api<VirtualMachineSnapshotContent> = ctx.api(&key.namespace);
    for content in ctx.contents.in_namespace(&key.namespace) {
        if content.spec.virtual_machine_snapshot_name.as_deref() == Some(key.name.as_str())
            && meta::has_finalizer(&content.metadata, names::CONTENT_FINALIZER)
        {
            ctx.pace().await;
            meta::remove_finalizer(&contents, &content.metadata, names::CONTENT_FINALIZER).await?;
        }
    }
    Ok(())
}

fn set_indications(status: &mut Value, online: bool) {
    if online {
        // Upstream keeps them in a set and lists it sorted.
        status["indications"] = json!(["NoGuestAgent", "Online"]);
        status["sourceIndications"] = json!([
            {"indication": "NoGuestAgent", "message": "Guest agent was not available. Snapshot is crash-consistent and may not be application-consistent."},
            {"indication": "Online", "message": "Snapshot taken while the VM was running. Consistency depends on guest-agent quiescing."},
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
    // As upstream: a finalizer and no owner: the snapshot controller deletes the content.
    let metadata = json!({
        "name": content_name,
        "namespace": namespace,
        "finalizers": [names::CONTENT_FINALIZER],
    });
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

/// The content's status in two steps, as a CSI driver that cuts its snapshots at once and
/// finishes them later makes upstream's content controller write it: first `creationTime` (each
/// VolumeSnapshot cut, the source may be unlocked) with `readyToUse: false`; then, once
/// `second_step` allows, `readyToUse: true`. Without volume backups both come in the first write.
async fn advance_content(
    ctx: &Ctx,
    content: &VirtualMachineSnapshotContent,
    second_step: bool,
) -> Result<(), Error> {
    let status = content.status.clone().unwrap_or_default();
    let snapshots: Vec<&String> = content
        .spec
        .volume_backups
        .iter()
        .flatten()
        .filter_map(|b| b.volume_snapshot_name.as_ref())
        .collect();
    let body = match &status.creation_time {
        None => {
            let now = now_rfc3339();
            let volume_statuses: Vec<Value> = snapshots
                .iter()
                .map(|name| json!({"volumeSnapshotName": name, "creationTime": now, "readyToUse": false}))
                .collect();
            json!({"status": {
                "creationTime": now,
                "readyToUse": snapshots.is_empty(),
                "volumeSnapshotStatus": volume_statuses,
            }})
        }
        Some(created) if status.ready_to_use != Some(true) && second_step => {
            let volume_statuses: Vec<Value> = snapshots
                .iter()
                .map(|name| json!({"volumeSnapshotName": name, "creationTime": created, "readyToUse": true}))
                .collect();
            json!({"status": {"readyToUse": true, "volumeSnapshotStatus": volume_statuses}})
        }
        Some(_) => return Ok(()),
    };
    ctx.pace().await;
    let api: Api<VirtualMachineSnapshotContent> = ctx.api(&content.namespace().unwrap_or_default());
    meta::patch_status(&api, &content.name_any(), &body).await
}
