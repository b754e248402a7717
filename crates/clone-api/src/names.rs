//! Names shared by every part of vmclone: the API group, kinds, condition types and reasons,
//! event reasons, annotations and the names of the temporary objects a clone creates.
//!
//! Everything a user, a script or another tool can see is spelled here once.

/// The API group of `VirtualMachineClone`.
pub const GROUP: &str = "clone.kubevirt.io";
/// The kind of the clone resource.
pub const KIND: &str = "VirtualMachineClone";
/// The list kind of the clone resource.
pub const LIST_KIND: &str = "VirtualMachineCloneList";
/// The plural resource name.
pub const PLURAL: &str = "virtualmachineclones";
/// The singular resource name.
pub const SINGULAR: &str = "virtualmachineclone";
/// The short names `kubectl` accepts (`kubectl get vmclone`).
pub const SHORT_NAMES: [&str; 2] = ["vmclone", "vmclones"];
/// The stored (and preferred) version.
pub const STORAGE_VERSION: &str = "v1beta1";
/// The name of the CustomResourceDefinition.
pub const CRD_NAME: &str = "virtualmachineclones.clone.kubevirt.io";

/// KubeVirt's core API group (`VirtualMachine`, `KubeVirt`).
pub const KUBEVIRT_GROUP: &str = "kubevirt.io";
/// KubeVirt's snapshot API group (`VirtualMachineSnapshot`, `VirtualMachineRestore`).
pub const SNAPSHOT_GROUP: &str = "snapshot.kubevirt.io";
/// CDI's API group (`DataVolume`).
pub const CDI_GROUP: &str = "cdi.kubevirt.io";
/// Kind of a KubeVirt virtual machine.
pub const VIRTUAL_MACHINE_KIND: &str = "VirtualMachine";
/// Kind of a KubeVirt VM snapshot.
pub const VIRTUAL_MACHINE_SNAPSHOT_KIND: &str = "VirtualMachineSnapshot";

/// Prefix of the temporary snapshot: `tmp-snapshot-<clone UID>` (upstream's name).
pub const TEMP_SNAPSHOT_PREFIX: &str = "tmp-snapshot-";
/// Prefix of the temporary restore: `tmp-restore-<clone UID>` (upstream's name).
pub const TEMP_RESTORE_PREFIX: &str = "tmp-restore-";
/// Prefix of the snapshot content name when the snapshot's status does not name it.
pub const SNAPSHOT_CONTENT_PREFIX: &str = "vmsnapshot-content-";

/// Annotation KubeVirt's restore controller puts on the VM it restores:
/// `<restore name>-<restore UID>`. Never removed by a filter.
pub const LAST_RESTORE_UID_ANNOTATION: &str = "restore.kubevirt.io/lastRestoreUID";
/// kubectl's record of the last client-side `kubectl apply`: never copied to a target (it would
/// make a later `kubectl apply` of the target diff against the source's manifest).
pub const LAST_APPLIED_CONFIGURATION_ANNOTATION: &str =
    "kubectl.kubernetes.io/last-applied-configuration";
/// Annotation KubeVirt puts on the PVCs a restore creates, naming the restore.
pub const RESTORE_NAME_ANNOTATION: &str = "restore.kubevirt.io/name";

/// Annotation vmclone sets on a target VM that it creates itself (the DataVolume strategy): the
/// UID of the clone that created it. A VM without it (or with another UID) is never touched.
pub const CREATED_BY_CLONE_ANNOTATION: &str = "vmclone.dev/created-by-clone";

/// The KubeVirt feature gate that guards snapshots, restores and clones.
pub const SNAPSHOT_FEATURE_GATE: &str = "Snapshot";

/// Name of the ValidatingAdmissionPolicy (and its binding) that validates clones.
pub const ADMISSION_POLICY_NAME: &str = "vmclone-virtualmachineclones";

/// Field manager the controller uses for server-side apply.
pub const FIELD_MANAGER: &str = "vmclone-controller";

/// Condition types of a clone.
pub mod condition {
    /// `True` once the target VM exists and the clone succeeded.
    pub const READY: &str = "Ready";
    /// `True` while the clone is working towards its target.
    pub const PROGRESSING: &str = "Progressing";

    /// `Progressing` reason while waiting on a precondition.
    pub const REASON_PENDING: &str = "Pending";
    /// `Progressing` reason once the clone failed.
    pub const REASON_FAILED: &str = "Failed";
    /// `Progressing` and `Ready` reason once the clone succeeded.
    pub const REASON_SUCCEEDED: &str = "Succeeded";
    /// Reason before the controller has looked at the clone.
    pub const REASON_NOT_STARTED: &str = "NotStarted";
}

/// Event reasons (also the `Ready` condition's reason for the situation they describe).
///
/// `Normal` reasons mark progress; `Warning` reasons mark a precondition that holds the clone or a
/// failure. [`EventReason::is_warning`] tells which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventReason {
    /// The temporary snapshot was created.
    SnapshotCreated,
    /// The snapshot is ready to use and its content is valid.
    SnapshotReady,
    /// The temporary restore was created.
    RestoreCreated,
    /// The restore completed.
    RestoreReady,
    /// The target VM exists.
    TargetVMCreated,
    /// Every PVC of the restore is bound; temporary objects are cleaned up.
    PVCBound,
    /// The source VM or snapshot does not exist.
    SourceDoesNotExist,
    /// A volume of the source VM does not support snapshots.
    VMVolumeSnapshotsInvalid,
    /// The source VM needs backend storage (persistent TPM/EFI, changed-block tracking).
    SourceVMWithBackendStorageInvalid,
    /// The snapshot content cannot be used for the clone.
    SnapshotContentInvalid,
    /// The snapshot disappeared before the restore was created.
    SnapshotDeleted,
    /// The snapshot failed.
    SnapshotFailed,
    /// The API server refused the temporary snapshot (for good, or for now: the clone retries).
    SnapshotCreationFailed,
    /// The API server refused the restore (for good, or for now: the clone retries).
    RestoreCreationFailed,
    /// The restore failed, or made no progress for too long.
    RestoreFailed,
    /// KubeVirt reports an error on the restore and retries it.
    RestoreError,
    /// An object the clone depends on has a shape this controller cannot read (written by a
    /// newer KubeVirt, or by hand).
    ObjectUnreadable,
    /// A VM with the target's name exists and was not created by this clone.
    TargetExists,
    /// The KubeVirt `Snapshot` feature gate is off.
    FeatureGateDisabled,
    /// No `KubeVirt` CR exists, so the feature gate cannot be read.
    KubeVirtNotFound,
    /// The spec breaks a rule the CRD could not express.
    InvalidSpec,
    /// A `newMacAddresses` key names no interface of the source VM.
    UnknownInterface,
    /// The DataVolume strategy waits until the source VM is stopped.
    SourceVMRunning,
    /// The identity that copies volumes across namespaces is not authorised.
    Unauthorized,
    /// A DataVolume of the DataVolume strategy failed.
    DataVolumeFailed,
    /// A pre-flight check of the DataVolume strategy failed (volume mode or size).
    DataVolumeInvalid,
    /// One volume of the DataVolume strategy finished cloning.
    VolumeCloned,
    /// The API server refused the target VM of the DataVolume strategy (for good, or for now:
    /// the clone retries).
    TargetVMCreationFailed,
    /// Upstream KubeVirt's own clone controller runs, so vmclone acts on no clone (an event about
    /// the `KubeVirt` CR, not about a clone).
    UpstreamCloneControllerActive,
}

impl EventReason {
    /// The reason as written into events and conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SnapshotCreated => "SnapshotCreated",
            Self::SnapshotReady => "SnapshotReady",
            Self::RestoreCreated => "RestoreCreated",
            Self::RestoreReady => "RestoreReady",
            Self::TargetVMCreated => "TargetVMCreated",
            Self::PVCBound => "PVCBound",
            Self::SourceDoesNotExist => "SourceDoesNotExist",
            Self::VMVolumeSnapshotsInvalid => "VMVolumeSnapshotsInvalid",
            Self::SourceVMWithBackendStorageInvalid => "SourceVMWithBackendStorageInvalid",
            Self::SnapshotContentInvalid => "SnapshotContentInvalid",
            Self::SnapshotDeleted => "SnapshotDeleted",
            Self::SnapshotFailed => "SnapshotFailed",
            Self::SnapshotCreationFailed => "SnapshotCreationFailed",
            Self::RestoreCreationFailed => "RestoreCreationFailed",
            Self::RestoreFailed => "RestoreFailed",
            Self::RestoreError => "RestoreError",
            Self::ObjectUnreadable => "ObjectUnreadable",
            Self::TargetExists => "TargetExists",
            Self::FeatureGateDisabled => "FeatureGateDisabled",
            Self::KubeVirtNotFound => "KubeVirtNotFound",
            Self::InvalidSpec => "InvalidSpec",
            Self::UnknownInterface => "UnknownInterface",
            Self::SourceVMRunning => "SourceVMRunning",
            Self::Unauthorized => "Unauthorized",
            Self::DataVolumeFailed => "DataVolumeFailed",
            Self::DataVolumeInvalid => "DataVolumeInvalid",
            Self::VolumeCloned => "VolumeCloned",
            Self::TargetVMCreationFailed => "TargetVMCreationFailed",
            Self::UpstreamCloneControllerActive => "UpstreamCloneControllerActive",
        }
    }

    /// Whether events with this reason are of type `Warning` (otherwise `Normal`).
    pub fn is_warning(self) -> bool {
        !matches!(
            self,
            Self::SnapshotCreated
                | Self::SnapshotReady
                | Self::RestoreCreated
                | Self::RestoreReady
                | Self::TargetVMCreated
                | Self::PVCBound
                | Self::VolumeCloned
        )
    }
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
