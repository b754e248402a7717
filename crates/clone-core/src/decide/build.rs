//! Child builders: the snapshot and restore a clone creates, the restore's patches, and the VM
//! KubeVirt's restore makes of them.

use clone_api::extensions::{CloneExtensions, TargetRunStrategy};
use clone_api::kubevirt::{
    VirtualMachineRestore, VirtualMachineRestoreSpec, VirtualMachineSnapshot,
    VirtualMachineSnapshotSpec,
};
use clone_api::names;
use clone_api::v1beta1::VirtualMachineClone;
use clone_api::validation;
use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;

use super::Pass;
use crate::identity::{IdentityInput, IdentityPatches, identity_patches};
use crate::patch::{PatchError, apply_kubevirt};

impl Pass<'_, '_> {
    fn owner_reference(&self) -> Vec<OwnerReference> {
        vec![OwnerReference {
            api_version: format!("{}/{}", names::GROUP, names::STORAGE_VERSION),
            kind: names::KIND.to_owned(),
            name: self.clone_name().to_owned(),
            uid: self.uid().to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    }

    fn child_meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace().to_owned()),
            owner_references: Some(self.owner_reference()),
            ..Default::default()
        }
    }

    pub(super) fn build_snapshot(&self) -> VirtualMachineSnapshot {
        VirtualMachineSnapshot {
            metadata: self.child_meta(&self.names.snapshot_name),
            spec: VirtualMachineSnapshotSpec {
                source: TypedLocalObjectReference {
                    api_group: Some(names::KUBEVIRT_GROUP.to_owned()),
                    kind: names::VIRTUAL_MACHINE_KIND.to_owned(),
                    name: self.o.clone.spec.source.name.clone(),
                },
                ..Default::default()
            },
            status: None,
        }
    }

    pub(super) fn build_restore(&self, patches: Vec<String>) -> VirtualMachineRestore {
        VirtualMachineRestore {
            metadata: self.child_meta(&self.names.restore_name),
            spec: VirtualMachineRestoreSpec {
                target: TypedLocalObjectReference {
                    api_group: Some(names::KUBEVIRT_GROUP.to_owned()),
                    kind: names::VIRTUAL_MACHINE_KIND.to_owned(),
                    name: self.names.target_name.clone(),
                },
                virtual_machine_snapshot_name: self.names.snapshot_name.clone(),
                volume_restore_policy: self
                    .o
                    .clone
                    .spec
                    .volume_name_policy
                    .as_ref()
                    .map(|p| p.as_str().to_owned()),
                patches: (!patches.is_empty()).then_some(patches),
                extra: Default::default(),
                unreadable: None,
            },
            status: None,
        }
    }
}

/// The restore's patches for `vm`, the VM a snapshot holds: the identity patches
/// ([`identity_patches`]), then, when `vmclone.dev/target-run-strategy` is set, the patches that
/// set the run strategy, then the user's patches, last. Also the `newMacAddresses` keys that name
/// no interface of `vm`. The controller puts exactly this list into the restore; the plugin's
/// preview ([`crate::preview`]) applies it with [`restored_vm`].
pub fn restore_patches(
    clone: &VirtualMachineClone,
    target_name: &str,
    vm: &Value,
) -> IdentityPatches {
    let input = IdentityInput {
        spec: &clone.spec,
        namespace: clone.metadata.namespace.as_deref().unwrap_or_default(),
        target_name,
        clone_uid: clone.metadata.uid.as_deref().unwrap_or_default(),
    };
    let identity = identity_patches(&input, vm);
    let patches = match clone.target_run_strategy() {
        Ok(Some(strategy)) => with_run_strategy(identity.patches, vm, clone, strategy),
        // Unset: KubeVirt's restore leaves the target halted. Unknown: failed validation.
        _ => identity.patches,
    };
    IdentityPatches {
        patches,
        unknown_interfaces: identity.unknown_interfaces,
    }
}

/// What KubeVirt's restore writes into the VM it creates that exists only once the restore does:
/// the restore's UID and the restored claims. Left at their defaults, [`restored_vm`] keeps the
/// snapshot VM's own values there.
#[derive(Default)]
pub struct Restored<'a> {
    /// The value of `restore.kubevirt.io/lastRestoreUID` (`<restore name>-<restore UID>`).
    pub last_restore_uid: Option<String>,
    /// The claim a volume (by name) is restored into; `None` keeps the snapshot's claim.
    pub claim: Option<&'a dyn Fn(&str) -> String>,
}

impl std::fmt::Debug for Restored<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored")
            .field("last_restore_uid", &self.last_restore_uid)
            .field("claim", &self.claim.map(|_| "fn"))
            .finish()
    }
}

/// The VM KubeVirt's restore creates from `vm`, the VM a snapshot holds, when the target does not
/// exist yet, in KubeVirt's order: the target's name and namespace with the snapshot VM's labels
/// and annotations; the spec, halted (`running: false` where the VM uses `running`, else
/// `runStrategy: Halted`), without `memoryDump` volumes, and (with [`Restored::claim`]) with
/// every claim volume pointing at its restored claim (a `dataVolume` volume renames its template
/// too, or becomes a `persistentVolumeClaim` volume when the VM has no template for it); then
/// `patches` ([`restore_patches`]) with KubeVirt's applier. No status.
///
/// The controller dry-runs this VM before it creates the restore (without restored names,
/// which do not exist yet); the plugin's preview shows it.
pub fn restored_vm(
    vm: &Value,
    namespace: &str,
    target_name: &str,
    patches: &[String],
    restored: &Restored<'_>,
) -> Result<Value, PatchError> {
    let source_meta = vm.get("metadata").unwrap_or(&Value::Null);
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), target_name.into());
    meta.insert("namespace".into(), namespace.into());
    for field in ["labels", "annotations"] {
        if let Some(value) = source_meta.get(field).filter(|v| v.is_object()) {
            meta.insert(field.into(), value.clone());
        }
    }
    if let Some(uid) = &restored.last_restore_uid {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(
                names::LAST_RESTORE_UID_ANNOTATION.into(),
                uid.clone().into(),
            );
        }
    }
    let mut spec = vm
        .get("spec")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    if let Some(spec) = spec.as_object_mut() {
        if spec.get("running").is_some_and(|r| !r.is_null()) {
            spec.insert("running".into(), Value::Bool(false));
        } else {
            spec.insert("runStrategy".into(), "Halted".into());
        }
    }
    restore_volumes(&mut spec, restored.claim);
    let mut target = serde_json::json!({
        "apiVersion": format!("{}/v1", names::KUBEVIRT_GROUP),
        "kind": names::VIRTUAL_MACHINE_KIND,
        "metadata": meta,
        "spec": spec,
    });
    apply_kubevirt(&mut target, patches)?;
    Ok(target)
}

/// The restore's changes to the volumes: `memoryDump` volumes dropped, claim volumes pointed at
/// their restored claims (when `claim` names them).
fn restore_volumes(spec: &mut Value, claim: Option<&dyn Fn(&str) -> String>) {
    let Some(volumes) = spec
        .pointer("/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
    else {
        return;
    };
    let mut templates = spec
        .get("dataVolumeTemplates")
        .and_then(Value::as_array)
        .cloned();
    let mut kept = Vec::with_capacity(volumes.len());
    for mut volume in volumes {
        if volume.get("memoryDump").is_some() {
            continue;
        }
        let name = volume
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(claim) = claim {
            let new = claim(&name);
            if let Some(pvc) = volume
                .get_mut("persistentVolumeClaim")
                .and_then(Value::as_object_mut)
            {
                pvc.insert("claimName".into(), new.into());
            } else if let Some(dv) = volume.get("dataVolume").and_then(Value::as_object) {
                let dv_name = dv.get("name").and_then(Value::as_str).unwrap_or_default();
                let template = templates
                    .iter_mut()
                    .flatten()
                    .find(|t| t.pointer("/metadata/name").and_then(Value::as_str) == Some(dv_name));
                match template
                    .and_then(|t| t.get_mut("metadata"))
                    .and_then(Value::as_object_mut)
                {
                    Some(metadata) => {
                        metadata.insert("name".into(), new.clone().into());
                        volume["dataVolume"]["name"] = new.into();
                    }
                    None => {
                        volume = serde_json::json!({
                            "name": name,
                            "persistentVolumeClaim": {"claimName": new},
                        });
                    }
                }
            }
        }
        kept.push(volume);
    }
    if let (Some(spec), Some(templates)) = (spec.as_object_mut(), templates) {
        spec.insert("dataVolumeTemplates".into(), Value::Array(templates));
    }
    if let Some(template_spec) = spec
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
    {
        if kept.is_empty() {
            template_spec.remove("volumes");
        } else {
            template_spec.insert("volumes".into(), Value::Array(kept));
        }
    }
}

/// Why the restore's patches would not apply to the snapshot's VM, when one of the user's patches
/// is at fault (for example removing a label the VM does not have, or one the filters already
/// removed). The user's patches come last, so a failure past the generated ones is theirs.
pub fn user_patch_conflict(
    clone: &VirtualMachineClone,
    snapshot_name: &str,
    error: &PatchError,
    patches: &[String],
) -> Option<String> {
    let user = clone.spec.patches.as_ref().map_or(0, Vec::len);
    let generated = patches.len().checked_sub(user)?;
    let (index, why) = match error {
        PatchError::Apply { index, source, .. } => (*index, source.to_string()),
        PatchError::Unparsable { index, source } => (*index, source.to_string()),
        _ => return None,
    };
    let user_index = index.checked_sub(generated)?;
    let patch = patches.get(index)?;
    Some(validation::patch_does_not_apply(
        user_index,
        snapshot_name,
        &why,
        patch,
    ))
}

/// Inserts the patches that set the target's run strategy before the user's patches (which stay
/// last).
pub(crate) fn with_run_strategy(
    patches: Vec<String>,
    vm: &Value,
    clone: &VirtualMachineClone,
    strategy: TargetRunStrategy,
) -> Vec<String> {
    let user = clone.spec.patches.as_deref().unwrap_or_default().len();
    let split = patches.len().saturating_sub(user);
    let mut ops = Vec::new();
    // KubeVirt's restore turns `running` into `running: false`; a VM cannot have both fields.
    if vm.pointer("/spec/running").is_some() {
        ops.push(r#"{"op":"remove","path":"/spec/running"}"#.to_owned());
    }
    ops.push(format!(
        r#"{{"op":"add","path":"/spec/runStrategy","value":"{}"}}"#,
        strategy.as_str()
    ));
    let mut out = patches;
    let tail = out.split_off(split);
    out.extend(ops);
    out.extend(tail);
    out
}
