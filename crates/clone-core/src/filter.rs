//! Label and annotation filters: which keys of the source VM reach the target.
//!
//! A filter is `[!]body[*]`. It is parsed once into a typed [`Filter`] by the same code that
//! validation uses ([`crate::validate`]), and the admission policy's CEL rules are tested to agree
//! with it, so what the API server admits is exactly what the engine understands.
//!
//! Matching is a tiny typed matcher rather than a glob library: a body is compared literally
//! (`==`), or as a prefix (`starts_with`) when the filter ends in `*`. No character of the body has
//! a special meaning, so `.` is a dot and `?`, `[`, `{` (which validation rejects anyway) could
//! never act as glob syntax.
//!
//! A [`FilterSet`] evaluates one list: a key is kept iff it matches at least one positive filter
//! and no negative filter; an absent or empty list keeps everything; a list of only negative
//! filters keeps nothing. [`LAST_RESTORE_UID_ANNOTATION`] is never removed.

use clone_api::names::LAST_RESTORE_UID_ANNOTATION;
use clone_api::validation;
use serde_json::{Map, Value};

/// Why a filter string is not a valid filter. `Display` is the API's message for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter is the empty string.
    #[error("{}", validation::filter_empty(.field))]
    Empty {
        /// The JSON path of the list, e.g. `spec.labelFilters`.
        field: String,
    },
    /// The filter is exactly `!`.
    #[error("{field} filter ! is invalid: {}", validation::NEGATION_ALONE)]
    NegationAlone {
        /// The JSON path of the list.
        field: String,
    },
    /// A `!` appears after the first character.
    #[error("{}", validation::filter_invalid(.field, .filter, validation::NEGATION_POSITION))]
    NegationPosition {
        /// The JSON path of the list.
        field: String,
        /// The offending filter.
        filter: String,
    },
    /// A `*` appears before the last character.
    #[error("{}", validation::filter_invalid(.field, .filter, validation::WILDCARD_POSITION))]
    WildcardPosition {
        /// The JSON path of the list.
        field: String,
        /// The offending filter.
        filter: String,
    },
    /// The body has a character that cannot appear in a label or annotation key.
    #[error("{}", validation::filter_invalid(.field, .filter, validation::KEY_CHARACTERS))]
    KeyCharacters {
        /// The JSON path of the list.
        field: String,
        /// The offending filter.
        filter: String,
    },
}

/// One parsed filter: `[!]pattern[*]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    /// The filter started with `!`: matching keys are excluded.
    pub negated: bool,
    /// The key text between the optional `!` and `*`; only [`validation::is_key_char`] characters.
    pub pattern: String,
    /// The filter ended with `*`: `pattern` is a prefix, not the whole key.
    pub wildcard: bool,
}

impl Filter {
    /// Parses one filter of the list at `field` (e.g. [`validation::field::LABEL_FILTERS`]).
    ///
    /// The checks run in the API's order (empty, lone `!`, misplaced `!`, misplaced `*`, key
    /// characters) and the first failing one gives the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, FilterError> {
        let invalid =
            |make: fn(String, String) -> FilterError| make(field.to_owned(), text.to_owned());
        if text.is_empty() {
            return Err(FilterError::Empty {
                field: field.to_owned(),
            });
        }
        if text == "!" {
            return Err(FilterError::NegationAlone {
                field: field.to_owned(),
            });
        }
        let (negated, rest) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if rest.contains('!') {
            return Err(invalid(|field, filter| FilterError::NegationPosition {
                field,
                filter,
            }));
        }
        let (wildcard, body) = match rest.strip_suffix('*') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        if body.contains('*') {
            return Err(invalid(|field, filter| FilterError::WildcardPosition {
                field,
                filter,
            }));
        }
        if !body.chars().all(validation::is_key_char) {
            return Err(invalid(|field, filter| FilterError::KeyCharacters {
                field,
                filter,
            }));
        }
        Ok(Self {
            negated,
            pattern: body.to_owned(),
            wildcard,
        })
    }

    /// Whether the filter's pattern matches `key` (ignoring negation): exact, anchored at both
    /// ends, or a prefix match when the filter ends in `*`.
    pub fn matches(&self, key: &str) -> bool {
        if self.wildcard {
            key.starts_with(&self.pattern)
        } else {
            key == self.pattern
        }
    }
}

impl std::fmt::Display for Filter {
    /// The filter as written (`[!]pattern[*]`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let negation = if self.negated { "!" } else { "" };
        let wildcard = if self.wildcard { "*" } else { "" };
        write!(f, "{negation}{}{wildcard}", self.pattern)
    }
}

/// One filter list, ready to decide which keys of a map are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilterSet {
    /// The list was absent or empty: every key is kept.
    keep_all: bool,
    /// The parsed filters (empty when `keep_all`).
    filters: Vec<Filter>,
}

impl FilterSet {
    /// A set that keeps every key (the same as an absent list).
    pub fn keep_all() -> Self {
        Self {
            keep_all: true,
            filters: Vec::new(),
        }
    }

    /// Parses the list at `field`; the first invalid filter is the error. `None` (absent) and an
    /// empty list both keep everything.
    pub fn parse(field: &str, filters: Option<&[String]>) -> Result<Self, FilterError> {
        let Some(list) = filters.filter(|list| !list.is_empty()) else {
            return Ok(Self::keep_all());
        };
        let filters = list
            .iter()
            .map(|text| Filter::parse(field, text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            keep_all: false,
            filters,
        })
    }

    /// Parses the list, leaving out the filters that do not parse (they match nothing).
    ///
    /// For code that must produce an answer even from a spec that was never validated: a
    /// non-empty list stays non-empty in meaning, so `["bad?"]` keeps nothing rather than
    /// everything. Validated specs never reach the difference.
    pub fn parse_lossy(field: &str, filters: Option<&[String]>) -> Self {
        match filters.filter(|list| !list.is_empty()) {
            None => Self::keep_all(),
            Some(list) => Self {
                keep_all: false,
                filters: list
                    .iter()
                    .filter_map(|text| Filter::parse(field, text).ok())
                    .collect(),
            },
        }
    }

    /// The parsed filters, in list order (empty for a keep-all set).
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// Whether the list is non-empty and every filter in it is negated: such a list keeps no key
    /// at all (users usually mean `["*", "!x"]`), which the kubectl plugin warns about.
    pub fn only_negative(&self) -> bool {
        !self.keep_all && !self.filters.is_empty() && self.filters.iter().all(|f| f.negated)
    }

    /// Whether `key` is copied: it matches at least one positive filter and no negative filter
    /// (negation wins regardless of order). Absent or empty lists keep every key.
    pub fn keeps(&self, key: &str) -> bool {
        if self.keep_all {
            return true;
        }
        let mut positive = false;
        for filter in &self.filters {
            if filter.matches(key) {
                if filter.negated {
                    return false;
                }
                positive = true;
            }
        }
        positive
    }

    /// The keys of `map` this set does not keep, sorted. Never contains
    /// [`LAST_RESTORE_UID_ANNOTATION`]: KubeVirt's restore controller owns that annotation.
    pub fn removed_keys(&self, map: &Map<String, Value>) -> Vec<String> {
        let mut removed: Vec<String> = map
            .keys()
            .filter(|key| key.as_str() != LAST_RESTORE_UID_ANNOTATION && !self.keeps(key))
            .cloned()
            .collect();
        removed.sort();
        removed
    }
}
