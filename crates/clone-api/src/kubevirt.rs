//! Typed views of the KubeVirt and CDI objects a clone reads and writes.
//!
//! These are views, not full copies of KubeVirt's API: they type the fields vmclone uses and keep
//! everything else in `extra` maps, so an object read and written back loses nothing (a VM edited
//! through [`VirtualMachine`] keeps fields this crate has never heard of). Their CRDs are KubeVirt's
//! and CDI's own, so no schema is generated here.
//!
//! # Objects from a newer KubeVirt
//!
//! Nothing read from KubeVirt or CDI fails to decode, so one odd object cannot fail the list a
//! watcher caches (see [`crate::lenient`]):
//!
//! - Every top-level spec and status here ([`VirtualMachineSpec`], [`VirtualMachineStatus`],
//!   [`VirtualMachineSnapshotSpec`], [`VirtualMachineSnapshotStatus`],
//!   [`VirtualMachineSnapshotContentSpec`], [`VirtualMachineSnapshotContentStatus`],
//!   [`VirtualMachineRestoreSpec`], [`VirtualMachineRestoreStatus`], [`KubeVirtSpec`],
//!   [`KubeVirtStatus`], [`DataVolumeSpec`], [`DataVolumeStatus`]) implements [`Lenient`]: a
//!   value that does not fit its type decodes anyway, with every typed field at its default, the
//!   object as read in `extra` (written back unchanged), and the reason in `unreadable`.
//! - Every enumeration KubeVirt or CDI writes is a `String` here, never a Rust enum, so an unknown
//!   value reads like a known one: `runStrategy`, `printableStatus`, snapshot and DataVolume
//!   `phase`, condition `type` and `status`, `deletionPolicy`, `volumeRestorePolicy`. Callers
//!   compare them with the values they know and treat any other as "not that one".

use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::lenient::Lenient;
use crate::lenient::lenient;

/// Fields a view does not type, kept as they were read.
pub type Extra = Map<String, Value>;

// ---------------------------------------------------------------------------------------------
// VirtualMachine (kubevirt.io/v1)
// ---------------------------------------------------------------------------------------------

/// The spec of a KubeVirt `VirtualMachine`.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachine",
    namespaced,
    status = "VirtualMachineStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct VirtualMachineSpec {
    /// `Always`, `Halted`, `Manual`, `RerunOnFailure`, `Once`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    /// Deprecated alternative to `runStrategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// The VMI template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<VirtualMachineInstanceTemplate>,
    /// DataVolumes KubeVirt creates for this VM (kept verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume_templates: Option<Vec<Value>>,
    /// Everything else (instancetype, preference, ...).
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(VirtualMachineSpec at "spec");

/// `spec.template` of a VM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceTemplate {
    /// Template labels and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// The VMI spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VirtualMachineInstanceSpec>,
}

/// `spec.template.spec` of a VM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceSpec {
    /// The virtual hardware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainSpec>,
    /// The volumes behind the disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.template.spec.domain`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    /// Devices (interfaces, TPM, disks, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Devices>,
    /// Firmware (serial, UUID, bootloader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `domain.devices`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Devices {
    /// Network interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Interface>>,
    /// The virtual TPM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Tpm>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One network interface.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name (the key of `newMacAddresses`).
    #[serde(default)]
    pub name: String,
    /// MAC address, if fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The virtual TPM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tpm {
    /// Persistent TPM state needs backend storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `domain.firmware`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    /// SMBIOS serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Firmware UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Bootloader (BIOS or EFI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `firmware.bootloader`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Bootloader {
    /// EFI settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efi: Option<Efi>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `bootloader.efi`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Efi {
    /// Persistent EFI variables need backend storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One volume of the VM template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Volume name (matches a disk).
    #[serde(default)]
    pub name: String,
    /// A PVC volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimVolumeSource>,
    /// A DataVolume volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeVolumeSource>,
    /// Everything else (containerDisk, cloudInitNoCloud, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Volume {
    /// Whether this volume is backed by a claim (PVC or DataVolume), i.e. needs copying.
    pub fn is_claim(&self) -> bool {
        self.persistent_volume_claim.is_some() || self.data_volume.is_some()
    }

    /// The PVC (or DataVolume, whose PVC has the same name) behind this volume.
    pub fn claim_name(&self) -> Option<&str> {
        self.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str())
            .or_else(|| self.data_volume.as_ref().map(|d| d.name.as_str()))
    }
}

/// `volumes[].persistentVolumeClaim`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimVolumeSource {
    /// The PVC's name.
    #[serde(default)]
    pub claim_name: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `volumes[].dataVolume`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeVolumeSource {
    /// The DataVolume's name.
    #[serde(default)]
    pub name: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The status of a VM.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct VirtualMachineStatus {
    /// `Stopped`, `Running`, `Provisioning`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,
    /// Whether a VMI runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Per volume: whether it can be snapshotted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_statuses: Option<Vec<VolumeSnapshotStatus>>,
    /// Changed-block tracking state (needs backend storage when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_block_tracking: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(VirtualMachineStatus at "status");

/// `status.volumeSnapshotStatuses[]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// Volume name.
    #[serde(default)]
    pub name: String,
    /// Whether the volume can be snapshotted.
    #[serde(default)]
    pub enabled: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl VirtualMachineSpec {
    /// The VMI spec, if any.
    pub fn instance_spec(&self) -> Option<&VirtualMachineInstanceSpec> {
        self.template.as_ref().and_then(|t| t.spec.as_ref())
    }

    /// The template's volumes (empty when absent).
    pub fn volumes(&self) -> &[Volume] {
        self.instance_spec()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or_default()
    }

    /// The template's interfaces (empty when absent).
    pub fn interfaces(&self) -> &[Interface] {
        self.instance_spec()
            .and_then(|s| s.domain.as_ref())
            .and_then(|d| d.devices.as_ref())
            .and_then(|d| d.interfaces.as_deref())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared condition shape of KubeVirt's snapshot API
// ---------------------------------------------------------------------------------------------

/// A condition as KubeVirt's snapshot and restore objects write it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeVirtCondition {
    /// `Ready`, `Progressing`, `Failure`.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// `True`, `False`, `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Reason (KubeVirt often puts the human text here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Kept as written (KubeVirt writes `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Value>,
    /// Kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Value>,
}

/// KubeVirt's condition type for failures.
pub const CONDITION_FAILURE: &str = "Failure";

fn failure_text(conditions: &[KubeVirtCondition]) -> Option<String> {
    conditions
        .iter()
        .find(|c| c.type_ == CONDITION_FAILURE && c.status == "True")
        .map(|c| {
            c.message
                .clone()
                .filter(|m| !m.is_empty())
                .or_else(|| c.reason.clone())
                .unwrap_or_else(|| "failed".to_owned())
        })
}

// ---------------------------------------------------------------------------------------------
// VirtualMachineSnapshot (snapshot.kubevirt.io/v1beta1)
// ---------------------------------------------------------------------------------------------

/// The spec of a `VirtualMachineSnapshot`.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineSnapshot",
    namespaced,
    status = "VirtualMachineSnapshotStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct VirtualMachineSnapshotSpec {
    /// The VM to snapshot.
    pub source: TypedLocalObjectReference,
    /// `Delete` (default) or `Retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// How long to wait before failing (Go duration, default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_deadline: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(VirtualMachineSnapshotSpec at "spec");

/// `status.error` of a snapshot or content.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotError {
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Value>,
    /// What.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The status of a `VirtualMachineSnapshot`.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct VirtualMachineSnapshotStatus {
    /// UID of the source VM.
    #[serde(rename = "sourceUID", default, skip_serializing_if = "Option::is_none")]
    pub source_uid: Option<String>,
    /// Name of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_snapshot_content_name: Option<String>,
    /// When the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Value>,
    /// `InProgress`, `Succeeded`, `Failed`, `Deleting`, `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The only field upstream's clone controller waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    /// `Ready`, `Progressing`, `Failure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<KubeVirtCondition>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(VirtualMachineSnapshotStatus at "status");

impl VirtualMachineSnapshotStatus {
    /// Whether the snapshot can be restored from.
    pub fn is_ready(&self) -> bool {
        self.ready_to_use == Some(true)
    }

    /// The failure text when the snapshot failed: phase `Failed` or a `Failure` condition.
    pub fn failure(&self) -> Option<String> {
        let error = self.error.as_ref().and_then(|e| e.message.clone());
        if self.phase.as_deref() == Some("Failed") {
            return Some(
                failure_text(&self.conditions)
                    .or(error)
                    .unwrap_or_else(|| "snapshot failed".to_owned()),
            );
        }
        failure_text(&self.conditions)
    }
}

// ---------------------------------------------------------------------------------------------
// VirtualMachineSnapshotContent
// ---------------------------------------------------------------------------------------------

/// The spec of a `VirtualMachineSnapshotContent`.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineSnapshotContent",
    namespaced,
    status = "VirtualMachineSnapshotContentStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct VirtualMachineSnapshotContentSpec {
    /// The snapshot this content belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_snapshot_name: Option<String>,
    /// The VM as it was snapshotted.
    #[serde(default)]
    pub source: SnapshotContentSource,
    /// One entry per backed-up volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_backups: Option<Vec<VolumeBackup>>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(VirtualMachineSnapshotContentSpec at "spec");

/// `content.spec.source`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotContentSource {
    /// The VM manifest (metadata, spec, status), kept as JSON: the engine reads it as data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `content.spec.volumeBackups[]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackup {
    /// The VM volume this backs up.
    #[serde(default)]
    pub volume_name: String,
    /// The PVC as it was (metadata and spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<Value>,
    /// The VolumeSnapshot holding the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_name: Option<String>,
}

/// The status of a content.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct VirtualMachineSnapshotContentStatus {
    /// Whether every volume snapshot is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// When every volume snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Value>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(VirtualMachineSnapshotContentStatus at "status");

// ---------------------------------------------------------------------------------------------
// VirtualMachineRestore
// ---------------------------------------------------------------------------------------------

/// The spec of a `VirtualMachineRestore`.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineRestore",
    namespaced,
    status = "VirtualMachineRestoreStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct VirtualMachineRestoreSpec {
    /// The VM to restore into (created when it does not exist).
    pub target: TypedLocalObjectReference,
    /// The snapshot to restore from.
    pub virtual_machine_snapshot_name: String,
    /// `RandomizeNames` (default), `InPlace`, `PrefixTargetName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_restore_policy: Option<String>,
    /// JSON Patch operations applied to a new target VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Vec<String>>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(VirtualMachineRestoreSpec at "spec");

/// `restore.status.restores[]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestore {
    /// The VM volume.
    #[serde(default)]
    pub volume_name: String,
    /// The restored PVC.
    #[serde(default)]
    pub persistent_volume_claim: String,
    /// The VolumeSnapshot restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_name: Option<String>,
    /// The DataVolume, for DataVolume-backed volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume_name: Option<String>,
}

/// The status of a restore.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct VirtualMachineRestoreStatus {
    /// The restored volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restores: Option<Vec<VolumeRestore>>,
    /// When the restore completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<Value>,
    /// Whether the restore completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// `Ready`, `Progressing`, `Failure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<KubeVirtCondition>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(VirtualMachineRestoreStatus at "status");

impl VirtualMachineRestoreStatus {
    /// Whether the restore completed.
    pub fn is_complete(&self) -> bool {
        self.complete == Some(true)
    }

    /// The failure text when a `Failure` condition is `True`.
    pub fn failure(&self) -> Option<String> {
        failure_text(&self.conditions)
    }

    /// The PVCs the restore created.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.restores
            .iter()
            .flatten()
            .map(|r| r.persistent_volume_claim.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// KubeVirt (kubevirt.io/v1)
// ---------------------------------------------------------------------------------------------

/// The flag of virt-controller that sets how many workers its clone controller runs; `"0"` turns
/// upstream's clone controller off. virt-operator passes each entry of
/// `spec.customizeComponents.flags.controller` to virt-controller as `--<key> <value>`.
pub const CLONE_CONTROLLER_THREADS_FLAG: &str = "clone-controller-threads";

/// The merge patch of the `KubeVirt` CR that turns upstream's clone controller off (virt-operator
/// then restarts virt-controller with `--clone-controller-threads 0`).
pub const UPSTREAM_CLONE_CONTROLLER_OFF_PATCH: &str =
    r#"{"spec":{"customizeComponents":{"flags":{"controller":{"clone-controller-threads":"0"}}}}}"#;

/// The spec of the `KubeVirt` CR (only the feature gates and virt-controller's flags are typed).
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "KubeVirt",
    namespaced,
    status = "KubeVirtStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct KubeVirtSpec {
    /// Cluster configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<KubeVirtConfiguration>,
    /// What virt-operator changes in the components it deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customize_components: Option<CustomizeComponents>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(KubeVirtSpec at "spec");

/// `spec.configuration`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeVirtConfiguration {
    /// Feature gates live here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_configuration: Option<DeveloperConfiguration>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.configuration.developerConfiguration`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeveloperConfiguration {
    /// Enabled feature gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<Vec<String>>,
    /// Disabled feature gates (beta gates are on unless listed here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_feature_gates: Option<Vec<String>>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

impl KubeVirtSpec {
    fn gates(&self) -> Option<&DeveloperConfiguration> {
        self.configuration
            .as_ref()
            .and_then(|c| c.developer_configuration.as_ref())
    }

    /// Whether `featureGates` lists `gate`.
    pub fn enables(&self, gate: &str) -> bool {
        self.gates()
            .and_then(|g| g.feature_gates.as_ref())
            .is_some_and(|l| l.iter().any(|g| g == gate))
    }

    /// Whether `disabledFeatureGates` lists `gate`.
    pub fn disables(&self, gate: &str) -> bool {
        self.gates()
            .and_then(|g| g.disabled_feature_gates.as_ref())
            .is_some_and(|l| l.iter().any(|g| g == gate))
    }

    /// The value of virt-controller's flag `flag` in `customizeComponents.flags.controller`
    /// (`None`: not set, so virt-controller runs with its default).
    pub fn controller_flag(&self, flag: &str) -> Option<&str> {
        self.customize_components
            .as_ref()
            .and_then(|c| c.flags.as_ref())
            .and_then(|f| f.controller.as_ref())
            .and_then(|c| c.get(flag))
            .map(String::as_str)
    }
}

/// `spec.customizeComponents`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomizeComponents {
    /// Extra command-line flags of KubeVirt's components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<ComponentFlags>,
    /// Everything else (`patches`).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.customizeComponents.flags`: per component, flag name → value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentFlags {
    /// virt-controller's flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<std::collections::BTreeMap<String, String>>,
    /// Everything else (`api`, `handler`).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The status of the `KubeVirt` CR (only the observed version is typed).
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct KubeVirtStatus {
    /// The KubeVirt release virt-operator has deployed, e.g. `v1.7.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_kube_virt_version: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(KubeVirtStatus at "status");

impl KubeVirt {
    /// The KubeVirt release deployed (`status.observedKubeVirtVersion`), as written.
    pub fn observed_version(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.observed_kube_virt_version.as_deref())
    }
}

// ---------------------------------------------------------------------------------------------
// DataVolume (cdi.kubevirt.io/v1beta1)
// ---------------------------------------------------------------------------------------------

/// The spec of a CDI `DataVolume`.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cdi.kubevirt.io",
    version = "v1beta1",
    kind = "DataVolume",
    namespaced,
    status = "DataVolumeStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct DataVolumeSpec {
    /// Where the data comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataVolumeSource>,
    /// The claim to create (storage API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Value>,
    /// The claim to create (PVC API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(DataVolumeSpec at "spec");

/// `spec.source` of a DataVolume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSource {
    /// Clone of an existing PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<DataVolumeSourcePvc>,
    /// Everything else (blank, http, registry, snapshot, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.source.pvc`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSourcePvc {
    /// Namespace of the source PVC.
    #[serde(default)]
    pub namespace: String,
    /// Name of the source PVC.
    #[serde(default)]
    pub name: String,
}

/// The status of a DataVolume.
///
/// Never fails to decode: when the input does not fit, [`Lenient::unreadable`] says why, every
/// typed field is at its default and `extra` holds the object as read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct DataVolumeStatus {
    /// `Pending`, `CloneScheduled`, `CloneInProgress`, `Succeeded`, `Failed`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// e.g. `45.5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The claim's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// `Ready`, `Bound`, `Running`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<KubeVirtCondition>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
    /// Why this could not be read, when it did not fit this type (see [`Lenient`]); `None`
    /// when it was read. Never serialised.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

lenient!(DataVolumeStatus at "status");
