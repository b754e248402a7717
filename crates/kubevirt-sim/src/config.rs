//! [`SimConfig`]: the knobs of the stand-in (storage classes, pace, failure injection, scope).
//!
//! Everything here applies to every object the sim watches. To make a single object misbehave
//! (so that tests sharing one control plane do not affect each other), use the annotations in
//! [`crate::names`] instead: [`FAIL_SNAPSHOT_ANNOTATION`](crate::names::FAIL_SNAPSHOT_ANNOTATION),
//! [`FAIL_RESTORE_ANNOTATION`](crate::names::FAIL_RESTORE_ANNOTATION),
//! [`REJECT_RESTORE_ANNOTATION`](crate::names::REJECT_RESTORE_ANNOTATION),
//! [`CLONE_SECONDS_ANNOTATION`](crate::names::CLONE_SECONDS_ANNOTATION).

use std::time::Duration;

use crate::names;

/// How the sim behaves. `SimConfig::default()` is a well-behaved, fast KubeVirt and CDI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Storage classes whose PVCs can be snapshotted (KubeVirt: a VolumeSnapshotClass exists for
    /// the class's provisioner). Default `["sim-snapshot", "sim-wffc"]`.
    pub snapshot_storage_classes: Vec<String>,
    /// Pause before each step that changes the world (zero for benchmarks).
    pub latency: Duration,
    /// Every snapshot fails at once: phase `Failed`, condition `Failure` with
    /// `snapshot deadline exceeded`.
    pub fail_snapshots: bool,
    /// Every restore fails with KubeVirt's target-readiness `Failure` condition.
    pub fail_restores: bool,
    /// Every restore creation (in [`namespace`](Self::namespace), or everywhere without one) is
    /// refused by the API server with this message.
    pub reject_restores: Option<String>,
    /// Only watch and act in this namespace (storage classes and admission policies stay
    /// cluster-wide).
    pub namespace: Option<String>,
    /// CDI's historical strict clone checks: a volume-mode mismatch or a target smaller than the
    /// source fails the DataVolume (phase `Failed`) with the seed's messages. Off: today's CDI
    /// (a volume-mode mismatch falls back to a host-assisted copy; a too-small target waits with
    /// a `CloneValidationFailed` event). Default on.
    pub strict_clone_checks: bool,
    /// Objects each controller reconciles at the same time. Default 16.
    pub workers: usize,
    /// Play only storage and CDI (the PVC binder, the CSI snapshotter, CDI's DataVolume
    /// controller), not KubeVirt's VM, snapshot and restore controllers: for a testbed where
    /// KubeVirt's own virt-controller runs. Default off.
    pub storage_only: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            snapshot_storage_classes: vec![
                names::STORAGE_CLASS_SNAPSHOT.to_owned(),
                names::STORAGE_CLASS_WFFC.to_owned(),
            ],
            latency: Duration::ZERO,
            fail_snapshots: false,
            fail_restores: false,
            reject_restores: None,
            namespace: None,
            strict_clone_checks: true,
            workers: 16,
            storage_only: false,
        }
    }
}

impl SimConfig {
    /// Only watch and act in `namespace`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Pause `latency` before each step.
    #[must_use]
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Make every snapshot fail.
    #[must_use]
    pub fn fail_snapshots(mut self, fail: bool) -> Self {
        self.fail_snapshots = fail;
        self
    }

    /// Make every restore fail.
    #[must_use]
    pub fn fail_restores(mut self, fail: bool) -> Self {
        self.fail_restores = fail;
        self
    }

    /// Have the API server refuse restores with `message`.
    #[must_use]
    pub fn reject_restores(mut self, message: impl Into<String>) -> Self {
        self.reject_restores = Some(message.into());
        self
    }

    /// Replace the snapshot-capable storage classes.
    #[must_use]
    pub fn snapshot_storage_classes<I, S>(mut self, classes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.snapshot_storage_classes = classes.into_iter().map(Into::into).collect();
        self
    }

    /// Play only storage and CDI, beside KubeVirt's real controllers.
    #[must_use]
    pub fn storage_only(mut self, storage_only: bool) -> Self {
        self.storage_only = storage_only;
        self
    }

    /// Strict (historical) or lenient (current) CDI clone checks.
    #[must_use]
    pub fn strict_clone_checks(mut self, strict: bool) -> Self {
        self.strict_clone_checks = strict;
        self
    }

    /// Whether a PVC of `class` can be snapshotted.
    pub fn snapshottable(&self, class: &str) -> bool {
        self.snapshot_storage_classes.iter().any(|c| c == class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_snapshots_the_sim_classes_and_is_strict() {
        let config = SimConfig::default();
        assert!(config.snapshottable("sim-snapshot"));
        assert!(config.snapshottable("sim-wffc"));
        assert!(!config.snapshottable("sim-nosnapshot"));
        assert!(config.strict_clone_checks);
        assert_eq!(config.latency, Duration::ZERO);
    }

    #[test]
    fn the_builder_sets_fields() {
        let config = SimConfig::default()
            .namespace("ns")
            .latency(Duration::from_millis(5))
            .fail_snapshots(true)
            .reject_restores("no")
            .snapshot_storage_classes(["x"]);
        assert_eq!(config.namespace.as_deref(), Some("ns"));
        assert_eq!(config.reject_restores.as_deref(), Some("no"));
        assert!(config.fail_snapshots && !config.fail_restores);
        assert!(config.snapshottable("x") && !config.snapshottable("sim-snapshot"));
    }
}
