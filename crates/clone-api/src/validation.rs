//! The validation messages of the API, spelled once.
//!
//! `clone-core`'s rule table builds both the ValidatingAdmissionPolicy (CEL message expressions)
//! and the controller's own check (`InvalidSpec`) from these words, so a user reads the same
//! message whichever side refuses the input. Where upstream KubeVirt had a message, its wording is
//! kept.

/// JSON paths of the four filter lists, as they appear in messages.
pub mod field {
    /// `spec.labelFilters`
    pub const LABEL_FILTERS: &str = "spec.labelFilters";
    /// `spec.annotationFilters`
    pub const ANNOTATION_FILTERS: &str = "spec.annotationFilters";
    /// `spec.template.labelFilters`
    pub const TEMPLATE_LABEL_FILTERS: &str = "spec.template.labelFilters";
    /// `spec.template.annotationFilters`
    pub const TEMPLATE_ANNOTATION_FILTERS: &str = "spec.template.annotationFilters";
}

/// Why a filter that is exactly `!` is invalid (upstream's words).
pub const NEGATION_ALONE: &str = "a negation character is not a valid filter";
/// Why a filter with `!` after its first character is invalid.
pub const NEGATION_POSITION: &str = "cannot contain a negation character (!); FilterRules: NegationChar can be only used at the beginning of the filter";
/// Why a filter with `*` before its last character is invalid.
pub const WILDCARD_POSITION: &str = "cannot contain a wildcard character (*); FilterRules: WildcardChar can be only at the end of the filter";
/// Why a filter with a character that cannot appear in a key is invalid.
pub const KEY_CHARACTERS: &str =
    "only letters, digits, '-', '_', '.' and '/' can appear in a label or annotation key";

/// `<field> filter must not be empty`
pub fn filter_empty(field: &str) -> String {
    format!("{field} filter must not be empty")
}

/// `<field> filter <f> is invalid: <why>`
pub fn filter_invalid(field: &str, filter: &str, why: &str) -> String {
    format!("{field} filter {filter} is invalid: {why}")
}

/// Source kind other than `VirtualMachine` or `VirtualMachineSnapshot`.
pub const SOURCE_KIND_UNSUPPORTED: &str = "Source kind is not supported";
/// Source `apiGroup` missing or empty.
pub const SOURCE_API_GROUP_EMPTY: &str = "Source's APIGroup cannot be empty";
/// Source `apiGroup` not matching its kind.
pub const SOURCE_API_GROUP_MISMATCH: &str = "Source's APIGroup must be kubevirt.io for VirtualMachine and snapshot.kubevirt.io for VirtualMachineSnapshot";
/// Source `name` empty.
pub const SOURCE_NAME_EMPTY: &str = "Source's name cannot be empty";
/// Target kind other than `VirtualMachine`.
pub const TARGET_KIND_UNSUPPORTED: &str = "Target kind is not supported";
/// Target `apiGroup` other than `kubevirt.io`.
pub const TARGET_API_GROUP_INVALID: &str = "Target's APIGroup must be kubevirt.io";
/// Target and source are VMs with the same name.
pub const TARGET_EQUALS_SOURCE: &str =
    "Target name cannot be equal to source name when both are VirtualMachines";
/// Target name is not a DNS-1123 subdomain.
pub const TARGET_NAME_INVALID: &str = "Target name must consist of lowercase letters, digits, '-' and '.', start and end with a letter or digit, and be at most 63 characters";
/// Cross-namespace source without a strategy that can cross namespaces.
pub const SOURCE_NAMESPACE_NEEDS_DATAVOLUME: &str = "annotation vmclone.dev/source-namespace requires vmclone.dev/strategy DataVolume or Auto: KubeVirt snapshots and restores cannot cross namespaces";
/// DataVolume strategy with a snapshot source.
pub const DATAVOLUME_NEEDS_VM_SOURCE: &str =
    "vmclone.dev/strategy DataVolume requires a VirtualMachine source";

/// `annotation <key> must be one of <a>, <b>, not "<value>"`
pub fn annotation_value_unknown(key: &str, known: &[&str], value: &str) -> String {
    format!(
        "annotation {key} must be one of {}, not \"{value}\"",
        known.join(", ")
    )
}

/// Why a `vmclone.dev/source-namespace` value is not a namespace name.
pub const SOURCE_NAMESPACE_SHAPE: &str = "must be a namespace name (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)";

/// `annotation vmclone.dev/source-namespace must be a namespace name (...), not "<value>"`
pub fn source_namespace_invalid(value: &str) -> String {
    format!("annotation vmclone.dev/source-namespace {SOURCE_NAMESPACE_SHAPE}, not \"{value}\"")
}

/// `unknown annotation <key>: the vmclone.dev/ annotations are <known>`
pub fn annotation_unknown(key: &str) -> String {
    format!(
        "unknown annotation {key}: the vmclone.dev/ annotations are {}",
        crate::extensions::KNOWN.join(", ")
    )
}

/// `annotation <key> cannot change after the clone is created`
pub fn annotation_immutable(key: &str) -> String {
    format!("annotation {key} cannot change after the clone is created")
}

/// `volumeNamePolicy must be RandomizeNames or PrefixTargetName, not "<value>"`
pub fn volume_name_policy_unknown(value: &str) -> String {
    format!("volumeNamePolicy must be RandomizeNames or PrefixTargetName, not \"{value}\"")
}

/// `interface <name> has malformed MAC address (<mac>).` (upstream's wording)
pub fn malformed_mac(interface: &str, mac: &str) -> String {
    format!("interface {interface} has malformed MAC address ({mac}).")
}

/// `newSMBiosSerial` with a character KubeVirt's restore admission splits on.
pub const SERIAL_SEPARATORS: &str = "newSMBiosSerial must not contain ',' or ':'";

/// `patch is not valid JSON (<patch>)`
pub fn patch_not_json(patch: &str) -> String {
    format!("patch is not valid JSON ({patch})")
}

/// `patch <i> must be a JSON Patch operation with op and path`
pub fn patch_not_operation(index: impl std::fmt::Display) -> String {
    format!("patch {index} must be a JSON Patch operation with op and path")
}

/// Prefix of the message for a patch path outside the allowed prefixes.
pub const PATCH_PATH_PREFIX: &str = "patching is valid only for elements under /spec/, /metadata/labels/ and /metadata/annotations/";

/// `patching is valid only for elements under ...: <patch>`
pub fn patch_path_invalid(patch: &str) -> String {
    format!("{PATCH_PATH_PREFIX}: {patch}")
}

/// Why KubeVirt's restore admission refuses a patch.
pub const PATCH_NAIVE_CHECK: &str =
    "is rejected by KubeVirt's restore admission (values must not contain ',' or ':')";

/// `patch <i> is rejected by KubeVirt's restore admission (...): <patch>`
pub fn patch_rejected_by_kubevirt(index: impl std::fmt::Display, patch: &str) -> String {
    format!("patch {index} {PATCH_NAIVE_CHECK}: {patch}")
}

/// `patch <i> does not apply to the VM in snapshot <snapshot>: <why> (<patch>)`: KubeVirt's
/// restore would retry such a patch forever, so the clone fails before creating the restore.
pub fn patch_does_not_apply(index: usize, snapshot: &str, why: &str, patch: &str) -> String {
    format!("patch {index} does not apply to the VM in snapshot {snapshot}: {why} ({patch})")
}

/// A patch that does not apply to the VM the DataVolume strategy builds from the source VM.
pub fn patch_does_not_apply_to_source(index: usize, vm: &str, why: &str, patch: &str) -> String {
    format!("patch {index} does not apply to the VM built from source VM {vm}: {why} ({patch})")
}

/// CDI's message when a clone's target volume mode differs from the source's (the OpenShift
/// chapter's wording).
pub fn volume_mode_mismatch(source: &str, target: &str) -> String {
    format!("source volumeMode ({source}) and target volumeMode ({target}) do not match")
}

/// CDI's message when a clone's target asks for less storage than the source has.
pub const TARGET_SMALLER_THAN_SOURCE: &str =
    "target resources requests storage size is smaller than the source";

/// The identity KubeVirt creates a cross-namespace DataVolume for may not read the source.
pub fn insufficient_clone_permissions(user: &str, source_namespace: &str) -> String {
    format!("User {user} has insufficient permissions in clone source namespace {source_namespace}")
}

/// Any change of `spec` after creation.
pub const SPEC_IMMUTABLE: &str = "spec is immutable";

/// The path prefixes KubeVirt's restore admission allows in a patch.
pub const PATCH_PATH_PREFIXES: [&str; 3] =
    ["/spec/", "/metadata/labels/", "/metadata/annotations/"];

/// The JSON Patch operations.
pub const PATCH_OPS: [&str; 6] = ["add", "remove", "replace", "move", "copy", "test"];

/// Regular expression (RE2 and Rust `regex` compatible) of KubeVirt's naive patch check: split on
/// `,`, every piece has exactly one `:`.
pub const NAIVE_PATCH_REGEX: &str = "^[^,:]*:[^,:]*(,[^,:]*:[^,:]*)*$";

/// Regular expression of a MAC address as the API accepts it (or empty).
pub const MAC_REGEX: &str =
    "^([0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5})?$";

/// Regular expression of a DNS-1123 label (a namespace name).
pub const DNS1123_LABEL_REGEX: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Regular expression of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_REGEX: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Characters a filter body may contain (besides the leading `!` and trailing `*`).
pub fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}
