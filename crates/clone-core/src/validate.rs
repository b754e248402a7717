//! The API's rules, checked in Rust: [`validate`] runs every create rule of the table in
//! [`crate::rules`] (the same table the admission policy is generated from). The controller runs it
//! on every clone before it acts (an invalid one fails with reason `InvalidSpec`) for clusters
//! where the policy is not installed, and for what CEL cannot express.
//!
//! The predicates below are the building blocks other parts of the engine check their own output
//! with (generated names, generated patches).

use std::sync::LazyLock;

use clone_api::validation as v;
use regex::Regex;

pub use crate::rules::{validate, validate_update};

type Compiled = LazyLock<Result<Regex, regex::Error>>;

static MAC: Compiled = LazyLock::new(|| Regex::new(v::MAC_REGEX));
static DNS1123_SUBDOMAIN: Compiled = LazyLock::new(|| Regex::new(v::DNS1123_SUBDOMAIN_REGEX));
static NAIVE_PATCH: Compiled = LazyLock::new(|| Regex::new(v::NAIVE_PATCH_REGEX));

/// Whether `text` matches a compiled constant. A constant that does not compile (a unit test
/// proves they all do) matches nothing: validation fails closed.
fn is_match(regex: &Compiled, text: &str) -> bool {
    regex.as_ref().is_ok_and(|regex| regex.is_match(text))
}

/// Whether `mac` is a 48-bit MAC with `:` or `-` separators, or empty ([`v::MAC_REGEX`]).
pub fn is_valid_mac(mac: &str) -> bool {
    is_match(&MAC, mac)
}

/// Whether `name` is a DNS-1123 subdomain of at most 63 characters (a valid target VM name).
pub fn is_valid_target_name(name: &str) -> bool {
    name.len() <= crate::names::MAX_NAME_LENGTH && is_match(&DNS1123_SUBDOMAIN, name)
}

/// Whether KubeVirt's restore admission accepts the patch string: split on `,`, every piece has
/// exactly one `:` ([`v::NAIVE_PATCH_REGEX`]).
pub fn passes_kubevirt_naive_check(patch: &str) -> bool {
    is_match(&NAIVE_PATCH, patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regex_constant_compiles() {
        for regex in [&MAC, &DNS1123_SUBDOMAIN, &NAIVE_PATCH] {
            assert!(regex.is_ok());
        }
    }
}
