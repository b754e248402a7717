//! The volume restores: one per backup recorded in the status, their PVCs created and bound, and
//! the PVCs of DataVolume templates marked as populated for their renamed DataVolumes
//! (upstream's `reconcileVolumeRestores` and `updateVMRestoreRestores`).

use clone_api::kubevirt::{VirtualMachine, VirtualMachineSnapshotContent, VolumeBackup};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use serde_json::{Value, json};

use super::Pass;
use super::build::{
    data_volume_of, memory_dump_volumes, restore_volume_name, restored_pvc, str_field,
    template_names,
};
use crate::error::Error;
use crate::meta::{self, annotation};
use crate::names;
use crate::runtime::Requeue;

pub(super) enum Step<'a> {
    Done(Pass<'a>),
    Waiting(Requeue),
}

pub(super) fn restores_of(pass: &Pass<'_>) -> Vec<Value> {
    pass.status
        .get("restores")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Upstream's `reconcileVolumeRestores` plus `updateVMRestoreRestores`.
pub(super) async fn reconcile_volume_restores<'a>(
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
