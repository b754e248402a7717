//! Example objects for the stand-in's testbed: what the demo, the image's smoke test and the bench
//! clone.

use serde_json::json;

/// The source VM of the user guide, with a disk on storage that supports snapshots (a `List` of
/// its PVC and the VM, without namespaces). Used by `cargo xtask demo`, `cargo xtask image --smoke` and the bench.
pub fn source_vm() -> String {
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "vm-cirros-disk"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "sim-snapshot",
                 "resources": {"requests": {"storage": "1Gi"}}},
    });
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm-cirros",
                     "labels": {"app": "cirros", "somekey/team": "demo"},
                     "annotations": {"anotherkey/owner": "demo", "note": "the source"}},
        "spec": {"runStrategy": "Halted", "template": {
            "metadata": {"labels": {"kubevirt.io/vm": "vm-cirros", "somekey/template": "x"}},
            "spec": {
                "domain": {
                    "devices": {
                        "disks": [{"name": "disk", "disk": {"bus": "virtio"}}],
                        "interfaces": [{"name": "interfaceName", "masquerade": {}, "macAddress": "02:00:00:00:00:01"}],
                    },
                    "firmware": {"serial": "cirros-serial"},
                    "resources": {"requests": {"memory": "128Mi"}},
                },
                "networks": [{"name": "interfaceName", "pod": {}}],
                "volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": "vm-cirros-disk"}}],
            }}},
    });
    json!({"apiVersion": "v1", "kind": "List", "items": [pvc, vm]}).to_string()
}
