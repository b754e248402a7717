//! KubeVirt's VirtualMachine controller, as far as cloning needs it.
//!
//! Per VM, in order: create the DataVolumes of `spec.dataVolumeTemplates` (after authorising the
//! VM's service account with a real `SubjectAccessReview` for cross-namespace PVC clones, like
//! virt-controller) or adopt orphans of the same name; release a stale snapshot lock; start or
//! stop the VirtualMachineInstance according to the run strategy; write `status`
//! (`printableStatus`, `ready`, `created`, `volumeSnapshotStatuses`).
//!
//! Simplified: a VMI is created directly in phase `Running` (no pod, no scheduling, no guest);
//! run strategies `Manual`, `Once` and `WaitAsReceiver` leave the VMI as it is; no VM
//! conditions, no controller revisions, no instance type expansion, no firmware UUID defaulting.

use std::sync::Arc;
use std::time::Duration;

use clone_api::kubevirt::{DataVolume, VirtualMachine};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Map, Value, json};

use crate::ctx::{Component, Ctx};
use crate::error::{Error, KubeContext, is_not_found};
use crate::meta::{self, controller_of, controller_ref};
use crate::names;
use crate::runtime::{ObjKey, Requeue};
use crate::snapshot;
use crate::types::VirtualMachineInstance;

/// How often an unauthorised DataVolume template is authorised again (RBAC changes are not
/// watched).
const AUTHORIZATION_RETRY: Duration = Duration::from_secs(2);

/// DataVolume phases KubeVirt treats as ready enough to start the VM.
pub fn dv_ready_phase(phase: Option<&str>) -> bool {
    matches!(
        phase,
        Some("Succeeded" | "WaitForFirstConsumer" | "PendingPopulation")
    )
}

/// Reconciles one VirtualMachine.
pub async fn reconcile(ctx: Arc<Ctx>, key: ObjKey) -> Result<Requeue, Error> {
    let Some(vm) = ctx.vms.get_key(&key) else {
        return Ok(None);
    };
    // A stale snapshot lock would keep a deleted VM for ever: release it first.
    release_stale_snapshot_lock(&ctx, &vm).await?;
    if vm.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let requeue = ensure_data_volumes(&ctx, &vm).await?;
    let volumes = VolumeState::of(&ctx, &vm);
    reconcile_instance(&ctx, &vm, &volumes).await?;
    write_status(&ctx, &vm, &volumes).await?;
    Ok(requeue)
}

// ---------------------------------------------------------------------------------------------
// DataVolume templates
// ---------------------------------------------------------------------------------------------

/// The service account KubeVirt authorises DataVolume clones for: `serviceAccountName`, else
/// the name of a `serviceAccount` volume, else `default`.
pub fn service_account(vm: &VirtualMachine) -> String {
    let spec = vm.spec.instance_spec();
    if let Some(name) = spec
        .and_then(|s| s.extra.get("serviceAccountName"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return name.to_owned();
    }
    vm.spec
        .volumes()
        .iter()
        .find_map(|v| {
            v.extra
                .get("serviceAccount")
                .and_then(|s| s.get("serviceAccountName"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
        })
        .unwrap_or("default")
        .to_owned()
}

async fn ensure_data_volumes(ctx: &Ctx, vm: &VirtualMachine) -> Result<Requeue, Error> {
    let namespace = vm.namespace().unwrap_or_default();
    let mut requeue = None;
    for template in vm.spec.data_volume_templates.iter().flatten() {
        let Some(name) = template.pointer("/metadata/name").and_then(Value::as_str) else {
            tracing::warn!(vm = %vm.name_any(), "skipping a dataVolumeTemplate without a name");
            continue;
        };
        if let Some(existing) = ctx.dvs.get(&namespace, name) {
            adopt_data_volume(ctx, vm, &existing).await?;
            continue;
        }
        let mut dv = data_volume_from_template(vm, template);
        match resolve_source_ref(ctx, &namespace, &mut dv).await? {
            Ok(()) => {}
            Err(message) => {
                ctx.event(
                    Component::KubeVirt,
                    vm,
                    true,
                    "FailedDataVolumeCreate",
                    format!("Error creating DataVolume {name}: {message}"),
                )
                .await;
                requeue = Some(AUTHORIZATION_RETRY);
                continue;
            }
        }
        if let Some((source_namespace, source_name)) = cross_namespace_source(&dv, &namespace) {
            let account = service_account(vm);
            if !service_account_may_clone(
                ctx,
                &namespace,
                &account,
                &source_namespace,
                &source_name,
            )
            .await?
            {
                ctx.event(
                    Component::KubeVirt,
                    vm,
                    true,
                    "UnauthorizedDataVolumeCreate",
                    format!(
                        "Not authorized to create DataVolume {name}: User system:serviceaccount:{namespace}:{account} has insufficient permissions in clone source namespace {source_namespace}"
                    ),
                )
                .await;
                requeue = Some(AUTHORIZATION_RETRY);
                continue;
            }
        }
        ctx.pace().await;
        let api: Api<DataVolume> = ctx.api(&namespace);
        match meta::create_json(&api, dv).await {
            Ok(true) => {
                ctx.event(
                    Component::KubeVirt,
                    vm,
                    false,
                    "SuccessfulDataVolumeCreate",
                    format!("Created DataVolume {name}"),
                )
                .await;
            }
            Ok(false) => {}
            Err(err) => {
                ctx.event(
                    Component::KubeVirt,
                    vm,
                    true,
                    "FailedDataVolumeCreate",
                    format!("Error creating DataVolume {name}: {err}"),
                )
                .await;
                return Err(err);
            }
        }
    }
    Ok(requeue)
}

/// The DataVolume KubeVirt builds from a template: template metadata and spec, the
/// `allowClaimAdoption` annotation, the `created-by` label, a controller reference to the VM,
/// and the clone source's namespace filled in.
fn data_volume_from_template(vm: &VirtualMachine, template: &Value) -> Value {
    let namespace = vm.namespace().unwrap_or_default();
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(
        names::CREATED_BY_LABEL.to_owned(),
        json!(vm.metadata.uid.clone().unwrap_or_default()),
    );
    let mut annotations = template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.insert(names::CDI_ALLOW_CLAIM_ADOPTION.to_owned(), json!("true"));
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    if let Some(pvc) = spec
        .pointer_mut("/source/pvc")
        .and_then(Value::as_object_mut)
    {
        let empty = pvc
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if empty {
            pvc.insert("namespace".into(), json!(namespace));
        }
    }
    json!({
        "apiVersion": names::CDI_API_VERSION,
        "kind": "DataVolume",
        "metadata": {
            "name": template.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [controller_ref(names::KUBEVIRT_API_VERSION, "VirtualMachine", &vm.metadata)],
        },
        "spec": spec,
    })
}

/// Replaces a `sourceRef` to a DataSource with the PVC it points at (KubeVirt refuses DataVolumes
/// that still have a `sourceRef`). `Ok(Err(message))` when the DataSource cannot be resolved.
async fn resolve_source_ref(
    ctx: &Ctx,
    namespace: &str,
    dv: &mut Value,
) -> Result<Result<(), String>, Error> {
    let Some(source_ref) = dv.pointer("/spec/sourceRef").cloned() else {
        return Ok(Ok(()));
    };
    let kind = source_ref
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != "DataSource" {
        return Ok(Err("DataVolume sourceRef not supported".to_owned()));
    }
    let ds_namespace = source_ref
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(namespace)
        .to_owned();
    let ds_name = source_ref
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        names::CDI_GROUP,
        "v1beta1",
        "DataSource",
    ));
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ds_namespace, &resource);
    let data_source = match api.get_opt(ds_name).await {
        Ok(Some(ds)) => ds,
        Ok(None) => {
            return Ok(Err(format!(
                "DataSource {ds_namespace}/{ds_name} not found"
            )));
        }
        Err(err) => {
            return Err(err).kube(|| format!("reading DataSource {ds_namespace}/{ds_name}"));
        }
    };
    let Some(pvc) = data_source.data.pointer("/spec/source/pvc") else {
        return Ok(Err(format!(
            "DataSource {ds_namespace}/{ds_name} has no PVC source"
        )));
    };
    let pvc_namespace = pvc
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(&ds_namespace);
    let pvc_name = pvc.get("name").cloned().unwrap_or(Value::Null);
    if let Some(spec) = dv.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("sourceRef");
        spec.insert(
            "source".into(),
            json!({"pvc": {"namespace": pvc_namespace, "name": pvc_name}}),
        );
    }
    Ok(Ok(()))
}

/// The `(namespace, name)` of a PVC clone source in another namespace than `namespace`.
fn cross_namespace_source(dv: &Value, namespace: &str) -> Option<(String, String)> {
    let pvc = dv.pointer("/spec/source/pvc")?;
    let source_namespace = pvc.get("namespace").and_then(Value::as_str)?;
    let name = pvc.get("name").and_then(Value::as_str)?;
    (!source_namespace.is_empty() && source_namespace != namespace)
        .then(|| (source_namespace.to_owned(), name.to_owned()))
}

/// CDI's `AuthorizeSA` as virt-controller runs it before creating a DataVolume: may the service
/// account `create` `datavolumes/source` (or, failing that, `pods`) in the source namespace?
pub async fn service_account_may_clone(
    ctx: &Ctx,
    namespace: &str,
    account: &str,
    source_namespace: &str,
    source_name: &str,
) -> Result<bool, Error> {
    let user = format!("system:serviceaccount:{namespace}:{account}");
    let groups = vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_owned(),
    ];
    let attempts = [
        ResourceAttributes {
            namespace: Some(source_namespace.to_owned()),
            verb: Some("create".into()),
            group: Some(names::CDI_GROUP.into()),
            resource: Some("datavolumes".into()),
            subresource: Some("source".into()),
            name: Some(source_name.to_owned()),
            ..ResourceAttributes::default()
        },
        ResourceAttributes {
            namespace: Some(source_namespace.to_owned()),
            verb: Some("create".into()),
            group: Some(String::new()),
            resource: Some("pods".into()),
            ..ResourceAttributes::default()
        },
    ];
    let api: Api<SubjectAccessReview> = Api::all(ctx.client.clone());
    for attributes in attempts {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                groups: Some(groups.clone()),
                resource_attributes: Some(attributes),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .kube(|| format!("reviewing the access of {user}"))?;
        if answer.status.is_some_and(|s| s.allowed) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Adopts an orphaned DataVolume with a template's name (KubeVirt's controller-ref manager).
async fn adopt_data_volume(ctx: &Ctx, vm: &VirtualMachine, dv: &DataVolume) -> Result<(), Error> {
    if controller_of(&dv.metadata).is_some() || dv.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let mut references: Vec<Value> = dv
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|r| json!(r))
        .collect();
    references.push(json!(controller_ref(
        names::KUBEVIRT_API_VERSION,
        "VirtualMachine",
        &vm.metadata
    )));
    let api: Api<DataVolume> = ctx.api(&dv.namespace().unwrap_or_default());
    meta::merge_patch(
        &api,
        &dv.name_any(),
        &json!({"metadata": {"ownerReferences": references}}),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Snapshot lock
// ---------------------------------------------------------------------------------------------

async fn release_stale_snapshot_lock(ctx: &Ctx, vm: &VirtualMachine) -> Result<(), Error> {
    let namespace = vm.namespace().unwrap_or_default();
    let in_progress = snapshot::snapshot_in_progress(vm);
    let stale = match in_progress {
        Some(name) => match ctx.snapshots.get(&namespace, name) {
            None => true,
            Some(s) => {
                s.spec.source.name != vm.name_any()
                    || s.metadata.deletion_timestamp.is_some()
                    || snapshot::is_terminal(&s)
            }
        },
        None => meta::has_finalizer(&vm.metadata, names::SNAPSHOT_SOURCE_FINALIZER),
    };
    if stale {
        snapshot::unlock(ctx, vm).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Instance
// ---------------------------------------------------------------------------------------------

/// Whether the run strategy asks for a running instance (`Some(true)`), a stopped one
/// (`Some(false)`) or leaves it to the user (`None`).
pub fn desired_running(vm: &VirtualMachine) -> Option<bool> {
    if let Some(running) = vm.spec.running {
        return Some(running);
    }
    match vm.spec.run_strategy.as_deref() {
        Some("Always" | "RerunOnFailure") => Some(true),
        Some("Halted") | None => Some(false),
        Some(_) => None,
    }
}

/// What the VM's claim-backed volumes look like.
#[derive(Debug, Default)]
struct VolumeState {
    /// Every DataVolume volume is ready enough to start.
    ready: bool,
    /// Some DataVolume failed.
    failed: bool,
}

impl VolumeState {
    fn of(ctx: &Ctx, vm: &VirtualMachine) -> Self {
        let namespace = vm.namespace().unwrap_or_default();
        let mut state = Self {
            ready: true,
            failed: false,
        };
        for volume in vm.spec.volumes() {
            let Some(dv) = &volume.data_volume else {
                continue;
            };
            match ctx.dvs.get(&namespace, &dv.name) {
                Some(dv) => {
                    let phase = dv.status.as_ref().and_then(|s| s.phase.as_deref());
                    state.failed |= phase == Some("Failed");
                    state.ready &= dv_ready_phase(phase);
                }
                // A DataVolume volume may name a plain PVC (e.g. after a garbage-collected DV).
                None => state.ready &= ctx.pvcs.get(&namespace, &dv.name).is_some(),
            }
        }
        state
    }
}

async fn reconcile_instance(
    ctx: &Ctx,
    vm: &VirtualMachine,
    volumes: &VolumeState,
) -> Result<(), Error> {
    let namespace = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let instance = ctx.vmis.get(&namespace, &name);
    let api: Api<VirtualMachineInstance> = ctx.api(&namespace);
    match (desired_running(vm), instance) {
        (Some(true), None) if volumes.ready => {
            ctx.pace().await;
            meta::create_json(&api, instance_for(vm)).await?;
        }
        (Some(false), Some(instance)) if instance.metadata.deletion_timestamp.is_none() => {
            ctx.pace().await;
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(err).kube(|| format!("stopping VM {namespace}/{name}")),
            }
        }
        _ => {}
    }
    Ok(())
}

/// The VMI of a started VM: the template's metadata and spec, owned by the VM, `Running`.
fn instance_for(vm: &VirtualMachine) -> Value {
    let template = vm.spec.template.as_ref();
    let template_meta = template.and_then(|t| t.metadata.as_ref());
    let spec = template
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| json!({}));
    let mut labels: Map<String, Value> =
        meta::string_map(template_meta.and_then(|m| m.labels.as_ref()));
    labels.insert("kubevirt.io/vm".into(), json!(vm.name_any()));
    json!({
        "apiVersion": names::KUBEVIRT_API_VERSION,
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": vm.name_any(),
            "namespace": vm.namespace(),
            "labels": labels,
            "annotations": meta::string_map(template_meta.and_then(|m| m.annotations.as_ref())),
            "ownerReferences": [controller_ref(names::KUBEVIRT_API_VERSION, "VirtualMachine", &vm.metadata)],
        },
        "spec": spec,
        // Simplified: no virt-launcher pod; the instance is running as soon as it exists.
        "status": {"phase": "Running"},
    })
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

/// `status.volumeSnapshotStatuses` as KubeVirt's snapshot controller computes it.
fn volume_snapshot_statuses(ctx: &Ctx, vm: &VirtualMachine) -> Vec<Value> {
    let namespace = vm.namespace().unwrap_or_default();
    vm.spec
        .volumes()
        .iter()
        .map(|volume| {
            let memory_dump = volume
                .extra
                .get("memoryDump")
                .and_then(|m| m.get("claimName"))
                .and_then(Value::as_str);
            let claim = volume.claim_name().or(memory_dump);
            let Some(claim) = claim else {
                return json!({
                    "name": volume.name,
                    "enabled": false,
                    "reason": format!("Snapshot is not supported for this volumeSource type [{}]", volume.name),
                });
            };
            let class = match &volume.data_volume {
                Some(_) => data_volume_storage_class(ctx, vm, &namespace, claim),
                None => None,
            }
            .or_else(|| {
                ctx.pvcs.get(&namespace, claim).map(|pvc| {
                    pvc.spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.clone())
                        .unwrap_or_default()
                })
            });
            match class {
                None => json!({"name": volume.name, "enabled": false, "reason": "PVC not found"}),
                Some(class) if ctx.config.snapshottable(&class) => {
                    json!({"name": volume.name, "enabled": true})
                }
                Some(class) => json!({
                    "name": volume.name,
                    "enabled": false,
                    "reason": format!("No VolumeSnapshotClass: Volume snapshots are not configured for this StorageClass [{class}] [{}]", volume.name),
                }),
            }
        })
        .collect()
}

/// Upstream looks at the DataVolume's `spec.pvc.storageClassName`, then at the VM template's,
/// and only then at the PVC.
fn data_volume_storage_class(
    ctx: &Ctx,
    vm: &VirtualMachine,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let from_spec = |spec: Option<&Value>| {
        spec.and_then(|s| s.pointer("/storageClassName"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
    };
    if let Some(dv) = ctx.dvs.get(namespace, name)
        && let Some(class) = from_spec(dv.spec.pvc.as_ref())
    {
        return Some(class);
    }
    vm.spec
        .data_volume_templates
        .iter()
        .flatten()
        .find(|t| t.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
        .and_then(|t| from_spec(t.pointer("/spec/pvc")))
}

async fn write_status(ctx: &Ctx, vm: &VirtualMachine, volumes: &VolumeState) -> Result<(), Error> {
    let namespace = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let instance = ctx
        .vmis
        .get(&namespace, &name)
        .filter(|i| i.metadata.deletion_timestamp.is_none());
    let running = instance
        .as_ref()
        .and_then(|i| i.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        == Some("Running");
    let printable = if volumes.failed {
        "DataVolumeError"
    } else if instance.is_some() {
        if running { "Running" } else { "Starting" }
    } else if !volumes.ready {
        "Provisioning"
    } else if desired_running(vm) == Some(true) {
        "Starting"
    } else {
        "Stopped"
    };
    let desired = json!({
        "printableStatus": printable,
        // KubeVirt omits `ready` and `created` when false.
        "ready": if running { json!(true) } else { Value::Null },
        "created": if instance.is_some() { json!(true) } else { Value::Null },
        "volumeSnapshotStatuses": volume_snapshot_statuses(ctx, vm),
    });
    let current =
        serde_json::to_value(vm.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
    let unchanged = desired
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| current.get(k).unwrap_or(&Value::Null) == v);
    if unchanged {
        return Ok(());
    }
    let api: Api<VirtualMachine> = ctx.api(&namespace);
    meta::patch_status(&api, &name, &json!({ "status": desired })).await
}
