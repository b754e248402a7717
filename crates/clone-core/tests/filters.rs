//! Label and annotation filters, as the API documents them: what parses, with which message it is
//! refused, and which keys a list keeps.

// Helpers of integration tests are not `#[test]` functions, so clippy's test exemptions miss them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use clone_api::names::LAST_RESTORE_UID_ANNOTATION;
use clone_api::validation::{self as v, field};
use clone_core::filter::{Filter, FilterError, FilterSet};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn set(filters: &[&str]) -> FilterSet {
    let list: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
    FilterSet::parse(field::LABEL_FILTERS, Some(&list)).expect("filters parse")
}

fn map(keys: &[&str]) -> Map<String, Value> {
    keys.iter().map(|k| (k.to_string(), json!("v"))).collect()
}

/// The keys of `keys` that `filters` keep, in input order.
fn kept(filters: &[&str], keys: &[&str]) -> Vec<String> {
    let set = set(filters);
    keys.iter()
        .filter(|k| set.keeps(k))
        .map(|k| k.to_string())
        .collect()
}

#[test]
fn documented_valid_filters_parse_into_their_parts() {
    let cases = [
        ("*", false, "", true),
        ("some/key*", false, "some/key", true),
        ("!some/key", true, "some/key", false),
        ("!some/*", true, "some/", true),
        ("!*", true, "", true),
        ("key1", false, "key1", false),
        ("example.com/team_a-b", false, "example.com/team_a-b", false),
    ];
    for (text, negated, pattern, wildcard) in cases {
        let filter = Filter::parse(field::LABEL_FILTERS, text).expect(text);
        assert_eq!(
            filter,
            Filter {
                negated,
                pattern: pattern.to_string(),
                wildcard
            },
            "{text}"
        );
        assert_eq!(
            filter.to_string(),
            text,
            "a parsed filter prints as written"
        );
    }
}

#[test]
fn documented_invalid_filters_are_refused_with_the_api_message() {
    let f = field::ANNOTATION_FILTERS;
    let invalid = |filter: &str, why: &str| v::filter_invalid(f, filter, why);
    let cases = [
        ("", v::filter_empty(f)),
        ("!", invalid("!", v::NEGATION_ALONE)),
        ("some/*/key", invalid("some/*/key", v::WILDCARD_POSITION)),
        ("*/key", invalid("*/key", v::WILDCARD_POSITION)),
        ("key!", invalid("key!", v::NEGATION_POSITION)),
        ("some/!key", invalid("some/!key", v::NEGATION_POSITION)),
        ("!!a", invalid("!!a", v::NEGATION_POSITION)),
        ("**", invalid("**", v::WILDCARD_POSITION)),
        // Negation is checked before the wildcard, the wildcard before the characters.
        ("*!", invalid("*!", v::NEGATION_POSITION)),
        ("a*b?", invalid("a*b?", v::WILDCARD_POSITION)),
        ("a?", invalid("a?", v::KEY_CHARACTERS)),
        ("a[b]", invalid("a[b]", v::KEY_CHARACTERS)),
        ("{a}", invalid("{a}", v::KEY_CHARACTERS)),
        (
            "key with space",
            invalid("key with space", v::KEY_CHARACTERS),
        ),
        ("é", invalid("é", v::KEY_CHARACTERS)),
        ("a:b", invalid("a:b", v::KEY_CHARACTERS)),
    ];
    for (text, message) in cases {
        let error = Filter::parse(f, text).expect_err(text);
        assert_eq!(error.to_string(), message, "{text:?}");
    }
}

#[test]
fn the_error_variants_carry_their_context() {
    assert_eq!(
        Filter::parse(field::LABEL_FILTERS, "a?"),
        Err(FilterError::KeyCharacters {
            field: field::LABEL_FILTERS.to_string(),
            filter: "a?".to_string()
        })
    );
    assert_eq!(
        Filter::parse(field::TEMPLATE_LABEL_FILTERS, ""),
        Err(FilterError::Empty {
            field: field::TEMPLATE_LABEL_FILTERS.to_string()
        })
    );
}

#[test]
fn a_filter_set_reports_its_first_invalid_filter() {
    let list = vec!["*".to_string(), "a!".to_string(), "".to_string()];
    let error = FilterSet::parse(field::LABEL_FILTERS, Some(&list)).expect_err("invalid");
    assert_eq!(
        error.to_string(),
        v::filter_invalid(field::LABEL_FILTERS, "a!", v::NEGATION_POSITION)
    );
}

#[test]
fn the_seed_example_keeps_all_but_the_negated_prefix() {
    // The seed writes `someKey/*` and `anotherKey/*`; real keys have lowercase prefixes (api.md).
    let keys = [
        "somekey/a",
        "somekey/b",
        "anotherkey/x",
        "other",
        "somekeyx",
    ];
    assert_eq!(
        kept(&["*", "!somekey/*"], &keys),
        ["anotherkey/x", "other", "somekeyx"]
    );
    assert_eq!(kept(&["anotherkey/*"], &keys), ["anotherkey/x"]);
}

#[test]
fn upstream_unit_example_with_anchored_matching() {
    let keys = [
        "prefix1/something1",
        "prefix1/something2",
        "prefix2/something1",
        "prefix2/something2",
        "somePrefix/something",
        "somePrefix2/something",
    ];
    let filters = [
        "prefix*",
        "!prefix1/something2",
        "!prefix2/*",
        "somePrefix2/something",
    ];
    // `prefix*` is anchored: `somePrefix/something` does not start with `prefix` (upstream's
    // unanchored regex matched it by accident); the kept keys are still the ones upstream meant.
    assert_eq!(
        kept(&filters, &keys),
        ["prefix1/something1", "somePrefix2/something"]
    );
    assert_eq!(
        set(&filters).removed_keys(&map(&keys)),
        [
            "prefix1/something2",
            "prefix2/something1",
            "prefix2/something2",
            "somePrefix/something"
        ]
    );
}

#[test]
fn upstream_functional_example() {
    let keys = ["key1", "key2"];
    assert_eq!(kept(&["*", "!key2"], &keys), ["key1"]);
    assert_eq!(kept(&["key1"], &keys), ["key1"]);
}

#[test]
fn matching_is_exact_and_anchored() {
    let keys = ["key1", "key10", "mykey1", "key", "k.y1"];
    assert_eq!(kept(&["key1"], &keys), ["key1"]);
    assert_eq!(kept(&["key1*"], &keys), ["key1", "key10"]);
    assert_eq!(kept(&["key*"], &keys), ["key1", "key10", "key"]);
    // `.` is a dot, not "any character".
    assert_eq!(kept(&["k.y1"], &["k.y1", "key1"]), ["k.y1"]);
    // Matching is case-sensitive.
    assert_eq!(kept(&["Key1"], &keys), Vec::<String>::new());
}

#[test]
fn the_wildcard_matches_the_empty_suffix() {
    assert_eq!(
        kept(&["some/key*"], &["some/key", "some/keys", "some/ke"]),
        ["some/key", "some/keys"]
    );
}

#[test]
fn star_keeps_everything_and_negated_star_excludes_everything() {
    let keys = ["a", "b/c", "", "~x"];
    assert_eq!(kept(&["*"], &keys), keys);
    assert_eq!(kept(&["*", "!*"], &keys), Vec::<String>::new());
    assert_eq!(kept(&["!*", "a"], &keys), Vec::<String>::new());
}

#[test]
fn negation_wins_regardless_of_order() {
    let keys = ["a/1", "a/2", "b"];
    for filters in [["*", "!a/*"], ["!a/*", "*"]] {
        assert_eq!(kept(&filters, &keys), ["b"], "{filters:?}");
    }
    for filters in [["a/1", "!a/1"], ["!a/1", "a/1"]] {
        assert_eq!(kept(&filters, &keys), Vec::<String>::new(), "{filters:?}");
    }
}

#[test]
fn absent_or_empty_lists_keep_everything() {
    let keys = map(&["a", "b/c"]);
    for set in [
        FilterSet::parse(field::LABEL_FILTERS, None).expect("absent"),
        FilterSet::parse(field::LABEL_FILTERS, Some(&[])).expect("empty"),
        FilterSet::keep_all(),
    ] {
        assert!(set.keeps("anything"));
        assert!(set.removed_keys(&keys).is_empty());
        assert!(!set.only_negative());
    }
}

#[test]
fn only_negative_lists_keep_nothing_and_say_so() {
    let set = set(&["!a", "!b/*"]);
    assert!(set.only_negative());
    assert_eq!(
        set.removed_keys(&map(&["a", "b/1", "c"])),
        ["a", "b/1", "c"]
    );
    assert!(!self::set(&["*", "!a"]).only_negative());
    assert!(!self::set(&["a"]).only_negative());
}

#[test]
fn the_last_restore_uid_annotation_is_never_removed() {
    let keys = map(&[LAST_RESTORE_UID_ANNOTATION, "a"]);
    for filters in [&["!*"][..], &["a"], &["!restore.kubevirt.io/*"], &["other"]] {
        let removed = set(filters).removed_keys(&keys);
        assert!(
            !removed.iter().any(|k| k == LAST_RESTORE_UID_ANNOTATION),
            "{filters:?}"
        );
    }
}

#[test]
fn removed_keys_are_sorted() {
    let keys = map(&["z", "b", "a/x", "m"]);
    assert_eq!(set(&["keep"]).removed_keys(&keys), ["a/x", "b", "m", "z"]);
}

#[test]
fn lossy_parsing_lets_invalid_filters_match_nothing() {
    let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let lossy = |l: &[&str]| FilterSet::parse_lossy(field::LABEL_FILTERS, Some(&list(l)));
    assert!(
        !lossy(&["bad?"]).keeps("bad?"),
        "a non-empty list never turns into keep-all"
    );
    assert!(lossy(&["*", "!bad?"]).keeps("bad?"));
    assert!(FilterSet::parse_lossy(field::LABEL_FILTERS, None).keeps("x"));
    assert_eq!(lossy(&["*", "!a"]), set(&["*", "!a"]));
}

proptest! {
    /// The matcher is literal, so no character glob libraries treat as syntax may ever reach a
    /// pattern: every accepted filter's pattern is made of key characters only.
    #[test]
    fn a_parsed_pattern_holds_only_key_characters(text in "\\PC{0,12}|[!*?\\[\\]{}a-z./]{0,12}") {
        if let Ok(filter) = Filter::parse(field::LABEL_FILTERS, &text) {
            prop_assert!(filter.pattern.chars().all(v::is_key_char));
            for c in ['?', '[', ']', '{', '}', '*', '!'] {
                prop_assert!(!filter.pattern.contains(c));
            }
            prop_assert_eq!(filter.to_string(), text);
        }
    }

    /// A key is kept iff some positive filter matches it and no negative one does.
    #[test]
    fn keeps_is_the_documented_rule(
        filters in prop::collection::vec("!?[ab/]{0,3}\\*?", 1..5),
        key in "[ab/]{0,4}",
    ) {
        let parsed: Vec<Filter> = filters
            .iter()
            .filter_map(|f| Filter::parse(field::LABEL_FILTERS, f).ok())
            .collect();
        prop_assume!(parsed.len() == filters.len());
        let set = FilterSet::parse(field::LABEL_FILTERS, Some(&filters)).expect("valid");
        let positive = parsed.iter().any(|f| !f.negated && f.matches(&key));
        let negative = parsed.iter().any(|f| f.negated && f.matches(&key));
        prop_assert_eq!(set.keeps(&key), positive && !negative);
    }
}
