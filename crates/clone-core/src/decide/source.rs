//! Source checks: what a source VM or snapshot content must satisfy before a clone copies it,
//! as holds (wait) or failures.

use clone_api::kubevirt::{VirtualMachine, VirtualMachineSnapshotContent, VirtualMachineSpec};
use clone_api::names::EventReason;
use clone_api::v1beta1::VirtualMachineClone;
use serde_json::Value;

use crate::datavolume::{self, PlanError, PlanInput};

/// Whether a VM spec needs backend storage that a clone cannot copy: a persistent TPM or
/// persistent EFI variables.
pub fn spec_needs_backend_storage(spec: &VirtualMachineSpec) -> bool {
    let domain = spec.instance_spec().and_then(|s| s.domain.as_ref());
    let tpm = domain
        .and_then(|d| d.devices.as_ref())
        .and_then(|d| d.tpm.as_ref())
        .and_then(|t| t.persistent)
        .unwrap_or(false);
    let efi = domain
        .and_then(|d| d.firmware.as_ref())
        .and_then(|f| f.bootloader.as_ref())
        .and_then(|b| b.efi.as_ref())
        .and_then(|e| e.persistent)
        .unwrap_or(false);
    tpm || efi
}

/// Whether a VM needs backend storage a clone cannot copy: persistent TPM or EFI, or
/// changed-block tracking that is not disabled.
pub fn vm_needs_backend_storage(vm: &VirtualMachine) -> bool {
    let cbt = vm
        .status
        .as_ref()
        .and_then(|s| s.changed_block_tracking.as_ref())
        .is_some_and(|cbt| {
            let state = cbt.get("state").and_then(Value::as_str).unwrap_or_default();
            !matches!(state, "" | "Disabled")
        });
    spec_needs_backend_storage(&vm.spec) || cbt
}

/// Why a VM's claim volumes cannot be snapshotted (empty: they all can).
pub fn volume_snapshot_problems(vm: &VirtualMachine) -> Vec<String> {
    let statuses = vm
        .status
        .as_ref()
        .and_then(|s| s.volume_snapshot_statuses.as_deref())
        .unwrap_or_default();
    vm.spec
        .volumes()
        .iter()
        .filter(|v| v.is_claim())
        .filter_map(|v| match statuses.iter().find(|s| s.name == v.name) {
            Some(s) if s.enabled => None,
            Some(_) => Some(format!(
                "Virtual Machine volume {} does not support snapshots",
                v.name
            )),
            None => Some(format!(
                "Virtual Machine volume {} snapshot support unknown",
                v.name
            )),
        })
        .collect()
}

/// Checks a snapshot content and returns the VM manifest it holds.
pub fn check_content(
    content: &VirtualMachineSnapshotContent,
    namespace: &str,
) -> Result<Value, String> {
    let name = content.metadata.name.as_deref().unwrap_or_default();
    let Some(snapshot_name) = content.spec.virtual_machine_snapshot_name.as_deref() else {
        return Err(format!("cannot get snapshot name from content {name}"));
    };
    let Some(vm) = content.spec.source.virtual_machine.clone() else {
        return Err(format!("content {name} holds no VirtualMachine"));
    };
    let spec_json = vm
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let spec: VirtualMachineSpec = serde_json::from_value(spec_json)
        .map_err(|e| format!("cannot read the VirtualMachine in content {name}: {e}"))?;
    if spec.template.is_none() {
        return Ok(vm);
    }
    if spec_needs_backend_storage(&spec) {
        return Err(format!(
            "Clone of source with backendstorage is not supported: snapshot {namespace}/{snapshot_name}"
        ));
    }
    let backups = content.spec.volume_backups.as_deref().unwrap_or_default();
    let missing: Vec<String> = spec
        .volumes()
        .iter()
        .filter(|v| v.is_claim() && !backups.iter().any(|b| b.volume_name == v.name))
        .map(|v| {
            format!(
                "volume {} is not backed up in snapshot {snapshot_name}",
                v.name
            )
        })
        .collect();
    if missing.is_empty() {
        Ok(vm)
    } else {
        Err(missing.join("; "))
    }
}

/// Why a clone cannot go on: it fails, or it waits (a `Pending` hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The reason.
    pub reason: EventReason,
    /// The message.
    pub message: String,
    /// Whether the clone fails (else it waits).
    pub fails: bool,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = if self.fails { "fail" } else { "wait" };
        write!(
            f,
            "the clone would {outcome} ({}): {}",
            self.reason, self.message
        )
    }
}

/// The Snapshot strategy's checks of a source VM `namespace/name` before its snapshot is taken: a
/// VM that needs backend storage fails the clone, volumes that cannot be snapshotted (or whose
/// support KubeVirt has not reported yet) hold it.
pub fn snapshot_source_check(vm: &VirtualMachine, namespace: &str, name: &str) -> Option<Hold> {
    if let Some(hold) = backend_storage_hold(vm, namespace, name) {
        return Some(hold);
    }
    let problems = volume_snapshot_problems(vm);
    (!problems.is_empty()).then(|| Hold {
        reason: EventReason::VMVolumeSnapshotsInvalid,
        message: problems.join("; "),
        fails: false,
    })
}

/// A source VM that needs backend storage (persistent TPM or EFI, changed-block tracking) fails
/// the clone with either strategy.
fn backend_storage_hold(vm: &VirtualMachine, namespace: &str, name: &str) -> Option<Hold> {
    vm_needs_backend_storage(vm).then(|| Hold {
        reason: EventReason::SourceVMWithBackendStorageInvalid,
        message: format!(
            "Clone of source with backendstorage is not supported: VM {namespace}/{name}"
        ),
        fails: true,
    })
}

/// A VM of the target's name that the clone did not create fails the clone.
pub fn target_exists(namespace: &str, target: &str) -> Hold {
    Hold {
        reason: EventReason::TargetExists,
        message: format!("target VirtualMachine {namespace}/{target} already exists"),
        fails: true,
    }
}

/// The DataVolume strategy's checks of the source VM `namespace/name` before its target is built:
/// a VM that needs backend storage fails the clone, a running one holds it until it stops.
pub fn data_volume_source_check(vm: &VirtualMachine, namespace: &str, name: &str) -> Option<Hold> {
    if let Some(hold) = backend_storage_hold(vm, namespace, name) {
        return Some(hold);
    }
    if datavolume::is_running(vm) {
        return Some(Hold {
            reason: EventReason::SourceVMRunning,
            message: format!(
                "source VM {namespace}/{name} is running: the DataVolume strategy clones only a stopped VM (stop it, for example with virtctl stop {name} -n {namespace})"
            ),
            fails: false,
        });
    }
    None
}

/// The DataVolume strategy's target ([`datavolume::plan`]), or what its failure means for the
/// clone: a missing source claim holds it, a patch that does not apply or a template that fails
/// CDI's checks fails it.
pub fn data_volume_plan(input: &PlanInput<'_>) -> Result<datavolume::Plan, Hold> {
    datavolume::plan(input).map_err(|error| match error {
        PlanError::MissingClaim { volume, claim } => Hold {
            reason: EventReason::SourceDoesNotExist,
            message: format!(
                "source PVC {}/{claim} of volume {volume} does not exist",
                input.source_namespace
            ),
            fails: false,
        },
        PlanError::Patch(message) => Hold {
            reason: EventReason::InvalidSpec,
            message,
            fails: true,
        },
        PlanError::Check(message) => Hold {
            reason: EventReason::DataVolumeInvalid,
            message,
            fails: true,
        },
    })
}

/// The `UnknownInterface` warning for a `newMacAddresses` key that names no interface.
pub fn unknown_interface_message(clone: &VirtualMachineClone, interface: &str) -> String {
    let source = &clone.spec.source;
    format!(
        "newMacAddresses names interface {interface}, which the VM of {} {} does not have",
        source.kind, source.name
    )
}
