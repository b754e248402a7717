//! The storage provisioner and binder kube-controller-manager does not run here.
//!
//! A PVC whose storage class has one of the sim's provisioners is bound (status `phase: Bound`, its
//! requested capacity and access modes) at once for `Immediate` classes, and for
//! `WaitForFirstConsumer` classes once something consumes it: a running VirtualMachineInstance
//! that mounts it (directly or through a DataVolume of the same name), the scheduler's
//! `volume.kubernetes.io/selected-node` annotation, or CDI's `bind.immediate.requested`. A claim
//! restored from a `VolumeSnapshot` (`spec.dataSource`) waits until the snapshot is ready (see
//! module `csi`).
//!
//! Simplified: no PersistentVolume objects are created (`spec.volumeName` stays empty); PVCs
//! without a storage class or with another provisioner are left alone; pods are not consumers
//! (nothing schedules pods in the testbed).

use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::error::Error;
use crate::meta::{self, annotation};
use crate::names;
use crate::runtime::{ObjKey, Requeue};

/// Whether something consumes the claim `namespace/name` (see the module docs).
pub fn consumed(ctx: &Ctx, pvc: &PersistentVolumeClaim, namespace: &str, name: &str) -> bool {
    if annotation(&pvc.metadata, names::SELECTED_NODE).is_some()
        || annotation(&pvc.metadata, names::CDI_BIND_IMMEDIATE).is_some()
    {
        return true;
    }
    ctx.vmis.in_namespace(namespace).iter().any(|vmi| {
        vmi.metadata.deletion_timestamp.is_none()
            && !vmi.is_final()
            && vmi.claims().any(|c| c == name)
    })
}

/// Whether the claim's class is one of the sim's `WaitForFirstConsumer` classes.
pub fn waits_for_consumer(ctx: &Ctx, pvc: &PersistentVolumeClaim) -> bool {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .and_then(|class| ctx.classes.get("", class))
        .is_some_and(|sc| sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

/// Reconciles one PVC.
pub async fn reconcile(ctx: Arc<Ctx>, key: ObjKey) -> Result<Requeue, Error> {
    let Some(pvc) = ctx.pvcs.get_key(&key) else {
        return Ok(None);
    };
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Bound" | "Lost")) {
        return Ok(None);
    }
    let Some(spec) = &pvc.spec else {
        return Ok(None);
    };
    let Some(class) = spec.storage_class_name.as_deref() else {
        return Ok(None);
    };
    let Some(storage_class) = ctx.classes.get("", class) else {
        return Ok(None);
    };
    if ![names::PROVISIONER, names::PROVISIONER_NO_SNAPSHOT]
        .contains(&storage_class.provisioner.as_str())
    {
        return Ok(None);
    }
    // A claim restored from a VolumeSnapshot is provisioned once the snapshot is ready.
    if let Some(source) = spec.data_source.as_ref()
        && source.kind == "VolumeSnapshot"
        && !crate::csi::snapshot_ready(&ctx, &key.namespace, &source.name)
    {
        return Ok(None);
    }
    let wffc = storage_class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    if wffc && !consumed(&ctx, &pvc, &key.namespace, &key.name) {
        return Ok(None);
    }
    ctx.pace().await;
    let capacity = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| json!({"storage": q}))
        .unwrap_or(Value::Null);
    let access_modes = spec
        .access_modes
        .clone()
        .map(|m| json!(m))
        .unwrap_or(Value::Null);
    let api: Api<PersistentVolumeClaim> = ctx.api(&key.namespace);
    meta::patch_status(
        &api,
        &key.name,
        &json!({"status": {"phase": "Bound", "capacity": capacity, "accessModes": access_modes}}),
    )
    .await?;
    Ok(None)
}
