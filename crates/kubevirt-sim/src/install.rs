//! Cluster-wide objects the sim needs: its storage classes and the admission policies (see
//! [`crate::admission`]), applied with server-side apply, plus the switches for the injected
//! restore rejection. Every function waits until the API server enforces what it changed.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::admission;
use crate::error::is_not_found;
use crate::names;

const ENFORCEMENT_TIMEOUT: Duration = Duration::from_secs(60);

fn storage_class(name: &str, binding: &str, provisioner: &str) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kubevirt-sim"}},
        "provisioner": provisioner,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": binding,
        "allowVolumeExpansion": true,
    })
}

/// Creates (or updates) KubeVirt's configuration: the `kubevirt` namespace and the `KubeVirt` CR
/// `kubevirt/kubevirt` listing `gates` in `developerConfiguration.featureGates` (the Snapshot
/// strategy needs `Snapshot`), with `status.phase: Deployed` as virt-operator leaves it (KubeVirt,
/// and the sim's restore webhook, ignore a CR without a phase). The sim runs no clone controller,
/// so the CR says what virt-operator's would for a cluster whose virt-controller runs without one:
/// `customizeComponents.flags.controller` sets `clone-controller-threads` to `"0"`. The CR is
/// cluster-wide: every controller reading it sees it.
pub async fn set_feature_gates(client: Client, gates: &[&str]) -> Result<()> {
    let params = PatchParams::apply(names::FIELD_MANAGER).force();
    Api::<Namespace>::all(client.clone())
        .patch(
            KUBEVIRT_NAMESPACE,
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": KUBEVIRT_NAMESPACE}})),
        )
        .await
        .context("applying the kubevirt namespace")?;
    let kubevirts = Api::<clone_api::kubevirt::KubeVirt>::namespaced(client, KUBEVIRT_NAMESPACE);
    kubevirts
        .patch(
            "kubevirt",
            &params,
            &Patch::Apply(json!({
                "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                "metadata": {"name": "kubevirt", "namespace": KUBEVIRT_NAMESPACE},
                "spec": {
                    "configuration": {"developerConfiguration": {"featureGates": gates}},
                    "customizeComponents": {"flags": {"controller": {
                        clone_api::kubevirt::CLONE_CONTROLLER_THREADS_FLAG: "0",
                    }}},
                },
            })),
        )
        .await
        .context("applying the KubeVirt CR")?;
    kubevirts
        .patch_status(
            "kubevirt",
            &params,
            &Patch::Apply(json!({
                "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                "status": {"phase": "Deployed"},
            })),
        )
        .await
        .context("setting the KubeVirt CR's status.phase")?;
    Ok(())
}

/// Where KubeVirt lives.
const KUBEVIRT_NAMESPACE: &str = "kubevirt";

/// Creates (or updates) the sim's storage: the classes `sim-snapshot` (Immediate) and `sim-wffc`
/// (WaitForFirstConsumer) of provisioner `sim.vmclone.dev/fake`, the VolumeSnapshotClass
/// `sim-snapshot` whose driver is that provisioner (so KubeVirt finds their volumes
/// snapshottable), and `sim-nosnapshot` (Immediate) of provisioner `sim.vmclone.dev/nosnapshot`,
/// which no VolumeSnapshotClass names. All the real KubeVirt backend needs from the sim's
/// installation. Idempotent.
pub async fn install_storage(client: Client) -> Result<()> {
    let params = PatchParams::apply(names::FIELD_MANAGER).force();
    let classes: Api<StorageClass> = Api::all(client.clone());
    for (name, binding, provisioner) in [
        (
            names::STORAGE_CLASS_SNAPSHOT,
            "Immediate",
            names::PROVISIONER,
        ),
        (
            names::STORAGE_CLASS_WFFC,
            "WaitForFirstConsumer",
            names::PROVISIONER,
        ),
        (
            names::STORAGE_CLASS_NO_SNAPSHOT,
            "Immediate",
            names::PROVISIONER_NO_SNAPSHOT,
        ),
    ] {
        classes
            .patch(
                name,
                &params,
                &Patch::Apply(storage_class(name, binding, provisioner)),
            )
            .await
            .with_context(|| format!("applying StorageClass {name}"))?;
    }
    let snapshot_classes: Api<DynamicObject> =
        Api::all_with(client, &volume_snapshot_class_resource());
    snapshot_classes
        .patch(
            names::VOLUME_SNAPSHOT_CLASS,
            &params,
            &Patch::Apply(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshotClass",
                "metadata": {"name": names::VOLUME_SNAPSHOT_CLASS,
                             "labels": {"app.kubernetes.io/managed-by": "kubevirt-sim"}},
                "driver": names::PROVISIONER,
                "deletionPolicy": "Delete",
            })),
        )
        .await
        .with_context(|| {
            format!(
                "applying VolumeSnapshotClass {}",
                names::VOLUME_SNAPSHOT_CLASS
            )
        })?;
    Ok(())
}

fn volume_snapshot_class_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass"),
        "volumesnapshotclasses",
    )
}

/// [`install_storage`], plus KubeVirt's snapshot/restore admission as
/// `ValidatingAdmissionPolicy`s (for the stand-in backend, where no virt-api runs), then waits
/// until the API server enforces them. Idempotent.
pub async fn install(client: Client) -> Result<()> {
    install_storage(client.clone()).await?;
    let params = PatchParams::apply(names::FIELD_MANAGER).force();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    for policy in [
        admission::restore_policy(),
        admission::snapshot_policy(),
        admission::rejection_policy(),
    ] {
        let name = object_name(&policy);
        policies
            .patch(&name, &params, &Patch::Apply(&policy))
            .await
            .with_context(|| format!("applying ValidatingAdmissionPolicy {name}"))?;
    }
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for binding in admission::bindings() {
        let name = object_name(&binding);
        bindings
            .patch(&name, &params, &Patch::Apply(&binding))
            .await
            .with_context(|| format!("applying ValidatingAdmissionPolicyBinding {name}"))?;
    }
    wait_for_refusal(
        &client,
        "default",
        probe_restore(None),
        "missing apiGroup",
        "the restore admission policy to be enforced",
    )
    .await
}

fn object_name(object: &Value) -> String {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A restore for dry-run probes: valid with `Some(group)`, lacking `apiGroup` otherwise.
fn probe_restore(group: Option<&str>) -> Value {
    let mut target = json!({"kind": "VirtualMachine", "name": "kubevirt-sim-probe"});
    if let Some(group) = group {
        target["apiGroup"] = json!(group);
    }
    json!({
        "apiVersion": names::SNAPSHOT_API_VERSION,
        "kind": "VirtualMachineRestore",
        "metadata": {"generateName": "kubevirt-sim-probe-"},
        "spec": {"target": target, "virtualMachineSnapshotName": "kubevirt-sim-probe"},
    })
}

/// Dry-run creates `probe` in `namespace` until the API server refuses it with a message
/// containing `expected` (or accepts it, when `expected` is empty).
async fn wait_for_refusal(
    client: &Client,
    namespace: &str,
    probe: Value,
    expected: &str,
    what: &str,
) -> Result<()> {
    let api: Api<clone_api::kubevirt::VirtualMachineRestore> =
        Api::namespaced(client.clone(), namespace);
    let typed: clone_api::kubevirt::VirtualMachineRestore =
        serde_json::from_value(probe).context("building the probe restore")?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = tokio::time::Instant::now() + ENFORCEMENT_TIMEOUT;
    let mut last = String::new();
    loop {
        let outcome = api.create(&params, &typed).await;
        let done = match &outcome {
            Ok(_) => expected.is_empty(),
            Err(kube::Error::Api(status)) => {
                last = status.message.clone();
                !expected.is_empty() && status.message.contains(expected)
            }
            Err(err) => {
                last = err.to_string();
                false
            }
        };
        if done {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what}; last answer: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes the API server refuse restore creation in `namespace` with `message` (the
/// [`REJECT_RESTORE_ANNOTATION`](names::REJECT_RESTORE_ANNOTATION) on the namespace); returns
/// once it does. Needs [`install`].
pub async fn reject_restores_in(client: Client, namespace: &str, message: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        namespace,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {names::REJECT_RESTORE_ANNOTATION: message}}}),
        ),
    )
    .await
    .with_context(|| format!("annotating namespace {namespace}"))?;
    wait_for_refusal(
        &client,
        namespace,
        probe_restore(Some(names::KUBEVIRT_GROUP)),
        message,
        "the namespace's restore rejection to be enforced",
    )
    .await
}

/// Undoes [`reject_restores_in`]; returns once restores are admitted again.
pub async fn allow_restores_in(client: Client, namespace: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        namespace,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {names::REJECT_RESTORE_ANNOTATION: null}}}),
        ),
    )
    .await
    .with_context(|| format!("annotating namespace {namespace}"))?;
    wait_for_refusal(
        &client,
        namespace,
        probe_restore(Some(names::KUBEVIRT_GROUP)),
        "",
        "the namespace's restore rejection to be lifted",
    )
    .await
}

/// Writes (`Some`) or removes (`None`) the rejection ConfigMap of a sim: in its namespace, or
/// cluster-wide in [`CONFIG_NAMESPACE`](names::CONFIG_NAMESPACE). Waits until enforced.
pub(crate) async fn configure_rejection(
    client: &Client,
    scope: Option<&str>,
    message: Option<&str>,
) -> Result<()> {
    let namespace = scope.unwrap_or(names::CONFIG_NAMESPACE);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match message {
        None => {
            match maps
                .delete(names::CONFIG_MAP, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => return Ok(()),
                Err(err) => return Err(err).context("deleting the sim's ConfigMap"),
            }
            if scope.is_some() {
                wait_for_refusal(
                    client,
                    namespace,
                    probe_restore(Some(names::KUBEVIRT_GROUP)),
                    "",
                    "the sim's restore rejection to be lifted",
                )
                .await?;
            }
            Ok(())
        }
        Some(message) => {
            if scope.is_none() {
                let namespaces: Api<Namespace> = Api::all(client.clone());
                namespaces
                    .patch(
                        namespace,
                        &PatchParams::apply(names::FIELD_MANAGER),
                        &Patch::Apply(json!({
                            "apiVersion": "v1",
                            "kind": "Namespace",
                            "metadata": {"name": namespace},
                        })),
                    )
                    .await
                    .context("creating the sim's configuration namespace")?;
            }
            maps.patch(
                names::CONFIG_MAP,
                &PatchParams::apply(names::FIELD_MANAGER).force(),
                &Patch::Apply(json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": names::CONFIG_MAP, "namespace": namespace},
                    "data": {names::CONFIG_REJECT_RESTORES: message},
                })),
            )
            .await
            .context("writing the sim's ConfigMap")?;
            wait_for_refusal(
                client,
                scope.unwrap_or("default"),
                probe_restore(Some(names::KUBEVIRT_GROUP)),
                message,
                "the sim's restore rejection to be enforced",
            )
            .await
        }
    }
}
