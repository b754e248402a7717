//! KubeVirt's `Snapshot` feature gate, read from the `KubeVirt` CR the way the deployed KubeVirt
//! release reads it.
//!
//! `Snapshot` is a Beta gate, and KubeVirt changed what a Beta gate means:
//!
//! | KubeVirt (`status.observedKubeVirtVersion`) | the gate is on when | rule |
//! |---|---|---|
//! | up to v1.8 | `featureGates` lists it | [`GateMode::Listed`] |
//! | from v1.9 | `featureGates` lists it, or `disabledFeatureGates` does not | [`GateMode::DefaultOn`] |
//! | unknown (absent, `devel`, a pre-release such as `v1.9.0-rc.1`) | as up to v1.8 | [`GateMode::Listed`] |
//!
//! In both rules an explicit enable wins over an explicit disable: a gate listed in
//! `featureGates` and in `disabledFeatureGates` is on. A rule given explicitly (the controller's
//! `--snapshot-gate` flag) wins over the version.

use clone_api::kubevirt::{KubeVirt, KubeVirtSpec};
use clone_api::names;

/// How a Beta feature gate is read from the `KubeVirt` CR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GateMode {
    /// On only when `featureGates` lists it (KubeVirt up to v1.8).
    #[default]
    Listed,
    /// On unless `disabledFeatureGates` lists it and `featureGates` does not (KubeVirt from
    /// v1.9).
    DefaultOn,
}

/// The state of KubeVirt's `Snapshot` feature gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureGate {
    /// Snapshots (and so clones) are allowed.
    Enabled,
    /// The gate is off.
    Disabled,
    /// There is no `KubeVirt` CR to read it from.
    KubeVirtNotFound,
}

/// The first KubeVirt release whose Beta gates are on unless disabled.
const DEFAULT_ON_SINCE: (u64, u64) = (1, 9);

/// A release version as KubeVirt writes it, `v<major>.<minor>.<patch>` (the `v` may be absent):
/// `(major, minor, patch)`. Anything else is not a release (`devel`, `v1.9.0-rc.1`, a version
/// with build metadata, empty) and gives `None`.
pub fn parse_release(version: &str) -> Option<(u64, u64, u64)> {
    let digits = version.strip_prefix('v').unwrap_or(version);
    let mut parts = digits.split('.');
    let mut number = || -> Option<u64> {
        let part = parts.next()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let release = (number()?, number()?, number()?);
    parts.next().is_none().then_some(release)
}

/// How the KubeVirt release `version` reads a Beta gate; `None` when `version` is not a release
/// (see [`parse_release`]).
pub fn gate_mode_of(version: &str) -> Option<GateMode> {
    let (major, minor, _) = parse_release(version)?;
    Some(if (major, minor) >= DEFAULT_ON_SINCE {
        GateMode::DefaultOn
    } else {
        GateMode::Listed
    })
}

/// The rule to read the gate with: `explicit` when given, else the one of the observed KubeVirt
/// `version`, else [`GateMode::Listed`].
pub fn gate_mode(explicit: Option<GateMode>, version: Option<&str>) -> GateMode {
    explicit
        .or_else(|| version.and_then(gate_mode_of))
        .unwrap_or_default()
}

/// Reads the `Snapshot` gate from the `KubeVirt` CR's spec with a given rule (`None`: no CR
/// exists).
pub fn snapshot_gate(kubevirt: Option<&KubeVirtSpec>, mode: GateMode) -> FeatureGate {
    let Some(kv) = kubevirt else {
        return FeatureGate::KubeVirtNotFound;
    };
    let gate = names::SNAPSHOT_FEATURE_GATE;
    // An explicit enable wins over an explicit disable in every KubeVirt release.
    let on = kv.enables(gate)
        || match mode {
            GateMode::Listed => false,
            GateMode::DefaultOn => !kv.disables(gate),
        };
    if on {
        FeatureGate::Enabled
    } else {
        FeatureGate::Disabled
    }
}

/// Reads the `Snapshot` gate from the `KubeVirt` CR (`None`: no CR exists) with the rule of its
/// observed version, unless `explicit` names one.
pub fn kubevirt_snapshot_gate(
    kubevirt: Option<&KubeVirt>,
    explicit: Option<GateMode>,
) -> FeatureGate {
    let mode = gate_mode(explicit, kubevirt.and_then(KubeVirt::observed_version));
    snapshot_gate(kubevirt.map(|kv| &kv.spec), mode)
}

/// The `KubeVirt` CR that configures the cluster when several exist (virt-operator serves only
/// one): the oldest, then the first by namespace and name, so every reader picks the same.
pub fn kubevirt_in_use<'a>(crs: impl IntoIterator<Item = &'a KubeVirt>) -> Option<&'a KubeVirt> {
    crs.into_iter().min_by(|a, b| {
        let key = |kv: &'a KubeVirt| {
            (
                kv.metadata.creation_timestamp.as_ref().map(|t| t.0),
                kv.metadata.namespace.as_deref(),
                kv.metadata.name.as_deref(),
            )
        };
        key(a).cmp(&key(b))
    })
}
