//! The sim's own applier of a restore's `spec.patches`, with the semantics KubeVirt v1.7.0's
//! restore controller gets from the JSON Patch library it uses (`github.com/evanphx/json-patch`
//! at `v5.6.0+incompatible`, the package's v4 API): independent of `clone-core`, whose applier
//! the clone controller uses, so that the stand-in checks the product instead of agreeing with it.
//!
//! KubeVirt joins the patch strings into one document, `"[\n" + patches.join(",\n") + "\n]"`, and
//! applies it to the VM's JSON. What that library does, and this module with it:
//!
//! - A path is split on `/` and its first segment ignored (so `spec/x` names the member `x` of the
//!   document); `""` names nothing. `~1` and `~0` are decoded.
//! - Every parent must exist and be an object or an array; a `null` member counts as missing.
//!   A missing parent fails every operation (`... does not apply: doc is missing path ...`).
//! - `add` sets an object member (replacing one that exists) or inserts into an array (index up
//!   to the length, `-` appends, negative indices count from the end); without `value` it adds
//!   `null`.
//! - `replace` of a missing **object member** adds it (no error); a missing array index fails.
//! - `remove` of a missing object member fails; `null` members exist.
//! - `copy` from a missing object member copies `null`; `move` from one fails (its remove does).
//! - `test` of a missing or `null` member passes against `null`; other values compare as JSON
//!   (numbers by their text: `1` is not `1.0`).
//! - Operations apply in order and the first error ends the whole patch; its text is the
//!   library's, wrapped the way KubeVirt wraps it.
//!
//! Simplified: a patch list that is not valid JSON fails with `serde_json`'s message where Go's
//! decoder has its own wording; a `test` of a missing member without any `value` (a nil
//! dereference that crashes upstream's controller) is an ordinary failed test here.

use std::fmt;

use serde_json::{Map, Value};

/// Why a restore's patches could not be applied; displays as KubeVirt's `patchVM` words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchError {
    /// The joined patches are not a JSON array of operation objects.
    Decode {
        /// The joined patch document.
        patch: String,
        /// The decoder's message.
        message: String,
    },
    /// An operation failed.
    Apply {
        /// The joined patch document.
        patch: String,
        /// The library's message.
        message: String,
    },
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode { patch, message } => {
                write!(f, "cannot decode vm patches {patch}: {message}")
            }
            Self::Apply { patch, message } => {
                write!(f, "failed to apply patch for VM {patch}: {message}")
            }
        }
    }
}

impl std::error::Error for PatchError {}

/// The patch document KubeVirt builds from a restore's `spec.patches`.
pub fn joined(patches: &[String]) -> String {
    format!("[\n{}\n]", patches.join(",\n"))
}

/// Applies `patches` to a copy of `doc`. No patches: `doc` unchanged.
pub fn apply(doc: &Value, patches: &[String]) -> Result<Value, PatchError> {
    if patches.is_empty() {
        return Ok(doc.clone());
    }
    let patch = joined(patches);
    let operations = decode(&patch).map_err(|message| PatchError::Decode {
        patch: patch.clone(),
        message,
    })?;
    let mut out = doc.clone();
    for operation in &operations {
        apply_operation(&mut out, operation).map_err(|message| PatchError::Apply {
            patch: patch.clone(),
            message,
        })?;
    }
    Ok(out)
}

/// The operations of a patch document: a JSON array whose items are objects (`null` is an empty
/// operation, as a nil Go map).
fn decode(text: &str) -> Result<Vec<Map<String, Value>>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Value::Array(items) = value else {
        return Err(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            go_kind(&value)
        ));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(map) => Ok(map),
            Value::Null => Ok(Map::new()),
            other => Err(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
                go_kind(&other)
            )),
        })
        .collect()
}

/// How Go's `encoding/json` names the JSON type of `value` in its type errors.
fn go_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `errors.Wrapf(ErrMissing, ...)`.
fn missing(context: String) -> String {
    format!("{context}: missing value")
}

/// Go's `errors.Wrapf(ErrInvalidIndex, "Unable to access invalid index: %d", index)`.
fn invalid_index(index: i64) -> String {
    format!("Unable to access invalid index: {index}: invalid index referenced")
}

/// Why a string field of an operation cannot be read.
enum FieldError {
    Missing,
    NotAString(&'static str),
}

/// A string member (`path`, `from`) of an operation; `null` counts as missing.
fn string_field(op: &Map<String, Value>, name: &str) -> Result<String, FieldError> {
    match op.get(name) {
        None | Some(Value::Null) => Err(FieldError::Missing),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(FieldError::NotAString(go_kind(other))),
    }
}

/// `path` as the library's `Path()` reports a failure to read it.
fn path_error(error: FieldError) -> String {
    match error {
        FieldError::Missing => missing("operation missing path field".into()),
        FieldError::NotAString(kind) => {
            format!("json: cannot unmarshal {kind} into Go value of type string")
        }
    }
}

/// `from` as the library's `From()` reports a failure to read it.
fn from_error(error: FieldError) -> String {
    match error {
        FieldError::Missing => missing("operation, missing from field".into()),
        FieldError::NotAString(kind) => {
            format!("json: cannot unmarshal {kind} into Go value of type string")
        }
    }
}

/// The operation's `value` (absent and `null` both mean `null`).
fn value_of(op: &Map<String, Value>) -> Value {
    op.get("value").cloned().unwrap_or(Value::Null)
}

/// Decodes one reference token (`~1` is `/`, `~0` is `~`).
fn decode_token(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.peek() {
                Some('1') => {
                    chars.next();
                    out.push('/');
                    continue;
                }
                Some('0') => {
                    chars.next();
                    out.push('~');
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// Go's `strconv.Atoi` (64-bit), with its error text.
fn atoi(text: &str) -> Result<i64, String> {
    let syntax = || format!("strconv.Atoi: parsing {text:?}: invalid syntax");
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let mut value: i64 = 0;
    for b in digits.bytes() {
        let digit = i64::from(b - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or_else(|| format!("strconv.Atoi: parsing {text:?}: value out of range"))?;
    }
    Ok(value)
}

/// The position `key` names in an array of `len` elements for reading, replacing and descending
/// (negative indices count from the end).
fn existing_index(key: &str, len: usize) -> Result<usize, String> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let mut index = atoi(key)?;
    if index < 0 {
        if index < -len {
            return Err(invalid_index(index));
        }
        index += len;
    }
    if index >= len {
        return Err(invalid_index(index));
    }
    usize::try_from(index).map_err(|_| invalid_index(index))
}

/// The member or element `key` of `container`: `Ok(None)` for a missing (or `null`) object
/// member, an error for an array index that does not exist.
fn get<'v>(container: &'v Value, key: &str) -> Result<Option<&'v Value>, String> {
    match container {
        Value::Object(map) => Ok(map.get(key).filter(|v| !v.is_null())),
        Value::Array(items) => {
            let index = existing_index(key, items.len())?;
            Ok(items.get(index).filter(|v| !v.is_null()))
        }
        _ => Ok(None),
    }
}

/// The library's `findObject`: the object or array holding the last token of `path`, and that
/// token decoded. `None` when a parent is missing or not a container.
fn parent_mut<'v>(doc: &'v mut Value, path: &str) -> Option<(&'v mut Value, String)> {
    let tokens: Vec<&str> = path.split('/').collect();
    if tokens.len() < 2 {
        return None;
    }
    let (last, parents) = tokens.split_last()?;
    let mut current = doc;
    for token in parents.iter().skip(1) {
        let key = decode_token(token);
        let next = match current {
            Value::Object(map) => map.get_mut(&key),
            Value::Array(items) => {
                let index = existing_index(&key, items.len()).ok()?;
                items.get_mut(index)
            }
            _ => None,
        }?;
        if !matches!(next, Value::Object(_) | Value::Array(_)) {
            return None;
        }
        current = next;
    }
    if !matches!(current, Value::Object(_) | Value::Array(_)) {
        return None;
    }
    Some((current, decode_token(last)))
}

fn add_to(container: &mut Value, key: &str, value: Value) -> Result<(), String> {
    match container {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
            Ok(())
        }
        Value::Array(items) => {
            if key == "-" {
                items.push(value);
                return Ok(());
            }
            let index = atoi(key)
                .map_err(|e| format!("value was not a proper array index: '{key}': {e}"))?;
            let size = i64::try_from(items.len()).unwrap_or(i64::MAX) + 1;
            let mut position = index;
            if position >= size {
                return Err(invalid_index(index));
            }
            if position < 0 {
                if position < -size {
                    return Err(invalid_index(index));
                }
                position += size;
            }
            let position = usize::try_from(position).map_err(|_| invalid_index(index))?;
            items.insert(position, value);
            Ok(())
        }
        _ => Err("unknown object type".into()),
    }
}

fn remove_from(container: &mut Value, key: &str) -> Result<Value, String> {
    match container {
        Value::Object(map) => map
            .shift_remove(key)
            .ok_or_else(|| missing(format!("Unable to remove nonexistent key: {key}"))),
        Value::Array(items) => {
            let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
            let mut index = atoi(key)?;
            if index >= len {
                return Err(invalid_index(index));
            }
            if index < 0 {
                if index < -len {
                    return Err(invalid_index(index));
                }
                index += len;
            }
            let index = usize::try_from(index).map_err(|_| invalid_index(index))?;
            Ok(items.remove(index))
        }
        _ => Err("unknown object type".into()),
    }
}

fn set_in(container: &mut Value, key: &str, value: Value) -> Result<(), String> {
    match container {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = existing_index(key, items.len())?;
            if let Some(slot) = items.get_mut(index) {
                *slot = value;
            }
            Ok(())
        }
        _ => Err("unknown object type".into()),
    }
}

/// Applies one operation to `doc`.
fn apply_operation(doc: &mut Value, op: &Map<String, Value>) -> Result<(), String> {
    let kind = match op.get("op") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => "unknown",
    };
    match kind {
        "add" => {
            let path = string_field(op, "path")
                .map_err(|_| missing("add operation failed to decode path".into()))?;
            let Some((container, key)) = parent_mut(doc, &path) else {
                return Err(missing(format!(
                    "add operation does not apply: doc is missing path: \"{path}\""
                )));
            };
            add_to(container, &key, value_of(op))
                .map_err(|e| format!("error in add for path: '{path}': {e}"))
        }
        "remove" => {
            let path = string_field(op, "path")
                .map_err(|_| missing("remove operation failed to decode path".into()))?;
            let Some((container, key)) = parent_mut(doc, &path) else {
                return Err(missing(format!(
                    "remove operation does not apply: doc is missing path: \"{path}\""
                )));
            };
            remove_from(container, &key)
                .map(drop)
                .map_err(|e| format!("error in remove for path: '{path}': {e}"))
        }
        "replace" => {
            let path = string_field(op, "path").map_err(|e| {
                format!("replace operation failed to decode path: {}", path_error(e))
            })?;
            let Some((container, key)) = parent_mut(doc, &path) else {
                return Err(missing(format!(
                    "replace operation does not apply: doc is missing path: {path}"
                )));
            };
            if get(container, &key).is_err() {
                return Err(missing(format!(
                    "replace operation does not apply: doc is missing key: {path}"
                )));
            }
            set_in(container, &key, value_of(op))
                .map_err(|e| format!("error in remove for path: '{path}': {e}"))
        }
        "move" => {
            let from = string_field(op, "from")
                .map_err(|e| format!("move operation failed to decode from: {}", from_error(e)))?;
            let Some((container, key)) = parent_mut(doc, &from) else {
                return Err(missing(format!(
                    "move operation does not apply: doc is missing from path: {from}"
                )));
            };
            get(container, &key).map_err(|e| format!("error in move for path: '{key}': {e}"))?;
            let value = remove_from(container, &key)
                .map_err(|e| format!("error in move for path: '{key}': {e}"))?;
            let path = string_field(op, "path")
                .map_err(|e| format!("move operation failed to decode path: {}", path_error(e)))?;
            let Some((container, key)) = parent_mut(doc, &path) else {
                return Err(missing(format!(
                    "move operation does not apply: doc is missing destination path: {path}"
                )));
            };
            add_to(container, &key, value)
                .map_err(|e| format!("error in move for path: '{path}': {e}"))
        }
        "test" => {
            let path = string_field(op, "path")
                .map_err(|e| format!("test operation failed to decode path: {}", path_error(e)))?;
            let Some((container, key)) = parent_mut(doc, &path) else {
                return Err(missing(format!(
                    "test operation does not apply: is missing path: {path}"
                )));
            };
            let current = get(container, &key)
                .map_err(|e| format!("error in test for path: '{path}': {e}"))?;
            let expected = op.get("value");
            let passes = match (current, expected) {
                (None, Some(Value::Null)) => true,
                (Some(current), Some(expected)) => current == expected,
                _ => false,
            };
            if passes {
                Ok(())
            } else {
                Err(format!("testing value {path} failed: test failed"))
            }
        }
        "copy" => {
            let from = string_field(op, "from")
                .map_err(|e| format!("copy operation failed to decode from: {}", from_error(e)))?;
            let Some((container, key)) = parent_mut(doc, &from) else {
                return Err(missing(format!(
                    "copy operation does not apply: doc is missing from path: {from}"
                )));
            };
            let value = get(container, &key)
                .map_err(|e| format!("error in copy for from: '{from}': {e}"))?
                .cloned()
                .unwrap_or(Value::Null);
            let path = string_field(op, "path")
                .map_err(|_| missing("copy operation failed to decode path".into()))?;
            let Some((container, key)) = parent_mut(doc, &path) else {
                return Err(missing(format!(
                    "copy operation does not apply: doc is missing destination path: {path}"
                )));
            };
            add_to(container, &key, value)
                .map_err(|e| format!("error while adding value during copy: {e}"))
        }
        other => Err(format!("Unexpected kind: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> Value {
        json!({
            "metadata": {"name": "vm", "labels": {"app": "x", "gone": null}},
            "spec": {
                "template": {"spec": {
                    "domain": {"devices": {"interfaces": [
                        {"name": "a", "macAddress": "02:00:00:00:00:01"},
                        {"name": "b"},
                    ]}},
                }},
            },
        })
    }

    fn run(patches: &[&str]) -> Result<Value, PatchError> {
        let patches: Vec<String> = patches.iter().map(|p| (*p).to_owned()).collect();
        apply(&vm(), &patches)
    }

    fn apply_error(patches: &[&str]) -> String {
        match run(patches) {
            Err(PatchError::Apply { message, .. }) => message,
            other => panic!("expected an apply error, got {other:?}"),
        }
    }

    #[test]
    fn no_patches_leave_the_document_alone() {
        assert_eq!(apply(&vm(), &[]).unwrap(), vm());
    }

    #[test]
    fn replace_of_a_missing_member_adds_it_but_not_a_missing_index() {
        let out = run(&[
            r#"{"op": "replace", "path": "/spec/template/spec/domain/devices/interfaces/1/macAddress", "value": "02-00-00-00-00-02"}"#,
            r#"{"op": "replace", "path": "/metadata/labels/team", "value": "blue"}"#,
        ])
        .unwrap();
        assert_eq!(
            out.pointer("/spec/template/spec/domain/devices/interfaces/1/macAddress"),
            Some(&json!("02-00-00-00-00-02"))
        );
        assert_eq!(out.pointer("/metadata/labels/team"), Some(&json!("blue")));
        assert_eq!(
            apply_error(&[
                r#"{"op": "replace", "path": "/spec/template/spec/domain/devices/interfaces/2", "value": {}}"#
            ]),
            "replace operation does not apply: doc is missing key: /spec/template/spec/domain/devices/interfaces/2: missing value"
        );
    }

    #[test]
    fn missing_parents_and_members_fail_with_the_librarys_words() {
        assert_eq!(
            apply_error(&[r#"{"op": "add", "path": "/metadata/annotations/a", "value": "b"}"#]),
            "add operation does not apply: doc is missing path: \"/metadata/annotations/a\": missing value"
        );
        assert_eq!(
            apply_error(&[r#"{"op": "remove", "path": "/spec/template/spec/hostname"}"#]),
            "error in remove for path: '/spec/template/spec/hostname': Unable to remove nonexistent key: hostname: missing value"
        );
        assert_eq!(
            apply_error(&[r#"{"op": "replace", "path": "/spec/x/y", "value": 1}"#]),
            "replace operation does not apply: doc is missing path: /spec/x/y: missing value"
        );
        assert_eq!(
            apply_error(&[r#"{"op": "remove", "path": "/metadata/labels/gone/x"}"#]),
            "remove operation does not apply: doc is missing path: \"/metadata/labels/gone/x\": missing value",
            "a null member is no parent"
        );
        assert_eq!(
            apply_error(&[r#"{"op": "bogus", "path": "/spec"}"#]),
            "Unexpected kind: bogus"
        );
        assert_eq!(
            apply_error(&[r#"{"path": "/spec"}"#]),
            "Unexpected kind: unknown"
        );
        assert_eq!(
            apply_error(&[r#"{"op": "add", "value": 1}"#]),
            "add operation failed to decode path: missing value"
        );
        assert_eq!(
            apply_error(&[r#"{"op": "replace", "path": 3, "value": 1}"#]),
            "replace operation failed to decode path: json: cannot unmarshal number into Go value of type string"
        );
        assert_eq!(
            apply_error(&[r#"{"op": "move", "path": "/spec/a"}"#]),
            "move operation failed to decode from: operation, missing from field: missing value"
        );
    }

    #[test]
    fn null_members_exist_for_remove_and_replace() {
        let out = run(&[r#"{"op": "remove", "path": "/metadata/labels/gone"}"#]).unwrap();
        assert!(out.pointer("/metadata/labels/gone").is_none());
        let out = run(&[r#"{"op": "test", "path": "/metadata/labels/gone", "value": null}"#]);
        assert!(out.is_ok(), "null tests equal to a null member");
        let out = run(&[r#"{"op": "test", "path": "/metadata/labels/absent", "value": null}"#]);
        assert!(out.is_ok(), "and to a missing one");
    }

    #[test]
    fn arrays_take_dash_negative_and_end_indices() {
        let out = run(&[
            r#"{"op": "add", "path": "/spec/template/spec/domain/devices/interfaces/-", "value": {"name": "c"}}"#,
            r#"{"op": "add", "path": "/spec/template/spec/domain/devices/interfaces/3", "value": {"name": "d"}}"#,
            r#"{"op": "remove", "path": "/spec/template/spec/domain/devices/interfaces/-4"}"#,
            r#"{"op": "replace", "path": "/spec/template/spec/domain/devices/interfaces/-1/name", "value": "z"}"#,
        ])
        .unwrap();
        let names: Vec<&str> = out
            .pointer("/spec/template/spec/domain/devices/interfaces")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "z"]);
        assert_eq!(
            apply_error(&[
                r#"{"op": "add", "path": "/spec/template/spec/domain/devices/interfaces/5", "value": {}}"#
            ]),
            "error in add for path: '/spec/template/spec/domain/devices/interfaces/5': Unable to access invalid index: 5: invalid index referenced"
        );
        assert_eq!(
            apply_error(&[
                r#"{"op": "add", "path": "/spec/template/spec/domain/devices/interfaces/x", "value": {}}"#
            ]),
            "error in add for path: '/spec/template/spec/domain/devices/interfaces/x': value was not a proper array index: 'x': strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            apply_error(&[
                r#"{"op": "remove", "path": "/spec/template/spec/domain/devices/interfaces/-3"}"#
            ]),
            "error in remove for path: '/spec/template/spec/domain/devices/interfaces/-3': Unable to access invalid index: -3: invalid index referenced"
        );
    }

    #[test]
    fn move_copy_and_test() {
        let out = run(&[
            r#"{"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"}"#,
            r#"{"op": "move", "from": "/metadata/labels/app", "path": "/metadata/labels/moved"}"#,
            r#"{"op": "copy", "from": "/metadata/labels/nothing", "path": "/metadata/labels/null"}"#,
            r#"{"op": "test", "path": "/metadata/labels/moved", "value": "x"}"#,
        ])
        .unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"gone": null, "copy": "x", "moved": "x", "null": null})
        );
        assert_eq!(
            apply_error(&[r#"{"op": "test", "path": "/metadata/name", "value": "other"}"#]),
            "testing value /metadata/name failed: test failed"
        );
        assert_eq!(
            apply_error(&[
                r#"{"op": "move", "from": "/metadata/labels/none", "path": "/metadata/labels/x"}"#
            ]),
            "error in move for path: 'none': Unable to remove nonexistent key: none: missing value"
        );
        assert_eq!(
            apply_error(&[r#"{"op": "move", "from": "/metadata", "path": "/metadata/x"}"#]),
            "move operation does not apply: doc is missing destination path: /metadata/x: missing value"
        );
        assert!(
            run(&[r#"{"op": "test", "path": "/spec/template/spec/domain/devices/interfaces/0/name", "value": "a"}"#])
                .is_ok()
        );
    }

    #[test]
    fn paths_follow_the_librarys_splitting_and_decoding() {
        // The first segment is ignored: `spec/x` is the top-level member `x`.
        let out = run(&[r#"{"op": "add", "path": "spec/x", "value": 1}"#]).unwrap();
        assert_eq!(out["x"], 1);
        assert_eq!(
            apply_error(&[r#"{"op": "add", "path": "", "value": 1}"#]),
            "add operation does not apply: doc is missing path: \"\": missing value"
        );
        let out = run(&[
            r#"{"op": "add", "path": "/metadata/labels/kubevirt.io~1vm", "value": "a"}"#,
            r#"{"op": "add", "path": "/metadata/labels/t~0~01", "value": "b"}"#,
        ])
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["kubevirt.io/vm"], "a");
        assert_eq!(out["metadata"]["labels"]["t~~1"], "b");
    }

    #[test]
    fn the_patches_are_one_document_joined_by_kubevirt() {
        // Two operations in one string still apply, as upstream's textual join allows.
        let out = run(&[
            r#"{"op": "add", "path": "/metadata/labels/a", "value": "1"}, {"op": "add", "path": "/metadata/labels/b", "value": "2"}"#,
        ])
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["b"], "2");
        let err = run(&[r#""just a string""#]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode vm patches [\n\"just a string\"\n]: json: cannot unmarshal string into Go value of type jsonpatch.Operation"
        );
        let err = run(&[r#"{"op": "remove", "path": "/nothing"}"#]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to apply patch for VM [\n{\"op\": \"remove\", \"path\": \"/nothing\"}\n]: error in remove for path: '/nothing': Unable to remove nonexistent key: nothing: missing value"
        );
        assert!(matches!(run(&["{"]), Err(PatchError::Decode { .. })));
    }

    #[test]
    fn an_error_leaves_no_partial_result() {
        let err = run(&[
            r#"{"op": "add", "path": "/metadata/labels/a", "value": "1"}"#,
            r#"{"op": "remove", "path": "/metadata/nothing"}"#,
        ]);
        assert!(err.is_err());
    }

    #[test]
    fn atoi_is_gos() {
        assert_eq!(atoi("+7"), Ok(7));
        assert_eq!(atoi("-007"), Ok(-7));
        assert!(atoi("").is_err());
        assert!(atoi("1.0").is_err());
        assert_eq!(
            atoi("99999999999999999999"),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".into())
        );
    }
}
