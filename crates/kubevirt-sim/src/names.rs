//! Every name the stand-in writes or reads that a test, a user or KubeVirt/CDI can see: the
//! sim's own knobs (storage classes, failure-injection annotations) and the strings KubeVirt and
//! CDI use (annotations, finalizers, condition reasons, event reasons, messages).

/// The provisioner of the sim's storage classes; only PVCs of classes with this provisioner are
/// bound by the sim.
pub const PROVISIONER: &str = "sim.vmclone.dev/fake";
/// Immediate binding, snapshots supported.
pub const STORAGE_CLASS_SNAPSHOT: &str = "sim-snapshot";
/// WaitForFirstConsumer binding, snapshots supported.
pub const STORAGE_CLASS_WFFC: &str = "sim-wffc";
/// Immediate binding, no snapshot support.
pub const STORAGE_CLASS_NO_SNAPSHOT: &str = "sim-nosnapshot";

/// Field manager of everything the sim applies.
pub const FIELD_MANAGER: &str = "kubevirt-sim";

/// Annotation (value `"true"`) on a VirtualMachine, a VirtualMachineSnapshot or a Namespace: the
/// snapshots of that VM / that snapshot / in that namespace fail as if their deadline passed.
pub const FAIL_SNAPSHOT_ANNOTATION: &str = "sim.vmclone.dev/fail-snapshot";
/// Annotation (value `"true"`) on a VirtualMachineRestore, on the VM a snapshot was taken of
/// (it travels in the snapshot content), or on a Namespace: the restore fails with KubeVirt's
/// target-readiness `Failure` condition.
pub const FAIL_RESTORE_ANNOTATION: &str = "sim.vmclone.dev/fail-restore";
/// Annotation on a Namespace or on a VirtualMachineRestore: the API server refuses to create
/// restores (there), with the annotation's value as the message.
pub const REJECT_RESTORE_ANNOTATION: &str = "sim.vmclone.dev/reject-restore";
/// Annotation on a PersistentVolumeClaim that DataVolumes clone (`spec.source.pvc`): a whole
/// number of seconds `N` (e.g. `"30"`) each clone of it takes — a big disk, a slow CDI. Once the
/// clone's target PVC is bound, the DataVolume stays in `CloneInProgress` for about `N` seconds,
/// its `status.progress` rising every second from `0.00%` (`"25.00%"`, `"50.00%"`, ...), then
/// succeeds with `100.0%`. Read on every pass, so changing or removing it affects clones under
/// way. `"0"` or no annotation: the clone finishes at once; any other value is logged and ignored.
pub const CLONE_SECONDS_ANNOTATION: &str = "sim.vmclone.dev/clone-seconds";
/// Annotation the sim writes on a DataVolume whose source carries [`CLONE_SECONDS_ANNOTATION`]:
/// when its copy started (RFC 3339, UTC, milliseconds), so that progress counts from there even
/// across restarts of the sim.
pub const CLONE_STARTED_ANNOTATION: &str = "sim.vmclone.dev/clone-started";

/// Namespace of the cluster-wide configuration ConfigMap (only used when a sim without a
/// namespace scope rejects restores).
pub const CONFIG_NAMESPACE: &str = "kubevirt-sim";
/// Name of the ConfigMap the restore-rejection admission policy reads as its parameter: in a
/// namespace (applies there) or in [`CONFIG_NAMESPACE`] (applies everywhere).
pub const CONFIG_MAP: &str = "kubevirt-sim-config";
/// Key of [`CONFIG_MAP`] holding the rejection message.
pub const CONFIG_REJECT_RESTORES: &str = "rejectRestores";

/// The admission policy with KubeVirt's restore admission rules.
pub const RESTORE_POLICY: &str = "kubevirt-sim-restore-admission";
/// The admission policy with KubeVirt's snapshot admission rules.
pub const SNAPSHOT_POLICY: &str = "kubevirt-sim-snapshot-admission";
/// The admission policy that refuses restores when its ConfigMap parameter says so.
pub const REJECTION_POLICY: &str = "kubevirt-sim-restore-rejection";

// ---------------------------------------------------------------------------------------------
// KubeVirt
// ---------------------------------------------------------------------------------------------

/// KubeVirt's API group.
pub const KUBEVIRT_GROUP: &str = "kubevirt.io";
/// `apiVersion` of VMs and VMIs.
pub const KUBEVIRT_API_VERSION: &str = "kubevirt.io/v1";
/// `apiVersion` of snapshots, contents and restores.
pub const SNAPSHOT_API_VERSION: &str = "snapshot.kubevirt.io/v1beta1";
/// `apiVersion` of DataVolumes.
pub const CDI_API_VERSION: &str = "cdi.kubevirt.io/v1beta1";
/// CDI's API group.
pub const CDI_GROUP: &str = "cdi.kubevirt.io";

/// Finalizer KubeVirt puts on a VM while a snapshot of it is in progress.
pub const SNAPSHOT_SOURCE_FINALIZER: &str = "snapshot.kubevirt.io/snapshot-source-protection";
/// Prefix of snapshot content names: `vmsnapshot-content-<snapshot UID>`.
pub const CONTENT_PREFIX: &str = "vmsnapshot-content-";
/// Restore annotation on restored PVCs and VMs: `<restore name>-<restore UID>`.
pub const LAST_RESTORE_UID: &str = "restore.kubevirt.io/lastRestoreUID";
/// Restore annotation on restored PVCs and DataVolumes: the restore's name.
pub const RESTORE_NAME: &str = "restore.kubevirt.io/name";
/// Restore annotation on PVCs that become owned by the restored VM once it exists.
pub const RESTORE_OWNED_BY_VM: &str = "restore.kubevirt.io/owned-by-vm";
/// Label on restored PVCs: the source VM's name.
pub const RESTORE_SOURCE_VM_NAME: &str = "restore.kubevirt.io/source-vm-name";
/// Label on restored PVCs: the source VM's namespace.
pub const RESTORE_SOURCE_VM_NAMESPACE: &str = "restore.kubevirt.io/source-vm-namespace";
/// Label KubeVirt puts on backend-storage PVCs (dropped from restored PVCs).
pub const PERSISTENT_STATE_LABEL: &str = "persistent-state-for";
/// Label on DataVolumes KubeVirt creates from `dataVolumeTemplates`: the VM's UID.
pub const CREATED_BY_LABEL: &str = "kubevirt.io/created-by";

/// Snapshot condition reason: the deadline passed.
pub const SNAPSHOT_DEADLINE_EXCEEDED: &str = "snapshot deadline exceeded";
/// Restore error: a different VM with the target's name exists.
pub const RESTORE_TARGET_EXISTS: &str =
    "restore source and restore target are different but restore target already exists";
/// Restore failure of the `FailImmediate` readiness policy (also the injected failure).
pub const RESTORE_TARGET_NOT_READY: &str =
    "Restore target VMI must be powered off before restore operation";
/// Restore failure when the target stayed running past the grace period.
pub const RESTORE_GRACE_PERIOD_EXCEEDED: &str = "Restore target failed to be ready within 5m0s. Please power off the target VM before attempting restore";
/// Restore condition while waiting (grace period policy) for the target to stop.
pub const RESTORE_WAIT_GRACE_PERIOD: &str = "Waiting for target VM to be powered off. Please stop the restore target to proceed with restore, or the operation will fail after 5m0s";
/// Restore condition while waiting (`WaitEventually`) for the target to stop.
pub const RESTORE_WAIT_EVENTUALLY: &str = "Waiting for target VM to be powered off. Please stop the restore target to proceed with restore";
/// Restore condition when the `StopTarget` policy stops the target.
pub const RESTORE_STOP_TARGET: &str = "Automatically stopping restore target for restore operation";
/// Event text while the target still runs.
pub const RESTORE_VMI_EXISTS: &str =
    "Restore target VMI still exists, please stop the restore target to proceed with restore";

// ---------------------------------------------------------------------------------------------
// CDI
// ---------------------------------------------------------------------------------------------

/// DataVolume annotation: the PVC already holds the data; adopt it instead of populating.
pub const CDI_PRE_POPULATED: &str = "cdi.kubevirt.io/storage.prePopulated";
/// DataVolume annotation: an existing PVC with the DataVolume's name may be adopted.
pub const CDI_ALLOW_CLAIM_ADOPTION: &str = "cdi.kubevirt.io/allowClaimAdoption";
/// PVC annotation set by KubeVirt's restore: the DataVolume the PVC is populated for.
pub const CDI_POPULATED_FOR: &str = "cdi.kubevirt.io/storage.populatedFor";
/// PVC/DataVolume annotation asking for immediate binding on a WaitForFirstConsumer class.
pub const CDI_BIND_IMMEDIATE: &str = "cdi.kubevirt.io/storage.bind.immediate.requested";
/// PVC annotation: the clone strategy used.
pub const CDI_CLONE_TYPE: &str = "cdi.kubevirt.io/cloneType";
/// PVC annotation: why CDI fell back to a host-assisted copy.
pub const CDI_CLONE_FALLBACK_REASON: &str = "cdi.kubevirt.io/cloneFallbackReason";
/// PVC annotation of host-assisted clones: `<source namespace>/<source name>`.
pub const CDI_CLONE_REQUEST: &str = "k8s.io/CloneRequest";
/// PVC annotation: the content type.
pub const CDI_CONTENT_TYPE: &str = "cdi.kubevirt.io/storage.contentType";
/// PVC annotation the scheduler sets on WaitForFirstConsumer claims once a consumer is placed.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// Strict-mode message: the volume modes differ.
pub fn volume_mode_mismatch(source: &str, target: &str) -> String {
    format!("source volumeMode ({source}) and target volumeMode ({target}) do not match")
}
/// Strict-mode message: the target is smaller than the source.
pub const TARGET_TOO_SMALL: &str =
    "target resources requests storage size is smaller than the source";

/// The provisioner of the sim's storage class without snapshot support (no VolumeSnapshotClass
/// names it as its driver, so KubeVirt, like the sim, finds its volumes not snapshottable).
pub const PROVISIONER_NO_SNAPSHOT: &str = "sim.vmclone.dev/nosnapshot";
/// The sim's VolumeSnapshotClass, whose driver is [`PROVISIONER`].
pub const VOLUME_SNAPSHOT_CLASS: &str = "sim-snapshot";

// ---------------------------------------------------------------------------------------------
// KubeVirt v1.7.0: finalizers, deletion, restore admission (virt-api's webhook)
// ---------------------------------------------------------------------------------------------

/// Finalizer KubeVirt puts on a VirtualMachineSnapshot while it is not terminating.
pub const SNAPSHOT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshot-protection";
/// Finalizer KubeVirt creates a VirtualMachineSnapshotContent with.
pub const CONTENT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshotcontent-protection";
/// Finalizer KubeVirt puts on a VirtualMachineRestore while it is in progress.
pub const RESTORE_FINALIZER: &str = "snapshot.kubevirt.io/vmrestore-protection";
/// Snapshot condition reason (and phase `Deleting`) while an unfinished snapshot is deleted.
pub const SNAPSHOT_DELETING: &str = "VM snapshot is deleting";
/// Restore condition reason while a restore is deleted.
pub const RESTORE_DELETING: &str = "VM restore is deleting";

/// Annotation (value `"true"`) on a VirtualMachineSnapshot, on its source VM or on a Namespace:
/// the snapshot's content stays at its first step (created, `creationTime` set, source unlocked,
/// snapshot `Succeeded`) with `readyToUse: false` until the annotation is removed — a CSI driver
/// that cuts snapshots at once and uploads them slowly.
pub const HOLD_SNAPSHOT_READY_ANNOTATION: &str = "sim.vmclone.dev/hold-snapshot-ready";
/// Annotation (value `"true"`) on a Namespace: the sim's CSI snapshotter leaves every
/// `VolumeSnapshot` in it unready until the annotation is removed — storage that cuts snapshots
/// slowly. On the real KubeVirt backend this holds KubeVirt's own `VirtualMachineSnapshot`s (and
/// so the clones using them) in progress, for as long as a test needs.
pub const HOLD_VOLUME_SNAPSHOTS_ANNOTATION: &str = "sim.vmclone.dev/hold-volume-snapshots";
/// Annotation on a VirtualMachineRestore or on its Namespace: the sim's restore admission webhook
/// answers the restore's creation as virt-api answers an internal error (HTTP 400, the
/// annotation's value as message; [`ADMISSION_INTERNAL_ERROR`] when empty).
pub const ADMISSION_ERROR_ANNOTATION: &str = "sim.vmclone.dev/admission-error";
/// The message of [`ADMISSION_ERROR_ANNOTATION`] without a value.
pub const ADMISSION_INTERNAL_ERROR: &str = "kubevirt-sim: injected internal error";
/// Label on a Namespace whose restores the sim's admission webhook validates (value
/// `"webhook"`): the restore admission policy then leaves KubeVirt's rules to the webhook.
pub const RESTORE_WEBHOOK_LABEL: &str = "sim.vmclone.dev/restore-admission";

/// virt-api's restore webhook, as virt-operator registers it.
pub const RESTORE_WEBHOOK: &str = "virtualmachinerestore-validator.snapshot.kubevirt.io";
/// virt-api's path of [`RESTORE_WEBHOOK`].
pub const RESTORE_WEBHOOK_PATH: &str = "/virtualmachinerestores-validate";
/// Prefix of the sim's ValidatingWebhookConfigurations (`-<namespace>` when scoped).
pub const RESTORE_WEBHOOK_CONFIGURATION: &str = "kubevirt-sim-restore-validator";
/// Where virt-api reads the `KubeVirt` CR (its own namespace) unless configured otherwise.
pub const KUBEVIRT_INSTALL_NAMESPACE: &str = "kubevirt";
/// The feature gate KubeVirt's snapshot and restore admission require (Beta in v1.7.0: on only
/// when listed in `developerConfiguration.featureGates`).
pub const SNAPSHOT_GATE: &str = "Snapshot";
/// virt-api's answer to a restore while [`SNAPSHOT_GATE`] is off (HTTP 400).
pub const GATE_NOT_ENABLED: &str = "Snapshot/Restore feature gate not enabled";
/// Restore admission: the snapshot's status names no content (HTTP 400).
pub const SNAPSHOT_CONTENT_NAME_NIL: &str = "snapshot content name is nil in vmSnapshot status";
/// Restore admission: the snapshot content holds no VM (HTTP 400).
pub const UNEXPECTED_SNAPSHOT_SOURCE: &str = "unexpected snapshot source";
/// Restore admission: restoring a VM with persistent TPM or EFI into another VM (HTTP 422).
pub const RESTORE_BACKEND_STORAGE: &str = "Restore to a different VM is not supported when snapshotted VM has backend storage (persistent TPM or EFI)";
