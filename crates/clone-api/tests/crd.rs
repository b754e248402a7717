//! The generated CRD: names, versions, columns, and a snapshot of the whole document so that any
//! change to the API shows up in review.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::{names, v1alpha1, v1beta1};

#[test]
fn crd_snapshot() {
    let yaml = serde_saphyr::to_string(&clone_api::crd()).expect("CRD serialises");
    insta::assert_snapshot!(yaml);
}

#[test]
fn names_versions_and_columns() {
    let crd = clone_api::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some(names::CRD_NAME));
    assert_eq!(crd.spec.group, names::GROUP);
    assert_eq!(crd.spec.scope, "Namespaced");
    let n = &crd.spec.names;
    assert_eq!(n.kind, names::KIND);
    assert_eq!(n.plural, names::PLURAL);
    assert_eq!(n.singular.as_deref(), Some(names::SINGULAR));
    assert_eq!(
        n.short_names.as_deref(),
        Some(&["vmclone".to_owned(), "vmclones".to_owned()][..])
    );
    assert_eq!(n.categories.as_deref(), Some(&["all".to_owned()][..]));

    let mut versions: Vec<_> = crd
        .spec
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.served, v.storage))
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        vec![("v1alpha1", true, false), ("v1beta1", true, true)]
    );
    for v in &crd.spec.versions {
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            // Upstream's columns.
            vec![
                ("Phase", ".status.phase"),
                ("SourceVirtualMachine", ".spec.source.name"),
                ("TargetVirtualMachine", ".spec.target.name"),
            ]
        );
    }
}

#[test]
fn a_v1alpha1_manifest_reads_as_v1beta1() {
    let manifest = r#"
kind: VirtualMachineClone
apiVersion: "clone.kubevirt.io/v1alpha1"
metadata:
  name: testclone
spec:
  source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: vm-cirros}
  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: vm-clone-target}
  labelFilters: ["*", "!somekey/*"]
  newMacAddresses: {interfaceName: "00-11-22-33-44-55"}
  newSMBiosSerial: "new-serial"
  patches: ['{"op": "add", "path": "/spec/running", "value": "x"}']
  volumeNamePolicy: PrefixTargetName
"#;
    let alpha: v1alpha1::VirtualMachineClone = serde_saphyr::from_str(manifest).expect("parses");
    let beta: v1beta1::VirtualMachineCloneSpec = alpha.spec.into();
    assert_eq!(beta.source.name, "vm-cirros");
    assert_eq!(beta.new_smbios_serial.as_deref(), Some("new-serial"));
    assert_eq!(
        beta.volume_name_policy,
        Some(v1beta1::VolumeNamePolicy::PrefixTargetName)
    );
    assert_eq!(beta.patches.map(|p| p.len()), Some(1));
}

#[test]
fn phases_round_trip_and_unknown_phases_read_as_unknown() {
    use v1beta1::ClonePhase;
    for phase in [
        ClonePhase::Unset,
        ClonePhase::SnapshotInProgress,
        ClonePhase::RestoreInProgress,
        ClonePhase::CreatingTargetVM,
        ClonePhase::Succeeded,
        ClonePhase::Failed,
        ClonePhase::Unknown,
    ] {
        let json = serde_json::to_value(phase).expect("serialises");
        assert_eq!(json, phase.as_str());
        assert_eq!(
            serde_json::from_value::<ClonePhase>(json).expect("parses"),
            phase
        );
    }
    let future: ClonePhase = serde_json::from_str("\"Hibernating\"").expect("parses");
    assert_eq!(future, ClonePhase::Unknown);
}

#[test]
fn event_reasons_are_camel_case_words_and_typed() {
    use names::EventReason::*;
    for reason in [
        SnapshotCreated,
        PVCBound,
        SourceDoesNotExist,
        TargetExists,
        InvalidSpec,
    ] {
        let s = reason.as_str();
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
        assert!(
            s.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
            "{s}"
        );
    }
    assert!(!SnapshotCreated.is_warning());
    assert!(!PVCBound.is_warning());
    assert!(TargetExists.is_warning());
    assert!(RestoreCreationFailed.is_warning());
}
