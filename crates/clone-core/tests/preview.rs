//! `preview`: the target a clone would produce is the one the controller builds (the VM it
//! dry-runs before the restore, the VM it creates for the DataVolume strategy), placeholders stand
//! where values exist only later, and the warnings name what the user likely did not mean.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use clone_api::extensions::CloneStrategy;
use clone_api::kubevirt::{VirtualMachine, VirtualMachineSnapshot, VirtualMachineSnapshotContent};
use clone_api::names::EventReason;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VirtualMachineCloneStatus};
use clone_core::decide::{self, FeatureGate, Restored};
use clone_core::preview::{self, Preview, PreviewInput, PreviewSource, Warning};
use clone_core::{Action, Observed};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

const UID: &str = "0b7f7a2e-1111-4c2b-9d7e-5f3e2a1b0c9d";

fn clone(
    uid: Option<&str>,
    source: (&str, &str),
    spec: Value,
    annotations: Value,
) -> VirtualMachineClone {
    let (kind, name) = source;
    let group = if kind == "VirtualMachine" {
        "kubevirt.io"
    } else {
        "snapshot.kubevirt.io"
    };
    let mut metadata = json!({"name": "c", "namespace": "ns", "annotations": annotations});
    if let Some(uid) = uid {
        metadata["uid"] = json!(uid);
    }
    let mut full = json!({"source": {"apiGroup": group, "kind": kind, "name": name}});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
        "metadata": metadata, "spec": full,
    }))
    .unwrap()
}

fn target(name: &str) -> Value {
    json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name})
}

/// A VM with identity everywhere, a DataVolume-template disk, a claim disk and a memory dump.
fn source_vm_json(run: Value) -> Value {
    let mut spec = json!({
        "dataVolumeTemplates": [{"metadata": {"name": "root-dv"}, "spec": {"source": {"blank": {}}}}],
        "template": {
            "metadata": {"labels": {"app": "web", "team/x": "a"}, "annotations": {"note": "t"}},
            "spec": {
                "domain": {
                    "devices": {"interfaces": [
                        {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"},
                        {"name": "data", "bridge": {}, "macAddress": "02:00:00:00:00:02"},
                    ]},
                    "firmware": {"serial": "old-serial", "uuid": "0f9f4e33-1a3b-4b3b-9d36-000000000001"},
                    "resources": {"requests": {"memory": "128Mi"}},
                },
                "volumes": [
                    {"name": "root", "dataVolume": {"name": "root-dv"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}},
                    {"name": "cloudinit", "cloudInitNoCloud": {"userData": "x"}},
                ],
            },
        },
    });
    for (k, v) in run.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {
            "name": "web", "namespace": "ns", "uid": "vm-uid", "resourceVersion": "7", "generation": 3,
            "labels": {"app": "web", "team/x": "a"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep/me": "yes"},
        },
        "spec": spec,
        "status": {"printableStatus": "Stopped", "volumeSnapshotStatuses": [
            {"name": "root", "enabled": true}, {"name": "data", "enabled": true}, {"name": "cloudinit", "enabled": false}]},
    })
}

fn source_vm(run: Value) -> VirtualMachine {
    serde_json::from_value(source_vm_json(run)).unwrap()
}

fn content(vm: &Value) -> VirtualMachineSnapshotContent {
    serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent",
        "metadata": {"name": "vmsnapshot-content-snap-uid", "namespace": "ns"},
        "spec": {
            "virtualMachineSnapshotName": "golden",
            "source": {"virtualMachine": vm},
            "volumeBackups": [{"volumeName": "root"}, {"volumeName": "data"}],
        },
    }))
    .unwrap()
}

fn ready_snapshot() -> VirtualMachineSnapshot {
    serde_json::from_value(json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "golden", "namespace": "ns", "uid": "snap-uid"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "web"}},
        "status": {"readyToUse": true, "phase": "Succeeded"},
    }))
    .unwrap()
}

fn pvc(name: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "nosnap",
                 "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap()
}

fn claims() -> BTreeMap<String, PersistentVolumeClaim> {
    [
        ("root-dv".to_owned(), pvc("root-dv")),
        ("data-pvc".to_owned(), pvc("data-pvc")),
    ]
    .into()
}

fn observed<'a>(
    clone: &'a VirtualMachineClone,
    source_vm: Option<&'a VirtualMachine>,
    snapshot: Option<&'a VirtualMachineSnapshot>,
    content: Option<&'a VirtualMachineSnapshotContent>,
) -> Observed<'a> {
    Observed {
        clone,
        now: Time("2026-01-01T00:10:00Z".parse().unwrap()),
        feature_gate: FeatureGate::Enabled,
        source_vm,
        source_snapshot: snapshot,
        temp_snapshot: None,
        content,
        restore: None,
        target: None,
        claim_phases: BTreeMap::new(),
        rivals: vec![],
        rejection: None,
        restore_stall_timeout: decide::DEFAULT_RESTORE_STALL_TIMEOUT,
        source_claims: claims(),
        target_full: None,
        data_volumes: BTreeMap::new(),
        access: None,
        source_held_by: None,
    }
}

fn preview_of(
    clone: &VirtualMachineClone,
    strategy: CloneStrategy,
    source: PreviewSource<'_>,
) -> Result<Preview, decide::Hold> {
    preview::preview(&PreviewInput {
        clone,
        strategy,
        source,
        source_namespace: "ns",
        claims: &claims(),
    })
}

fn volume<'v>(vm: &'v Value, name: &str) -> &'v Value {
    vm.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no volume {name} in {vm:#}"))
}

/// The spec of the seed example: filters, a MAC, a serial, a user patch.
fn identity_spec() -> Value {
    json!({
        "target": target("web-copy"),
        "labelFilters": ["*", "!team/*"],
        "annotationFilters": ["keep/*"],
        "template": {"labelFilters": ["app"]},
        "newMacAddresses": {"data": "02:AA:BB:CC:DD:EE"},
        "newSMBiosSerial": "new-serial",
        "patches": [r#"{"op":"add","path":"/spec/template/spec/domain/resources/requests/memory","value":"256Mi"}"#],
    })
}

/// The Snapshot strategy's preview is the VM the controller dry-runs before it creates the
/// restore, plus what the restore does that the dry run leaves out (restored names, the
/// restore's annotation, the templates).
#[test]
fn a_snapshot_preview_is_the_vm_the_controller_dry_runs_before_its_restore() {
    let vm = source_vm_json(json!({"running": true}));
    let content = content(&vm);
    let snapshot = ready_snapshot();
    let c = clone(
        Some(UID),
        ("VirtualMachineSnapshot", "golden"),
        identity_spec(),
        json!({}),
    );
    let mut restoring = c.clone();
    restoring.status = Some(VirtualMachineCloneStatus {
        phase: ClonePhase::RestoreInProgress,
        target_name: Some("web-copy".into()),
        ..Default::default()
    });
    let d = decide::decide(&observed(&restoring, None, Some(&snapshot), Some(&content)));
    let Action::CreateRestore(restore, Some(dry_run)) = d.action else {
        panic!("{:?}", d.action)
    };

    let content_vm = decide::check_content(&content, "ns").unwrap();
    let p = preview_of(
        &c,
        CloneStrategy::Snapshot,
        PreviewSource::Snapshot {
            name: "golden",
            vm: &content_vm,
        },
    )
    .unwrap();
    assert_eq!(p.warnings, vec![]);
    let t = &p.target;
    assert_eq!(
        t["metadata"]["annotations"]["restore.kubevirt.io/lastRestoreUID"],
        format!("tmp-restore-{UID}-<restore-uid>")
    );
    assert_eq!(
        volume(t, "root")["dataVolume"]["name"],
        "<restored PVC of volume root>"
    );
    assert_eq!(
        volume(t, "data")["persistentVolumeClaim"]["claimName"],
        "<restored PVC of volume data>"
    );
    assert_eq!(
        t["spec"]["dataVolumeTemplates"][0]["metadata"]["name"],
        "<restored PVC of volume root>"
    );

    // Without the restore's own changes, the preview is the dry run exactly.
    let mut without = t.clone();
    without["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("restore.kubevirt.io/lastRestoreUID");
    without["spec"]
        .as_object_mut()
        .unwrap()
        .remove("dataVolumeTemplates");
    without["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"] = json!("root-dv");
    without["spec"]["template"]["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"] =
        json!("data-pvc");
    assert_eq!(without, *dry_run);

    // And the restore carries the very patches the preview applied.
    let patches = decide::restore_patches(&c, "web-copy", &content_vm).patches;
    assert_eq!(restore.spec.patches.as_deref(), Some(patches.as_slice()));

    // What the clone changes, checked once here.
    assert_eq!(t["metadata"]["name"], "web-copy");
    assert_eq!(t["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(t["metadata"]["annotations"]["keep/me"], "yes");
    assert_eq!(t["metadata"]["annotations"].as_object().unwrap().len(), 2);
    assert_eq!(
        t["spec"]["running"], false,
        "KubeVirt's restore halts the target"
    );
    let domain = &t["spec"]["template"]["spec"]["domain"];
    assert_eq!(domain["firmware"]["serial"], "new-serial");
    assert_eq!(
        domain["firmware"]["uuid"],
        clone_core::names::firmware_uuid(UID)
    );
    assert_eq!(domain["devices"]["interfaces"][0].get("macAddress"), None);
    assert_eq!(
        domain["devices"]["interfaces"][1]["macAddress"],
        "02-aa-bb-cc-dd-ee"
    );
    assert_eq!(domain["resources"]["requests"]["memory"], "256Mi");
    assert_eq!(
        t["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(t.get("status"), None);
    assert_eq!(p.source["metadata"]["name"], "web");
    assert_eq!(
        p.source["metadata"].get("uid"),
        None,
        "the source is shown without bookkeeping"
    );
}

/// The DataVolume strategy's preview is exactly the VM the controller creates.
#[test]
fn a_data_volume_preview_is_the_vm_the_controller_creates() {
    let vm = source_vm(json!({"runStrategy": "Halted"}));
    let mut spec = identity_spec();
    spec["volumeNamePolicy"] = json!("PrefixTargetName");
    let c = clone(
        Some(UID),
        ("VirtualMachine", "web"),
        spec,
        json!({"vmclone.dev/strategy": "DataVolume", "vmclone.dev/target-run-strategy": "Always"}),
    );
    let d = decide::decide(&observed(&c, Some(&vm), None, None));
    let Action::CreateTargetVM(created) = d.action else {
        panic!("{:?}", d.action)
    };
    let p = preview_of(&c, CloneStrategy::DataVolume, PreviewSource::Vm(&vm)).unwrap();
    assert_eq!(p.target, *created);
    assert_eq!(p.target["spec"]["runStrategy"], "Always");
    assert_eq!(
        volume(&p.target, "data")["dataVolume"]["name"],
        "web-copy-data"
    );
    assert_eq!(p.warnings, vec![]);
}

/// Before the clone exists it has no UID: what derives from it is a placeholder, never a value
/// computed from a made-up UID.
#[test]
fn without_a_uid_the_preview_shows_placeholders() {
    let vm = source_vm(json!({"runStrategy": "Always"}));
    let c = clone(None, ("VirtualMachine", "web"), json!({}), json!({}));
    let p = preview_of(&c, CloneStrategy::Snapshot, PreviewSource::Vm(&vm)).unwrap();
    let t = &p.target;
    assert_eq!(t["metadata"]["name"], "clone-web-<suffix>");
    let firmware = &t["spec"]["template"]["spec"]["domain"]["firmware"];
    assert_eq!(firmware["uuid"], preview::FIRMWARE_UUID);
    assert_eq!(firmware["serial"], preview::SERIAL);
    assert_eq!(
        t["metadata"]["annotations"]["restore.kubevirt.io/lastRestoreUID"],
        "tmp-restore-<clone-uid>-<restore-uid>"
    );
    assert_eq!(t["spec"]["runStrategy"], "Halted");
    assert_eq!(
        t["metadata"]["annotations"].get("kubectl.kubernetes.io/last-applied-configuration"),
        None
    );
    let memory_dump = json!({"name": "dump", "memoryDump": {"claimName": "dump-pvc"}});
    let mut with_dump = source_vm_json(json!({"runStrategy": "Halted"}));
    with_dump["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(memory_dump);
    let with_dump: VirtualMachine = serde_json::from_value(with_dump).unwrap();
    let p = preview_of(&c, CloneStrategy::Snapshot, PreviewSource::Vm(&with_dump)).unwrap();
    let names: Vec<&str> = p.target["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["root", "data", "cloudinit"],
        "KubeVirt drops memory dumps"
    );

    // A named target: the serial is derived from known names, so it is a real value.
    let named = clone(
        None,
        ("VirtualMachine", "web"),
        json!({"target": target("t")}),
        json!({}),
    );
    let p = preview_of(&named, CloneStrategy::Snapshot, PreviewSource::Vm(&vm)).unwrap();
    assert_eq!(
        p.target["spec"]["template"]["spec"]["domain"]["firmware"]["serial"],
        clone_core::names::generated_serial("ns", "t")
    );

    // The DataVolume strategy: names and the creator mark carry the clone's UID.
    let halted = source_vm(json!({"runStrategy": "Halted"}));
    let p = preview_of(&c, CloneStrategy::DataVolume, PreviewSource::Vm(&halted)).unwrap();
    assert_eq!(
        volume(&p.target, "data")["dataVolume"]["name"],
        "clone-<clone-uid>-data"
    );
    assert_eq!(
        p.target["metadata"]["annotations"]["vmclone.dev/created-by-clone"],
        "<clone-uid>"
    );
    assert_eq!(
        p.target["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"],
        preview::FIRMWARE_UUID
    );
}

/// A user's patch that sets a derived value keeps it: only the derived value is a placeholder.
#[test]
fn a_value_set_by_a_users_patch_is_never_a_placeholder() {
    let vm = source_vm(json!({"runStrategy": "Halted"}));
    let patch = r#"{"op":"replace","path":"/spec/template/spec/domain/firmware/uuid","value":"11111111-2222-3333-4444-555555555555"}"#;
    let c = clone(
        None,
        ("VirtualMachine", "web"),
        json!({"patches": [patch]}),
        json!({}),
    );
    let p = preview_of(&c, CloneStrategy::Snapshot, PreviewSource::Vm(&vm)).unwrap();
    assert_eq!(
        p.target["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"],
        "11111111-2222-3333-4444-555555555555"
    );
}

/// A list of only negative filters keeps no key at all, and the warning says so (and how to keep
/// every other key).
#[test]
fn filter_lists_with_only_negative_entries_keep_nothing_and_warn() {
    let vm = source_vm(json!({"runStrategy": "Halted"}));
    let spec = json!({
        "target": target("t"),
        "labelFilters": ["!team/*"],
        "annotationFilters": ["*", "!keep/*"],
        "template": {"annotationFilters": ["!note", "!other"]},
    });
    let c = clone(None, ("VirtualMachine", "web"), spec, json!({}));
    let p = preview_of(&c, CloneStrategy::Snapshot, PreviewSource::Vm(&vm)).unwrap();
    assert_eq!(
        p.warnings,
        vec![
            Warning::OnlyNegativeFilters {
                field: "spec.labelFilters",
                filters: vec!["!team/*".into()]
            },
            Warning::OnlyNegativeFilters {
                field: "spec.template.annotationFilters",
                filters: vec!["!note".into(), "!other".into()]
            },
        ]
    );
    assert_eq!(
        p.warnings[0].to_string(),
        r#"spec.labelFilters ["!team/*"] has only negative filters, so it keeps no key at all (a key is kept only if a positive filter matches it); to keep every key except these, write ["*","!team/*"]"#
    );
    // What the warning says is what happens: `app` is not excluded, and is gone all the same.
    assert_eq!(p.target["metadata"].get("labels"), Some(&json!({})));
    assert_eq!(
        p.target["spec"]["template"]["metadata"]["annotations"],
        json!({})
    );
    assert_eq!(p.target["metadata"]["labels"].get("app"), None);
}

/// `newMacAddresses` keys that name no interface warn, in the words of the controller's
/// `UnknownInterface` event, on both strategies.
#[test]
fn unknown_interfaces_warn_like_the_controllers_event() {
    let vm = source_vm(json!({"runStrategy": "Halted"}));
    let spec = json!({"target": target("t"), "newMacAddresses": {"eth9": "02:00:00:00:00:09", "data": "02:00:00:00:00:0a"}});
    let c = clone(None, ("VirtualMachine", "web"), spec, json!({}));
    let expected = vec![Warning::UnknownInterface(
        "newMacAddresses names interface eth9, which the VM of VirtualMachine web does not have"
            .into(),
    )];
    for strategy in [CloneStrategy::Snapshot, CloneStrategy::DataVolume] {
        let p = preview_of(&c, strategy, PreviewSource::Vm(&vm)).unwrap();
        assert_eq!(p.warnings, expected, "{strategy:?}");
    }
}

/// What the controller would hold or fail the clone for, the preview says instead of a target.
#[test]
fn holds_and_failures_come_with_the_controllers_reason() {
    // A running source: the DataVolume strategy waits for it to stop (a warning, with the
    // target).
    let running = source_vm(json!({"runStrategy": "Always"}));
    let c = clone(
        None,
        ("VirtualMachine", "web"),
        json!({"target": target("t")}),
        json!({}),
    );
    let p = preview_of(&c, CloneStrategy::DataVolume, PreviewSource::Vm(&running)).unwrap();
    let [Warning::Waits(hold)] = p.warnings.as_slice() else {
        panic!("{:?}", p.warnings)
    };
    assert_eq!(hold.reason, EventReason::SourceVMRunning);
    assert!(!hold.fails);
    assert!(
        hold.to_string()
            .starts_with("the clone would wait (SourceVMRunning): source VM ns/web is running"),
        "{hold}"
    );

    // A user's patch that does not apply fails the clone, naming the patch.
    let vm = source_vm(json!({"runStrategy": "Halted"}));
    let patch = r#"{"op":"remove","path":"/metadata/labels/absent"}"#;
    let c = clone(
        None,
        ("VirtualMachine", "web"),
        json!({"patches": [patch]}),
        json!({}),
    );
    let error = preview_of(&c, CloneStrategy::Snapshot, PreviewSource::Vm(&vm)).unwrap_err();
    assert_eq!(error.reason, EventReason::InvalidSpec);
    assert!(error.fails);
    assert!(
        error
            .message
            .starts_with("patch 0 does not apply to the VM in snapshot tmp-snapshot-<clone-uid>:"),
        "{error}"
    );

    // A missing source claim holds a DataVolume clone.
    let c = clone(
        None,
        ("VirtualMachine", "web"),
        json!({"target": target("t")}),
        json!({}),
    );
    let error = preview::preview(&PreviewInput {
        clone: &c,
        strategy: CloneStrategy::DataVolume,
        source: PreviewSource::Vm(&vm),
        source_namespace: "ns",
        claims: &BTreeMap::new(),
    })
    .unwrap_err();
    assert_eq!(error.reason, EventReason::SourceDoesNotExist);
    assert!(!error.fails);

    // The Snapshot strategy: a volume KubeVirt cannot snapshot holds the clone (a warning), a
    // persistent TPM fails it.
    let mut unsnapshottable = source_vm_json(json!({"runStrategy": "Halted"}));
    unsnapshottable["status"]["volumeSnapshotStatuses"][1]["enabled"] = json!(false);
    let unsnapshottable: VirtualMachine = serde_json::from_value(unsnapshottable).unwrap();
    let p = preview_of(
        &c,
        CloneStrategy::Snapshot,
        PreviewSource::Vm(&unsnapshottable),
    )
    .unwrap();
    assert_eq!(
        p.warnings,
        vec![Warning::Waits(decide::Hold {
            reason: EventReason::VMVolumeSnapshotsInvalid,
            message: "Virtual Machine volume data does not support snapshots".into(),
            fails: false,
        })]
    );
    let mut tpm = source_vm_json(json!({"runStrategy": "Halted"}));
    tpm["spec"]["template"]["spec"]["domain"]["devices"]["tpm"] = json!({"persistent": true});
    let tpm: VirtualMachine = serde_json::from_value(tpm).unwrap();
    let error = preview_of(&c, CloneStrategy::Snapshot, PreviewSource::Vm(&tpm)).unwrap_err();
    assert_eq!(error.reason, EventReason::SourceVMWithBackendStorageInvalid);
    assert!(error.fails);

    // The DataVolume strategy clones VMs, not snapshots.
    let content_vm = source_vm_json(json!({}));
    let error = preview_of(
        &c,
        CloneStrategy::DataVolume,
        PreviewSource::Snapshot {
            name: "golden",
            vm: &content_vm,
        },
    )
    .unwrap_err();
    assert!(error.fails);
}

/// KubeVirt's restore, as far as it is knowable: a `dataVolume` volume without a template
/// becomes a claim volume of the restored PVC, `running` is kept but false.
#[test]
fn restored_vm_follows_kubevirts_restore() {
    let vm = json!({
        "metadata": {"name": "src", "labels": {"a": "b"}},
        "spec": {"running": true, "template": {"spec": {"volumes": [
            {"name": "imported", "dataVolume": {"name": "imported-dv"}},
        ]}}},
    });
    let claim = |volume: &str| format!("restored-{volume}");
    let restored = Restored {
        last_restore_uid: Some("r-1".into()),
        claim: Some(&claim),
    };
    let out = decide::restored_vm(&vm, "ns", "t", &[], &restored).unwrap();
    assert_eq!(
        out,
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "t", "namespace": "ns", "labels": {"a": "b"},
                         "annotations": {"restore.kubevirt.io/lastRestoreUID": "r-1"}},
            "spec": {"running": false, "template": {"spec": {"volumes": [
                {"name": "imported", "persistentVolumeClaim": {"claimName": "restored-imported"}},
            ]}}},
        })
    );
    // Without restored names (the controller's dry run) the volumes stay as they are.
    let out = decide::restored_vm(&vm, "ns", "t", &[], &Restored::default()).unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"],
        "imported-dv"
    );
    assert_eq!(out["metadata"].get("annotations"), None);
}
