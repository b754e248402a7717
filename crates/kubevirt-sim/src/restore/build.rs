//! The restore's pure builders: restored names, the restored PVCs and the VM upstream's restore
//! makes of a snapshot's VM. No API calls: `mod.rs`, `volumes.rs` and `target.rs` do the IO.

use clone_api::kubevirt::{VirtualMachine, VirtualMachineRestore, VolumeBackup};
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::{Map, Value, json};

use crate::go_vm;
use crate::jsonpatch;
use crate::meta::controller_ref;
use crate::names;

/// Annotation prefixes upstream drops from restored PVCs.
const DROPPED_ANNOTATION_PREFIXES: [&str; 6] = [
    "pv.kubernetes.io",
    "volume.beta.kubernetes.io",
    "cdi.kubevirt.io",
    "volume.kubernetes.io",
    "k8s.io/CloneRequest",
    "k8s.io/CloneOf",
];

/// `<restore name>-<restore UID>`, the value of `restore.kubevirt.io/lastRestoreUID`.
pub(super) fn last_restore_uid(restore: &VirtualMachineRestore) -> String {
    format!(
        "{}-{}",
        restore.name_any(),
        restore.metadata.uid.clone().unwrap_or_default()
    )
}

/// The name of the restored PVC (and DataVolume) of `volume`, whose claim was `claim`.
pub(super) fn restore_volume_name(
    restore: &VirtualMachineRestore,
    volume: &str,
    claim: &str,
) -> String {
    if let Some(name) = volume_override(restore, volume)
        .and_then(|o| o.get("restoreName"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return name.to_owned();
    }
    match restore.spec.volume_restore_policy.as_deref() {
        Some("InPlace") => claim.to_owned(),
        // v1.7.0 knows no other policy (v1.8's `PrefixTargetName` names like the default).
        _ => format!(
            "restore-{}-{volume}",
            restore.metadata.uid.clone().unwrap_or_default()
        ),
    }
}

pub(super) fn volume_override<'a>(
    restore: &'a VirtualMachineRestore,
    volume: &str,
) -> Option<&'a Value> {
    restore
        .spec
        .extra
        .get("volumeRestoreOverrides")?
        .as_array()?
        .iter()
        .find(|o| o.get("volumeName").and_then(Value::as_str) == Some(volume))
}

pub(super) fn str_field<'v>(value: &'v Value, field: &str) -> &'v str {
    value.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// The volumes (by name) of the content VM that are memory dumps (never restored).
pub(super) fn memory_dump_volumes(source_vm: &Value) -> Vec<String> {
    source_vm
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("memoryDump").is_some())
        .map(|v| str_field(v, "name").to_owned())
        .collect()
}

pub(super) fn template_names(source_vm: &Value) -> Vec<String> {
    source_vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

pub(super) fn data_volume_of(source_vm: &Value, volume: &str) -> Option<String> {
    source_vm
        .pointer("/spec/template/spec/volumes")?
        .as_array()?
        .iter()
        .find(|v| str_field(v, "name") == volume)?
        .pointer("/dataVolume/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The PVC a volume restore creates (upstream's `CreateRestorePVCDefFromVMRestore`).
pub(super) fn restored_pvc(
    restore: &VirtualMachineRestore,
    entry: &Value,
    backup: &VolumeBackup,
    source_vm: &Value,
    dv_owner: Option<&str>,
    target: Option<&VirtualMachine>,
) -> Value {
    let source = backup
        .persistent_volume_claim
        .clone()
        .unwrap_or_else(|| json!({}));
    let mut labels: Map<String, Value> = source
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.remove(names::PERSISTENT_STATE_LABEL);
    labels.insert(
        names::RESTORE_SOURCE_VM_NAME.into(),
        json!(str_field(
            source_vm.get("metadata").unwrap_or(&Value::Null),
            "name"
        )),
    );
    labels.insert(
        names::RESTORE_SOURCE_VM_NAMESPACE.into(),
        json!(str_field(
            source_vm.get("metadata").unwrap_or(&Value::Null),
            "namespace"
        )),
    );
    let mut annotations: Map<String, Value> = source
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.retain(|k, _| !DROPPED_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)));
    annotations.insert(names::RESTORE_NAME.into(), json!(restore.name_any()));
    annotations.insert(
        names::LAST_RESTORE_UID.into(),
        json!(last_restore_uid(restore)),
    );
    if let Some(o) = volume_override(restore, &backup.volume_name) {
        for (field, map) in [("labels", &mut labels), ("annotations", &mut annotations)] {
            if let Some(extra) = o.get(field).and_then(Value::as_object) {
                map.extend(extra.clone());
            }
        }
    }
    let spec = source.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut new_spec = Map::new();
    for field in ["accessModes", "resources", "storageClassName", "volumeMode"] {
        if let Some(value) = spec.get(field) {
            new_spec.insert(field.into(), value.clone());
        }
    }
    // Simplified: no `dataSource`/`dataSourceRef` to the VolumeSnapshot, which does not exist.
    let mut metadata = json!({
        "name": str_field(entry, "persistentVolumeClaim"),
        "namespace": restore.namespace(),
        "labels": labels,
    });
    let ownership_none = restore
        .spec
        .extra
        .get("volumeOwnershipPolicy")
        .and_then(Value::as_str)
        == Some("None");
    match (dv_owner, target) {
        (Some(dv), _) => {
            annotations.insert(names::CDI_POPULATED_FOR.into(), json!(dv));
        }
        (None, Some(target)) if !ownership_none => {
            metadata["ownerReferences"] = json!([controller_ref(
                names::KUBEVIRT_API_VERSION,
                "VirtualMachine",
                &target.metadata
            )]);
        }
        (None, None) if !ownership_none && owned_by_source_vm(&source, source_vm) => {
            annotations.insert(names::RESTORE_OWNED_BY_VM.into(), json!(restore.name_any()));
        }
        _ => {}
    }
    metadata["annotations"] = json!(annotations);
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": new_spec,
    })
}

pub(super) fn owned_by_source_vm(source_pvc: &Value, source_vm: &Value) -> bool {
    let vm_meta = source_vm.get("metadata").unwrap_or(&Value::Null);
    source_pvc
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            str_field(r, "kind") == "VirtualMachine"
                && str_field(r, "name") == str_field(vm_meta, "name")
                && str_field(r, "uid") == str_field(vm_meta, "uid")
        })
}

/// The VM a restore creates, before patches (upstream's `generateRestoredVMSpec` for a target
/// that does not exist).
pub(super) fn restored_vm(
    restore: &VirtualMachineRestore,
    source_vm: &Value,
    restores: &[Value],
) -> Result<Value, String> {
    let mut spec = source_vm.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut templates: Vec<Value> = spec
        .get("dataVolumeTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let template_index = |templates: &[Value], name: &str| {
        templates
            .iter()
            .position(|t| t.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
    };
    let original_templates = templates.clone();
    let mut volumes = Vec::new();
    for volume in spec
        .pointer("/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = str_field(&volume, "name").to_owned();
        if volume.get("memoryDump").is_some() {
            continue;
        }
        let mut new_volume = volume.clone();
        let is_dv = volume.get("dataVolume").is_some();
        if is_dv || volume.get("persistentVolumeClaim").is_some() {
            for entry in restores
                .iter()
                .filter(|r| str_field(r, "volumeName") == name)
            {
                let claim = str_field(entry, "persistentVolumeClaim");
                if !is_dv {
                    new_volume["persistentVolumeClaim"]["claimName"] = json!(claim);
                    continue;
                }
                let dv_name = volume
                    .pointer("/dataVolume/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match template_index(&original_templates, dv_name) {
                    Some(index) => {
                        let Some(restored_dv) = entry.get("dataVolumeName").and_then(Value::as_str)
                        else {
                            return Err(format!(
                                "DataVolumeName for dv {dv_name} should have been updated already"
                            ));
                        };
                        if let Some(template) = templates.get_mut(index) {
                            template["metadata"]["name"] = json!(restored_dv);
                        }
                        new_volume["dataVolume"]["name"] = json!(restored_dv);
                    }
                    None => {
                        new_volume =
                            json!({"name": name, "persistentVolumeClaim": {"claimName": claim}});
                    }
                }
            }
        }
        volumes.push(new_volume);
    }
    if spec.get("running").is_some_and(|r| !r.is_null()) {
        spec["running"] = json!(false);
    } else {
        spec["runStrategy"] = json!("Halted");
    }
    if let Some(map) = spec.as_object_mut() {
        if templates.is_empty() {
            map.remove("dataVolumeTemplates");
        } else {
            map.insert("dataVolumeTemplates".into(), json!(templates));
        }
    }
    if let Some(template_spec) = spec
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
    {
        if volumes.is_empty() {
            template_spec.remove("volumes");
        } else {
            template_spec.insert("volumes".into(), json!(volumes));
        }
    }
    let source_meta = source_vm.get("metadata").unwrap_or(&Value::Null);
    let mut annotations = source_meta
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        names::LAST_RESTORE_UID.into(),
        json!(last_restore_uid(restore)),
    );
    let mut metadata = json!({
        "name": restore.spec.target.name,
        "namespace": restore.namespace(),
        "annotations": annotations,
    });
    if let Some(labels) = source_meta.get("labels").filter(|l| l.is_object()) {
        metadata["labels"] = labels.clone();
    }
    Ok(json!({
        "apiVersion": names::KUBEVIRT_API_VERSION,
        "kind": "VirtualMachine",
        "metadata": metadata,
        "spec": spec,
        "status": {},
    }))
}

/// The DataVolume of a renamed template, pre-populated by its restored PVC (so CDI copies
/// nothing) and annotated with the restore that made it.
pub(super) fn restored_data_volume(
    template: &Value,
    name: &str,
    namespace: &str,
    restore_name: &str,
) -> Value {
    let mut annotations = template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.insert(names::RESTORE_NAME.into(), json!(restore_name));
    annotations.insert(names::CDI_PRE_POPULATED.into(), json!("true"));
    let mut metadata = json!({"name": name, "namespace": namespace, "annotations": annotations});
    if let Some(labels) = template.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    json!({
        "apiVersion": names::CDI_API_VERSION,
        "kind": "DataVolume",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Upstream's `patchVM`: the restored VM as Go marshals it, with the restore's `spec.patches`
/// applied by KubeVirt's JSON Patch semantics, then checked as Go would unmarshal it; or the
/// error text upstream reports.
pub(super) fn patched_vm(
    mut vm: Value,
    restore: &VirtualMachineRestore,
) -> Result<DynamicObject, String> {
    let target_name = &restore.spec.target.name;
    go_vm::as_marshalled(&mut vm);
    let patches = restore.spec.patches.as_deref().unwrap_or_default();
    if !patches.is_empty() {
        vm = jsonpatch::apply(&vm, patches)
            .map_err(|err| format!("error patching VM {target_name}: {err}"))?;
        if let Some(err) = go_vm::unmarshal_error(&vm) {
            return Err(format!(
                "error patching VM {target_name}: cannot unmarshal modified marshalled vm {vm}: {err}"
            ));
        }
    }
    vm["apiVersion"] = json!(names::KUBEVIRT_API_VERSION);
    vm["kind"] = json!("VirtualMachine");
    serde_json::from_value(vm).map_err(|err| format!("cannot marshall VM: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::TypedLocalObjectReference;
    use kube::api::ObjectMeta;

    fn restore(policy: Option<&str>, target: &str) -> VirtualMachineRestore {
        let mut restore = VirtualMachineRestore::new(
            "r",
            clone_api::kubevirt::VirtualMachineRestoreSpec {
                target: TypedLocalObjectReference {
                    api_group: Some("kubevirt.io".into()),
                    kind: "VirtualMachine".into(),
                    name: target.into(),
                },
                virtual_machine_snapshot_name: "s".into(),
                volume_restore_policy: policy.map(str::to_owned),
                ..Default::default()
            },
        );
        restore.metadata = ObjectMeta {
            name: Some("r".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            ..ObjectMeta::default()
        };
        restore
    }

    #[test]
    fn volume_names_follow_the_policy() {
        assert_eq!(
            restore_volume_name(&restore(None, "t"), "disk", "pvc"),
            "restore-uid-1-disk"
        );
        assert_eq!(
            restore_volume_name(&restore(Some("RandomizeNames"), "t"), "disk", "pvc"),
            "restore-uid-1-disk"
        );
        assert_eq!(
            restore_volume_name(&restore(Some("PrefixTargetName"), "my-vm"), "disk1", "pvc"),
            "restore-uid-1-disk1",
            "v1.7.0 has no PrefixTargetName"
        );
        assert_eq!(
            restore_volume_name(&restore(Some("InPlace"), "t"), "disk", "pvc"),
            "pvc"
        );
    }

    #[test]
    fn the_restored_vm_is_halted_renamed_and_annotated() {
        let source_vm = json!({
            "metadata": {"name": "src", "namespace": "ns", "labels": {"app": "x"}, "annotations": {"a": "b"}},
            "spec": {
                "runStrategy": "Always",
                "dataVolumeTemplates": [{"metadata": {"name": "src-dv"}, "spec": {"source": {"blank": {}}}}],
                "template": {"spec": {"domain": {}, "volumes": [
                    {"name": "root", "dataVolume": {"name": "src-dv"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "src-pvc"}},
                    {"name": "cd", "containerDisk": {"image": "x"}},
                    {"name": "dump", "memoryDump": {"claimName": "d"}},
                ]}},
            },
            "status": {},
        });
        let restores = vec![
            json!({"volumeName": "root", "persistentVolumeClaim": "restore-uid-1-root", "volumeSnapshotName": "s1", "dataVolumeName": "restore-uid-1-root"}),
            json!({"volumeName": "data", "persistentVolumeClaim": "restore-uid-1-data", "volumeSnapshotName": "s2"}),
        ];
        let vm = restored_vm(&restore(None, "new"), &source_vm, &restores).unwrap();
        assert_eq!(vm["metadata"]["name"], "new");
        assert_eq!(vm["metadata"]["labels"]["app"], "x");
        assert_eq!(vm["metadata"]["annotations"]["a"], "b");
        assert_eq!(
            vm["metadata"]["annotations"][names::LAST_RESTORE_UID],
            "r-uid-1"
        );
        assert_eq!(vm["spec"]["runStrategy"], "Halted");
        assert_eq!(
            vm["spec"]["dataVolumeTemplates"][0]["metadata"]["name"],
            "restore-uid-1-root"
        );
        let volumes = vm["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        assert_eq!(volumes.len(), 3, "memory dump dropped");
        assert_eq!(volumes[0]["dataVolume"]["name"], "restore-uid-1-root");
        assert_eq!(
            volumes[1]["persistentVolumeClaim"]["claimName"],
            "restore-uid-1-data"
        );
        assert_eq!(volumes[2]["containerDisk"]["image"], "x");
        assert!(vm.get("status").is_some());
    }

    #[test]
    fn running_stays_running_false_and_dv_without_template_becomes_a_pvc() {
        let source_vm = json!({
            "metadata": {"name": "src", "namespace": "ns"},
            "spec": {"running": true, "template": {"spec": {"volumes": [
                {"name": "root", "dataVolume": {"name": "standalone"}},
            ]}}},
        });
        let restores = vec![
            json!({"volumeName": "root", "persistentVolumeClaim": "p", "volumeSnapshotName": "s"}),
        ];
        let vm = restored_vm(&restore(None, "new"), &source_vm, &restores).unwrap();
        assert_eq!(vm["spec"]["running"], false);
        assert!(vm["spec"].get("runStrategy").is_none());
        assert_eq!(
            vm["spec"]["template"]["spec"]["volumes"][0],
            json!({"name": "root", "persistentVolumeClaim": {"claimName": "p"}})
        );
        assert!(vm["metadata"].get("labels").is_none());
    }

    #[test]
    fn patches_apply_to_the_marshalled_vm_and_report_upstreams_text() {
        let vm = json!({
            "metadata": {"name": "new", "namespace": "ns"},
            "spec": {"runStrategy": "Halted", "template": {"spec": {}}},
        });
        let mut r = restore(None, "new");
        r.spec.patches = Some(vec![
            r#"{"op":"add","path":"/metadata/labels","value":{"a":"b"}}"#.to_owned(),
        ]);
        let object = patched_vm(vm.clone(), &r).unwrap();
        assert_eq!(object.metadata.labels.unwrap()["a"], "b");
        assert_eq!(object.types.unwrap().kind, "VirtualMachine");

        r.spec.patches = Some(vec![
            r#"{"op":"remove","path":"/metadata/labels/missing"}"#.to_owned(),
        ]);
        let error = patched_vm(vm, &r).unwrap_err();
        assert!(error.starts_with("error patching VM new: "), "{error}");
    }

    #[test]
    fn a_restored_data_volume_is_pre_populated_and_names_its_restore() {
        let template = json!({
            "metadata": {"name": "old", "labels": {"l": "v"}, "annotations": {"x": "y"}},
            "spec": {"storage": {}},
        });
        let dv = restored_data_volume(&template, "restore-uid-1-root", "ns", "r");
        assert_eq!(dv["metadata"]["name"], "restore-uid-1-root");
        assert_eq!(dv["metadata"]["labels"]["l"], "v");
        let annotations = &dv["metadata"]["annotations"];
        assert_eq!(annotations["x"], "y");
        assert_eq!(annotations[names::CDI_PRE_POPULATED], "true");
        assert_eq!(annotations[names::RESTORE_NAME], "r");
        assert_eq!(dv["spec"], json!({"storage": {}}));
    }
}
