//! One clone controller at a time: what the `KubeVirt` CR says about upstream's clone controller,
//! and what vmclone says about it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::kubevirt::KubeVirt;
use clone_core::upstream::{
    Active, UpstreamCloneController, UpstreamMode, upstream_clone_controller,
};
use serde_json::{Value, json};

fn kubevirt(spec: Value) -> KubeVirt {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
        "metadata": {"name": "kv", "namespace": "virt"},
        "spec": spec,
    }))
    .unwrap()
}

fn with_threads(value: Value) -> KubeVirt {
    kubevirt(json!({"customizeComponents": {"flags": {"controller": {
        "clone-controller-threads": value, "other-flag": "1"}}}}))
}

fn active(threads: Option<&str>) -> UpstreamCloneController {
    UpstreamCloneController::Active(Active {
        namespace: "virt".into(),
        name: "kv".into(),
        threads: threads.map(str::to_owned),
        unreadable: None,
    })
}

#[test]
fn only_the_flag_set_to_zero_turns_upstream_off() {
    use UpstreamMode::Detect;
    let off = with_threads(json!("0"));
    assert_eq!(
        upstream_clone_controller(Some(&off), Detect),
        UpstreamCloneController::Off
    );
    for value in ["3", "1", "", "00", " 0", "-1", "zero"] {
        let kv = with_threads(json!(value));
        assert_eq!(
            upstream_clone_controller(Some(&kv), Detect),
            active(Some(value)),
            "{value:?}"
        );
    }
    // Absent (anywhere along the path) means virt-controller's default: upstream runs.
    for spec in [
        json!({}),
        json!({"customizeComponents": {}}),
        json!({"customizeComponents": {"flags": {}}}),
        json!({"customizeComponents": {"flags": {"api": {"clone-controller-threads": "0"}}}}),
        json!({"customizeComponents": {"flags": {"controller": {}}}}),
        json!({"customizeComponents": {"flags": {"controller": {"clone-controller-thread": "0"}}}}),
    ] {
        let kv = kubevirt(spec.clone());
        assert_eq!(
            upstream_clone_controller(Some(&kv), Detect),
            active(None),
            "{spec}"
        );
    }
}

#[test]
fn without_a_cr_or_when_ignored_vmclone_acts() {
    assert_eq!(
        upstream_clone_controller(None, UpstreamMode::Detect),
        UpstreamCloneController::NoKubeVirt
    );
    for kv in [with_threads(json!("3")), kubevirt(json!({}))] {
        assert_eq!(
            upstream_clone_controller(Some(&kv), UpstreamMode::Ignore),
            UpstreamCloneController::Ignored
        );
    }
    assert_eq!(
        upstream_clone_controller(None, UpstreamMode::Ignore),
        UpstreamCloneController::Ignored
    );
    assert!(!UpstreamCloneController::Off.is_active());
    assert!(!UpstreamCloneController::Ignored.is_active());
    assert!(!UpstreamCloneController::NoKubeVirt.is_active());
    assert!(active(None).is_active());
    assert_eq!(UpstreamMode::default(), UpstreamMode::Detect);
}

#[test]
fn an_unreadable_spec_counts_as_upstream_running_and_says_why() {
    // The API server's schema forbids it, but a spec that does not fit must not let two
    // controllers run.
    let kv = with_threads(json!(0));
    let UpstreamCloneController::Active(active) =
        upstream_clone_controller(Some(&kv), UpstreamMode::Detect)
    else {
        panic!("not active");
    };
    assert_eq!(active.threads, None);
    let why = active.unreadable.clone().unwrap();
    assert!(why.contains("clone-controller-threads"), "{why}");
    assert!(
        active.reason().contains("cannot be read"),
        "{}",
        active.reason()
    );
}

#[test]
fn the_messages_name_the_cr_the_value_and_the_exact_fix() {
    let UpstreamCloneController::Active(unset) = active(None) else {
        unreachable!()
    };
    assert_eq!(
        unset.reason(),
        "upstream KubeVirt's clone controller is active: KubeVirt virt/kv does not set \
         spec.customizeComponents.flags.controller[\"clone-controller-threads\"] to \"0\" (it is \
         not set), so vmclone acts on no clone"
    );
    assert_eq!(
        unset.fix(),
        r#"kubectl patch kubevirt kv -n virt --type merge -p '{"spec":{"customizeComponents":{"flags":{"controller":{"clone-controller-threads":"0"}}}}}'"#
    );
    assert_eq!(
        unset.advice(),
        format!(
            "{}; to hand cloning to vmclone, run: {}",
            unset.reason(),
            unset.fix()
        )
    );
    let UpstreamCloneController::Active(three) = active(Some("3")) else {
        unreachable!()
    };
    assert!(
        three.reason().contains("(it is \"3\")"),
        "{}",
        three.reason()
    );
}
