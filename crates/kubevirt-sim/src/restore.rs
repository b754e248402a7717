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

use std::sync::Arc;
use std::time::Duration;

use clone_api::kubevirt::{
    DataVolume, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent, VolumeBackup,
};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Map, Value, json};

use crate::conditions;
use crate::ctx::{Component, Ctx};
use crate::error::Error;
use crate::go_vm;
use crate::jsonpatch;
use crate::meta::{self, annotation, annotation_true, controller_ref};
use crate::names;
use crate::runtime::{ObjKey, Requeue};
use crate::snapshot::{content_name, normalized};
use crate::units::{now_rfc3339, seconds_since};
use crate::vm::dv_ready_phase;

/// How long upstream waits for a running target before failing (`DefaultGracePeriod`).
const GRACE_PERIOD: Duration = Duration::from_secs(5 * 60);

/// Annotation prefixes upstream drops from restored PVCs.
const DROPPED_ANNOTATION_PREFIXES: [&str; 6] = [
    "pv.kubernetes.io",
    "volume.beta.kubernetes.io",
    "cdi.kubevirt.io",
    "volume.kubernetes.io",
    "k8s.io/CloneRequest",
    "k8s.io/CloneOf",
];

/// `<restore name>-<restore UID>`, the value of `restore.kubevirt.io/lastRestoreUID`.
pub fn last_restore_uid(restore: &VirtualMachineRestore) -> String {
    format!(
        "{}-{}",
        restore.name_any(),
        restore.metadata.uid.clone().unwrap_or_default()
    )
}

/// The name of the restored PVC (and DataVolume) of `volume`, whose claim was `claim`.
pub fn restore_volume_name(restore: &VirtualMachineRestore, volume: &str, claim: &str) -> String {
    if let Some(name) = volume_override(restore, volume)
        .and_then(|o| o.get("restoreName"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return name.to_owned();
    }
    match restore.spec.volume_restore_policy.as_deref() {
        Some("InPlace") => claim.to_owned(),
        // v1.7.0 knows no other policy (v1.8's `PrefixTargetName` names like the default).
        _ => format!(
            "restore-{}-{volume}",
            restore.metadata.uid.clone().unwrap_or_default()
        ),
    }
}

fn volume_override<'a>(restore: &'a VirtualMachineRestore, volume: &str) -> Option<&'a Value> {
    restore
        .spec
        .extra
        .get("volumeRestoreOverrides")?
        .as_array()?
        .iter()
        .find(|o| o.get("volumeName").and_then(Value::as_str) == Some(volume))
}

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

enum Step<'a> {
    Done(Pass<'a>),
    Waiting(Requeue),
}

fn restores_of(pass: &Pass<'_>) -> Vec<Value> {
    pass.status
        .get("restores")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn str_field<'v>(value: &'v Value, field: &str) -> &'v str {
    value.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// The volumes (by name) of the content VM that are memory dumps (never restored).
fn memory_dump_volumes(source_vm: &Value) -> Vec<String> {
    source_vm
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("memoryDump").is_some())
        .map(|v| str_field(v, "name").to_owned())
        .collect()
}

/// Upstream's `reconcileVolumeRestores` plus `updateVMRestoreRestores`.
async fn reconcile_volume_restores<'a>(
    mut pass: Pass<'a>,
    content: &VirtualMachineSnapshotContent,
    source_vm: &Value,
    target: Option<&VirtualMachine>,
) -> Result<Step<'a>, Error> {
    let ctx = pass.ctx;
    let restore = pass.restore;
    let namespace = pass.namespace();
    let skipped = memory_dump_volumes(source_vm);
    let current = restores_of(&pass);
    let backups: Vec<&VolumeBackup> = content
        .spec
        .volume_backups
        .iter()
        .flatten()
        .filter(|b| !skipped.contains(&b.volume_name))
        .collect();

    // 1. Record one volume restore per backup.
    let mut desired = Vec::new();
    for backup in &backups {
        if let Some(existing) = current
            .iter()
            .find(|r| str_field(r, "volumeName") == backup.volume_name)
        {
            desired.push(existing.clone());
            continue;
        }
        let Some(snapshot_name) = &backup.volume_snapshot_name else {
            return pass
                .error(&format!(
                    "VolumeSnapshotName missing {}",
                    backup.volume_name
                ))
                .await
                .map(Step::Waiting);
        };
        let claim = backup
            .persistent_volume_claim
            .as_ref()
            .and_then(|p| p.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        desired.push(json!({
            "volumeName": backup.volume_name,
            "persistentVolumeClaim": restore_volume_name(restore, &backup.volume_name, claim),
            "volumeSnapshotName": snapshot_name,
        }));
    }
    if desired != current {
        pass.status["restores"] = json!(desired);
        return pass
            .progress("Creating new PVCs", "Waiting for new PVCs")
            .await
            .map(Step::Waiting);
    }

    // 2. Create the PVCs; wait for Immediate ones to bind.
    let mut created = false;
    let mut waiting = false;
    for entry in &desired {
        let pvc_name = str_field(entry, "persistentVolumeClaim");
        match ctx.pvcs.get(&namespace, pvc_name) {
            None => {
                let Some(backup) = backups
                    .iter()
                    .find(|b| b.volume_name == str_field(entry, "volumeName"))
                else {
                    continue;
                };
                let dv_owner = entry.get("dataVolumeName").and_then(Value::as_str);
                ctx.pace().await;
                let pvc = restored_pvc(restore, entry, backup, source_vm, dv_owner, target);
                let api: Api<PersistentVolumeClaim> = ctx.api(&namespace);
                meta::create_json(&api, pvc).await?;
                created = true;
            }
            Some(pvc) => {
                let phase = pvc
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or("Pending");
                match phase {
                    "Bound" => {}
                    "Pending" => {
                        let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
                        match class {
                            None => waiting = true,
                            Some(class) => match ctx.classes.get("", &class) {
                                None => {
                                    return pass
                                        .error(&format!("StorageClass {class} does not exist"))
                                        .await
                                        .map(Step::Waiting);
                                }
                                Some(sc) => {
                                    let wffc = sc.volume_binding_mode.as_deref()
                                        == Some("WaitForFirstConsumer");
                                    waiting |= !wffc;
                                }
                            },
                        }
                    }
                    other => {
                        return pass
                            .error(&format!("PVC {namespace}/{pvc_name} in status {other:?}"))
                            .await
                            .map(Step::Waiting);
                    }
                }
            }
        }
    }
    if created || waiting {
        return pass
            .progress("Creating new PVCs", "Waiting for new PVCs")
            .await
            .map(Step::Waiting);
    }

    // 3. PVCs of DataVolume templates are populated for their renamed DataVolume.
    if target.is_none() {
        let templates = template_names(source_vm);
        let mut updated = desired.clone();
        for entry in &mut updated {
            let volume = str_field(entry, "volumeName").to_owned();
            let Some(dv) = data_volume_of(source_vm, &volume) else {
                continue;
            };
            if !templates.contains(&dv) {
                continue;
            }
            let dv_name = restore_volume_name(restore, &volume, &dv);
            let pvc_name = str_field(entry, "persistentVolumeClaim").to_owned();
            let Some(pvc) = ctx.pvcs.get(&namespace, &pvc_name) else {
                return pass
                    .error(&format!(
                        "pvc {namespace}/{pvc_name} does not exist and should"
                    ))
                    .await
                    .map(Step::Waiting);
            };
            if annotation(&pvc.metadata, names::CDI_POPULATED_FOR) != Some(dv_name.as_str()) {
                let api: Api<PersistentVolumeClaim> = ctx.api(&namespace);
                meta::merge_patch(
                    &api,
                    &pvc_name,
                    &json!({"metadata": {
                        "annotations": {names::CDI_POPULATED_FOR: dv_name},
                        "ownerReferences": null,
                    }}),
                )
                .await?;
            }
            entry["dataVolumeName"] = json!(dv_name);
        }
        if updated != desired {
            pass.status["restores"] = json!(updated);
            return pass
                .progress("Updating target spec", "Waiting for target update")
                .await
                .map(Step::Waiting);
        }
    }
    Ok(Step::Done(pass))
}

fn template_names(source_vm: &Value) -> Vec<String> {
    source_vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn data_volume_of(source_vm: &Value, volume: &str) -> Option<String> {
    source_vm
        .pointer("/spec/template/spec/volumes")?
        .as_array()?
        .iter()
        .find(|v| str_field(v, "name") == volume)?
        .pointer("/dataVolume/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The PVC a volume restore creates (upstream's `CreateRestorePVCDefFromVMRestore`).
fn restored_pvc(
    restore: &VirtualMachineRestore,
    entry: &Value,
    backup: &VolumeBackup,
    source_vm: &Value,
    dv_owner: Option<&str>,
    target: Option<&VirtualMachine>,
) -> Value {
    let source = backup
        .persistent_volume_claim
        .clone()
        .unwrap_or_else(|| json!({}));
    let mut labels: Map<String, Value> = source
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.remove(names::PERSISTENT_STATE_LABEL);
    labels.insert(
        names::RESTORE_SOURCE_VM_NAME.into(),
        json!(str_field(
            source_vm.get("metadata").unwrap_or(&Value::Null),
            "name"
        )),
    );
    labels.insert(
        names::RESTORE_SOURCE_VM_NAMESPACE.into(),
        json!(str_field(
            source_vm.get("metadata").unwrap_or(&Value::Null),
            "namespace"
        )),
    );
    let mut annotations: Map<String, Value> = source
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.retain(|k, _| !DROPPED_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)));
    annotations.insert(names::RESTORE_NAME.into(), json!(restore.name_any()));
    annotations.insert(
        names::LAST_RESTORE_UID.into(),
        json!(last_restore_uid(restore)),
    );
    if let Some(o) = volume_override(restore, &backup.volume_name) {
        for (field, map) in [("labels", &mut labels), ("annotations", &mut annotations)] {
            if let Some(extra) = o.get(field).and_then(Value::as_object) {
                map.extend(extra.clone());
            }
        }
    }
    let spec = source.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut new_spec = Map::new();
    for field in ["accessModes", "resources", "storageClassName", "volumeMode"] {
        if let Some(value) = spec.get(field) {
            new_spec.insert(field.into(), value.clone());
        }
    }
    // Simplified: no `dataSource`/`dataSourceRef` to the VolumeSnapshot, which does not exist.
    let mut metadata = json!({
        "name": str_field(entry, "persistentVolumeClaim"),
        "namespace": restore.namespace(),
        "labels": labels,
    });
    let ownership_none = restore
        .spec
        .extra
        .get("volumeOwnershipPolicy")
        .and_then(Value::as_str)
        == Some("None");
    match (dv_owner, target) {
        (Some(dv), _) => {
            annotations.insert(names::CDI_POPULATED_FOR.into(), json!(dv));
        }
        (None, Some(target)) if !ownership_none => {
            metadata["ownerReferences"] = json!([controller_ref(
                names::KUBEVIRT_API_VERSION,
                "VirtualMachine",
                &target.metadata
            )]);
        }
        (None, None) if !ownership_none && owned_by_source_vm(&source, source_vm) => {
            annotations.insert(names::RESTORE_OWNED_BY_VM.into(), json!(restore.name_any()));
        }
        _ => {}
    }
    metadata["annotations"] = json!(annotations);
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": new_spec,
    })
}

fn owned_by_source_vm(source_pvc: &Value, source_vm: &Value) -> bool {
    let vm_meta = source_vm.get("metadata").unwrap_or(&Value::Null);
    source_pvc
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            str_field(r, "kind") == "VirtualMachine"
                && str_field(r, "name") == str_field(vm_meta, "name")
                && str_field(r, "uid") == str_field(vm_meta, "uid")
        })
}

/// The VM a restore creates, before patches (upstream's `generateRestoredVMSpec` for a target
/// that does not exist).
pub fn restored_vm(
    restore: &VirtualMachineRestore,
    source_vm: &Value,
    restores: &[Value],
) -> Result<Value, String> {
    let mut spec = source_vm.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut templates: Vec<Value> = spec
        .get("dataVolumeTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let template_index = |templates: &[Value], name: &str| {
        templates
            .iter()
            .position(|t| t.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
    };
    let original_templates = templates.clone();
    let mut volumes = Vec::new();
    for volume in spec
        .pointer("/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = str_field(&volume, "name").to_owned();
        if volume.get("memoryDump").is_some() {
            continue;
        }
        let mut new_volume = volume.clone();
        let is_dv = volume.get("dataVolume").is_some();
        if is_dv || volume.get("persistentVolumeClaim").is_some() {
            for entry in restores
                .iter()
                .filter(|r| str_field(r, "volumeName") == name)
            {
                let claim = str_field(entry, "persistentVolumeClaim");
                if !is_dv {
                    new_volume["persistentVolumeClaim"]["claimName"] = json!(claim);
                    continue;
                }
                let dv_name = volume
                    .pointer("/dataVolume/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match template_index(&original_templates, dv_name) {
                    Some(index) => {
                        let Some(restored_dv) = entry.get("dataVolumeName").and_then(Value::as_str)
                        else {
                            return Err(format!(
                                "DataVolumeName for dv {dv_name} should have been updated already"
                            ));
                        };
                        if let Some(template) = templates.get_mut(index) {
                            template["metadata"]["name"] = json!(restored_dv);
                        }
                        new_volume["dataVolume"]["name"] = json!(restored_dv);
                    }
                    None => {
                        new_volume =
                            json!({"name": name, "persistentVolumeClaim": {"claimName": claim}});
                    }
                }
            }
        }
        volumes.push(new_volume);
    }
    if spec.get("running").is_some_and(|r| !r.is_null()) {
        spec["running"] = json!(false);
    } else {
        spec["runStrategy"] = json!("Halted");
    }
    if let Some(map) = spec.as_object_mut() {
        if templates.is_empty() {
            map.remove("dataVolumeTemplates");
        } else {
            map.insert("dataVolumeTemplates".into(), json!(templates));
        }
    }
    if let Some(template_spec) = spec
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
    {
        if volumes.is_empty() {
            template_spec.remove("volumes");
        } else {
            template_spec.insert("volumes".into(), json!(volumes));
        }
    }
    let source_meta = source_vm.get("metadata").unwrap_or(&Value::Null);
    let mut annotations = source_meta
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        names::LAST_RESTORE_UID.into(),
        json!(last_restore_uid(restore)),
    );
    let mut metadata = json!({
        "name": restore.spec.target.name,
        "namespace": restore.namespace(),
        "annotations": annotations,
    });
    if let Some(labels) = source_meta.get("labels").filter(|l| l.is_object()) {
        metadata["labels"] = labels.clone();
    }
    Ok(json!({
        "apiVersion": names::KUBEVIRT_API_VERSION,
        "kind": "VirtualMachine",
        "metadata": metadata,
        "spec": spec,
        "status": {},
    }))
}

async fn reconcile_new_target(pass: Pass<'_>, source_vm: &Value) -> Result<Requeue, Error> {
    let ctx = pass.ctx;
    let restore = pass.restore;
    let namespace = pass.namespace();
    let restores = restores_of(&pass);
    let mut vm = match restored_vm(restore, source_vm, &restores) {
        Ok(vm) => vm,
        Err(message) => return pass.error(&message).await,
    };

    // DataVolumes of the renamed templates, pre-populated by the restored PVCs.
    let mut created = false;
    let mut waiting = false;
    let templates: Vec<Value> = vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for template in &templates {
        let name = template
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(dv) = ctx.dvs.get(&namespace, name) {
            waiting |= !dv_ready_phase(dv.status.as_ref().and_then(|s| s.phase.as_deref()));
            continue;
        }
        let Some(pvc) = ctx.pvcs.get(&namespace, name) else {
            return pass
                .error(&format!(
                    "when creating restore dv pvc {namespace}/{name} does not exist and should"
                ))
                .await;
        };
        let adoptable = annotation(&pvc.metadata, names::CDI_POPULATED_FOR) == Some(name)
            && pvc
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty);
        if !adoptable {
            continue;
        }
        let mut annotations = template
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        annotations.insert(names::RESTORE_NAME.into(), json!(restore.name_any()));
        annotations.insert(names::CDI_PRE_POPULATED.into(), json!("true"));
        let mut metadata =
            json!({"name": name, "namespace": namespace, "annotations": annotations});
        if let Some(labels) = template.pointer("/metadata/labels") {
            metadata["labels"] = labels.clone();
        }
        let dv = json!({
            "apiVersion": names::CDI_API_VERSION,
            "kind": "DataVolume",
            "metadata": metadata,
            "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        ctx.pace().await;
        let api: Api<DataVolume> = ctx.api(&namespace);
        if let Err(err) = meta::create_json(&api, dv).await {
            return pass
                .error(&format!("Failed to create restore DataVolume: {err}"))
                .await;
        }
        created = true;
    }
    if created || waiting {
        return pass
            .progress("Updating target spec", "Waiting for target update")
            .await;
    }

    // Upstream's `patchVM`: the typed VM marshalled, patched, unmarshalled again.
    let target_name = &restore.spec.target.name;
    go_vm::as_marshalled(&mut vm);
    let patches = restore.spec.patches.clone().unwrap_or_default();
    if !patches.is_empty() {
        vm = match jsonpatch::apply(&vm, &patches) {
            Ok(vm) => vm,
            Err(err) => {
                return pass
                    .error(&format!("error patching VM {target_name}: {err}"))
                    .await;
            }
        };
        if let Some(err) = go_vm::unmarshal_error(&vm) {
            return pass
                .error(&format!(
                    "error patching VM {target_name}: cannot unmarshal modified marshalled vm {vm}: {err}"
                ))
                .await;
        }
    }
    vm["apiVersion"] = json!(names::KUBEVIRT_API_VERSION);
    vm["kind"] = json!("VirtualMachine");
    let object: DynamicObject = match serde_json::from_value(vm) {
        Ok(object) => object,
        Err(err) => return pass.error(&format!("cannot marshall VM: {err}")).await,
    };
    ctx.pace().await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &namespace,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(names::KUBEVIRT_GROUP, "v1", "VirtualMachine"),
            "virtualmachines",
        ),
    );
    // The API server's answer (its schema refusing the VM, a VM of that name already there) is
    // upstream's error text: the Status message.
    let created = match api.create(&PostParams::default(), &object).await {
        Ok(created) => created,
        // This pass's cache did not show the VM an earlier pass created: carry on with it.
        Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => {
            match api.get_opt(target_name).await {
                Ok(Some(existing))
                    if existing.annotations().get(names::LAST_RESTORE_UID)
                        == Some(&last_restore_uid(restore)) =>
                {
                    existing
                }
                _ => return pass.error(&status.message).await,
            }
        }
        Err(kube::Error::Api(status)) => return pass.error(&status.message).await,
        Err(err) => return pass.error(&err.to_string()).await,
    };
    let created_vm: VirtualMachine = serde_json::to_value(created)
        .and_then(serde_json::from_value)
        .map_err(|source| Error::Json {
            action: format!("reading the created VM {namespace}/{target_name}"),
            source,
        })?;
    own_restored_pvcs(ctx, restore, &created_vm).await?;
    pass.progress("Updating target spec", "Waiting for target update")
        .await
}

/// Upstream's `updateRestorePVCOwnership`: PVCs marked `owned-by-vm` become owned by the VM.
async fn own_restored_pvcs(
    ctx: &Ctx,
    restore: &VirtualMachineRestore,
    vm: &VirtualMachine,
) -> Result<(), Error> {
    if restore
        .spec
        .extra
        .get("volumeOwnershipPolicy")
        .and_then(Value::as_str)
        == Some("None")
    {
        return Ok(());
    }
    let namespace = vm.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = ctx.api(&namespace);
    for volume in vm.spec.volumes() {
        let Some(claim) = &volume.persistent_volume_claim else {
            continue;
        };
        let Some(pvc) = ctx.pvcs.get(&namespace, &claim.claim_name) else {
            continue;
        };
        let orphan = pvc
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty);
        if orphan
            && annotation(&pvc.metadata, names::RESTORE_OWNED_BY_VM)
                == Some(restore.name_any().as_str())
        {
            let owner = controller_ref(names::KUBEVIRT_API_VERSION, "VirtualMachine", &vm.metadata);
            meta::merge_patch(
                &api,
                &claim.claim_name,
                &json!({"metadata": {
                    "ownerReferences": [owner],
                    "annotations": {names::RESTORE_OWNED_BY_VM: null},
                }}),
            )
            .await?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::TypedLocalObjectReference;
    use kube::api::ObjectMeta;

    fn restore(policy: Option<&str>, target: &str) -> VirtualMachineRestore {
        let mut restore = VirtualMachineRestore::new(
            "r",
            clone_api::kubevirt::VirtualMachineRestoreSpec {
                target: TypedLocalObjectReference {
                    api_group: Some("kubevirt.io".into()),
                    kind: "VirtualMachine".into(),
                    name: target.into(),
                },
                virtual_machine_snapshot_name: "s".into(),
                volume_restore_policy: policy.map(str::to_owned),
                ..Default::default()
            },
        );
        restore.metadata = ObjectMeta {
            name: Some("r".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            ..ObjectMeta::default()
        };
        restore
    }

    #[test]
    fn volume_names_follow_the_policy() {
        assert_eq!(
            restore_volume_name(&restore(None, "t"), "disk", "pvc"),
            "restore-uid-1-disk"
        );
        assert_eq!(
            restore_volume_name(&restore(Some("RandomizeNames"), "t"), "disk", "pvc"),
            "restore-uid-1-disk"
        );
        assert_eq!(
            restore_volume_name(&restore(Some("PrefixTargetName"), "my-vm"), "disk1", "pvc"),
            "restore-uid-1-disk1",
            "v1.7.0 has no PrefixTargetName"
        );
        assert_eq!(
            restore_volume_name(&restore(Some("InPlace"), "t"), "disk", "pvc"),
            "pvc"
        );
    }

    #[test]
    fn the_restored_vm_is_halted_renamed_and_annotated() {
        let source_vm = json!({
            "metadata": {"name": "src", "namespace": "ns", "labels": {"app": "x"}, "annotations": {"a": "b"}},
            "spec": {
                "runStrategy": "Always",
                "dataVolumeTemplates": [{"metadata": {"name": "src-dv"}, "spec": {"source": {"blank": {}}}}],
                "template": {"spec": {"domain": {}, "volumes": [
                    {"name": "root", "dataVolume": {"name": "src-dv"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "src-pvc"}},
                    {"name": "cd", "containerDisk": {"image": "x"}},
                    {"name": "dump", "memoryDump": {"claimName": "d"}},
                ]}},
            },
            "status": {},
        });
        let restores = vec![
            json!({"volumeName": "root", "persistentVolumeClaim": "restore-uid-1-root", "volumeSnapshotName": "s1", "dataVolumeName": "restore-uid-1-root"}),
            json!({"volumeName": "data", "persistentVolumeClaim": "restore-uid-1-data", "volumeSnapshotName": "s2"}),
        ];
        let vm = restored_vm(&restore(None, "new"), &source_vm, &restores).unwrap();
        assert_eq!(vm["metadata"]["name"], "new");
        assert_eq!(vm["metadata"]["labels"]["app"], "x");
        assert_eq!(vm["metadata"]["annotations"]["a"], "b");
        assert_eq!(
            vm["metadata"]["annotations"][names::LAST_RESTORE_UID],
            "r-uid-1"
        );
        assert_eq!(vm["spec"]["runStrategy"], "Halted");
        assert_eq!(
            vm["spec"]["dataVolumeTemplates"][0]["metadata"]["name"],
            "restore-uid-1-root"
        );
        let volumes = vm["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        assert_eq!(volumes.len(), 3, "memory dump dropped");
        assert_eq!(volumes[0]["dataVolume"]["name"], "restore-uid-1-root");
        assert_eq!(
            volumes[1]["persistentVolumeClaim"]["claimName"],
            "restore-uid-1-data"
        );
        assert_eq!(volumes[2]["containerDisk"]["image"], "x");
        assert!(vm.get("status").is_some());
    }

    #[test]
    fn running_stays_running_false_and_dv_without_template_becomes_a_pvc() {
        let source_vm = json!({
            "metadata": {"name": "src", "namespace": "ns"},
            "spec": {"running": true, "template": {"spec": {"volumes": [
                {"name": "root", "dataVolume": {"name": "standalone"}},
            ]}}},
        });
        let restores = vec![
            json!({"volumeName": "root", "persistentVolumeClaim": "p", "volumeSnapshotName": "s"}),
        ];
        let vm = restored_vm(&restore(None, "new"), &source_vm, &restores).unwrap();
        assert_eq!(vm["spec"]["running"], false);
        assert!(vm["spec"].get("runStrategy").is_none());
        assert_eq!(
            vm["spec"]["template"]["spec"]["volumes"][0],
            json!({"name": "root", "persistentVolumeClaim": {"claimName": "p"}})
        );
        assert!(vm["metadata"].get("labels").is_none());
    }
}
