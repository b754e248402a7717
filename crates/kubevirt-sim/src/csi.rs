//! The CSI snapshotter of the sim's storage: what external-snapshotter and a CSI driver do for a
//! `VolumeSnapshot` of a claim on the sim's snapshot-capable storage.
//!
//! A `VolumeSnapshot` whose class is the sim's [`VOLUME_SNAPSHOT_CLASS`] (or names no class) and
//! whose source claim exists and is `Bound` becomes ready in one status write: `readyToUse:
//! true`, `creationTime`, `restoreSize` (the claim's capacity) and
//! `boundVolumeSnapshotContentName`. A claim that is not bound yet keeps the snapshot waiting (the
//! claim's changes wake it), and so does
//! [`HOLD_VOLUME_SNAPSHOTS_ANNOTATION`](crate::names::HOLD_VOLUME_SNAPSHOTS_ANNOTATION) on the
//! namespace, until it is removed. KubeVirt's snapshot controller creates these for the PVC-backed
//! volumes of a VM; the PVC binder (module `storage`) then provisions claims restored from them.
//!
//! Simplified: no `VolumeSnapshotContent` objects are created (KubeVirt v1.7.0 reads only the
//! snapshot's status); pre-provisioned snapshots (`source.volumeSnapshotContentName`) and other
//! drivers' classes are left alone; deletion is immediate (no finalizers).

use std::sync::Arc;

use kube::Api;
use serde_json::json;

use crate::ctx::Ctx;
use crate::error::Error;
use crate::meta;
use crate::names::{HOLD_VOLUME_SNAPSHOTS_ANNOTATION, VOLUME_SNAPSHOT_CLASS};
use crate::runtime::{ObjKey, Requeue};
use crate::types::VolumeSnapshot;
use crate::units::now_rfc3339;

/// The name of the content bound to `snapshot` (external-snapshotter's scheme).
fn content_name(snapshot: &VolumeSnapshot) -> String {
    format!(
        "snapcontent-{}",
        snapshot.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Reconciles one VolumeSnapshot.
pub async fn reconcile(ctx: Arc<Ctx>, key: ObjKey) -> Result<Requeue, Error> {
    let Some(snapshot) = ctx.volume_snapshots.get_key(&key) else {
        return Ok(None);
    };
    if snapshot.metadata.deletion_timestamp.is_some()
        || snapshot.status.as_ref().and_then(|s| s.ready_to_use) == Some(true)
    {
        return Ok(None);
    }
    if snapshot
        .spec
        .volume_snapshot_class_name
        .as_deref()
        .is_some_and(|class| class != VOLUME_SNAPSHOT_CLASS)
    {
        return Ok(None);
    }
    // The namespace's changes wake this snapshot again (`ctx::on_namespace`).
    if ctx
        .namespace_annotation(&key.namespace, HOLD_VOLUME_SNAPSHOTS_ANNOTATION)
        .as_deref()
        == Some("true")
    {
        return Ok(None);
    }
    let Some(claim) = snapshot.spec.source.persistent_volume_claim_name.as_deref() else {
        return Ok(None);
    };
    let Some(pvc) = ctx.pvcs.get(&key.namespace, claim) else {
        return Ok(None);
    };
    let status = pvc.status.as_ref();
    if status.and_then(|s| s.phase.as_deref()) != Some("Bound") {
        return Ok(None);
    }
    let size = status
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .cloned();
    ctx.pace().await;
    let api: Api<VolumeSnapshot> = ctx.api(&key.namespace);
    meta::patch_status(
        &api,
        &key.name,
        &json!({"status": {
            "boundVolumeSnapshotContentName": content_name(&snapshot),
            "creationTime": now_rfc3339(),
            "readyToUse": true,
            "restoreSize": size,
        }}),
    )
    .await?;
    Ok(None)
}

/// Whether a claim restored from the VolumeSnapshot `name` in `namespace` can be provisioned:
/// the snapshot exists and is ready (the CSI provisioner waits for it otherwise).
pub fn snapshot_ready(ctx: &Ctx, namespace: &str, name: &str) -> bool {
    ctx.volume_snapshots
        .get(namespace, name)
        .is_some_and(|s| s.status.as_ref().and_then(|s| s.ready_to_use) == Some(true))
}
