//! The DataVolume strategy (`vmclone.dev/strategy: DataVolume`, or `Auto` choosing it): the target
//! VM is built here from the live source VM, and every claim volume becomes a
//! `dataVolumeTemplates` entry that clones the source's claim with CDI — the OpenShift chapter's
//! "clone a VM with a DataVolumeTemplate", automated. KubeVirt creates the DataVolumes from the
//! templates (authorising cross-namespace sources itself) and CDI copies the data.
//!
//! The target is built in this order: the source VM under the target's name; every claim volume
//! replaced by a DataVolume of the same name as its template (named by `volumeNamePolicy`, with the
//! source claim's volume mode, access modes, storage class and size); the identity patches (MACs,
//! serial, firmware UUID, filters); the run strategy (`Halted` unless
//! `vmclone.dev/target-run-strategy` says otherwise); the user's patches last, with KubeVirt's
//! lenient applier. Then the seed's pre-flight checks compare each template with its source claim.
//!
//! The chapter's other flow, one disk cloned into a DataVolume of its own (`kubectl vmclone
//! disk`), uses the same pieces: [`clone_data_volume`] with the source claim's shape,
//! [`check_clone`] for the checks, [`claim_in_use`] for the powered-off source and
//! [`clone_source_access`] for the permission CDI asks of its creator across namespaces.

use std::collections::BTreeMap;

use clone_api::extensions::{CloneExtensions, CloneStrategy, TargetRunStrategy};
use clone_api::kubevirt::{DataVolume, DataVolumeStatus, VirtualMachine};
use clone_api::names;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VolumeNamePolicy};
use clone_api::validation;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::{Map, Value, json};

use crate::decide::ResourceCheck;
use crate::identity::{IdentityInput, identity_patches};
use crate::patch::{PatchError, apply_kubevirt};
use crate::quantity;

/// DataVolume phases after which a volume needs nothing more from the clone: copied, or waiting
/// for its first consumer (a `WaitForFirstConsumer` class binds only when the target starts).
pub const DONE_PHASES: [&str; 3] = ["Succeeded", "WaitForFirstConsumer", "PendingPopulation"];

/// Which strategy a clone uses, and why `Auto` chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// `Snapshot` or `DataVolume` (never `Auto`).
    pub strategy: CloneStrategy,
    /// Whether `Auto` chose it.
    pub auto: bool,
    /// Why `Auto` chose it, while the clone has not started (for the first event).
    pub because: Option<String>,
}

impl Choice {
    /// How messages name the strategy: `DataVolume strategy`, `Snapshot strategy, chosen by Auto`.
    pub fn label(&self) -> String {
        let name = self.strategy.as_str();
        if self.auto {
            format!("{name} strategy, chosen by Auto")
        } else {
            format!("{name} strategy")
        }
    }

    /// What the first event appends for `Auto`: ` (vmclone.dev/strategy Auto chose DataVolume:
    /// the source is in namespace a)`.
    pub fn event_note(&self) -> String {
        match &self.because {
            Some(because) => format!(
                " ({} Auto chose {}: {because})",
                clone_api::extensions::STRATEGY,
                self.strategy.as_str()
            ),
            None => String::new(),
        }
    }
}

/// The strategy a clone uses in this pass.
///
/// What the clone already did decides first (a snapshot or restore in its status: `Snapshot`, even
/// for a clone that upstream's controller started despite the annotation; a target VM it created
/// itself: `DataVolume`), so `Auto` never changes its mind halfway. Before that, the annotation
/// decides; `Auto` picks `DataVolume` for a source in another namespace or a
/// source VM with a volume KubeVirt reports as not snapshottable (no `VolumeSnapshotClass` for its
/// storage), else `Snapshot`.
pub fn choose(
    clone: &VirtualMachineClone,
    source_vm: Option<&VirtualMachine>,
    target: Option<&VirtualMachine>,
) -> Choice {
    let requested = clone.strategy().unwrap_or_default();
    let auto = requested == CloneStrategy::Auto;
    let fixed = |strategy| Choice {
        strategy,
        auto,
        because: None,
    };
    let status = clone.status.clone().unwrap_or_default();
    let snapshot_started = status.snapshot_name.is_some()
        || status.restore_name.is_some()
        || matches!(
            status.phase,
            ClonePhase::SnapshotInProgress | ClonePhase::RestoreInProgress
        );
    let uid = clone.metadata.uid.as_deref().unwrap_or_default();
    if snapshot_started {
        return fixed(CloneStrategy::Snapshot);
    }
    if target.is_some_and(|vm| created_by(vm, uid)) {
        return fixed(CloneStrategy::DataVolume);
    }
    if !auto {
        return fixed(requested);
    }
    if status.phase == ClonePhase::CreatingTargetVM {
        return fixed(CloneStrategy::DataVolume);
    }
    let auto = |strategy, because: String| Choice {
        strategy,
        auto: true,
        because: Some(because),
    };
    let ns = clone.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(source_ns) = clone.source_namespace().filter(|s| *s != ns) {
        return auto(
            CloneStrategy::DataVolume,
            format!("the source is in namespace {source_ns}"),
        );
    }
    if clone.spec.source.kind == names::VIRTUAL_MACHINE_SNAPSHOT_KIND {
        return auto(
            CloneStrategy::Snapshot,
            "the source is a snapshot".to_owned(),
        );
    }
    let Some(vm) = source_vm else {
        return fixed(CloneStrategy::Snapshot);
    };
    let statuses = vm
        .status
        .as_ref()
        .and_then(|s| s.volume_snapshot_statuses.as_deref())
        .unwrap_or_default();
    let unsupported: Vec<&str> = vm
        .spec
        .volumes()
        .iter()
        .filter(|v| v.is_claim())
        .filter(|v| statuses.iter().any(|s| s.name == v.name && !s.enabled))
        .map(|v| v.name.as_str())
        .collect();
    if unsupported.is_empty() {
        auto(
            CloneStrategy::Snapshot,
            "every volume supports snapshots".to_owned(),
        )
    } else {
        auto(
            CloneStrategy::DataVolume,
            format!(
                "volume {} does not support snapshots",
                unsupported.join(", ")
            ),
        )
    }
}

/// Whether `vm` was created by the clone with this UID (the DataVolume strategy marks its target).
pub fn created_by(vm: &VirtualMachine, clone_uid: &str) -> bool {
    !clone_uid.is_empty()
        && vm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::CREATED_BY_CLONE_ANNOTATION))
            .is_some_and(|v| v == clone_uid)
}

/// Whether the source VM runs (or is asked to run): CDI cannot clone a disk a running VM uses, so
/// the strategy waits until it is stopped, as the OpenShift chapter requires.
pub fn is_running(vm: &VirtualMachine) -> bool {
    let asked = vm.spec.running == Some(true)
        || matches!(
            vm.spec.run_strategy.as_deref(),
            Some("Always" | "RerunOnFailure")
        );
    let status = vm
        .status
        .as_ref()
        .and_then(|s| s.printable_status.as_deref());
    let off = matches!(
        status,
        None | Some("Stopped" | "Provisioning" | "WaitingForVolumeBinding")
    );
    asked || !off
}

/// The claims of the source VM that the strategy clones, in volume order.
pub fn source_claims(vm: &VirtualMachine) -> Vec<String> {
    let mut claims: Vec<String> = Vec::new();
    for claim in vm.spec.volumes().iter().filter_map(|v| v.claim_name()) {
        if !claims.iter().any(|c| c == claim) {
            claims.push(claim.to_owned());
        }
    }
    claims
}

/// The DataVolume name for a volume of the target.
pub fn data_volume_name(
    policy: Option<&VolumeNamePolicy>,
    target: &str,
    clone_uid: &str,
    volume: &str,
) -> String {
    match policy {
        Some(VolumeNamePolicy::PrefixTargetName) => format!("{target}-{volume}"),
        _ => format!("clone-{clone_uid}-{volume}"),
    }
}

/// The volume a DataVolume of this clone's target belongs to: [`data_volume_name`] read back
/// (`None` for a DataVolume the clone did not name).
pub fn volume_of<'a>(data_volume: &'a str, target: &str, clone_uid: &str) -> Option<&'a str> {
    [format!("clone-{clone_uid}-"), format!("{target}-")]
        .iter()
        .find_map(|prefix| data_volume.strip_prefix(prefix.as_str()))
        .filter(|volume| !volume.is_empty())
}

/// The service account KubeVirt checks a cross-namespace DataVolume template for: the VM's
/// `serviceAccount` volume (KubeVirt's rule), or `serviceAccountName` if the template carries one,
/// else `default`.
pub fn service_account(vm: &Value) -> String {
    let spec = vm.pointer("/spec/template/spec");
    let named = spec
        .and_then(|s| s.get("serviceAccountName"))
        .and_then(Value::as_str);
    let volume = spec
        .and_then(|s| s.get("volumes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|v| v.pointer("/serviceAccount/serviceAccountName"))
        .and_then(Value::as_str);
    named
        .or(volume)
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_owned()
}

/// One volume of the target and where its data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedVolume {
    /// The volume's name in the VM.
    pub volume: String,
    /// The DataVolume (and its template) that clones it.
    pub data_volume: String,
    /// The source claim.
    pub source_claim: String,
}

/// The target VM and what it will clone.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The VM manifest to create.
    pub vm: Value,
    /// Its cloned volumes.
    pub volumes: Vec<PlannedVolume>,
    /// `newMacAddresses` keys that name no interface (for `UnknownInterface` warnings).
    pub unknown_interfaces: Vec<String>,
    /// The service account KubeVirt authorises the templates for.
    pub service_account: String,
}

/// Why no target could be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A source claim does not exist (yet).
    MissingClaim {
        /// The volume.
        volume: String,
        /// The claim.
        claim: String,
    },
    /// One of the user's patches does not apply.
    Patch(String),
    /// A template fails the seed's checks against its source claim (volume mode, size).
    Check(String),
}

/// What building the target needs.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The clone.
    pub clone: &'a VirtualMachineClone,
    /// The source VM as read.
    pub source_vm: &'a VirtualMachine,
    /// The source's namespace.
    pub source_namespace: &'a str,
    /// The target's name.
    pub target_name: &'a str,
    /// The source claims by name (absent: not found).
    pub claims: &'a BTreeMap<String, PersistentVolumeClaim>,
}

/// Builds the target VM of a DataVolume clone (see the module docs) and checks it.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let clone = input.clone;
    let namespace = clone.metadata.namespace.as_deref().unwrap_or_default();
    let uid = clone.metadata.uid.as_deref().unwrap_or_default();
    let source = serde_json::to_value(input.source_vm).unwrap_or(Value::Null);
    let mut vm = json!({
        "apiVersion": format!("{}/v1", names::KUBEVIRT_GROUP),
        "kind": names::VIRTUAL_MACHINE_KIND,
        "metadata": target_metadata(&source, input.target_name, namespace),
        "spec": source.get("spec").cloned().unwrap_or_else(|| json!({})),
    });

    let mut volumes = Vec::new();
    let mut templates = Vec::new();
    let policy = clone.spec.volume_name_policy.as_ref();
    if let Some(list) = vm
        .pointer_mut("/spec/template/spec/volumes")
        .and_then(Value::as_array_mut)
    {
        for entry in list.iter_mut() {
            let typed: clone_api::kubevirt::Volume =
                serde_json::from_value(entry.clone()).unwrap_or_default();
            let Some(claim) = typed.claim_name() else {
                continue;
            };
            let Some(pvc) = input.claims.get(claim) else {
                return Err(PlanError::MissingClaim {
                    volume: typed.name.clone(),
                    claim: claim.to_owned(),
                });
            };
            let data_volume = data_volume_name(policy, input.target_name, uid, &typed.name);
            let hotpluggable = entry
                .pointer("/persistentVolumeClaim/hotpluggable")
                .or_else(|| entry.pointer("/dataVolume/hotpluggable"))
                .cloned();
            let mut reference = Map::new();
            reference.insert("name".into(), data_volume.clone().into());
            if let Some(hotpluggable) = hotpluggable {
                reference.insert("hotpluggable".into(), hotpluggable);
            }
            *entry = json!({"name": typed.name, "dataVolume": reference});
            templates.push(template(&data_volume, input.source_namespace, claim, pvc));
            volumes.push(PlannedVolume {
                volume: typed.name.clone(),
                data_volume,
                source_claim: claim.to_owned(),
            });
        }
    }
    if let Some(spec) = vm.get_mut("spec").and_then(Value::as_object_mut) {
        // The source's own templates made the source's DataVolumes; the target gets clones.
        spec.remove("dataVolumeTemplates");
        if !templates.is_empty() {
            spec.insert("dataVolumeTemplates".into(), Value::Array(templates));
        }
    }

    let identity = identity_patches(
        &IdentityInput {
            spec: &clone.spec,
            namespace,
            target_name: input.target_name,
            clone_uid: uid,
        },
        &vm,
    );
    let run = clone
        .target_run_strategy()
        .ok()
        .flatten()
        .unwrap_or(TargetRunStrategy::Halted);
    let patches = crate::decide::with_run_strategy(identity.patches, &vm, clone, run);
    if let Err(error) = apply_kubevirt(&mut vm, &patches) {
        let source_name = format!("{}/{}", input.source_namespace, clone.spec.source.name);
        return Err(PlanError::Patch(user_patch_failure(
            &error,
            &patches,
            clone,
            &source_name,
        )));
    }
    if let Some(meta) = vm.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(annotations) = annotations {
            annotations.insert(names::CREATED_BY_CLONE_ANNOTATION.into(), uid.into());
        }
    }
    check(&vm, &volumes, input.claims)?;
    let service_account = service_account(&vm);
    Ok(Plan {
        vm,
        volumes,
        unknown_interfaces: identity.unknown_interfaces,
        service_account,
    })
}

/// The target's metadata: its name and namespace, the source's labels and annotations (the
/// filters remove what they must).
fn target_metadata(source: &Value, name: &str, namespace: &str) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), name.into());
    meta.insert("namespace".into(), namespace.into());
    for field in ["labels", "annotations"] {
        if let Some(value) = source
            .pointer(&format!("/metadata/{field}"))
            .filter(|v| v.is_object())
        {
            meta.insert(field.into(), value.clone());
        }
    }
    Value::Object(meta)
}

/// The source claim's volume mode (`Filesystem` when unset, as Kubernetes defaults it).
fn claim_mode(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_mode.clone())
        .unwrap_or_else(|| "Filesystem".to_owned())
}

/// The source claim's requested size.
fn claim_size(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
}

/// What a clone of one claim changes from the source claim's shape (the plugin's `disk` flags);
/// each field left empty keeps the source's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimOverrides {
    /// The requested storage (a quantity, e.g. `3Gi`).
    pub size: Option<String>,
    /// The storage class.
    pub storage_class: Option<String>,
    /// `Filesystem` or `Block`.
    pub volume_mode: Option<String>,
}

/// The claim (`spec.pvc`) of a DataVolume that clones `pvc`: the source's access modes
/// (`ReadWriteOnce` when it lists none), volume mode, storage class and requested size, each
/// unless `overrides` says otherwise. Without a size anywhere, none is written (CDI then refuses
/// the DataVolume with `PVC size is missing`).
pub fn clone_claim_spec(pvc: &PersistentVolumeClaim, overrides: &ClaimOverrides) -> Value {
    let spec = pvc.spec.clone().unwrap_or_default();
    let mut target = Map::new();
    let access_modes = spec
        .access_modes
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".to_owned()]);
    target.insert("accessModes".into(), json!(access_modes));
    let mode = overrides
        .volume_mode
        .clone()
        .unwrap_or_else(|| claim_mode(pvc));
    target.insert("volumeMode".into(), mode.into());
    let class = overrides
        .storage_class
        .clone()
        .or(spec.storage_class_name)
        .filter(|c| !c.is_empty());
    if let Some(class) = class {
        target.insert("storageClassName".into(), class.into());
    }
    if let Some(size) = overrides.size.clone().or_else(|| claim_size(pvc)) {
        target.insert("resources".into(), json!({"requests": {"storage": size}}));
    }
    Value::Object(target)
}

/// The `spec` of a DataVolume that clones the claim `source_namespace/claim` (read as `pvc`):
/// `source.pvc` names it, `pvc` is [`clone_claim_spec`].
pub fn clone_spec(
    source_namespace: &str,
    claim: &str,
    pvc: &PersistentVolumeClaim,
    overrides: &ClaimOverrides,
) -> Value {
    json!({
        "source": {"pvc": {"namespace": source_namespace, "name": claim}},
        "pvc": clone_claim_spec(pvc, overrides),
    })
}

/// A DataVolume (`cdi.kubevirt.io/v1beta1`) `namespace/name` of its own that clones
/// `source_namespace/claim`, as the OpenShift chapter writes one by hand (7.13.2, 7.13.4).
pub fn clone_data_volume(
    name: &str,
    namespace: &str,
    source_namespace: &str,
    claim: &str,
    pvc: &PersistentVolumeClaim,
    overrides: &ClaimOverrides,
) -> Value {
    json!({
        "apiVersion": format!("{}/v1beta1", names::CDI_GROUP),
        "kind": "DataVolume",
        "metadata": {"name": name, "namespace": namespace},
        "spec": clone_spec(source_namespace, claim, pvc, overrides),
    })
}

/// A `dataVolumeTemplates` entry that clones `claim` from `source_namespace` with its shape.
fn template(name: &str, source_namespace: &str, claim: &str, pvc: &PersistentVolumeClaim) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": clone_spec(source_namespace, claim, pvc, &ClaimOverrides::default()),
    })
}

/// The seed's pre-flight checks of a DataVolume clone (its `spec`) against the source claim, in
/// CDI's words: the same volume mode (`source volumeMode (Block) and target volumeMode
/// (Filesystem) do not match`), and no less storage (`target resources requests storage size is
/// smaller than the source`). Empty when it passes.
///
/// The claim is `spec.pvc` (the PVC API: a missing volume mode is `Filesystem`, as Kubernetes
/// defaults it) or `spec.storage` (the storage API: CDI fills a missing volume mode or size in
/// from the source, so neither can differ). A size that is not a quantity is left to the API
/// server.
pub fn check_clone(source: &PersistentVolumeClaim, spec: &Value) -> Vec<String> {
    let (claim, storage_api) = match (spec.get("pvc"), spec.get("storage")) {
        (Some(pvc), _) => (Some(pvc), false),
        (None, storage) => (storage, true),
    };
    let at = |path: &str| claim.and_then(|c| c.pointer(path)).and_then(Value::as_str);
    let source_mode = claim_mode(source);
    let default_mode = if storage_api {
        source_mode.as_str()
    } else {
        "Filesystem"
    };
    let target_mode = at("/volumeMode").unwrap_or(default_mode);
    let mut problems = Vec::new();
    if target_mode != source_mode {
        problems.push(validation::volume_mode_mismatch(&source_mode, target_mode));
    }
    let smaller = match (
        at("/resources/requests/storage").and_then(quantity::bytes),
        claim_size(source).as_deref().and_then(quantity::bytes),
    ) {
        (Some(target), Some(source)) => target < source,
        _ => false,
    };
    if smaller {
        problems.push(validation::TARGET_SMALLER_THAN_SOURCE.to_owned());
    }
    problems
}

/// The seed's pre-flight checks ([`check_clone`]) of every cloned volume's template (after the
/// user's patches) against its source claim, each problem naming its volume.
fn check(
    vm: &Value,
    volumes: &[PlannedVolume],
    claims: &BTreeMap<String, PersistentVolumeClaim>,
) -> Result<(), PlanError> {
    let templates = vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut problems = Vec::new();
    for planned in volumes {
        let Some(pvc) = claims.get(&planned.source_claim) else {
            continue;
        };
        let Some(spec) = templates
            .iter()
            .find(|t| {
                t.pointer("/metadata/name").and_then(Value::as_str)
                    == Some(planned.data_volume.as_str())
            })
            .and_then(|t| t.get("spec"))
        else {
            continue;
        };
        let volume = &planned.volume;
        problems.extend(
            check_clone(pvc, spec)
                .into_iter()
                .map(|problem| format!("{problem} (volume {volume})")),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PlanError::Check(problems.join("; ")))
    }
}

/// Whether `vm` has a volume backed by the claim `claim` (a `persistentVolumeClaim` volume, or a
/// `dataVolume` volume, whose claim has the DataVolume's name).
pub fn uses_claim(vm: &VirtualMachine, claim: &str) -> bool {
    vm.spec
        .volumes()
        .iter()
        .any(|v| v.claim_name() == Some(claim))
}

/// Why the claim `namespace/claim` cannot be cloned now: the running VMs (of `vms`, the
/// namespace's) that use it, named. The OpenShift chapter: "You must power down the virtual
/// machine that is associated with the PVC before you can clone it." `None` when no running VM
/// uses it.
pub fn claim_in_use(namespace: &str, claim: &str, vms: &[VirtualMachine]) -> Option<String> {
    let running: Vec<String> = vms
        .iter()
        .filter(|vm| uses_claim(vm, claim) && is_running(vm))
        .map(|vm| vm.metadata.name.clone().unwrap_or_default())
        .collect();
    let first = running.first()?;
    let (noun, pronoun) = if running.len() == 1 {
        ("VM", "it")
    } else {
        ("VMs", "them")
    };
    let listed: Vec<String> = running.iter().map(|n| format!("{namespace}/{n}")).collect();
    Some(format!(
        "source PVC {namespace}/{claim} is used by running {noun} {}: CDI clones only a disk no running VM uses; power {pronoun} off first (for example with virtctl stop {first} -n {namespace})",
        listed.join(", ")
    ))
}

/// The message for a patch list that does not apply: the user's patch when one is at fault (they
/// come last), else the applier's own words.
fn user_patch_failure(
    error: &PatchError,
    patches: &[String],
    clone: &VirtualMachineClone,
    source: &str,
) -> String {
    let user = clone.spec.patches.as_ref().map_or(0, Vec::len);
    let generated = patches.len() - user;
    let located = match error {
        PatchError::Apply { index, source, .. } => Some((*index, source.to_string())),
        PatchError::Unparsable { index, source } => Some((*index, source.to_string())),
        _ => None,
    };
    match located {
        Some((index, why)) if index >= generated => validation::patch_does_not_apply_to_source(
            index - generated,
            source,
            &why,
            &patches[index],
        ),
        _ => format!("the target VM cannot be built from source VM {source}: {error}"),
    }
}

/// Where the cloned volumes of a target are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// One item per volume, in template order: `root 45.5%`, `data Succeeded`.
    pub items: Vec<String>,
    /// Volumes that are done, with their DataVolume.
    pub done: Vec<(String, String)>,
    /// The first failed volume: (volume, DataVolume, CDI's message).
    pub failed: Option<(String, String, String)>,
    /// Whether every volume is done.
    pub complete: bool,
}

/// The progress of the DataVolumes a target VM's templates create.
pub fn progress(target: &VirtualMachine, data_volumes: &BTreeMap<String, DataVolume>) -> Progress {
    let mut out = Progress {
        complete: true,
        ..Progress::default()
    };
    for template in target.spec.data_volume_templates.iter().flatten() {
        let Some(name) = template.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let volume = target
            .spec
            .volumes()
            .iter()
            .find(|v| v.data_volume.as_ref().is_some_and(|d| d.name == name))
            .map_or(name, |v| v.name.as_str())
            .to_owned();
        let status = data_volumes.get(name).and_then(|dv| dv.status.as_ref());
        let phase = status
            .and_then(|s| s.phase.as_deref())
            .filter(|p| !p.is_empty())
            .unwrap_or("Pending");
        let shown = match status.and_then(|s| s.progress.as_deref()) {
            Some(progress) if phase == "CloneInProgress" && progress != "N/A" => progress,
            _ => phase,
        };
        out.items.push(format!("{volume} {shown}"));
        if DONE_PHASES.contains(&phase) {
            out.done.push((volume.clone(), name.to_owned()));
        } else {
            out.complete = false;
        }
        if phase == "Failed" && out.failed.is_none() {
            let message = status.map_or_else(|| "phase Failed".to_owned(), failure_message);
            out.failed = Some((volume, name.to_owned(), message));
        }
    }
    out
}

/// CDI's word on a failed DataVolume: the message of its `Running` condition (else `Ready`, else
/// `Bound`), or `phase Failed` when none has one.
pub fn failure_message(status: &DataVolumeStatus) -> String {
    ["Running", "Ready", "Bound"]
        .iter()
        .find_map(|kind| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == *kind)
                .and_then(|c| c.message.clone())
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_else(|| "phase Failed".to_owned())
}

/// The access CDI requires of whoever creates a DataVolume that clones the claim `claim` from
/// another namespace, asked in the source namespace: `create` on `datavolumes/source` named like
/// the claim (what the OpenShift chapter's ClusterRole grants) or, failing that, `create` on
/// `pods`. Either one allowed is enough.
pub fn clone_source_access(claim: &str) -> [ResourceCheck; 2] {
    [
        ResourceCheck {
            verb: "create",
            group: names::CDI_GROUP,
            resource: "datavolumes",
            subresource: "source",
            name: claim.to_owned(),
        },
        ResourceCheck {
            verb: "create",
            group: "",
            resource: "pods",
            subresource: "",
            name: String::new(),
        },
    ]
}

/// The `Progressing` message of a DataVolume clone, after the strategy's label: `cloning 2
/// volumes: root 45.5%, data Succeeded`.
pub fn progress_message(progress: &Progress) -> String {
    let count = progress.items.len();
    let noun = if count == 1 { "volume" } else { "volumes" };
    format!("cloning {count} {noun}: {}", progress.items.join(", "))
}

/// Whether two progress messages differ only in percentages (so the newer one may wait).
pub fn only_percentages_differ(old: &str, new: &str) -> bool {
    fn shape(message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        let mut number = String::new();
        for c in message.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            if c == '%' && !number.is_empty() {
                out.push('#');
            } else {
                out.push_str(&number);
            }
            number.clear();
            out.push(c);
        }
        out.push_str(&number);
        out
    }
    old != new && shape(old) == shape(new)
}

/// Whether `item` (e.g. `data Succeeded`) is listed in a progress message.
pub fn lists(message: &str, item: &str) -> bool {
    message
        .split_once("cloning ")
        .and_then(|(_, rest)| rest.split_once(": "))
        .is_some_and(|(_, items)| items.split(", ").any(|i| i == item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_percentages_differ_ignores_numbers_before_a_percent_sign() {
        let a = "DataVolume strategy: cloning 2 volumes: root 4.5%, data Pending";
        let b = "DataVolume strategy: cloning 2 volumes: root 45.5%, data Pending";
        let c = "DataVolume strategy: cloning 2 volumes: root 45.5%, data Succeeded";
        assert!(only_percentages_differ(a, b));
        assert!(!only_percentages_differ(b, c));
        assert!(!only_percentages_differ(a, a));
    }

    #[test]
    fn lists_finds_whole_items_only() {
        let m = "DataVolume strategy: cloning 2 volumes: root 45.5%, data Succeeded";
        assert!(lists(m, "data Succeeded"));
        assert!(!lists(m, "root Succeeded"));
        assert!(!lists("waiting", "data Succeeded"));
    }

    fn pvc(mode: Option<&str>, size: &str) -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": ["ReadWriteMany"], "storageClassName": "fast",
                              "resources": {"requests": {"storage": size}}});
        if let Some(mode) = mode {
            spec["volumeMode"] = json!(mode);
        }
        serde_json::from_value(json!({"metadata": {"name": "disk"}, "spec": spec})).expect("a PVC")
    }

    fn vm(name: &str, run_strategy: &str, volume: Value) -> VirtualMachine {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"runStrategy": run_strategy, "template": {"spec": {"volumes": [volume]}}},
        }))
        .expect("a VM")
    }

    #[test]
    fn a_clone_keeps_the_source_claims_shape_unless_overridden() {
        let source = pvc(Some("Block"), "2Gi");
        let same = clone_claim_spec(&source, &ClaimOverrides::default());
        assert_eq!(
            same,
            json!({"accessModes": ["ReadWriteMany"], "volumeMode": "Block",
                   "storageClassName": "fast", "resources": {"requests": {"storage": "2Gi"}}})
        );
        let changed = clone_claim_spec(
            &source,
            &ClaimOverrides {
                size: Some("3Gi".into()),
                storage_class: Some("slow".into()),
                volume_mode: None,
            },
        );
        assert_eq!(changed["resources"]["requests"]["storage"], "3Gi");
        assert_eq!(changed["storageClassName"], "slow");
        assert_eq!(changed["volumeMode"], "Block");
        let dv = clone_data_volume(
            "copy",
            "b",
            "a",
            "disk",
            &source,
            &ClaimOverrides::default(),
        );
        assert_eq!(dv["apiVersion"], "cdi.kubevirt.io/v1beta1");
        assert_eq!(dv["metadata"], json!({"name": "copy", "namespace": "b"}));
        assert_eq!(
            dv["spec"]["source"],
            json!({"pvc": {"namespace": "a", "name": "disk"}})
        );
    }

    #[test]
    fn the_checks_speak_cdis_words() {
        let block = pvc(Some("Block"), "2Gi");
        let fine = clone_spec("a", "disk", &block, &ClaimOverrides::default());
        assert_eq!(check_clone(&block, &fine), Vec::<String>::new());
        let wrong = clone_spec(
            "a",
            "disk",
            &block,
            &ClaimOverrides {
                size: Some("1Gi".into()),
                volume_mode: Some("Filesystem".into()),
                ..ClaimOverrides::default()
            },
        );
        assert_eq!(
            check_clone(&block, &wrong),
            [
                "source volumeMode (Block) and target volumeMode (Filesystem) do not match",
                "target resources requests storage size is smaller than the source",
            ]
        );
        // The same size in another notation is not smaller.
        let bytes = json!({"pvc": {"volumeMode": "Block",
                                   "resources": {"requests": {"storage": "2147483648"}}}});
        assert!(check_clone(&block, &bytes).is_empty());
    }

    #[test]
    fn a_missing_volume_mode_is_filesystem_for_the_pvc_api_and_the_sources_for_the_storage_api() {
        let block = pvc(Some("Block"), "2Gi");
        let pvc_api = json!({"pvc": {"resources": {"requests": {"storage": "2Gi"}}}});
        assert_eq!(
            check_clone(&block, &pvc_api),
            ["source volumeMode (Block) and target volumeMode (Filesystem) do not match"]
        );
        assert!(check_clone(&block, &json!({"storage": {}})).is_empty());
        // A source without a volume mode is a Filesystem claim.
        let unset = pvc(None, "2Gi");
        assert!(check_clone(&unset, &pvc_api).is_empty());
    }

    #[test]
    fn only_a_running_vm_that_uses_the_claim_holds_it() {
        let claim = json!({"name": "root", "persistentVolumeClaim": {"claimName": "disk"}});
        let data_volume = json!({"name": "root", "dataVolume": {"name": "disk"}});
        let other = json!({"name": "root", "persistentVolumeClaim": {"claimName": "other"}});
        assert!(uses_claim(&vm("a", "Halted", claim.clone()), "disk"));
        assert!(uses_claim(&vm("a", "Halted", data_volume.clone()), "disk"));
        assert!(!uses_claim(&vm("a", "Halted", other.clone()), "disk"));
        let vms = [
            vm("stopped", "Halted", claim.clone()),
            vm("elsewhere", "Always", other),
        ];
        assert_eq!(claim_in_use("ns", "disk", &vms), None);
        let vms = [
            vm("db", "Always", claim),
            vm("stopped", "Halted", data_volume),
        ];
        assert_eq!(
            claim_in_use("ns", "disk", &vms).as_deref(),
            Some(
                "source PVC ns/disk is used by running VM ns/db: CDI clones only a disk no running VM uses; power it off first (for example with virtctl stop db -n ns)"
            )
        );
    }

    #[test]
    fn a_failure_is_told_in_the_running_conditions_words() {
        let status: DataVolumeStatus = serde_json::from_value(json!({
            "phase": "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "message": "not ready"},
                {"type": "Running", "status": "False", "message": "PVC size is missing"},
            ],
        }))
        .expect("a status");
        assert_eq!(failure_message(&status), "PVC size is missing");
        assert_eq!(
            failure_message(&DataVolumeStatus::default()),
            "phase Failed"
        );
    }

    #[test]
    fn a_data_volume_name_reads_back_as_its_volume() {
        for policy in [None, Some(&VolumeNamePolicy::PrefixTargetName)] {
            let name = data_volume_name(policy, "web-1", "uid", "root");
            assert_eq!(volume_of(&name, "web-1", "uid"), Some("root"));
        }
        assert_eq!(volume_of("other-dv", "web-1", "uid"), None);
    }

    #[test]
    fn names_follow_the_volume_name_policy() {
        assert_eq!(
            data_volume_name(Some(&VolumeNamePolicy::PrefixTargetName), "t", "u", "root"),
            "t-root"
        );
        assert_eq!(data_volume_name(None, "t", "u", "root"), "clone-u-root");
    }
}
