//! Names and identifiers a clone derives from its own data: the target VM's name, the temporary
//! snapshot and restore, the SMBIOS serial, the firmware UUID and the MAC spelling KubeVirt wants.
//!
//! Everything is a pure function of its arguments (hashes and name-based UUIDs, never randomness),
//! so a retried reconcile computes the same names again.

use clone_api::names::{SNAPSHOT_CONTENT_PREFIX, TEMP_RESTORE_PREFIX, TEMP_SNAPSHOT_PREFIX};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Longest name the target may have (a DNS-1123 label's length; KubeVirt uses the VM name as a
/// label value and host name).
pub const MAX_NAME_LENGTH: usize = 63;

/// Prefix of a generated target name.
pub const TARGET_NAME_PREFIX: &str = "clone-";

/// The alphabet of generated suffixes: Kubernetes' own (`generateName`), without vowels and
/// look-alike characters, so a suffix never spells a word.
pub const SUFFIX_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

/// Length of a generated suffix.
pub const SUFFIX_LENGTH: usize = 5;

/// Namespace of the name-based UUIDs behind generated SMBIOS serials:
/// UUIDv5(`NAMESPACE_DNS`, `"serial.clone.kubevirt.io"`), fixed here so serials never change
/// between releases.
pub const SERIAL_NAMESPACE: Uuid = Uuid::from_u128(0xfe7d_22c0_e2f2_5082_b66b_fe55_172b_0fdf);

/// Namespace of the name-based firmware UUIDs: UUIDv5(`NAMESPACE_DNS`,
/// `"firmware.clone.kubevirt.io"`), fixed here so UUIDs never change between releases.
pub const FIRMWARE_NAMESPACE: Uuid = Uuid::from_u128(0xa8c6_ce1e_01ed_5a28_add3_e91c_7d1b_59c5);

/// The target name when the clone names none: `clone-<source>-<suffix>`, the suffix being
/// [`SUFFIX_LENGTH`] characters of [`SUFFIX_ALPHABET`] derived from a SHA-256 of the clone's UID.
///
/// The source part is cut so the whole fits in [`MAX_NAME_LENGTH`] characters, and the result is
/// always a valid DNS-1123 subdomain: characters a name cannot hold become `-` (upper case is
/// lowered), empty or dash-edged dot-separated parts are trimmed, and the cut part never ends in
/// `-` or `.`. A valid source name is only ever cut, never rewritten.
pub fn target_name(source_name: &str, clone_uid: &str) -> String {
    target_name_with_suffix(source_name, &suffix(clone_uid))
}

/// [`target_name`] with `suffix` in place of the one derived from the clone's UID (the source part
/// is cut as if the suffix had [`SUFFIX_LENGTH`] characters). The plugin's preview shows a target
/// whose clone has no UID yet with a placeholder suffix.
pub fn target_name_with_suffix(source_name: &str, suffix: &str) -> String {
    let room = MAX_NAME_LENGTH - TARGET_NAME_PREFIX.len() - 1 - SUFFIX_LENGTH;
    let source = dns_part(source_name);
    let cut: String = source.chars().take(room).collect();
    let cut = cut.trim_end_matches(['-', '.']);
    if cut.is_empty() {
        format!("{TARGET_NAME_PREFIX}{suffix}")
    } else {
        format!("{TARGET_NAME_PREFIX}{cut}-{suffix}")
    }
}

/// `text` made fit for the middle of a DNS-1123 subdomain: lower case, only `[a-z0-9.-]`, every
/// dot-separated part non-empty and starting and ending with a letter or digit.
fn dns_part(text: &str) -> String {
    text.split('.')
        .map(|part| {
            let mapped: String = part
                .chars()
                .map(|c| {
                    let c = c.to_ascii_lowercase();
                    if c.is_ascii_lowercase() || c.is_ascii_digit() {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            mapped.trim_matches('-').to_owned()
        })
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// Five characters of [`SUFFIX_ALPHABET`] from a SHA-256 of `seed`.
fn suffix(seed: &str) -> String {
    let alphabet = SUFFIX_ALPHABET.as_bytes();
    let digest = Sha256::digest(seed.as_bytes());
    // One byte per character; the bias of `byte % 27` is irrelevant for a name suffix.
    digest
        .iter()
        .take(SUFFIX_LENGTH)
        .map(|byte| char::from(alphabet[usize::from(*byte) % alphabet.len()]))
        .collect()
}

/// The temporary snapshot of a clone: `tmp-snapshot-<clone UID>`.
pub fn temp_snapshot_name(clone_uid: &str) -> String {
    format!("{TEMP_SNAPSHOT_PREFIX}{clone_uid}")
}

/// The temporary restore of a clone: `tmp-restore-<clone UID>`.
pub fn temp_restore_name(clone_uid: &str) -> String {
    format!("{TEMP_RESTORE_PREFIX}{clone_uid}")
}

/// The snapshot content KubeVirt creates for a snapshot: `vmsnapshot-content-<snapshot UID>`.
pub fn snapshot_content_name(snapshot_uid: &str) -> String {
    format!("{SNAPSHOT_CONTENT_PREFIX}{snapshot_uid}")
}

/// The SMBIOS serial of a target whose clone gives none: the 32 hex digits (lower case, no dashes)
/// of UUIDv5([`SERIAL_NAMESPACE`], `<namespace>/<target>`). Stable per target VM, unique across
/// targets, and free of the `,` and `:` that KubeVirt's restore admission splits on.
pub fn generated_serial(namespace: &str, target: &str) -> String {
    let name = format!("{namespace}/{target}");
    Uuid::new_v5(&SERIAL_NAMESPACE, name.as_bytes())
        .simple()
        .to_string()
}

/// The firmware UUID of a clone's target: UUIDv5([`FIRMWARE_NAMESPACE`], clone UID), hyphenated
/// lower case. Unique per clone and stable across retries.
pub fn firmware_uuid(clone_uid: &str) -> String {
    Uuid::new_v5(&FIRMWARE_NAMESPACE, clone_uid.as_bytes())
        .hyphenated()
        .to_string()
}

/// A MAC address as the restore's patches carry it: lower case with `-` separators
/// (`02:AB:…` → `02-ab-…`). KubeVirt accepts this form; its restore admission rejects `:`.
pub fn normalize_mac(mac: &str) -> String {
    mac.to_ascii_lowercase().replace(':', "-")
}
