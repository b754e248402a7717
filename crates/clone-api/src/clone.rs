//! The `VirtualMachineClone` types shared by both API versions.
//!
//! `v1alpha1` and `v1beta1` have one schema (upstream does the same), so the version modules only
//! declare the root type; every field type lives here. The fields are exactly upstream KubeVirt's
//! (v1.9's set): on a KubeVirt cluster virt-operator owns the CRD and prunes every field it does not
//! define, so vmclone's extensions are annotations ([`crate::extensions`]) and its validation is a
//! ValidatingAdmissionPolicy, not CEL in the schema.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to clone: a `VirtualMachine` (`kubevirt.io`) or a `VirtualMachineSnapshot`
/// (`snapshot.kubevirt.io`), in the clone's namespace (Kubernetes' `TypedLocalObjectReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSource {
    /// API group of the source: `kubevirt.io` or `snapshot.kubevirt.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// `VirtualMachine` or `VirtualMachineSnapshot`.
    pub kind: String,
    /// Name of the source in the clone's namespace.
    pub name: String,
}

/// What to create: a `VirtualMachine` (`kubevirt.io`). Upstream's schema requires `kind` and
/// `name`; KubeVirt's mutating webhook fills a missing target as `clone-<source>-<random>`, and
/// vmclone picks such a name itself when the whole target is absent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneTarget {
    /// API group of the target: `kubevirt.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// `VirtualMachine`.
    pub kind: String,
    /// Name of the new VM.
    pub name: String,
}

/// Filters for the labels and annotations of the VM template (`spec.template.metadata`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateFilters {
    /// Which template labels are copied. Absent or empty: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub label_filters: Option<Vec<String>>,
    /// Which template annotations are copied. Absent or empty: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub annotation_filters: Option<Vec<String>>,
}

/// How restored volumes are named (maps to the restore's `volumeRestorePolicy`). Upstream added
/// the field in KubeVirt v1.8; a v1.7 cluster's CRD prunes it. A plain string in the schema, as
/// upstream's; a value this version does not know is kept as [`VolumeNamePolicy::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VolumeNamePolicy {
    /// `restore-<restore UID>-<volume>` (KubeVirt's default).
    RandomizeNames,
    /// `<target>-<volume>`.
    PrefixTargetName,
    /// A value this version does not know (the admission policy refuses it; the controller fails
    /// such a clone with `InvalidSpec`).
    Other(String),
}

impl VolumeNamePolicy {
    /// The values the API accepts.
    pub const KNOWN: [Self; 2] = [Self::RandomizeNames, Self::PrefixTargetName];

    /// The value as written in the API (and in the restore's `volumeRestorePolicy`).
    pub fn as_str(&self) -> &str {
        match self {
            Self::RandomizeNames => "RandomizeNames",
            Self::PrefixTargetName => "PrefixTargetName",
            Self::Other(value) => value,
        }
    }
}

impl Serialize for VolumeNamePolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for VolumeNamePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Ok(Self::KNOWN
            .into_iter()
            .find(|known| known.as_str() == value)
            .unwrap_or(Self::Other(value)))
    }
}

/// Where a clone is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[non_exhaustive]
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

/// A condition of a clone (KubeVirt's `Condition` type: `reason` is a CamelCase word, `message`
/// the human text, `lastTransitionTime` moves only when `status` flips).
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
}

/// The observed state of a clone: upstream's fields only (the strategy in use and per-volume
/// progress go into the `Progressing` message and into events).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCloneStatus {
    /// Where the clone is.
    #[serde(default)]
    #[schemars(with = "String")]
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
}

impl VirtualMachineCloneStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&CloneCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Declares the spec (and so the root type) of one API version. Both versions share every field;
/// only the version string and whether it is stored differ.
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
            printcolumn = r#"{"name":"SourceVirtualMachine","type":"string","jsonPath":".spec.source.name"}"#,
            printcolumn = r#"{"name":"TargetVirtualMachine","type":"string","jsonPath":".spec.target.name"}"#,
            derive = "PartialEq",
            doc = "A request to clone a KubeVirt VirtualMachine (or VM snapshot) into a new VirtualMachine with a fresh identity.",
            label("app.kubernetes.io/part-of", "vmclone"),
        )]
        #[serde(rename_all = "camelCase")]
        pub struct VirtualMachineCloneSpec {
            /// What to clone.
            #[x_kube(merge_strategy = MapMerge::Atomic)]
            pub source: crate::clone::CloneSource,
            /// What to create (a VM).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[x_kube(merge_strategy = MapMerge::Atomic)]
            pub target: Option<crate::clone::CloneTarget>,
            /// Which `metadata.labels` of the source are copied. Absent or empty: all.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[x_kube(merge_strategy = ListMerge::Atomic)]
            pub label_filters: Option<Vec<String>>,
            /// Which `metadata.annotations` of the source are copied. Absent or empty: all.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[x_kube(merge_strategy = ListMerge::Atomic)]
            pub annotation_filters: Option<Vec<String>>,
            /// Filters for the VM template's labels and annotations.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub template: Option<crate::clone::TemplateFilters>,
            /// Interface name → new MAC. Interfaces not listed lose their MAC.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub new_mac_addresses: Option<std::collections::BTreeMap<String, String>>,
            /// The target's SMBIOS serial; absent: generated from the target's name.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[serde(rename = "newSMBiosSerial")]
            pub new_smbios_serial: Option<String>,
            /// JSON Patch operations (one per string) applied to the target last.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[x_kube(merge_strategy = ListMerge::Atomic)]
            pub patches: Option<Vec<String>>,
            /// How restored volumes are named. Absent: KubeVirt's default (randomised).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(with = "Option<String>")]
            pub volume_name_policy: Option<crate::clone::VolumeNamePolicy>,
        }
    };
}

pub(crate) use clone_spec;
