//! The target VM a clone would produce, before the clone exists: what `kubectl vmclone plan`
//! shows. It is computed by the functions the controller runs, never by a copy of them:
//!
//! - **Snapshot strategy**: the VM the snapshot holds (for a VM source, the live source VM stands
//!   in for the snapshot the clone would take: its name, namespace, labels, annotations and spec,
//!   which is what KubeVirt records in the snapshot content) with the restore's patches
//!   ([`decide::restore_patches`]: identity patches, run strategy, the user's patches last),
//!   applied as KubeVirt's restore applies them ([`decide::restored_vm`]: the target's name and
//!   namespace, halted, `memoryDump` volumes dropped, claims renamed, then the patches). The
//!   controller dry-runs the same VM before it creates the restore.
//! - **DataVolume strategy**: [`datavolume::plan`](crate::datavolume::plan), the VM the controller creates, after the same
//!   checks ([`decide::data_volume_source_check`], [`decide::data_volume_plan`]).
//!
//! Which strategy applies is the caller's choice, from [`datavolume::choose`](crate::datavolume::choose) as in the
//! controller.
//!
//! ## What only exists later
//!
//! Values that exist only once the clone or KubeVirt's restore does are shown as placeholders in
//! angle brackets (a clone that already has a UID gets its real values instead):
//!
//! | placeholder | where | filled in by |
//! |---|---|---|
//! | [`CLONE_UID`] | DataVolume names under the default `volumeNamePolicy` (`clone-<clone-uid>-<volume>`), the `vmclone.dev/created-by-clone` annotation, the restore's name in `restore.kubevirt.io/lastRestoreUID` | the API server, when the clone is created |
//! | [`FIRMWARE_UUID`] | `spec.template.spec.domain.firmware.uuid` | the controller: UUIDv5 of the clone's UID |
//! | [`SUFFIX`] | the target's name, when the clone names none (`clone-<source>-<suffix>`) | the controller, from the clone's UID |
//! | [`SERIAL`] | `firmware.serial`, when neither the target's name nor `newSMBiosSerial` is given | the controller, from the target's name |
//! | [`RESTORE_UID`] | `restore.kubevirt.io/lastRestoreUID` (`tmp-restore-<clone-uid>-<restore-uid>`) | KubeVirt's restore (Snapshot strategy) |
//! | [`restored_claim`] | every claim volume's `claimName`, `dataVolume` name and `dataVolumeTemplates` name | KubeVirt's restore, which names the restored PVCs (Snapshot strategy) |
//!
//! Not shown at all: the status, and what the cluster adds when the VM is created — defaults of
//! KubeVirt's mutating webhooks for fields the source lacks (a source created through the same
//! webhooks usually has them already), virt-controller's bookkeeping annotations and finalizers.
//! For a VM source of the Snapshot strategy, the live VM may change before the snapshot is taken.
//!
//! The preview also returns warnings: a filter list with only negative entries (it keeps **no**
//! key, see [`FilterSet::only_negative`]), `newMacAddresses` keys that name no interface, and a
//! hold the clone would wait in (a running source of the DataVolume strategy, volumes KubeVirt
//! cannot snapshot for the Snapshot strategy). What would fail the clone before it has a target
//! is the error instead.

use std::collections::BTreeMap;

use clone_api::extensions::CloneStrategy;
use clone_api::kubevirt::VirtualMachine;
use clone_api::names::{self as api_names, EventReason};
use clone_api::v1beta1::VirtualMachineClone;
use clone_api::validation::field;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{Map, Value};

use crate::datavolume::PlanInput;
use crate::decide::{self, Hold, Restored};
use crate::filter::FilterSet;
use crate::names;

/// Stands for the clone's UID, which the API server assigns when the clone is created.
pub const CLONE_UID: &str = "<clone-uid>";
/// Stands for the firmware UUID the controller derives from the clone's UID.
pub const FIRMWARE_UUID: &str = "<firmware-uuid>";
/// Stands for the suffix of a target name the controller derives from the clone's UID.
pub const SUFFIX: &str = "<suffix>";
/// Stands for the SMBIOS serial the controller derives from a generated target name.
pub const SERIAL: &str = "<serial>";
/// Stands for the UID of the restore (Snapshot strategy).
pub const RESTORE_UID: &str = "<restore-uid>";

/// Stands for the PVC KubeVirt's restore creates for `volume` (Snapshot strategy).
pub fn restored_claim(volume: &str) -> String {
    format!("<restored PVC of volume {volume}>")
}

/// JSON Pointer of the target's firmware serial.
const SERIAL_POINTER: &str = "/spec/template/spec/domain/firmware/serial";
/// JSON Pointer of the target's firmware UUID.
const UUID_POINTER: &str = "/spec/template/spec/domain/firmware/uuid";

/// Where the target comes from.
#[derive(Debug, Clone, Copy)]
pub enum PreviewSource<'a> {
    /// The source VM as read (a VM source). For the Snapshot strategy it stands in for the VM the
    /// clone's snapshot would hold.
    Vm(&'a VirtualMachine),
    /// The VM that a source snapshot's content holds ([`decide::check_content`]).
    Snapshot {
        /// The snapshot's name.
        name: &'a str,
        /// The content's VM.
        vm: &'a Value,
    },
}

/// What a preview needs.
#[derive(Debug, Clone, Copy)]
pub struct PreviewInput<'a> {
    /// The clone (its namespace set; its UID, if it has none yet, becomes [`CLONE_UID`]).
    pub clone: &'a VirtualMachineClone,
    /// The strategy, as [`datavolume::choose`](crate::datavolume::choose) picked it.
    pub strategy: CloneStrategy,
    /// The source.
    pub source: PreviewSource<'a>,
    /// The source's namespace.
    pub source_namespace: &'a str,
    /// DataVolume strategy: the source VM's claims by name ([`datavolume::source_claims`](crate::datavolume::source_claims);
    /// absent: not found).
    pub claims: &'a BTreeMap<String, PersistentVolumeClaim>,
}

/// Something the user likely did not mean, or a hold the clone would wait in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A filter list whose every entry is negated: it keeps no key at all.
    OnlyNegativeFilters {
        /// The list, e.g. `spec.labelFilters`.
        field: &'static str,
        /// Its filters, as written.
        filters: Vec<String>,
    },
    /// A `newMacAddresses` key that names no interface of the source VM.
    UnknownInterface(String),
    /// The clone would wait (for example for a running source VM to stop).
    Waits(Hold),
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::OnlyNegativeFilters { field, filters } => {
                let list = serde_json::to_string(filters).unwrap_or_default();
                let mut fixed = vec!["*".to_owned()];
                fixed.extend(filters.iter().cloned());
                let fixed = serde_json::to_string(&fixed).unwrap_or_default();
                write!(
                    f,
                    "{field} {list} has only negative filters, so it keeps no key at all (a key is kept only if a positive filter matches it); to keep every key except these, write {fixed}"
                )
            }
            Warning::UnknownInterface(message) => f.write_str(message),
            Warning::Waits(hold) => write!(f, "{hold}"),
        }
    }
}

/// The target a clone would produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The strategy.
    pub strategy: CloneStrategy,
    /// The VM the target is computed from, in the shape it is compared in: `apiVersion`, `kind`,
    /// `metadata` (name, namespace, labels, annotations) and `spec`.
    pub source: Value,
    /// The target VM, in the same shape (placeholders where values exist only later).
    pub target: Value,
    /// What to warn about.
    pub warnings: Vec<Warning>,
}

/// The target VM the clone would produce, and what to warn about; or why the clone would fail
/// (or wait) before it has a target.
pub fn preview(input: &PreviewInput<'_>) -> Result<Preview, Hold> {
    let uid_known = input
        .clone
        .metadata
        .uid
        .as_deref()
        .is_some_and(|u| !u.is_empty());
    let mut clone = input.clone.clone();
    if !uid_known {
        clone.metadata.uid = Some(CLONE_UID.to_owned());
    }
    let named = clone
        .spec
        .target
        .as_ref()
        .is_some_and(|t| !t.name.is_empty());
    let target_name = if uid_known || named {
        decide::target_name(&clone)
    } else {
        names::target_name_with_suffix(&clone.spec.source.name, SUFFIX)
    };
    let namespace = clone.metadata.namespace.clone().unwrap_or_default();
    let mut warnings = filter_warnings(&clone);

    let (source, mut target, unknown) = match (input.strategy, input.source) {
        (CloneStrategy::DataVolume, PreviewSource::Vm(vm)) => {
            if let Some(hold) = decide::data_volume_source_check(
                vm,
                input.source_namespace,
                &clone.spec.source.name,
            ) {
                if hold.fails {
                    return Err(hold);
                }
                warnings.push(Warning::Waits(hold));
            }
            let plan = decide::data_volume_plan(&PlanInput {
                clone: &clone,
                source_vm: vm,
                source_namespace: input.source_namespace,
                target_name: &target_name,
                claims: input.claims,
            })?;
            let source = manifest(&serde_json::to_value(vm).unwrap_or(Value::Null));
            (source, manifest(&plan.vm), plan.unknown_interfaces)
        }
        (CloneStrategy::DataVolume, PreviewSource::Snapshot { name, .. }) => {
            return Err(Hold {
                reason: EventReason::DataVolumeInvalid,
                message: format!(
                    "the DataVolume strategy clones a VirtualMachine, not snapshot {name}"
                ),
                fails: true,
            });
        }
        (_, source) => {
            let (vm, snapshot_name) = match source {
                PreviewSource::Vm(vm) => {
                    let name = &clone.spec.source.name;
                    if let Some(hold) =
                        decide::snapshot_source_check(vm, input.source_namespace, name)
                    {
                        if hold.fails {
                            return Err(hold);
                        }
                        warnings.push(Warning::Waits(hold));
                    }
                    let uid = clone.metadata.uid.as_deref().unwrap_or_default();
                    (
                        manifest(&serde_json::to_value(vm).unwrap_or(Value::Null)),
                        names::temp_snapshot_name(uid),
                    )
                }
                PreviewSource::Snapshot { name, vm } => (manifest(vm), name.to_owned()),
            };
            let restore = decide::restore_patches(&clone, &target_name, &vm);
            let restore_name =
                names::temp_restore_name(clone.metadata.uid.as_deref().unwrap_or_default());
            let claim = |volume: &str| restored_claim(volume);
            let restored = Restored {
                last_restore_uid: Some(format!("{restore_name}-{RESTORE_UID}")),
                claim: Some(&claim),
            };
            let target =
                decide::restored_vm(&vm, &namespace, &target_name, &restore.patches, &restored)
                    .map_err(|error| Hold {
                        reason: EventReason::InvalidSpec,
                        message: decide::user_patch_conflict(
                            &clone,
                            &snapshot_name,
                            &error,
                            &restore.patches,
                        )
                        .unwrap_or_else(|| {
                            format!("the restore's patches do not apply to the VM: {error}")
                        }),
                        fails: true,
                    })?;
            (vm, target, restore.unknown_interfaces)
        }
    };
    warnings.extend(
        unknown
            .iter()
            .map(|i| Warning::UnknownInterface(decide::unknown_interface_message(&clone, i))),
    );
    if !uid_known {
        replace_derived(
            &mut target,
            UUID_POINTER,
            &names::firmware_uuid(CLONE_UID),
            FIRMWARE_UUID,
        );
        if !named
            && clone
                .spec
                .new_smbios_serial
                .as_deref()
                .is_none_or(str::is_empty)
        {
            let serial = names::generated_serial(&namespace, &target_name);
            replace_derived(&mut target, SERIAL_POINTER, &serial, SERIAL);
        }
    }
    Ok(Preview {
        strategy: input.strategy,
        source,
        target,
        warnings,
    })
}

/// The clone's filter lists that keep no key because every entry is negated.
fn filter_warnings(clone: &VirtualMachineClone) -> Vec<Warning> {
    let spec = &clone.spec;
    let template = spec.template.as_ref();
    let lists = [
        (field::LABEL_FILTERS, spec.label_filters.as_deref()),
        (
            field::ANNOTATION_FILTERS,
            spec.annotation_filters.as_deref(),
        ),
        (
            field::TEMPLATE_LABEL_FILTERS,
            template.and_then(|t| t.label_filters.as_deref()),
        ),
        (
            field::TEMPLATE_ANNOTATION_FILTERS,
            template.and_then(|t| t.annotation_filters.as_deref()),
        ),
    ];
    lists
        .into_iter()
        .filter(|(field, list)| FilterSet::parse_lossy(field, *list).only_negative())
        .map(|(field, list)| Warning::OnlyNegativeFilters {
            field,
            filters: list.unwrap_or_default().to_vec(),
        })
        .collect()
}

/// A VM in the shape a preview compares: `apiVersion`, `kind`, `metadata` with name, namespace,
/// labels and annotations only, and `spec` (what a snapshot content records of a VM, without the
/// server's bookkeeping).
pub fn manifest(vm: &Value) -> Value {
    let source_meta = vm.get("metadata").unwrap_or(&Value::Null);
    let mut meta = Map::new();
    for field in ["name", "namespace", "labels", "annotations"] {
        if let Some(value) = source_meta.get(field).filter(|v| !v.is_null()) {
            meta.insert(field.into(), value.clone());
        }
    }
    let mut out = Map::new();
    out.insert(
        "apiVersion".into(),
        format!("{}/v1", api_names::KUBEVIRT_GROUP).into(),
    );
    out.insert("kind".into(), api_names::VIRTUAL_MACHINE_KIND.into());
    out.insert("metadata".into(), Value::Object(meta));
    out.insert(
        "spec".into(),
        vm.get("spec")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    Value::Object(out)
}

/// Puts `placeholder` at `pointer` where the value is the one derived from a placeholder (a
/// user's patch that set another value keeps it).
fn replace_derived(target: &mut Value, pointer: &str, derived: &str, placeholder: &str) {
    if let Some(value) = target.pointer_mut(pointer)
        && value.as_str() == Some(derived)
    {
        *value = placeholder.into();
    }
}
