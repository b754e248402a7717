//! vmclone's extensions of upstream's API, as annotations on the clone.
//!
//! On a KubeVirt cluster virt-operator owns the clone CRD and prunes every field it does not
//! define, so vmclone's options live in annotations under its own prefix, which survive any schema.
//! The admission policy refuses unknown values, unknown keys under [`PREFIX`] and changes after
//! create; the controller checks the same rules for clusters without the policy.
//!
//! ```
//! use clone_api::extensions::{self, CloneExtensions, CloneStrategy};
//! use clone_api::v1beta1::{CloneSource, VirtualMachineClone, VirtualMachineCloneSpec};
//!
//! let mut clone = VirtualMachineClone::new(
//!     "c",
//!     VirtualMachineCloneSpec {
//!         source: CloneSource {
//!             api_group: Some("kubevirt.io".into()),
//!             kind: "VirtualMachine".into(),
//!             name: "vm".into(),
//!         },
//!         ..Default::default()
//!     },
//! );
//! assert_eq!(clone.strategy(), Ok(CloneStrategy::Snapshot));
//! clone
//!     .metadata
//!     .annotations
//!     .get_or_insert_default()
//!     .insert(extensions::STRATEGY.into(), "Auto".into());
//! assert_eq!(clone.strategy(), Ok(CloneStrategy::Auto));
//! ```

use std::collections::BTreeMap;
use std::fmt;

/// The prefix of every vmclone annotation on a clone.
pub const PREFIX: &str = "vmclone.dev/";
/// How the disks are cloned: [`CloneStrategy`] (absent: `Snapshot`).
pub const STRATEGY: &str = "vmclone.dev/strategy";
/// The namespace of the source VM, for cross-namespace clones (DataVolume strategy).
pub const SOURCE_NAMESPACE: &str = "vmclone.dev/source-namespace";
/// The run strategy of the target VM: [`TargetRunStrategy`] (absent: halted, as KubeVirt's
/// restore leaves it).
pub const TARGET_RUN_STRATEGY: &str = "vmclone.dev/target-run-strategy";
/// Every annotation this version knows; any other key under [`PREFIX`] is refused.
pub const KNOWN: [&str; 3] = [STRATEGY, SOURCE_NAMESPACE, TARGET_RUN_STRATEGY];

/// How the clone copies the disks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// Every value, in the order messages list them.
    pub const ALL: [Self; 3] = [Self::Snapshot, Self::DataVolume, Self::Auto];

    /// The value as written in the annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "Snapshot",
            Self::DataVolume => "DataVolume",
            Self::Auto => "Auto",
        }
    }
}

/// The run strategy of the target VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TargetRunStrategy {
    /// Leave the target stopped (the default).
    Halted,
    /// Start the target and keep it running.
    Always,
    /// Restart the target only when it fails.
    RerunOnFailure,
    /// The user starts and stops the target.
    Manual,
}

impl TargetRunStrategy {
    /// Every value, in the order messages list them.
    pub const ALL: [Self; 4] = [
        Self::Halted,
        Self::Always,
        Self::RerunOnFailure,
        Self::Manual,
    ];

    /// KubeVirt's `spec.runStrategy` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Halted => "Halted",
            Self::Always => "Always",
            Self::RerunOnFailure => "RerunOnFailure",
            Self::Manual => "Manual",
        }
    }
}

/// An extension annotation whose value this version does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The annotation key.
    pub key: &'static str,
    /// The value found.
    pub value: String,
    /// The values accepted.
    pub known: Vec<&'static str>,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::validation::annotation_value_unknown(
            self.key,
            &self.known,
            &self.value,
        ))
    }
}

impl std::error::Error for UnknownValue {}

fn parse<T: Copy>(
    annotations: Option<&BTreeMap<String, String>>,
    key: &'static str,
    all: &[T],
    as_str: fn(T) -> &'static str,
) -> Result<Option<T>, UnknownValue> {
    let Some(value) = annotations.and_then(|a| a.get(key)) else {
        return Ok(None);
    };
    all.iter()
        .copied()
        .find(|v| as_str(*v) == value)
        .map(Some)
        .ok_or_else(|| UnknownValue {
            key,
            value: value.clone(),
            known: all.iter().map(|v| as_str(*v)).collect(),
        })
}

/// Typed access to the extension annotations of a clone (of either API version).
pub trait CloneExtensions {
    /// The object's annotations.
    fn extension_annotations(&self) -> Option<&BTreeMap<String, String>>;

    /// `vmclone.dev/strategy`; `Snapshot` when absent.
    fn strategy(&self) -> Result<CloneStrategy, UnknownValue> {
        parse(
            self.extension_annotations(),
            STRATEGY,
            &CloneStrategy::ALL,
            CloneStrategy::as_str,
        )
        .map(Option::unwrap_or_default)
    }

    /// `vmclone.dev/source-namespace`, when set.
    fn source_namespace(&self) -> Option<&str> {
        self.extension_annotations()
            .and_then(|a| a.get(SOURCE_NAMESPACE))
            .map(String::as_str)
    }

    /// `vmclone.dev/target-run-strategy`, when set.
    fn target_run_strategy(&self) -> Result<Option<TargetRunStrategy>, UnknownValue> {
        parse(
            self.extension_annotations(),
            TARGET_RUN_STRATEGY,
            &TargetRunStrategy::ALL,
            TargetRunStrategy::as_str,
        )
    }

    /// Keys under [`PREFIX`] that this version does not know, in key order.
    fn unknown_extensions(&self) -> Vec<&str> {
        self.extension_annotations()
            .into_iter()
            .flat_map(|a| a.keys())
            .map(String::as_str)
            .filter(|k| k.starts_with(PREFIX) && !KNOWN.contains(k))
            .collect()
    }
}

impl CloneExtensions for crate::v1beta1::VirtualMachineClone {
    fn extension_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.annotations.as_ref()
    }
}

impl CloneExtensions for crate::v1alpha1::VirtualMachineClone {
    fn extension_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.annotations.as_ref()
    }
}
