//! The `Snapshot` feature gate by KubeVirt release: which rule each observed version gets, what
//! each rule says about every combination of the two lists, and which rule wins.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::kubevirt::KubeVirt;
use clone_core::gate::{
    FeatureGate, GateMode, gate_mode, gate_mode_of, kubevirt_in_use, kubevirt_snapshot_gate,
    parse_release, snapshot_gate,
};
use serde_json::{Value, json};

/// A `KubeVirt` CR with these lists (`None`: the list is absent) and observed version.
fn kubevirt(
    enabled: Option<&[&str]>,
    disabled: Option<&[&str]>,
    version: Option<&str>,
) -> KubeVirt {
    let mut developer = serde_json::Map::new();
    if let Some(list) = enabled {
        developer.insert("featureGates".into(), json!(list));
    }
    if let Some(list) = disabled {
        developer.insert("disabledFeatureGates".into(), json!(list));
    }
    let mut kv = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {"configuration": {"developerConfiguration": Value::Object(developer)}},
    });
    if let Some(version) = version {
        kv["status"] = json!({"observedKubeVirtVersion": version, "phase": "Deployed"});
    }
    serde_json::from_value(kv).unwrap()
}

#[test]
fn releases_are_parsed_and_everything_else_is_not() {
    for (text, expected) in [
        ("v1.7.0", Some((1, 7, 0))),
        ("v1.8.1", Some((1, 8, 1))),
        ("v1.9.0", Some((1, 9, 0))),
        ("v1.10.2", Some((1, 10, 2))),
        ("v2.0.0", Some((2, 0, 0))),
        ("1.9.0", Some((1, 9, 0))),
        ("v0.59.0", Some((0, 59, 0))),
        ("v1.9.0-rc.1", None),
        ("v1.9.0-alpha.0.123+0123abcd", None),
        ("v1.9.0+build", None),
        ("devel", None),
        ("", None),
        ("v", None),
        ("v1.9", None),
        ("v1.9.", None),
        ("v1..0", None),
        ("v1.9.0.0", None),
        ("vv1.9.0", None),
        ("v1.9.x", None),
        ("v+1.9.0", None),
        ("v1.-9.0", None),
        (" v1.9.0", None),
        ("v99999999999999999999.0.0", None),
    ] {
        assert_eq!(parse_release(text), expected, "{text:?}");
    }
}

#[test]
fn each_release_range_gets_its_rule() {
    for (version, rule) in [
        ("v0.59.0", Some(GateMode::Listed)),
        ("v1.0.0", Some(GateMode::Listed)),
        ("v1.7.0", Some(GateMode::Listed)),
        ("v1.8.0", Some(GateMode::Listed)),
        ("v1.8.99", Some(GateMode::Listed)),
        ("v1.9.0", Some(GateMode::DefaultOn)),
        ("v1.9.3", Some(GateMode::DefaultOn)),
        ("v1.10.0", Some(GateMode::DefaultOn)),
        ("v2.0.0", Some(GateMode::DefaultOn)),
        ("v2.1.0", Some(GateMode::DefaultOn)),
        ("v1.9.0-rc.1", None),
        ("devel", None),
        ("", None),
    ] {
        assert_eq!(gate_mode_of(version), rule, "{version:?}");
    }
}

#[test]
fn an_explicit_rule_wins_over_the_version_and_unknown_versions_get_the_listed_rule() {
    use GateMode::{DefaultOn, Listed};
    for (explicit, version, expected) in [
        (None, Some("v1.7.0"), Listed),
        (None, Some("v1.9.0"), DefaultOn),
        (None, None, Listed),
        (None, Some("devel"), Listed),
        (None, Some("v1.9.0-rc.1"), Listed),
        (None, Some(""), Listed),
        (Some(DefaultOn), Some("v1.7.0"), DefaultOn),
        (Some(Listed), Some("v1.9.0"), Listed),
        (Some(DefaultOn), None, DefaultOn),
        (Some(DefaultOn), Some("devel"), DefaultOn),
    ] {
        assert_eq!(
            gate_mode(explicit, version),
            expected,
            "{explicit:?} {version:?}"
        );
    }
}

/// Every combination of the two lists under each rule. An explicit enable wins over an explicit
/// disable in both.
#[test]
fn each_rule_reads_both_lists_and_an_explicit_enable_wins() {
    use FeatureGate::{Disabled, Enabled};
    let snapshot: &[&str] = &["Snapshot"];
    let other: &[&str] = &["Other"];
    let empty: &[&str] = &[];
    for (enabled, disabled, listed, default_on) in [
        (None, None, Disabled, Enabled),
        (Some(empty), Some(empty), Disabled, Enabled),
        (Some(snapshot), None, Enabled, Enabled),
        (Some(other), None, Disabled, Enabled),
        (None, Some(snapshot), Disabled, Disabled),
        (None, Some(other), Disabled, Enabled),
        (Some(snapshot), Some(snapshot), Enabled, Enabled),
        (Some(other), Some(snapshot), Disabled, Disabled),
        (Some(snapshot), Some(other), Enabled, Enabled),
    ] {
        let kv = kubevirt(enabled, disabled, None);
        assert_eq!(
            snapshot_gate(Some(&kv.spec), GateMode::Listed),
            listed,
            "Listed, featureGates {enabled:?}, disabledFeatureGates {disabled:?}"
        );
        assert_eq!(
            snapshot_gate(Some(&kv.spec), GateMode::DefaultOn),
            default_on,
            "DefaultOn, featureGates {enabled:?}, disabledFeatureGates {disabled:?}"
        );
    }
    assert_eq!(
        snapshot_gate(None, GateMode::Listed),
        FeatureGate::KubeVirtNotFound
    );
    assert_eq!(
        snapshot_gate(None, GateMode::DefaultOn),
        FeatureGate::KubeVirtNotFound
    );
}

/// The gate as the controller reads it: the CR's own version picks the rule unless one is given.
#[test]
fn the_crs_observed_version_picks_the_rule() {
    use FeatureGate::{Disabled, Enabled, KubeVirtNotFound};
    let none_listed = |version| kubevirt(Some(&[]), None, version);
    // Not listed anywhere: off up to v1.8 and for unknown versions, on from v1.9.
    for (version, expected) in [
        (Some("v1.7.0"), Disabled),
        (Some("v1.8.1"), Disabled),
        (Some("v1.9.0"), Enabled),
        (Some("v1.10.0"), Enabled),
        (Some("v1.9.0-rc.1"), Disabled),
        (Some("devel"), Disabled),
        (Some(""), Disabled),
        (None, Disabled),
    ] {
        let kv = none_listed(version);
        assert_eq!(
            kubevirt_snapshot_gate(Some(&kv), None),
            expected,
            "{version:?}"
        );
    }
    // Disabled from v1.9 on, unless also enabled.
    let disabled = kubevirt(None, Some(&["Snapshot"]), Some("v1.9.0"));
    assert_eq!(kubevirt_snapshot_gate(Some(&disabled), None), Disabled);
    let both = kubevirt(Some(&["Snapshot"]), Some(&["Snapshot"]), Some("v1.9.0"));
    assert_eq!(kubevirt_snapshot_gate(Some(&both), None), Enabled);
    let both = kubevirt(Some(&["Snapshot"]), Some(&["Snapshot"]), Some("v1.7.0"));
    assert_eq!(kubevirt_snapshot_gate(Some(&both), None), Enabled);
    // The explicit rule wins, both ways.
    let v17 = none_listed(Some("v1.7.0"));
    assert_eq!(
        kubevirt_snapshot_gate(Some(&v17), Some(GateMode::DefaultOn)),
        Enabled
    );
    let v19 = none_listed(Some("v1.9.0"));
    assert_eq!(
        kubevirt_snapshot_gate(Some(&v19), Some(GateMode::Listed)),
        Disabled
    );
    assert_eq!(kubevirt_snapshot_gate(None, None), KubeVirtNotFound);
    assert_eq!(
        kubevirt_snapshot_gate(None, Some(GateMode::DefaultOn)),
        KubeVirtNotFound
    );
}

#[test]
fn every_reader_picks_the_same_cr_among_several() {
    let at = |name: &str, ns: &str, created: &str| -> KubeVirt {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {},
        }))
        .unwrap()
    };
    let older = at("b", "z", "2026-01-01T00:00:00Z");
    let newer = at("a", "a", "2026-02-01T00:00:00Z");
    let tie = at("c", "y", "2026-01-01T00:00:00Z");
    for order in [
        vec![&older, &newer, &tie],
        vec![&newer, &tie, &older],
        vec![&tie, &older, &newer],
    ] {
        let picked = kubevirt_in_use(order).unwrap();
        assert_eq!(
            picked.metadata.name.as_deref(),
            Some("c"),
            "oldest, then y < z"
        );
    }
    assert!(kubevirt_in_use(std::iter::empty()).is_none());
}
