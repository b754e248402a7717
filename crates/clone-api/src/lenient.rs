//! Decoding that never fails, for the specs and statuses of the KubeVirt and CDI objects vmclone
//! reads.
//!
//! A watcher decodes a whole list at once: if one object in it has a field of a shape the views in
//! [`crate::kubevirt`] do not expect (a newer KubeVirt changing a type, an object written by hand),
//! serde fails the list, the cache never syncs and every clone waits. So each top-level spec and
//! status there decodes in two steps:
//!
//! 1. the input is read as a [`serde_json::Value`] (this fails only on input that is not a
//!    document at all, which fails the whole list anyway);
//! 2. the type's derived decoder reads that value. If it fails, the result is the type's default
//!    with `unreadable` set to the error, prefixed with the path of the offending field (for
//!    example `status.volumeSnapshotStatuses[0].enabled: invalid type: string "true", expected a
//!    boolean`), and `extra` holding the object as read.
//!
//! Serialising a readable value is exactly the derived serialisation. Serialising an unreadable
//! one writes `extra`, i.e. the object as it was read, whatever was done to its typed fields since.
//! A spec or status that is not an object at all (which an API server serving KubeVirt's CRDs
//! never returns: their schemas declare both as objects) is unreadable too and is written back as
//! `{}`.
//!
//! The types derive their (de)serialisers with `#[serde(remote = "Self")]`, which makes them
//! inherent functions, and this module's crate-private `lenient!` macro implements `Serialize`,
//! `Deserialize` and [`Lenient`] on top of them.

use serde_json::Value;

use crate::kubevirt::Extra;

/// A spec or status of a KubeVirt/CDI object whose decoding never fails.
///
/// When the input did not fit the type, [`Lenient::unreadable`] says why, every typed field is at
/// its default, and the `extra` field holds the object as read (and is what is written back).
pub trait Lenient {
    /// Why this value could not be read: the path of the offending field and serde's error.
    /// `None` when it was read (or built in code).
    fn unreadable(&self) -> Option<&str>;
}

/// Runs a type's derived decoder over `raw`, tracking the path to the first error. On error,
/// returns the path (prefixed with `at`, the field holding the value, e.g. `status`) and the error.
pub(crate) fn read<'v, T>(
    raw: &'v Value,
    at: &str,
    derived: impl FnOnce(
        serde_path_to_error::Deserializer<'_, '_, &'v Value>,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, String> {
    let mut track = serde_path_to_error::Track::new();
    match derived(serde_path_to_error::Deserializer::new(raw, &mut track)) {
        Ok(value) => Ok(value),
        Err(error) => {
            let path = track.path();
            let path = match path.iter().next() {
                None => String::new(),
                Some(serde_path_to_error::Segment::Seq { .. }) => path.to_string(),
                Some(_) => format!(".{path}"),
            };
            Err(format!("{at}{path}: {error}"))
        }
    }
}

/// What an unreadable value keeps: the object as read (nothing when it is not an object).
pub(crate) fn keep(raw: Value) -> Extra {
    match raw {
        Value::Object(map) => map,
        _ => Extra::new(),
    }
}

/// Implements `Serialize`, `Deserialize` and [`Lenient`] for a struct that derives its serde
/// impls with `#[serde(remote = "Self")]` and has the fields `extra: Extra` (flattened) and
/// `unreadable: Option<String>` (skipped), and `Default`. `$at` names where the value sits in
/// its object (`"spec"`, `"status"`) and starts every `unreadable` text.
macro_rules! lenient {
    ($ty:ident at $at:literal) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self.unreadable {
                    // The derived serialiser (an inherent function, thanks to `remote = "Self"`).
                    None => $ty::serialize(self, serializer),
                    Some(_) => ::serde::Serialize::serialize(&self.extra, serializer),
                }
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let raw = <::serde_json::Value as ::serde::Deserialize>::deserialize(deserializer)?;
                Ok(
                    match $crate::lenient::read(&raw, $at, |derived| $ty::deserialize(derived)) {
                        Ok(value) => value,
                        Err(why) => $ty {
                            unreadable: Some(why),
                            extra: $crate::lenient::keep(raw),
                            ..Default::default()
                        },
                    },
                )
            }
        }

        impl $crate::lenient::Lenient for $ty {
            fn unreadable(&self) -> Option<&str> {
                self.unreadable.as_deref()
            }
        }
    };
}

pub(crate) use lenient;
