//! The new target VM: the DataVolumes of its renamed templates, upstream's `patchVM` (marshal,
//! patch, unmarshal), the create, and the restored PVCs handed to the VM.

use clone_api::kubevirt::{DataVolume, VirtualMachine, VirtualMachineRestore};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::Pass;
use super::build::{last_restore_uid, patched_vm, restored_data_volume, restored_vm};
use super::volumes::restores_of;
use crate::ctx::Ctx;
use crate::error::Error;
use crate::meta::{self, annotation, controller_ref};
use crate::names;
use crate::runtime::Requeue;
use crate::vm::dv_ready_phase;

pub(super) async fn reconcile_new_target(
    pass: Pass<'_>,
    source_vm: &Value,
) -> Result<Requeue, Error> {
    let ctx = pass.ctx;
    let restore = pass.restore;
    let namespace = pass.namespace();
    let restores = restores_of(&pass);
    let vm = match restored_vm(restore, source_vm, &restores) {
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
        let dv = restored_data_volume(template, name, &namespace, &restore.name_any());
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
    let object = match patched_vm(vm, restore) {
        Ok(object) => object,
        Err(message) => return pass.error(&message).await,
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
