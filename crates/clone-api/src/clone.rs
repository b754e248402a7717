//! The `VirtualMachineClone` types shared by both API versions.
//!
//! `v1alpha1` and `v1beta1` have one schema (upstream does the same), so the version modules only
//! declare the root type; every field type lives here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation as v;

/// What to clone: a `VirtualMachine` (`kubevirt.io`) or a `VirtualMachineSnapshot`
/// (`snapshot.kubevirt.io`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind in ['VirtualMachine', 'VirtualMachineSnapshot']").message(v::SOURCE_KIND_UNSUPPORTED),
    validation = Rule::new("has(self.apiGroup) && self.apiGroup != ''").message(v::SOURCE_API_GROUP_EMPTY),
    validation = Rule::new("!has(self.apiGroup) || self.apiGroup == '' || !(self.kind in ['VirtualMachine', 'VirtualMachineSnapshot']) || (self.kind == 'VirtualMachine' ? self.apiGroup == 'kubevirt.io' : self.apiGroup == 'snapshot.kubevirt.io')").message(v::SOURCE_API_GROUP_MISMATCH),
    validation = Rule::new("self.name != ''").message(v::SOURCE_NAME_EMPTY),
)]
pub struct CloneSource {
    /// API group of the source: `kubevirt.io` or `snapshot.kubevirt.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub api_group: Option<String>,
    /// `VirtualMachine` or `VirtualMachineSnapshot`.
    #[schemars(length(max = 63))]
    pub kind: String,
    /// Name of the source in the clone's namespace (or in `namespace`).
    #[schemars(length(max = 253))]
    pub name: String,
    /// Extension: namespace of the source VM, for cross-namespace clones with the `DataVolume`
    /// strategy. Absent: the clone's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// What to create: a `VirtualMachine` (`kubevirt.io`), named or not.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.kind) || self.kind == 'VirtualMachine'").message(v::TARGET_KIND_UNSUPPORTED),
    validation = Rule::new("!has(self.apiGroup) || self.apiGroup == 'kubevirt.io'").message(v::TARGET_API_GROUP_INVALID),
)]
pub struct CloneTarget {
    /// API group of the target: `kubevirt.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub api_group: Option<String>,
    /// `VirtualMachine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub kind: Option<String>,
    /// Name of the new VM. Absent: the controller picks `clone-<source>-<suffix>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::target_name")]
    pub name: Option<String>,
}

/// Filters for the labels and annotations of the VM template (`spec.template.metadata`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateFilters {
    /// Which template labels are copied. Absent or empty: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::template_label_filters")]
    pub label_filters: Option<Vec<String>>,
    /// Which template annotations are copied. Absent or empty: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::template_annotation_filters")]
    pub annotation_filters: Option<Vec<String>>,
}

/// How restored volumes are named (maps to the restore's `volumeRestorePolicy`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VolumeNamePolicy {
    /// `restore-<restore UID>-<volume>` (KubeVirt's default).
    RandomizeNames,
    /// `<target>-<volume>`.
    PrefixTargetName,
}

impl VolumeNamePolicy {
    /// The value of the restore's `volumeRestorePolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RandomizeNames => "RandomizeNames",
            Self::PrefixTargetName => "PrefixTargetName",
        }
    }
}

/// Extension: how the clone copies the disks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CloneStrategy {
    /// KubeVirt snapshot and restore (upstream's only way; the default).
    #[default]
    Snapshot,
    /// CDI DataVolume clones of the source's claims (no VolumeSnapshot support needed).
    DataVolume,
    /// `Snapshot` when every volume supports snapshots, else `DataVolume`.
    Auto,
}

impl CloneStrategy {
    /// The value as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "Snapshot",
            Self::DataVolume => "DataVolume",
            Self::Auto => "Auto",
        }
    }
}

/// Extension: the run strategy of the target VM (default: halted, as KubeVirt's restore leaves it).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TargetRunStrategy {
    /// Start the target and keep it running.
    Always,
    /// Restart the target only when it fails.
    RerunOnFailure,
    /// The user starts and stops the target.
    Manual,
    /// Leave the target stopped.
    Halted,
}

impl TargetRunStrategy {
    /// KubeVirt's `spec.runStrategy` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::RerunOnFailure => "RerunOnFailure",
            Self::Manual => "Manual",
            Self::Halted => "Halted",
        }
    }
}

/// Where a clone is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ClonePhase {
    /// Not started, or waiting for a precondition.
    #[default]
    #[serde(rename = "")]
    Unset,
    /// The snapshot is being taken (or the source snapshot is not ready yet).
    SnapshotInProgress,
    /// The restore into the target VM is running.
    RestoreInProgress,
    /// Waiting for the target VM to appear (or its DataVolumes to finish).
    CreatingTargetVM,
    /// The target VM exists. Terminal.
    Succeeded,
    /// The clone cannot finish; the conditions say why. Terminal.
    Failed,
    /// Exists for compatibility; never set. Unknown phases written by a newer version read as this.
    #[serde(other)]
    Unknown,
}

impl ClonePhase {
    /// The phase as written in the API (`""` for [`ClonePhase::Unset`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "",
            Self::SnapshotInProgress => "SnapshotInProgress",
            Self::RestoreInProgress => "RestoreInProgress",
            Self::CreatingTargetVM => "CreatingTargetVM",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }

    /// `Succeeded` and `Failed` never change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A condition of a clone (Kubernetes conventions: `reason` is a CamelCase word, `message` the
/// human text, `lastTransitionTime` moves only when `status` flips).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneCondition {
    /// `Ready` or `Progressing`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happens or what is awaited, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Kept for compatibility with upstream's condition type; never set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Extension: progress of one volume (DataVolume strategy).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeProgress {
    /// Volume name in the target VM.
    pub volume_name: String,
    /// The DataVolume that fills it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume_name: Option<String>,
    /// CDI's phase of that DataVolume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// CDI's progress, e.g. `45.5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

/// The observed state of a clone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCloneStatus {
    /// Where the clone is.
    #[serde(default)]
    pub phase: ClonePhase,
    /// `Ready` and `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub conditions: Vec<CloneCondition>,
    /// The temporary snapshot (VM source); cleared after cleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// The temporary restore; cleared after cleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_name: Option<String>,
    /// The name of the target VM, known from the first reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    /// When the target VM was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// Extension: the strategy in use (tells what `Auto` chose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<CloneStrategy>,
    /// Extension: per-volume progress where the strategy can report it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<VolumeProgress>,
}

impl VirtualMachineCloneStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&CloneCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Declares the spec (and so the root type) of one API version. Both versions share every field
/// and every rule; only the version string and whether it is stored differ.
macro_rules! clone_spec {
    ($version:tt, $storage:tt) => {
        /// The desired clone: a source, an optional target, and how the target's identity differs.
        #[derive(
            kube::CustomResource,
            kube::KubeSchema,
            serde::Serialize,
            serde::Deserialize,
            Clone,
            Debug,
            Default,
            PartialEq,
            Eq,
        )]
        #[kube(
            group = "clone.kubevirt.io",
            version = $version,
            kind = "VirtualMachineClone",
            plural = "virtualmachineclones",
            singular = "virtualmachineclone",
            shortname = "vmclone",
            shortname = "vmclones",
            category = "all",
            namespaced,
            status = "crate::clone::VirtualMachineCloneStatus",
            storage = $storage,
            served = true,
            printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
            printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source.name"}"#,
            printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.targetName"}"#,
            printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
            derive = "PartialEq",
            doc = "A request to clone a KubeVirt VirtualMachine (or VM snapshot) into a new VirtualMachine with a fresh identity.",
            label("app.kubernetes.io/part-of", "vmclone"),
        )]
        #[cfg_attr(test, kube(cel))]
        #[serde(rename_all = "camelCase")]
        #[x_kube(
            validation = kube::core::Rule::new("self == oldSelf").message(crate::validation::SPEC_IMMUTABLE),
            validation = kube::core::Rule::new("!has(self.target) || !has(self.target.name) || self.source.kind != 'VirtualMachine' || has(self.source.__namespace__) || self.target.name != self.source.name").message(crate::validation::TARGET_EQUALS_SOURCE),
            validation = kube::core::Rule::new("!has(self.source.__namespace__) || (has(self.strategy) && self.strategy != 'Snapshot')").message(crate::validation::SOURCE_NAMESPACE_NEEDS_DATAVOLUME),
            validation = kube::core::Rule::new("!has(self.strategy) || self.strategy != 'DataVolume' || self.source.kind == 'VirtualMachine'").message(crate::validation::DATAVOLUME_NEEDS_VM_SOURCE),
            validation = crate::clone::naive_patch_rule(),
        )]
        pub struct VirtualMachineCloneSpec {
            /// What to clone.
            #[x_kube(merge_strategy = MapMerge::Atomic)]
            pub source: crate::clone::CloneSource,
            /// What to create (a VM; name optional).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[x_kube(merge_strategy = MapMerge::Atomic)]
            pub target: Option<crate::clone::CloneTarget>,
            /// Which `metadata.labels` of the source are copied. Absent or empty: all.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(schema_with = "crate::schema::label_filters")]
            pub label_filters: Option<Vec<String>>,
            /// Which `metadata.annotations` of the source are copied. Absent or empty: all.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(schema_with = "crate::schema::annotation_filters")]
            pub annotation_filters: Option<Vec<String>>,
            /// Filters for the VM template's labels and annotations.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub template: Option<crate::clone::TemplateFilters>,
            /// Interface name → new MAC. Interfaces not listed lose their MAC.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(schema_with = "crate::schema::new_mac_addresses")]
            pub new_mac_addresses: Option<std::collections::BTreeMap<String, String>>,
            /// The target's SMBIOS serial; absent: generated from the target's name.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[serde(rename = "newSMBiosSerial")]
            #[schemars(schema_with = "crate::schema::new_smbios_serial")]
            pub new_smbios_serial: Option<String>,
            /// JSON Patch operations (one per string) applied to the target last.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(schema_with = "crate::schema::patches")]
            pub patches: Option<Vec<String>>,
            /// How restored volumes are named. Absent: KubeVirt's default (randomised).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub volume_name_policy: Option<crate::clone::VolumeNamePolicy>,
            /// Extension: how disks are copied (`Snapshot` when absent).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub strategy: Option<crate::clone::CloneStrategy>,
            /// Extension: run strategy of the target (halted when absent).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub target_run_strategy: Option<crate::clone::TargetRunStrategy>,
        }
    };
}

pub(crate) use clone_spec;

/// The spec-level naive patch rule as a [`kube::core::Rule`].
pub(crate) fn naive_patch_rule() -> kube::core::Rule {
    let (rule, message) = crate::schema::naive_patch_rule();
    kube::core::Rule::new(rule).message(kube::core::Message::Expression(message))
}
