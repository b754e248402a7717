//! Typed views of the objects the sim needs that `clone-api` does not type: KubeVirt's
//! `VirtualMachineInstance`. Lossless like `clone-api`'s views: unknown fields stay in `extra`.

use clone_api::kubevirt::{Extra, Volume};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The spec of a KubeVirt `VirtualMachineInstance` (the running VM).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    namespaced,
    status = "VirtualMachineInstanceStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceSpec {
    /// The volumes the instance mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Everything else (domain, networks, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The status of a `VirtualMachineInstance`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceStatus {
    /// `Pending`, `Scheduling`, `Scheduled`, `Running`, `Succeeded`, `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

impl VirtualMachineInstance {
    /// The claims (PVC names; a DataVolume's PVC has its name) the instance mounts.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.spec
            .volumes
            .iter()
            .flatten()
            .filter_map(Volume::claim_name)
    }

    /// Whether the instance is in a final phase (its pod is gone; it mounts nothing).
    pub fn is_final(&self) -> bool {
        matches!(
            self.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }
}

/// The spec of a CSI `VolumeSnapshot` (`snapshot.storage.k8s.io/v1`), as far as the sim's
/// snapshotter reads it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshot",
    namespaced,
    status = "VolumeSnapshotStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// What is snapshotted.
    #[serde(default)]
    pub source: VolumeSnapshotSource,
    /// The VolumeSnapshotClass (its `driver` names the CSI driver that takes the snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `VolumeSnapshot.spec.source`: a PVC to snapshot, or an existing content to bind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// The claim (same namespace) to snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// A pre-provisioned VolumeSnapshotContent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

/// The status of a `VolumeSnapshot`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// Whether the snapshot can be restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Everything else (creationTime, restoreSize, error, ...).
    #[serde(flatten)]
    pub extra: Extra,
}
