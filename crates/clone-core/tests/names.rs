//! Names a clone derives from its data: deterministic, valid Kubernetes names, stable identifiers.

// Helpers of integration tests are not `#[test]` functions, so clippy's test exemptions miss them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::names::{SNAPSHOT_CONTENT_PREFIX, TEMP_RESTORE_PREFIX, TEMP_SNAPSHOT_PREFIX};
use clone_core::names::{
    FIRMWARE_NAMESPACE, MAX_NAME_LENGTH, SERIAL_NAMESPACE, SUFFIX_ALPHABET, SUFFIX_LENGTH,
    firmware_uuid, generated_serial, normalize_mac, snapshot_content_name, target_name,
    temp_restore_name, temp_snapshot_name,
};
use clone_core::validate::{is_valid_target_name, passes_kubevirt_naive_check};
use proptest::prelude::*;
use uuid::Uuid;

const UID: &str = "5b8a1a3c-6e9f-4a7d-9c1b-2f3e4d5c6b7a";

fn suffix_of(name: &str) -> &str {
    &name[name.len() - SUFFIX_LENGTH..]
}

#[test]
fn target_name_is_clone_source_suffix() {
    let name = target_name("vm-cirros", UID);
    assert!(name.starts_with("clone-vm-cirros-"), "{name}");
    assert_eq!(name.len(), "clone-vm-cirros-".len() + SUFFIX_LENGTH);
    assert!(
        suffix_of(&name)
            .chars()
            .all(|c| SUFFIX_ALPHABET.contains(c))
    );
}

#[test]
fn target_name_is_deterministic_and_differs_per_clone() {
    assert_eq!(target_name("vm", UID), target_name("vm", UID));
    assert_ne!(target_name("vm", UID), target_name("vm", "another-uid"));
}

#[test]
fn a_long_source_is_cut_to_fit_63_characters() {
    let source = "a".repeat(253);
    let name = target_name(&source, UID);
    assert_eq!(name.len(), MAX_NAME_LENGTH);
    assert!(
        name.starts_with(&format!("clone-{}", "a".repeat(51))),
        "{name}"
    );
    assert!(is_valid_target_name(&name));
}

#[test]
fn a_cut_never_ends_in_a_dash_or_dot() {
    // Cut at 51 characters lands right after a `-` and a `.` respectively.
    for source in [
        format!("{}-b", "a".repeat(50)),
        format!("{}.b", "a".repeat(50)),
        format!("{}-.-b", "a".repeat(48)),
    ] {
        let name = target_name(&source, UID);
        assert!(is_valid_target_name(&name), "{name}");
        assert!(
            !name.contains("-.") && !name.contains(".-") && !name.contains(".."),
            "{name}"
        );
    }
}

#[test]
fn a_source_that_is_not_a_name_still_gives_a_valid_name() {
    for source in ["", "-", ".", "UPPER", "a..b", "-a-", "ä/ö", "a_b"] {
        let name = target_name(source, UID);
        assert!(is_valid_target_name(&name), "{source:?} -> {name}");
    }
    assert_eq!(
        target_name("UPPER", UID),
        format!("clone-upper-{}", suffix_of(&target_name("x", UID)))
    );
    assert_eq!(target_name("", UID).len(), "clone-".len() + SUFFIX_LENGTH);
}

#[test]
fn temporary_object_names_use_upstreams_prefixes() {
    assert_eq!(
        temp_snapshot_name(UID),
        format!("{TEMP_SNAPSHOT_PREFIX}{UID}")
    );
    assert_eq!(temp_restore_name(UID), format!("tmp-restore-{UID}"));
    assert_eq!(TEMP_RESTORE_PREFIX, "tmp-restore-");
    assert_eq!(
        snapshot_content_name("abc"),
        format!("{SNAPSHOT_CONTENT_PREFIX}abc")
    );
    assert_eq!(snapshot_content_name("abc"), "vmsnapshot-content-abc");
}

#[test]
fn the_uuid_namespaces_are_the_documented_name_based_uuids() {
    assert_eq!(
        SERIAL_NAMESPACE,
        Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"serial.clone.kubevirt.io")
    );
    assert_eq!(
        FIRMWARE_NAMESPACE,
        Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"firmware.clone.kubevirt.io")
    );
}

#[test]
fn generated_serial_is_32_hex_digits_of_a_v5_uuid_of_namespace_and_target() {
    let serial = generated_serial("default", "clone-vm");
    assert_eq!(serial.len(), 32);
    assert!(
        serial
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    let uuid = Uuid::new_v5(&SERIAL_NAMESPACE, b"default/clone-vm");
    assert_eq!(serial, uuid.simple().to_string());
    assert_eq!(
        serial,
        generated_serial("default", "clone-vm"),
        "deterministic"
    );
    assert_ne!(serial, generated_serial("other", "clone-vm"));
    assert_ne!(serial, generated_serial("default", "clone-vm2"));
    assert!(!serial.contains([',', ':']));
}

#[test]
fn firmware_uuid_is_a_v5_uuid_of_the_clone_uid() {
    let uuid = firmware_uuid(UID);
    let parsed = Uuid::parse_str(&uuid).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 5);
    assert_eq!(parsed, Uuid::new_v5(&FIRMWARE_NAMESPACE, UID.as_bytes()));
    assert_eq!(uuid, uuid.to_lowercase());
    assert_eq!(uuid, firmware_uuid(UID), "stable across retries");
    assert_ne!(uuid, firmware_uuid("another-uid"), "unique per clone");
    assert!(passes_kubevirt_naive_check(&format!(r#""value":"{uuid}""#)));
}

#[test]
fn macs_are_normalised_to_lower_case_with_dashes() {
    let cases = [
        ("02:AB:cd:00:11:22", "02-ab-cd-00-11-22"),
        ("02-AB-CD-00-11-22", "02-ab-cd-00-11-22"),
        ("02-ab-cd-00-11-22", "02-ab-cd-00-11-22"),
        ("", ""),
    ];
    for (mac, want) in cases {
        assert_eq!(normalize_mac(mac), want, "{mac}");
    }
}

proptest! {
    #[test]
    fn target_names_are_valid_dns_subdomains_of_at_most_63(
        source in "[a-z0-9]([-a-z0-9.]{0,250}[a-z0-9])?",
        uid in "[a-f0-9-]{1,36}",
    ) {
        let name = target_name(&source, &uid);
        prop_assert!(is_valid_target_name(&name), "{} -> {}", source, name);
        prop_assert!(name.len() <= MAX_NAME_LENGTH);
        prop_assert_eq!(suffix_of(&name).len(), SUFFIX_LENGTH);
        prop_assert!(suffix_of(&name).chars().all(|c| SUFFIX_ALPHABET.contains(c)));
        prop_assert_eq!(&name, &target_name(&source, &uid));
    }

    #[test]
    fn a_valid_source_is_only_ever_cut(source in "[a-z0-9]([-a-z0-9]{0,80}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}") {
        let name = target_name(&source, UID);
        let middle = &name["clone-".len()..name.len() - SUFFIX_LENGTH - 1];
        prop_assert!(source.starts_with(middle), "{} not a prefix of {}", middle, source);
    }

    #[test]
    fn any_text_gives_a_valid_name(source in "\\PC{0,300}", uid in "\\PC{0,40}") {
        let name = target_name(&source, &uid);
        prop_assert!(is_valid_target_name(&name), "{:?} -> {}", source, name);
    }

    #[test]
    fn suffixes_use_the_whole_alphabet_and_nothing_else(uids in prop::collection::vec("[a-f0-9-]{36}", 200)) {
        let mut seen = std::collections::BTreeSet::new();
        for uid in &uids {
            let name = target_name("vm", uid);
            seen.extend(suffix_of(&name).chars());
        }
        prop_assert!(seen.iter().all(|c| SUFFIX_ALPHABET.contains(*c)));
        prop_assert!(seen.len() >= 20, "1000 characters cover (nearly) all 27: {:?}", seen);
    }
}
