//! Hand-written schema fragments whose items carry CEL rules.
//!
//! Rules sit on list items and map values (not on the lists), so `self` is one string, the error's
//! field path names the index or key, and the API server's cost budget stays small. Every list,
//! map and string is bounded for the same reason. The messages come from [`crate::validation`].

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::validation::{self as v, field};

/// A CEL rule with a static message.
fn rule(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// A CEL rule whose message is computed from the value.
fn rule_expr(rule: &str, message_expression: String) -> Value {
    json!({ "rule": rule, "messageExpression": message_expression })
}

/// A CEL string literal (double-quoted; the messages contain single quotes, never double ones).
fn cel_str(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The CEL rules of one filter (`self` is the filter string).
pub fn filter_rules(field: &str) -> Vec<Value> {
    // `(?s)` so that `.` also crosses newlines: the Rust parser sees every character.
    let negation_misplaced = "self.matches('(?s)^.+!')";
    let wildcard_misplaced = "self.matches('(?s)[*].')";
    let invalid = |why: &str| {
        format!(
            "{} + self + {}",
            cel_str(&format!("{field} filter ")),
            cel_str(&format!(" is invalid: {why}"))
        )
    };
    vec![
        rule("self != ''", &v::filter_empty(field)),
        rule("self != '!'", v::NEGATION_ALONE),
        rule_expr(
            &format!("self == '!' || !{negation_misplaced}"),
            invalid(v::NEGATION_POSITION),
        ),
        rule_expr(
            &format!("!{wildcard_misplaced}"),
            invalid(v::WILDCARD_POSITION),
        ),
        rule_expr(
            &format!(
                "self == '' || self == '!' || {negation_misplaced} || {wildcard_misplaced} || \
                 self.matches('^!?[A-Za-z0-9._/-]*[*]?$')"
            ),
            invalid(v::KEY_CHARACTERS),
        ),
    ]
}

fn filter_list(field: &str) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": v::MAX_FILTERS,
        "x-kubernetes-list-type": "atomic",
        "items": {
            "type": "string",
            "maxLength": v::MAX_FILTER_LENGTH,
            "x-kubernetes-validations": filter_rules(field),
        },
    })
}

/// Schema of `spec.labelFilters`.
pub fn label_filters(_: &mut SchemaGenerator) -> Schema {
    filter_list(field::LABEL_FILTERS)
}

/// Schema of `spec.annotationFilters`.
pub fn annotation_filters(_: &mut SchemaGenerator) -> Schema {
    filter_list(field::ANNOTATION_FILTERS)
}

/// Schema of `spec.template.labelFilters`.
pub fn template_label_filters(_: &mut SchemaGenerator) -> Schema {
    filter_list(field::TEMPLATE_LABEL_FILTERS)
}

/// Schema of `spec.template.annotationFilters`.
pub fn template_annotation_filters(_: &mut SchemaGenerator) -> Schema {
    filter_list(field::TEMPLATE_ANNOTATION_FILTERS)
}

/// Schema of `spec.newMacAddresses`: interface name → MAC (or empty).
pub fn new_mac_addresses(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": v::MAX_MAC_ADDRESSES,
        "additionalProperties": {
            "type": "string",
            "maxLength": 17,
            "x-kubernetes-validations": [rule_expr(
                &format!("self.matches('{}')", v::MAC_REGEX),
                format!("{} + self + {}", cel_str("malformed MAC address ("), cel_str(")."))
            )],
        },
    })
}

/// Schema of `spec.newSMBiosSerial`.
pub fn new_smbios_serial(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": v::MAX_SERIAL_LENGTH,
        "x-kubernetes-validations": [rule("!self.matches('[,:]')", v::SERIAL_SEPARATORS)],
    })
}

/// The CEL rules of one patch string. CEL cannot parse JSON, so "is a JSON Patch operation"
/// is approximated here and checked exactly by the controller (`InvalidSpec`).
pub fn patch_rules() -> Vec<Value> {
    let object = "self.matches('(?s)^\\\\s*[{].*[}]\\\\s*$')";
    let ops = v::PATCH_OPS.join("|");
    let operation = format!(
        "self.matches('\"op\"\\\\s*:\\\\s*\"({ops})\"') && self.matches('\"path\"\\\\s*:')"
    );
    let prefixes = v::PATCH_PATH_PREFIXES.join("|");
    let path = format!("self.matches('\"path\"\\\\s*:\\\\s*\"({prefixes})')");
    vec![
        rule_expr(
            object,
            format!(
                "{} + self + {}",
                cel_str("patch is not valid JSON ("),
                cel_str(")")
            ),
        ),
        rule(
            &format!("!{object} || ({operation})"),
            "patch must be a JSON Patch operation with op and path",
        ),
        rule_expr(
            &format!("!{object} || !({operation}) || {path}"),
            format!("{} + self", cel_str(&format!("{}: ", v::PATCH_PATH_PREFIX))),
        ),
    ]
}

/// Schema of `spec.patches`.
pub fn patches(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": v::MAX_PATCHES,
        "x-kubernetes-list-type": "atomic",
        "items": {
            "type": "string",
            "maxLength": v::MAX_PATCH_LENGTH,
            "x-kubernetes-validations": patch_rules(),
        },
    })
}

/// The spec-level rule: with the `Snapshot` strategy (KubeVirt applies the patches) every patch
/// must survive KubeVirt's naive `,`/`:` check. The message names the first offending patch.
pub fn naive_patch_rule() -> (String, String) {
    // Strings that are not JSON objects already fail the item rules; do not report them twice.
    let ok = format!(
        "(!p.matches('(?s)^\\\\s*[{{].*[}}]\\\\s*$') || p.matches('{}'))",
        v::NAIVE_PATCH_REGEX
    );
    let rule = format!(
        "!has(self.patches) || (has(self.strategy) && self.strategy == 'DataVolume') || \
         self.patches.all(p, {ok})"
    );
    let message = format!(
        "{} + self.patches.filter(p, !{ok})[0]",
        cel_str(&format!("patch {}: ", v::PATCH_NAIVE_CHECK))
    );
    (rule, message)
}

/// Schema of `spec.target.name`.
pub fn target_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 63,
        "x-kubernetes-validations": [rule(
            &format!("self.matches('{}')", v::DNS1123_SUBDOMAIN_REGEX),
            v::TARGET_NAME_INVALID
        )],
    })
}
