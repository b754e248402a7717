//! KubeVirt's VirtualMachineRestore controller (v1.7.0), on the path a clone takes: restoring a
//! snapshot into a VM that does not exist yet (research §5.3).
//!
//! Per restore, in upstream's order: initialise the status; while in progress, the finalizer
//! `snapshot.kubevirt.io/vmrestore-protection` and, once the target VM exists and nothing owns
//! the restore, an owner reference to it (one write); handle a running target by
//! `targetReadinessPolicy`; require the snapshot and its content ready; refuse a different
//! existing target (non-terminal error, as upstream); record one volume restore per backup,
//! create the PVCs (named by `volumeRestorePolicy`: `InPlace` or the default, as v1.7.0 knows no
//! other — v1.8's `PrefixTargetName` gets default names) and wait for Immediate ones to bind; mark
//! DataVolume-template PVCs `populatedFor` their renamed DataVolume and create those DataVolumes
//! pre-populated; build the new VM as upstream (content labels/annotations, renamed volumes and
//! templates, halted, `lastRestoreUID`), shaped as Go marshals it (module `go_vm`), apply
//! `spec.patches` with the sim's own applier of KubeVirt's JSON Patch semantics (module
//! `jsonpatch`), refuse quantities Go cannot unmarshal (`cannot unmarshal modified marshalled vm
//! ...`), create it (the API server's refusal is the error text); then complete.
//!
//! Errors are upstream's `doUpdateError`: Progressing and Ready false with the text as reason, a
//! Warning `VirtualMachineRestoreError` event, and a retry with exponential backoff for as long as
//! the error lasts — a restore whose patches never apply, or whose VM is never admitted, is
//! retried for ever and never completes. Deleting a restore: the target's `restoreInProgress` is
//! released, the conditions say `VM restore is deleting`, then the finalizer goes.
//!
//! Simplified: restored PVCs have no `dataSource` (the sim's snapshots create no VolumeSnapshots
//! to restore from) and request the source's size; restoring into the source VM itself (in
//! place) and the `InPlace` volume policy are not implemented (a non-terminal error says so);
//! instance type revisions are not restored; no legacy firmware UUID is set when the target
//! keeps the source VM's name; Go's type errors other than quantities surface as the API
//! server's schema refusal instead; a VM created by an earlier pass that this pass's cache does
//! not show yet is adopted rather than reported as `already exists` for one pass.
//!
//! This file is the controller's pass (status, conditions, events, finalizer, deletion); the
//! volume restores are in `volumes`, the new target VM in `target`, and every object they write
//! is built without IO in `build`.

use std::sync::Arc;
use std::time::Duration;

use clone_api::kubevirt::{
    VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot, VirtualMachineSnapshotContent,
};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::conditions;
use crate::ctx::{Component, Ctx};
use crate::error::Error;
use crate::meta::{self, annotation, annotation_true, controller_ref};
use crate::names;
use crate::runtime::{ObjKey, Requeue};
use crate::snapshot::{content_name, normalized};
use crate::units::{now_rfc3339, seconds_since};

mod build;
mod target;
mod volumes;

use build::last_restore_uid;
use target::reconcile_new_target;
use volumes::{Step, reconcile_volume_restores};

/// How long upstream waits for a running target before failing (`DefaultGracePeriod`).
const GRACE_PERIOD: Duration = Duration::from_secs(5 * 60);

/// Whether a failure is injected for this restore (config, restore, source VM, namespace).
fn failure_injected(
    ctx: &Ctx,
    restore: &VirtualMachineRestore,
    content: Option<&VirtualMachineSnapshotContent>,
) -> bool {
    let namespace = restore.namespace().unwrap_or_default();
    let source_vm_fails = content
        .and_then(|c| c.spec.source.virtual_machine.as_ref())
        .and_then(|vm| vm.pointer("/metadata/annotations"))
        .and_then(|a| a.get(names::FAIL_RESTORE_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true");
    ctx.config.fail_restores
        || annotation_true(&restore.metadata, names::FAIL_RESTORE_ANNOTATION)
        || source_vm_fails
        || ctx
            .namespace_annotation(&namespace, names::FAIL_RESTORE_ANNOTATION)
            .as_deref()
            == Some("true")
}

/// One pass over a restore: its current status, edited and written at the end.
struct Pass<'a> {
    ctx: &'a Ctx,
    restore: &'a VirtualMachineRestore,
    status: Value,
    conditions: Vec<Value>,
}

impl<'a> Pass<'a> {
    fn new(ctx: &'a Ctx, restore: &'a VirtualMachineRestore) -> Self {
        let mut status = restore
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let conditions = status
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(map) = status.as_object_mut() {
            map.remove("conditions");
        }
        Self {
            ctx,
            restore,
            status,
            conditions,
        }
    }

    fn namespace(&self) -> String {
        self.restore.namespace().unwrap_or_default()
    }

    fn set(&mut self, type_: &str, status: bool, reason: &str) {
        conditions::set_kubevirt(
            &mut self.conditions,
            conditions::kubevirt(type_, status, reason),
        );
    }

    /// Writes the status if it changed; whether it did.
    async fn write(mut self) -> Result<bool, Error> {
        self.status["conditions"] = json!(self.conditions);
        let current = self
            .restore
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        if normalized(&current) == normalized(&self.status) {
            return Ok(false);
        }
        let api: Api<VirtualMachineRestore> = self.ctx.api(&self.namespace());
        meta::patch_status(
            &api,
            &self.restore.name_any(),
            &json!({ "status": self.status }),
        )
        .await?;
        Ok(true)
    }

    /// A non-terminal error, as upstream's `doUpdateError`: Progressing/Ready false with the
    /// text as reason, a Warning event, and the error returned, so that the restore is retried
    /// with exponential backoff (upstream: its queue's rate limiter) for as long as it fails.
    async fn error(mut self, message: &str) -> Result<Requeue, Error> {
        self.set("Progressing", false, message);
        self.set("Ready", false, message);
        self.ctx
            .event(
                Component::KubeVirt,
                self.restore,
                true,
                "VirtualMachineRestoreError",
                format!("VirtualMachineRestore encountered error {message}"),
            )
            .await;
        // The log line keeps the start of the text (it can hold a whole VM).
        let short: String = message.chars().take(300).collect();
        let error = Error::Invalid(format!(
            "VirtualMachineRestore {}/{}: {short}",
            self.namespace(),
            self.restore.name_any()
        ));
        self.write().await?;
        Err(error)
    }

    /// A terminal failure, as upstream's `doUpdateErrorWithFailure(.., true)`.
    async fn fail(mut self, message: &str) -> Result<Requeue, Error> {
        self.ctx.pace().await;
        self.set("Progressing", false, message);
        self.set("Ready", false, message);
        self.set("Failure", true, message);
        self.ctx
            .event(
                Component::KubeVirt,
                self.restore,
                true,
                "Operation failed",
                format!("VirtualMachineRestore failed {message}"),
            )
            .await;
        self.write().await?;
        Ok(None)
    }

    /// Progress: a step was taken; conditions say which.
    async fn progress(mut self, progressing: &str, ready: &str) -> Result<Requeue, Error> {
        self.set("Progressing", true, progressing);
        self.set("Ready", false, ready);
        self.write().await?;
        Ok(None)
    }
}

/// Reconciles one VirtualMachineRestore.
pub async fn reconcile(ctx: Arc<Ctx>, key: ObjKey) -> Result<Requeue, Error> {
    let Some(restore) = ctx.restores.get_key(&key) else {
        return Ok(None);
    };
    let Some(status) = &restore.status else {
        let mut pass = Pass::new(&ctx, &restore);
        pass.status["complete"] = json!(false);
        return pass
            .progress(
                "Initializing VirtualMachineRestore",
                "Initializing VirtualMachineRestore",
            )
            .await;
    };
    let namespace = key.namespace.clone();
    let pass = Pass::new(&ctx, &restore);
    if restore.spec.target.kind != "VirtualMachine" {
        return pass
            .error(&format!("unknown source {:?}", restore.spec.target))
            .await;
    }
    let target = ctx.vms.get(&namespace, &restore.spec.target.name);
    if restore.metadata.deletion_timestamp.is_some() {
        return handle_deletion(pass, target.as_deref()).await;
    }
    if status.is_complete() || status.failure().is_some() {
        return Ok(None);
    }
    protect(&ctx, &restore, target.as_deref()).await?;

    let snapshot = ctx
        .snapshots
        .get(&namespace, &restore.spec.virtual_machine_snapshot_name);
    let content = snapshot.as_ref().and_then(|s| content_of(&ctx, s));
    if failure_injected(&ctx, &restore, content.as_deref()) {
        return pass.fail(names::RESTORE_TARGET_NOT_READY).await;
    }

    if let Some(target) = &target
        && ctx.vmis.get(&namespace, &target.name_any()).is_some()
    {
        return target_not_ready(pass, target).await;
    }

    let snapshot_key = format!("{namespace}/{}", restore.spec.virtual_machine_snapshot_name);
    let snapshot = match snapshot {
        None => {
            return pass
                .error(&format!("VMSnapshot {snapshot_key} does not exist"))
                .await;
        }
        Some(s) => s,
    };
    let snapshot_status = snapshot.status.clone().unwrap_or_default();
    if snapshot_status.phase.as_deref() == Some("Failed") {
        return pass
            .error(&format!(
                "VMSnapshot {snapshot_key} failed and is invalid to use"
            ))
            .await;
    }
    if !snapshot_status.is_ready() {
        return pass
            .error(&format!("VMSnapshot {snapshot_key} not ready"))
            .await;
    }
    let Some(content_name) = snapshot_status
        .virtual_machine_snapshot_content_name
        .clone()
    else {
        return pass
            .error(&format!("no snapshot content name in {snapshot_key}"))
            .await;
    };

    if let Some(target) = &target
        && annotation(&target.metadata, names::LAST_RESTORE_UID)
            != Some(last_restore_uid(&restore).as_str())
    {
        let different = snapshot_status
            .source_uid
            .as_deref()
            .is_some_and(|uid| Some(uid) != target.metadata.uid.as_deref());
        if different {
            return pass.error(names::RESTORE_TARGET_EXISTS).await;
        }
        return pass
            .error("kubevirt-sim does not implement restoring into the snapshot's own VM (in-place restore)")
            .await;
    }
    if restore.spec.volume_restore_policy.as_deref() == Some("InPlace") {
        return pass
            .error("kubevirt-sim does not implement volumeRestorePolicy InPlace")
            .await;
    }

    let content_key = format!("{namespace}/{content_name}");
    let Some(content) = ctx.contents.get(&namespace, &content_name) else {
        return pass
            .error(&format!("VMSnapshotContent {content_key} does not exist"))
            .await;
    };
    if content.status.as_ref().and_then(|s| s.ready_to_use) != Some(true) {
        return pass
            .error(&format!("VMSnapshotContent {content_key} not ready"))
            .await;
    }
    let Some(source_vm) = content.spec.source.virtual_machine.clone() else {
        return pass.error("unexpected snapshot source").await;
    };

    match reconcile_volume_restores(pass, &content, &source_vm, target.as_deref()).await? {
        Step::Done(pass) => {
            if target.is_some() {
                complete(pass).await
            } else {
                reconcile_new_target(pass, &source_vm).await
            }
        }
        Step::Waiting(requeue) => Ok(requeue),
    }
}

fn content_of(
    ctx: &Ctx,
    snapshot: &VirtualMachineSnapshot,
) -> Option<Arc<VirtualMachineSnapshotContent>> {
    let namespace = snapshot.namespace().unwrap_or_default();
    ctx.contents.get(&namespace, &content_name(snapshot))
}

/// Upstream's `handleVMRestoreTargetNotReady`: the target VM runs.
async fn target_not_ready(mut pass: Pass<'_>, target: &VirtualMachine) -> Result<Requeue, Error> {
    let policy = pass
        .restore
        .spec
        .extra
        .get("targetReadinessPolicy")
        .and_then(Value::as_str)
        .unwrap_or("WaitGracePeriod")
        .to_owned();
    let (reason, event, requeue) = match policy.as_str() {
        "FailImmediate" => return pass.fail(names::RESTORE_TARGET_NOT_READY).await,
        "WaitGracePeriod" => {
            let elapsed = pass
                .restore
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| seconds_since(&t.0))
                .unwrap_or_default();
            let left = GRACE_PERIOD.as_secs_f64() - elapsed;
            if left <= 0.0 {
                return pass.fail(names::RESTORE_GRACE_PERIOD_EXCEEDED).await;
            }
            (
                names::RESTORE_WAIT_GRACE_PERIOD,
                names::RESTORE_VMI_EXISTS,
                Some(Duration::from_secs_f64(left) + Duration::from_millis(100)),
            )
        }
        "WaitEventually" => (
            names::RESTORE_WAIT_EVENTUALLY,
            names::RESTORE_VMI_EXISTS,
            None,
        ),
        "StopTarget" => {
            pass.ctx.pace().await;
            let api: Api<VirtualMachine> = pass.ctx.api(&pass.namespace());
            let stop = if target.spec.running.is_some() {
                json!({"spec": {"running": false}})
            } else {
                json!({"spec": {"runStrategy": "Halted"}})
            };
            meta::merge_patch(&api, &target.name_any(), &stop).await?;
            (names::RESTORE_STOP_TARGET, names::RESTORE_STOP_TARGET, None)
        }
        other => {
            return pass
                .error(&format!("unknown targetReadinessPolicy: {other}"))
                .await;
        }
    };
    pass.ctx
        .event(
            Component::KubeVirt,
            pass.restore,
            true,
            "RestoreTargetNotReady",
            event.to_owned(),
        )
        .await;
    pass.set("Progressing", false, reason);
    pass.set("Ready", false, reason);
    pass.write().await?;
    Ok(requeue)
}

async fn complete(mut pass: Pass<'_>) -> Result<Requeue, Error> {
    pass.ctx.pace().await;
    pass.ctx
        .event(
            Component::KubeVirt,
            pass.restore,
            false,
            "VirtualMachineRestoreComplete",
            format!(
                "Successfully completed VirtualMachineRestore {}",
                pass.restore.name_any()
            ),
        )
        .await;
    pass.status["complete"] = json!(true);
    pass.status["restoreTime"] = json!(now_rfc3339());
    pass.set("Progressing", false, "Operation complete");
    pass.set("Ready", true, "Operation complete");
    pass.write().await?;
    Ok(None)
}

/// Upstream's owner reference (the target, when it exists and nothing owns the restore yet) and
/// finalizer, added in one write while the restore is in progress.
async fn protect(
    ctx: &Ctx,
    restore: &VirtualMachineRestore,
    target: Option<&VirtualMachine>,
) -> Result<(), Error> {
    let owner = target
        .filter(|_| {
            restore
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty)
        })
        .map(|t| controller_ref(names::KUBEVIRT_API_VERSION, "VirtualMachine", &t.metadata));
    let finalized = meta::has_finalizer(&restore.metadata, names::RESTORE_FINALIZER);
    if owner.is_none() && finalized {
        return Ok(());
    }
    let current = restore.metadata.finalizers.as_ref();
    let mut desired: Vec<String> = current.into_iter().flatten().cloned().collect();
    if !finalized {
        desired.push(names::RESTORE_FINALIZER.to_owned());
    }
    let mut operations = meta::finalizer_operations(current, &desired);
    if let Some(owner) = owner {
        operations
            .push(json!({"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}));
    }
    let api: Api<VirtualMachineRestore> = ctx.api(&restore.namespace().unwrap_or_default());
    meta::json_patch(&api, &restore.name_any(), operations).await
}

/// Upstream's `handleVMRestoreDeletion`: release the target's `restoreInProgress`, say the
/// restore is deleting, then (next pass) remove the finalizer.
async fn handle_deletion(
    mut pass: Pass<'_>,
    target: Option<&VirtualMachine>,
) -> Result<Requeue, Error> {
    let ctx = pass.ctx;
    let restore = pass.restore;
    if !meta::has_finalizer(&restore.metadata, names::RESTORE_FINALIZER) {
        return Ok(None);
    }
    let name = restore.name_any();
    if let Some(target) = target
        && target
            .status
            .as_ref()
            .and_then(|s| s.extra.get("restoreInProgress"))
            .and_then(Value::as_str)
            == Some(name.as_str())
    {
        ctx.pace().await;
        let api: Api<VirtualMachine> = ctx.api(&pass.namespace());
        meta::patch_status(
            &api,
            &target.name_any(),
            &json!({"status": {"restoreInProgress": null, "memoryDumpRequest": null}}),
        )
        .await?;
    }
    pass.set("Progressing", false, names::RESTORE_DELETING);
    pass.set("Ready", false, names::RESTORE_DELETING);
    ctx.pace().await;
    if pass.write().await? {
        return Ok(None);
    }
    let api: Api<VirtualMachineRestore> = ctx.api(&restore.namespace().unwrap_or_default());
    meta::remove_finalizer(&api, &restore.metadata, names::RESTORE_FINALIZER).await?;
    Ok(None)
}
