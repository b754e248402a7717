//! The validation rules of a clone, in one table that both enforcement points read.
//!
//! Each [`Rule`] carries a CEL expression (with its message expression) and a Rust check that
//! computes the same verdict and the same message:
//!
//! - [`crate::policy`] turns the table into the ValidatingAdmissionPolicy shipped in
//!   `manifests/`, so the API server refuses an invalid clone at `kubectl create`;
//! - [`validate`] runs the Rust checks, so the controller fails an invalid clone with
//!   `InvalidSpec` on clusters where the policy is not installed.
//!
//! The CEL and the Rust check of a rule use the same regular expressions (RE2 and Rust's `regex`
//! agree on them), and a message is built from one template with the offending item, value or
//! index filled in, so the two cannot drift; `tests/rules_agree.rs` evaluates both on generated
//! clones. A few checks CEL cannot express (it cannot parse JSON) have no CEL and run in the
//! controller only ([`Rule::controller_only`]).
//!
//! Rules apply at create (the spec and the annotations cannot change afterwards, which two update
//! rules enforce), except the unknown-annotation rule, which applies to updates too. The API server
//! reports the first failing rule of the table; [`validate`] returns every failing rule in table
//! order, so its first message is the one `kubectl` shows.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use clone_api::extensions::{
    self, CloneExtensions, CloneStrategy, SOURCE_NAMESPACE, STRATEGY, TARGET_RUN_STRATEGY,
    TargetRunStrategy,
};
use clone_api::names::{
    KUBEVIRT_GROUP, SNAPSHOT_GROUP, VIRTUAL_MACHINE_KIND, VIRTUAL_MACHINE_SNAPSHOT_KIND,
};
use clone_api::v1beta1::{VirtualMachineClone, VirtualMachineCloneSpec, VolumeNamePolicy};
use clone_api::validation::{self as v, field};
use regex::Regex;

use crate::patch::parse_operation;

/// When the API server applies a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operations {
    /// At create only (the checked fields are immutable afterwards).
    Create,
    /// At update only (immutability).
    Update,
    /// At create and at update.
    CreateAndUpdate,
}

/// A CEL expression and the message expression the API server shows when it is false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cel {
    /// True when the clone passes. Variables: `object`, `oldObject`, `request`.
    pub expression: String,
    /// A CEL string expression: the message.
    pub message_expression: String,
}

type ObjectCheck = Box<dyn Fn(&VirtualMachineClone) -> Option<String> + Send + Sync>;
type UpdateCheck =
    Box<dyn Fn(&VirtualMachineClone, &VirtualMachineClone) -> Option<String> + Send + Sync>;

enum Check {
    Object(ObjectCheck),
    Update(UpdateCheck),
}

/// One rule of the table.
pub struct Rule {
    /// A stable name, e.g. `spec.labelFilters/empty`.
    pub id: String,
    /// When the API server applies it.
    pub operations: Operations,
    /// The CEL, or `None` for a check only the controller can make.
    pub cel: Option<Cel>,
    check: Check,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("id", &self.id)
            .field("operations", &self.operations)
            .field("cel", &self.cel)
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// The message when `clone` breaks this rule at create; `None` when it passes (or the rule
    /// applies to updates only).
    pub fn check_create(&self, clone: &VirtualMachineClone) -> Option<String> {
        match (&self.check, self.operations) {
            (Check::Object(check), Operations::Create | Operations::CreateAndUpdate) => {
                check(clone)
            }
            _ => None,
        }
    }

    /// The message when changing `old` into `new` breaks this rule; `None` when it passes (or the
    /// rule applies to creates only).
    pub fn check_update(
        &self,
        old: &VirtualMachineClone,
        new: &VirtualMachineClone,
    ) -> Option<String> {
        match (&self.check, self.operations) {
            (Check::Update(check), _) => check(old, new),
            (Check::Object(check), Operations::CreateAndUpdate | Operations::Update) => check(new),
            _ => None,
        }
    }

    /// Whether only the controller checks this rule (CEL cannot express it).
    pub fn controller_only(&self) -> bool {
        self.cel.is_none()
    }
}

/// Every rule, in the order the admission policy lists them.
pub fn rules() -> &'static [Rule] {
    static RULES: LazyLock<Vec<Rule>> = LazyLock::new(build);
    &RULES
}

/// Checks every create rule on `clone`; the messages of the failing ones in table order, each once
/// (a controller-only rule may find what a CEL rule already reported).
pub fn validate(clone: &VirtualMachineClone) -> Result<(), Vec<String>> {
    let mut errors: Vec<String> = Vec::new();
    for message in rules().iter().filter_map(|r| r.check_create(clone)) {
        if !errors.contains(&message) {
            errors.push(message);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks every update rule on the change from `old` to `new`.
pub fn validate_update(
    old: &VirtualMachineClone,
    new: &VirtualMachineClone,
) -> Result<(), Vec<String>> {
    let errors: Vec<String> = rules()
        .iter()
        .filter_map(|r| r.check_update(old, new))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// Regular expressions, shared by CEL and Rust.

/// A filter with `!` after its first character.
const NEGATION_MISPLACED: &str = r"(?s)^.+!";
/// A filter with `*` before its last character.
const WILDCARD_MISPLACED: &str = r"(?s)[*].";
/// A filter made of key characters, an optional leading `!` and trailing `*`.
const FILTER_CHARACTERS: &str = r"^!?[A-Za-z0-9._/-]*[*]?$";
/// A string that looks like one JSON object (CEL cannot parse JSON).
const JSON_OBJECT_LIKE: &str = r"(?s)^\s*[{].*[}]\s*$";
/// A serial with a character KubeVirt's restore admission splits on.
const SERIAL_SEPARATOR: &str = "[,:]";

fn op_regex() -> String {
    format!(r#""op"\s*:\s*"({})""#, v::PATCH_OPS.join("|"))
}
const PATH_KEY: &str = r#""path"\s*:"#;
fn path_prefix_regex() -> String {
    format!(r#""path"\s*:\s*"({})"#, v::PATCH_PATH_PREFIXES.join("|"))
}

/// Rust's side of `x.matches(re)`: an unanchored search, like RE2's. A pattern that does not
/// compile (a unit test proves they all do) matches nothing.
fn matches(re: &str, text: &str) -> bool {
    static CACHE: LazyLock<std::sync::Mutex<BTreeMap<String, Option<Regex>>>> =
        LazyLock::new(Default::default);
    let Ok(mut cache) = CACHE.lock() else {
        return false;
    };
    if !cache.contains_key(re) {
        cache.insert(re.to_owned(), Regex::new(re).ok());
    }
    cache
        .get(re)
        .and_then(Option::as_ref)
        .is_some_and(|r| r.is_match(text))
}

// ---------------------------------------------------------------------------------------------
// CEL text.

/// A CEL string literal (double-quoted).
fn lit(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `<x>.matches('<re>')`
fn cel_matches(x: &str, re: &str) -> String {
    format!("{x}.matches({})", lit(re))
}

/// Placeholders of a message template (never in a real message).
const ITEM: &str = "\u{1}item\u{1}";
const VALUE: &str = "\u{1}value\u{1}";
const INDEX: &str = "\u{1}index\u{1}";

/// The CEL message expression of a template: its text as literals, its placeholders as the given
/// CEL expressions.
fn cel_message(template: &str, item: &str, value: &str, index: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some((at, marker)) = [ITEM, VALUE, INDEX]
        .iter()
        .filter_map(|m| rest.find(m).map(|at| (at, *m)))
        .min()
    {
        if at > 0 {
            parts.push(lit(&rest[..at]));
        }
        parts.push(match marker {
            m if m == ITEM => item.to_owned(),
            m if m == VALUE => value.to_owned(),
            _ => format!("string({index})"),
        });
        rest = &rest[at + marker.len()..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(lit(rest));
    }
    parts.join(" + ")
}

/// `has(a.b) && has(a.b.c)` for the path `a.b.c` below `object`.
fn cel_has(path: &str) -> String {
    let mut prefix = String::from("object");
    let mut tests = Vec::new();
    for part in path.split('.') {
        tests.push(format!("has({prefix}.{part})"));
        prefix = format!("{prefix}.{part}");
    }
    tests.join(" && ")
}

/// The value of annotation `key` on `o` (`object` or `oldObject`), `''` when absent.
fn cel_annotation(o: &str, key: &str) -> String {
    format!(
        "(has({o}.metadata.annotations) && {k} in {o}.metadata.annotations ? {o}.metadata.annotations[{k}] : '')",
        k = lit(key)
    )
}

/// Whether annotation `key` is set on `object`.
fn cel_annotated(key: &str) -> String {
    format!(
        "(has(object.metadata.annotations) && {} in object.metadata.annotations)",
        lit(key)
    )
}

/// A CEL list literal of strings.
fn cel_list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|i| lit(i)).collect();
    format!("[{}]", items.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Rule builders.

fn fill(template: &str, item: &str, value: &str, index: usize) -> String {
    template
        .replace(ITEM, item)
        .replace(VALUE, value)
        .replace(INDEX, &index.to_string())
}

/// A rule on the whole clone with a message that names nothing variable.
fn whole(
    id: &str,
    expression: String,
    message: &str,
    passes: impl Fn(&VirtualMachineClone) -> bool + Send + Sync + 'static,
) -> Rule {
    let message_owned = message.to_owned();
    Rule {
        id: id.to_owned(),
        operations: Operations::Create,
        cel: Some(Cel {
            expression,
            message_expression: lit(message),
        }),
        check: Check::Object(Box::new(move |c| {
            (!passes(c)).then(|| message_owned.clone())
        })),
    }
}

/// A rule on a whole-clone value (`value_cel` in CEL, `value` in Rust) whose message names it.
fn on_value(
    id: &str,
    expression: String,
    template: String,
    value_cel: String,
    check: impl Fn(&VirtualMachineClone) -> Option<String> + Send + Sync + 'static,
) -> Rule {
    let message_expression = cel_message(&template, "", &value_cel, "0");
    Rule {
        id: id.to_owned(),
        operations: Operations::Create,
        cel: Some(Cel {
            expression,
            message_expression,
        }),
        check: Check::Object(Box::new(move |c| {
            check(c).map(|value| fill(&template, "", &value, 0))
        })),
    }
}

type ListOf = fn(&VirtualMachineCloneSpec) -> Option<&Vec<String>>;

/// A rule on every item of an optional string list: `passes_cel` over the variable `x`, the
/// message names the first failing item (and its index).
fn each_item(
    id: String,
    path: &str,
    list: ListOf,
    passes_cel: &str,
    passes: impl Fn(&str) -> bool + Send + Sync + 'static,
    template: String,
) -> Rule {
    each_item_unless(id, path, list, passes_cel, passes, template, None)
}

/// A clone-wide condition that exempts it from a rule: CEL, and the same in Rust.
type Exemption = (String, fn(&VirtualMachineClone) -> bool);

/// [`each_item`], except for clones the exemption covers.
fn each_item_unless(
    id: String,
    path: &str,
    list: ListOf,
    passes_cel: &str,
    passes: impl Fn(&str) -> bool + Send + Sync + 'static,
    template: String,
    exemption: Option<Exemption>,
) -> Rule {
    let list_cel = format!("object.{path}");
    let first_bad = format!("{list_cel}.filter(x, !({passes_cel}))[0]");
    let (exempt_cel, exempt) = match exemption {
        Some((cel, rust)) => (format!("{cel} || "), Some(rust)),
        None => (String::new(), None),
    };
    let expression = format!(
        "{exempt_cel}!({}) || {list_cel}.all(x, {passes_cel})",
        cel_has(path)
    );
    let message_expression = cel_message(
        &template,
        &first_bad,
        "",
        &format!("{list_cel}.indexOf({first_bad})"),
    );
    Rule {
        id,
        operations: Operations::Create,
        cel: Some(Cel {
            expression,
            message_expression,
        }),
        check: Check::Object(Box::new(move |c| {
            if exempt.is_some_and(|exempt| exempt(c)) {
                return None;
            }
            let items = list(&c.spec)?;
            let (index, bad) = items.iter().enumerate().find(|(_, x)| !passes(x))?;
            Some(fill(&template, bad, "", index))
        })),
    }
}

fn build() -> Vec<Rule> {
    let mut rules = Vec::new();
    filter_rules(&mut rules);
    source_and_target_rules(&mut rules);
    identity_rules(&mut rules);
    patch_rules(&mut rules);
    annotation_rules(&mut rules);
    update_rules(&mut rules);
    rules
}

fn filter_rules(rules: &mut Vec<Rule>) {
    let lists: [(&str, &str, ListOf); 4] = [
        (field::LABEL_FILTERS, "spec.labelFilters", |s| {
            s.label_filters.as_ref()
        }),
        (field::ANNOTATION_FILTERS, "spec.annotationFilters", |s| {
            s.annotation_filters.as_ref()
        }),
        (
            field::TEMPLATE_LABEL_FILTERS,
            "spec.template.labelFilters",
            |s| s.template.as_ref().and_then(|t| t.label_filters.as_ref()),
        ),
        (
            field::TEMPLATE_ANNOTATION_FILTERS,
            "spec.template.annotationFilters",
            |s| {
                s.template
                    .as_ref()
                    .and_then(|t| t.annotation_filters.as_ref())
            },
        ),
    ];
    for (name, path, list) in lists {
        let negation = cel_matches("x", NEGATION_MISPLACED);
        let wildcard = cel_matches("x", WILDCARD_MISPLACED);
        let characters = cel_matches("x", FILTER_CHARACTERS);
        rules.push(each_item(
            format!("{name}/empty"),
            path,
            list,
            "x != ''",
            |x| !x.is_empty(),
            v::filter_empty(name),
        ));
        rules.push(each_item(
            format!("{name}/negation-alone"),
            path,
            list,
            "x != '!'",
            |x| x != "!",
            v::filter_invalid(name, "!", v::NEGATION_ALONE),
        ));
        rules.push(each_item(
            format!("{name}/negation-position"),
            path,
            list,
            &format!("x == '!' || !{negation}"),
            |x| x == "!" || !matches(NEGATION_MISPLACED, x),
            v::filter_invalid(name, ITEM, v::NEGATION_POSITION),
        ));
        rules.push(each_item(
            format!("{name}/wildcard-position"),
            path,
            list,
            &format!("!{wildcard}"),
            |x| !matches(WILDCARD_MISPLACED, x),
            v::filter_invalid(name, ITEM, v::WILDCARD_POSITION),
        ));
        rules.push(each_item(
            format!("{name}/characters"),
            path,
            list,
            &format!("x == '' || x == '!' || {negation} || {wildcard} || {characters}"),
            |x| {
                x.is_empty()
                    || x == "!"
                    || matches(NEGATION_MISPLACED, x)
                    || matches(WILDCARD_MISPLACED, x)
                    || matches(FILTER_CHARACTERS, x)
            },
            v::filter_invalid(name, ITEM, v::KEY_CHARACTERS),
        ));
    }
}

/// Whether the clone's source is in another namespace (the annotation names one that is not the
/// clone's own).
fn cross_namespace(c: &VirtualMachineClone) -> bool {
    c.source_namespace()
        .is_some_and(|ns| Some(ns) != c.metadata.namespace.as_deref())
}

fn source_and_target_rules(rules: &mut Vec<Rule>) {
    let kinds = cel_list(&[VIRTUAL_MACHINE_KIND, VIRTUAL_MACHINE_SNAPSHOT_KIND]);
    rules.push(whole(
        "spec.source/kind",
        format!("object.spec.source.kind in {kinds}"),
        v::SOURCE_KIND_UNSUPPORTED,
        |c| {
            [VIRTUAL_MACHINE_KIND, VIRTUAL_MACHINE_SNAPSHOT_KIND]
                .contains(&c.spec.source.kind.as_str())
        },
    ));
    rules.push(whole(
        "spec.source/apiGroup-empty",
        "has(object.spec.source.apiGroup) && object.spec.source.apiGroup != ''".into(),
        v::SOURCE_API_GROUP_EMPTY,
        |c| {
            c.spec
                .source
                .api_group
                .as_deref()
                .is_some_and(|g| !g.is_empty())
        },
    ));
    rules.push(whole(
        "spec.source/apiGroup-kind",
        format!(
            "!has(object.spec.source.apiGroup) || object.spec.source.apiGroup == '' || \
             !(object.spec.source.kind in {kinds}) || \
             object.spec.source.apiGroup == (object.spec.source.kind == {vm} ? {kv} : {snap})",
            vm = lit(VIRTUAL_MACHINE_KIND),
            kv = lit(KUBEVIRT_GROUP),
            snap = lit(SNAPSHOT_GROUP),
        ),
        v::SOURCE_API_GROUP_MISMATCH,
        |c| {
            let s = &c.spec.source;
            let expected = match s.kind.as_str() {
                VIRTUAL_MACHINE_KIND => KUBEVIRT_GROUP,
                VIRTUAL_MACHINE_SNAPSHOT_KIND => SNAPSHOT_GROUP,
                _ => return true,
            };
            s.api_group
                .as_deref()
                .is_none_or(|g| g.is_empty() || g == expected)
        },
    ));
    rules.push(whole(
        "spec.source/name",
        "object.spec.source.name != ''".into(),
        v::SOURCE_NAME_EMPTY,
        |c| !c.spec.source.name.is_empty(),
    ));
    rules.push(whole(
        "spec.target/kind",
        format!(
            "!has(object.spec.target) || object.spec.target.kind == {}",
            lit(VIRTUAL_MACHINE_KIND)
        ),
        v::TARGET_KIND_UNSUPPORTED,
        |c| {
            c.spec
                .target
                .as_ref()
                .is_none_or(|t| t.kind == VIRTUAL_MACHINE_KIND)
        },
    ));
    rules.push(whole(
        "spec.target/apiGroup",
        format!(
            "!has(object.spec.target) || !has(object.spec.target.apiGroup) || \
             object.spec.target.apiGroup == {}",
            lit(KUBEVIRT_GROUP)
        ),
        v::TARGET_API_GROUP_INVALID,
        |c| {
            c.spec
                .target
                .as_ref()
                .and_then(|t| t.api_group.as_deref())
                .is_none_or(|g| g == KUBEVIRT_GROUP)
        },
    ));
    rules.push(whole(
        "spec.target/name",
        format!(
            "!has(object.spec.target) || (size(object.spec.target.name) <= {max} && {re})",
            max = crate::names::MAX_NAME_LENGTH,
            re = cel_matches("object.spec.target.name", v::DNS1123_SUBDOMAIN_REGEX),
        ),
        v::TARGET_NAME_INVALID,
        |c| {
            c.spec.target.as_ref().is_none_or(|t| {
                t.name.len() <= crate::names::MAX_NAME_LENGTH
                    && matches(v::DNS1123_SUBDOMAIN_REGEX, &t.name)
            })
        },
    ));
    rules.push(whole(
        "spec.target/equals-source",
        format!(
            "!has(object.spec.target) || object.spec.source.kind != {vm} || \
             ({annotated} && {ns} != object.metadata.namespace) || \
             object.spec.target.name != object.spec.source.name",
            vm = lit(VIRTUAL_MACHINE_KIND),
            annotated = cel_annotated(SOURCE_NAMESPACE),
            ns = cel_annotation("object", SOURCE_NAMESPACE),
        ),
        v::TARGET_EQUALS_SOURCE,
        |c| {
            c.spec.target.as_ref().is_none_or(|t| {
                c.spec.source.kind != VIRTUAL_MACHINE_KIND
                    || cross_namespace(c)
                    || t.name != c.spec.source.name
            })
        },
    ));
}

fn identity_rules(rules: &mut Vec<Rule>) {
    let macs = "object.spec.newMacAddresses";
    let bad = format!(
        "{macs}.filter(k, !{})[0]",
        cel_matches(&format!("{macs}[k]"), v::MAC_REGEX)
    );
    let template = v::malformed_mac(ITEM, VALUE);
    let message_expression = cel_message(&template, &bad, &format!("{macs}[{bad}]"), "0");
    rules.push(Rule {
        id: "spec.newMacAddresses/format".into(),
        operations: Operations::Create,
        cel: Some(Cel {
            expression: format!(
                "!has({macs}) || {macs}.all(k, {})",
                cel_matches(&format!("{macs}[k]"), v::MAC_REGEX)
            ),
            message_expression,
        }),
        check: Check::Object(Box::new(move |c| {
            let macs = c.spec.new_mac_addresses.as_ref()?;
            let (interface, mac) = macs.iter().find(|(_, mac)| !matches(v::MAC_REGEX, mac))?;
            Some(fill(&template, interface, mac, 0))
        })),
    });
    rules.push(whole(
        "spec.newSMBiosSerial/separators",
        format!(
            "!has(object.spec.newSMBiosSerial) || !{}",
            cel_matches("object.spec.newSMBiosSerial", SERIAL_SEPARATOR)
        ),
        v::SERIAL_SEPARATORS,
        |c| {
            c.spec
                .new_smbios_serial
                .as_deref()
                .is_none_or(|s| !matches(SERIAL_SEPARATOR, s))
        },
    ));
    let known: Vec<&str> = VolumeNamePolicy::KNOWN.iter().map(|p| p.as_str()).collect();
    rules.push(on_value(
        "spec.volumeNamePolicy/known",
        format!(
            "!has(object.spec.volumeNamePolicy) || object.spec.volumeNamePolicy in {}",
            cel_list(&known)
        ),
        v::volume_name_policy_unknown(VALUE),
        "object.spec.volumeNamePolicy".into(),
        |c| match &c.spec.volume_name_policy {
            Some(VolumeNamePolicy::Other(value)) => Some(value.clone()),
            _ => None,
        },
    ));
}

/// Whether the DataVolume strategy is chosen (CEL).
fn cel_data_volume() -> String {
    format!(
        "{} == {}",
        cel_annotation("object", STRATEGY),
        lit(CloneStrategy::DataVolume.as_str())
    )
}

fn patch_rules(rules: &mut Vec<Rule>) {
    let patches: ListOf = |s| s.patches.as_ref();
    let object = cel_matches("x", JSON_OBJECT_LIKE);
    let operation = format!(
        "{} && {}",
        cel_matches("x", &op_regex()),
        cel_matches("x", PATH_KEY)
    );
    let prefix = cel_matches("x", &path_prefix_regex());
    let is_operation = |x: &str| matches(&op_regex(), x) && matches(PATH_KEY, x);
    rules.push(each_item(
        "spec.patches/json".into(),
        "spec.patches",
        patches,
        &object,
        |x| matches(JSON_OBJECT_LIKE, x),
        v::patch_not_json(ITEM),
    ));
    rules.push(each_item(
        "spec.patches/operation".into(),
        "spec.patches",
        patches,
        &format!("!{object} || ({operation})"),
        move |x| !matches(JSON_OBJECT_LIKE, x) || is_operation(x),
        v::patch_not_operation(INDEX),
    ));
    rules.push(each_item(
        "spec.patches/path".into(),
        "spec.patches",
        patches,
        &format!("!{object} || !({operation}) || {prefix}"),
        move |x| {
            !matches(JSON_OBJECT_LIKE, x) || !is_operation(x) || matches(&path_prefix_regex(), x)
        },
        v::patch_path_invalid(ITEM),
    ));
    // KubeVirt's restore applies the patches unless the DataVolume strategy builds the VM itself
    // (`Auto` may pick the restore, so it must pass too).
    rules.push(each_item_unless(
        "spec.patches/kubevirt-restore".into(),
        "spec.patches",
        patches,
        &format!("!{object} || {}", cel_matches("x", v::NAIVE_PATCH_REGEX)),
        |x| !matches(JSON_OBJECT_LIKE, x) || matches(v::NAIVE_PATCH_REGEX, x),
        v::patch_rejected_by_kubevirt(INDEX, ITEM),
        Some((cel_data_volume(), |c| {
            c.strategy() == Ok(CloneStrategy::DataVolume)
        })),
    ));
    // CEL cannot parse JSON: the exact check (a complete JSON Patch operation: `value` or `from`
    // where the op needs one, a valid JSON pointer) is the controller's.
    rules.push(Rule {
        id: "spec.patches/complete".into(),
        operations: Operations::Create,
        cel: None,
        check: Check::Object(Box::new(|c| {
            let patches = c.spec.patches.as_ref()?;
            patches.iter().enumerate().find_map(|(index, patch)| {
                match serde_json::from_str::<serde_json::Value>(patch) {
                    Err(_) => Some(v::patch_not_json(patch)),
                    Ok(_) => parse_operation(patch)
                        .err()
                        .map(|_| v::patch_not_operation(index)),
                }
            })
        })),
    });
}

/// Annotation `key`, when set, has one of the values `all`; `unknown` is the Rust side (the value
/// it does not know).
fn known_value(
    key: &'static str,
    all: &[&str],
    unknown: fn(&VirtualMachineClone) -> Option<String>,
) -> Rule {
    let suffix = key.trim_start_matches(extensions::PREFIX);
    on_value(
        &format!("metadata.annotations/{suffix}"),
        format!(
            "!{} || {} in {}",
            cel_annotated(key),
            cel_annotation("object", key),
            cel_list(all)
        ),
        v::annotation_value_unknown(key, all, VALUE),
        cel_annotation("object", key),
        unknown,
    )
}

fn annotation_rules(rules: &mut Vec<Rule>) {
    let known = cel_list(&extensions::KNOWN);
    let unknown_cel = format!(
        "object.metadata.annotations.filter(k, k.startsWith({}) && !(k in {known}))[0]",
        lit(extensions::PREFIX)
    );
    let template = v::annotation_unknown(ITEM);
    rules.push(Rule {
        id: "metadata.annotations/unknown".into(),
        operations: Operations::CreateAndUpdate,
        cel: Some(Cel {
            expression: format!(
                "!has(object.metadata.annotations) || object.metadata.annotations.all(k, \
                 !k.startsWith({}) || k in {known})",
                lit(extensions::PREFIX)
            ),
            message_expression: cel_message(&template, &unknown_cel, "", "0"),
        }),
        check: Check::Object(Box::new(move |c| {
            c.unknown_extensions()
                .first()
                .map(|key| fill(&template, key, "", 0))
        })),
    });
    let strategies: Vec<&str> = CloneStrategy::ALL.iter().map(|s| s.as_str()).collect();
    rules.push(known_value(STRATEGY, &strategies, |c| {
        c.strategy().err().map(|e| e.value)
    }));
    let run: Vec<&str> = TargetRunStrategy::ALL.iter().map(|s| s.as_str()).collect();
    rules.push(known_value(TARGET_RUN_STRATEGY, &run, |c| {
        c.target_run_strategy().err().map(|e| e.value)
    }));
    rules.push(on_value(
        "metadata.annotations/source-namespace",
        format!(
            "!{annotated} || (size({ns}) <= {max} && {re})",
            annotated = cel_annotated(SOURCE_NAMESPACE),
            ns = cel_annotation("object", SOURCE_NAMESPACE),
            max = crate::names::MAX_NAME_LENGTH,
            re = cel_matches(
                &cel_annotation("object", SOURCE_NAMESPACE),
                v::DNS1123_LABEL_REGEX
            ),
        ),
        v::source_namespace_invalid(VALUE),
        cel_annotation("object", SOURCE_NAMESPACE),
        |c| {
            c.source_namespace()
                .filter(|ns| {
                    ns.len() > crate::names::MAX_NAME_LENGTH || !matches(v::DNS1123_LABEL_REGEX, ns)
                })
                .map(str::to_owned)
        },
    ));
    let crossing: Vec<&str> = [CloneStrategy::DataVolume, CloneStrategy::Auto]
        .iter()
        .map(|s| s.as_str())
        .collect();
    rules.push(whole(
        "metadata.annotations/source-namespace-strategy",
        format!(
            "!{} || {} in {}",
            cel_annotated(SOURCE_NAMESPACE),
            cel_annotation("object", STRATEGY),
            cel_list(&crossing)
        ),
        v::SOURCE_NAMESPACE_NEEDS_DATAVOLUME,
        |c| {
            c.source_namespace().is_none()
                || matches!(
                    c.strategy(),
                    Ok(CloneStrategy::DataVolume | CloneStrategy::Auto)
                )
        },
    ));
    rules.push(whole(
        "metadata.annotations/data-volume-source",
        format!(
            "!({}) || object.spec.source.kind == {}",
            cel_data_volume(),
            lit(VIRTUAL_MACHINE_KIND)
        ),
        v::DATAVOLUME_NEEDS_VM_SOURCE,
        |c| {
            c.strategy() != Ok(CloneStrategy::DataVolume)
                || c.spec.source.kind == VIRTUAL_MACHINE_KIND
        },
    ));
}

fn update_rules(rules: &mut Vec<Rule>) {
    rules.push(Rule {
        id: "spec/immutable".into(),
        operations: Operations::Update,
        cel: Some(Cel {
            expression: "object.spec == oldObject.spec".into(),
            message_expression: lit(v::SPEC_IMMUTABLE),
        }),
        check: Check::Update(Box::new(|old, new| {
            (old.spec != new.spec).then(|| v::SPEC_IMMUTABLE.to_owned())
        })),
    });
    for key in extensions::KNOWN {
        let message = v::annotation_immutable(key);
        let value = move |c: &VirtualMachineClone| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
                .unwrap_or_default()
        };
        rules.push(Rule {
            id: format!("metadata.annotations/{key}/immutable"),
            operations: Operations::Update,
            cel: Some(Cel {
                expression: format!(
                    "{} == {}",
                    cel_annotation("object", key),
                    cel_annotation("oldObject", key)
                ),
                message_expression: lit(&message),
            }),
            check: Check::Update(Box::new(move |old, new| {
                (value(old) != value(new)).then(|| message.clone())
            })),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regex_compiles() {
        for re in [
            NEGATION_MISPLACED,
            WILDCARD_MISPLACED,
            FILTER_CHARACTERS,
            JSON_OBJECT_LIKE,
            SERIAL_SEPARATOR,
            PATH_KEY,
            v::MAC_REGEX,
            v::NAIVE_PATCH_REGEX,
            v::DNS1123_LABEL_REGEX,
            v::DNS1123_SUBDOMAIN_REGEX,
            &op_regex(),
            &path_prefix_regex(),
        ] {
            assert!(Regex::new(re).is_ok(), "{re}");
        }
    }

    #[test]
    fn a_message_template_becomes_literals_and_expressions() {
        let template = format!("patch {INDEX} is bad: {ITEM}");
        assert_eq!(
            cel_message(&template, "p", "", "i"),
            r#""patch " + string(i) + " is bad: " + p"#
        );
        assert_eq!(cel_message("plain", "p", "v", "i"), r#""plain""#);
        assert_eq!(fill(&template, "x", "", 3), "patch 3 is bad: x");
    }

    #[test]
    fn rule_ids_are_unique() {
        let mut ids: Vec<&str> = rules().iter().map(|r| r.id.as_str()).collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }
}
