//! The KubeVirt/CDI views are lossless: unknown fields survive a read-modify-write.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::kubevirt::{
    KubeVirt, VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot,
};
use serde_json::json;

fn vm_json() -> serde_json::Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm-cirros", "namespace": "default", "labels": {"a": "b"}},
        "spec": {
            "runStrategy": "Halted",
            "instancetype": {"name": "u1.small"},
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": "vm-cirros"}},
                "spec": {
                    "domain": {
                        "cpu": {"cores": 2},
                        "devices": {
                            "interfaces": [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"}],
                            "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                            "tpm": {"persistent": true}
                        },
                        "firmware": {"serial": "s1", "uuid": "u1", "bootloader": {"efi": {"secureBoot": false}}}
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [
                        {"name": "root", "dataVolume": {"name": "root-dv"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc", "readOnly": true}},
                        {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config"}}
                    ]
                }
            }
        },
        "status": {"printableStatus": "Stopped", "volumeSnapshotStatuses": [{"name": "root", "enabled": true}], "futureField": 1}
    })
}

#[test]
fn a_vm_survives_a_round_trip_unchanged() {
    let original = vm_json();
    let vm: VirtualMachine = serde_json::from_value(original.clone()).expect("parses");
    assert_eq!(serde_json::to_value(&vm).expect("serialises"), original);
}

#[test]
fn vm_accessors() {
    let vm: VirtualMachine = serde_json::from_value(vm_json()).expect("parses");
    let claims: Vec<_> = vm
        .spec
        .volumes()
        .iter()
        .filter_map(|v| v.claim_name())
        .collect();
    assert_eq!(claims, vec!["root-dv", "data-pvc"]);
    assert_eq!(vm.spec.interfaces()[0].name, "default");
    let tpm = vm
        .spec
        .instance_spec()
        .and_then(|s| s.domain.as_ref())
        .and_then(|d| d.devices.as_ref());
    assert_eq!(
        tpm.and_then(|d| d.tpm.as_ref()).and_then(|t| t.persistent),
        Some(true)
    );
}

#[test]
fn snapshot_and_restore_failures_are_read() {
    let snap: VirtualMachineSnapshot = serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "s"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
        "status": {"phase": "Failed", "readyToUse": false, "conditions": [
            {"type": "Failure", "status": "True", "reason": "snapshot deadline exceeded", "lastProbeTime": null}
        ]}
    })).expect("parses");
    let status = snap.status.expect("status");
    assert!(!status.is_ready());
    assert_eq!(
        status.failure().as_deref(),
        Some("snapshot deadline exceeded")
    );

    let restore: VirtualMachineRestore = serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
        "metadata": {"name": "r"},
        "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "t"}, "virtualMachineSnapshotName": "s"},
        "status": {"complete": true, "restores": [{"volumeName": "root", "persistentVolumeClaim": "restore-x-root"}]}
    })).expect("parses");
    let status = restore.status.expect("status");
    assert!(status.is_complete());
    assert_eq!(status.claims().collect::<Vec<_>>(), vec!["restore-x-root"]);
    assert_eq!(status.failure(), None);
}

#[test]
fn feature_gates() {
    let kv: KubeVirt = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"},
        "spec": {"configuration": {"developerConfiguration": {"featureGates": ["Snapshot"], "disabledFeatureGates": ["Other"]}}}
    })).expect("parses");
    assert!(kv.spec.enables("Snapshot"));
    assert!(kv.spec.disables("Other"));
    assert!(!kv.spec.enables("Other"));
}

#[test]
fn virt_controller_flags_and_the_observed_version() {
    let kv: KubeVirt = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"},
        "spec": {"customizeComponents": {
            "flags": {"controller": {"clone-controller-threads": "0", "other": "x"}, "api": {"a": "b"}},
            "patches": [{"resourceName": "virt-api", "resourceType": "Deployment", "type": "json", "patch": "[]"}],
        }},
        "status": {"observedKubeVirtVersion": "v1.9.0", "phase": "Deployed"},
    }))
    .expect("parses");
    assert_eq!(
        kv.spec.controller_flag("clone-controller-threads"),
        Some("0")
    );
    assert_eq!(kv.spec.controller_flag("absent"), None);
    assert_eq!(kv.observed_version(), Some("v1.9.0"));
    // Lossless: the untyped flags, the patches and the status phase survive.
    let back = serde_json::to_value(&kv).expect("serialises");
    assert_eq!(
        back["spec"]["customizeComponents"]["flags"]["api"],
        json!({"a": "b"})
    );
    assert_eq!(
        back["spec"]["customizeComponents"]["patches"][0]["type"],
        "json"
    );
    assert_eq!(back["status"]["phase"], "Deployed");

    let bare: KubeVirt = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"},
        "spec": {},
    }))
    .expect("parses");
    assert_eq!(bare.spec.controller_flag("clone-controller-threads"), None);
    assert_eq!(bare.observed_version(), None);
}

#[test]
fn the_patch_that_turns_upstreams_clone_controller_off_sets_the_flag_to_zero() {
    let patch: serde_json::Value =
        serde_json::from_str(clone_api::kubevirt::UPSTREAM_CLONE_CONTROLLER_OFF_PATCH)
            .expect("valid JSON");
    let kv: KubeVirt = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"},
        "spec": patch["spec"],
    }))
    .expect("parses");
    assert_eq!(
        kv.spec
            .controller_flag(clone_api::kubevirt::CLONE_CONTROLLER_THREADS_FLAG),
        Some("0")
    );
}
