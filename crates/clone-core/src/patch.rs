//! JSON Patch application with KubeVirt's semantics.
//!
//! KubeVirt's restore controller joins the restore's `spec.patches` (one operation object per
//! string) into one JSON Patch and applies it with evanphx json-patch v4. That applier is RFC 6902
//! with one leniency the identity patches of upstream relied on: `replace` of a missing member of
//! an existing object behaves as `add`. A missing parent still fails, and so does `remove` of a
//! missing member.
//!
//! The `DataVolume` strategy creates the target VM without KubeVirt's restore, and the KubeVirt
//! stand-in of the testbed applies restores itself; both need the same semantics, so they live
//! here as a thin wrapper on the `json-patch` crate: [`apply_kubevirt`] adds the leniency,
//! [`apply_strict`] is plain RFC 6902. Both are atomic: on error the document is unchanged.

use json_patch::{AddOperation, PatchOperation};
use serde_json::Value;

/// Why a patch list could not be parsed or applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The string is not JSON at all.
    #[error("patch is not valid JSON ({patch}): {source}")]
    NotJson {
        /// The patch string.
        patch: String,
        /// The JSON parser's complaint.
        source: serde_json::Error,
    },
    /// The string is JSON but not one JSON Patch operation object.
    #[error("patch is not a JSON Patch operation ({patch}): {source}")]
    NotOperation {
        /// The patch string.
        patch: String,
        /// What is missing or wrong.
        source: serde_json::Error,
    },
    /// One string of a list could not be parsed.
    #[error("patch {index} cannot be parsed: {source}")]
    Unparsable {
        /// Index of the string in the list.
        index: usize,
        /// The parse error.
        source: Box<PatchError>,
    },
    /// One operation of a list does not apply to the document.
    #[error("patch {index} ({patch}) does not apply: {source}")]
    Apply {
        /// Index of the operation in the list.
        index: usize,
        /// The patch string.
        patch: String,
        /// Why the operation failed.
        source: json_patch::PatchError,
    },
}

/// Parses one patch string as one JSON Patch operation object.
pub fn parse_operation(s: &str) -> Result<PatchOperation, PatchError> {
    let value: Value = serde_json::from_str(s).map_err(|source| PatchError::NotJson {
        patch: s.to_owned(),
        source,
    })?;
    serde_json::from_value(value).map_err(|source| PatchError::NotOperation {
        patch: s.to_owned(),
        source,
    })
}

/// Applies `patches` (one operation object per string) the way KubeVirt's restore does: RFC 6902,
/// except that `replace` of a missing member of an existing object acts as `add`.
///
/// Atomic: on error `doc` is unchanged.
pub fn apply_kubevirt(doc: &mut Value, patches: &[String]) -> Result<(), PatchError> {
    apply(doc, patches, true)
}

/// Applies `patches` (one operation object per string) with plain RFC 6902 semantics.
///
/// Atomic: on error `doc` is unchanged.
pub fn apply_strict(doc: &mut Value, patches: &[String]) -> Result<(), PatchError> {
    apply(doc, patches, false)
}

fn apply(doc: &mut Value, patches: &[String], lenient: bool) -> Result<(), PatchError> {
    let operations = patches
        .iter()
        .enumerate()
        .map(|(index, s)| {
            parse_operation(s).map_err(|e| PatchError::Unparsable {
                index,
                source: Box::new(e),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Work on a copy and swap it in at the end: atomic without relying on undo logic.
    let mut working = doc.clone();
    for (index, (operation, text)) in operations.into_iter().zip(patches).enumerate() {
        let operation = if lenient {
            kubevirt_leniency(&working, operation)
        } else {
            operation
        };
        json_patch::patch(&mut working, std::slice::from_ref(&operation)).map_err(|source| {
            PatchError::Apply {
                index,
                patch: text.clone(),
                source,
            }
        })?;
    }
    *doc = working;
    Ok(())
}

/// evanphx json-patch v4: `replace` of a missing member of an existing object is an `add`.
/// Arrays get no such leniency (a missing index fails), nor does a missing parent.
fn kubevirt_leniency(doc: &Value, operation: PatchOperation) -> PatchOperation {
    let PatchOperation::Replace(replace) = operation else {
        return operation;
    };
    let parent_is_object = replace
        .path
        .split_back()
        .and_then(|(parent, _)| doc.pointer(parent.as_str()))
        .is_some_and(Value::is_object);
    if parent_is_object && doc.pointer(replace.path.as_str()).is_none() {
        PatchOperation::Add(AddOperation {
            path: replace.path,
            value: replace.value,
        })
    } else {
        PatchOperation::Replace(replace)
    }
}
