//! KubeVirt's snapshot and restore admission webhooks, as `ValidatingAdmissionPolicy`s the API
//! server enforces itself, plus the sim's injected restore rejection.
//!
//! Restore (CREATE): `spec.target.apiGroup` present (`missing apiGroup`) and `kubevirt.io`
//! (`invalid apiGroup`), kind `VirtualMachine` (`invalid kind`); then every patch passes
//! KubeVirt's naive check, reproduced piece by piece: braces trimmed, split on `,`, each piece
//! must have exactly one `:` (`patch format is not valid - one ":" expected in a single
//! key-value json patch: <piece>`), and a `"path"` piece must start with `"/spec/`,
//! `"/metadata/labels/` or `"/metadata/annotations/` (`patching is valid only for elements under
//! /spec/ only: <piece>`); like upstream, all failing pieces are joined with `, `. UPDATE: the
//! spec is immutable (`spec in immutable after creation`, upstream's typo included).
//! Snapshot: the same target rules on `spec.source`, and the immutable spec.
//!
//! Injected rejection: the annotation [`REJECT_RESTORE_ANNOTATION`] on the restore or on its
//! namespace, or the ConfigMap [`CONFIG_MAP`] (key [`CONFIG_REJECT_RESTORES`]) in the restore's
//! namespace or in [`CONFIG_NAMESPACE`], refuses restore creation with the given message.
//!
//! Simplified — what a policy cannot do and virt-api's webhook does: every denial is `422` with
//! the policy's wording (`ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied
//! request: <message>`), where virt-api answers `admission webhook
//! "virtualmachinerestore-validator.snapshot.kubevirt.io" denied the request: <message>` and uses
//! `400` for its errors (the `Snapshot` gate off, a snapshot that has no content yet, a content
//! that is gone, a failed read); only the first failing rule is reported where virt-api joins
//! all its causes; nothing that needs another object is checked (the gate in the `KubeVirt` CR,
//! the snapshot and its content, another restore in progress for the same target, backend
//! storage of the snapshotted VM), nor volume overrides and policies. The sim's webhook
//! ([`crate::webhook`]) does all of that; in a namespace labelled [`RESTORE_WEBHOOK_LABEL`]
//! (which it labels) this policy leaves KubeVirt's rules to it and keeps only the injected
//! rejection.

use serde_json::{Value, json};

use crate::names::{
    CONFIG_MAP, CONFIG_NAMESPACE, CONFIG_REJECT_RESTORES, REJECT_RESTORE_ANNOTATION,
    REJECTION_POLICY, RESTORE_POLICY, RESTORE_WEBHOOK_LABEL, SNAPSHOT_POLICY,
};

/// Longest message an expression returns (keeps the CEL cost of messages bounded).
const MESSAGE_LIMIT: usize = 2000;

fn bounded(expression: &str) -> String {
    format!(
        "string(size({expression}) > {MESSAGE_LIMIT} ? string({expression}).substring(0, {MESSAGE_LIMIT}) : {expression})"
    )
}

/// CEL: the failing pieces of every patch, as KubeVirt's restore admitter words them, joined
/// with `, ` (empty when all pass). `[x].map(t, ..)[0]` binds the brace-trimmed patch to `t`
/// (`cel.bind` is not available to admission policies).
const PATCH_ERRORS: &str = r#"!has(object.spec.patches) ? '' : object.spec.patches.map(p,
  [p.matches('^[{}]*$') ? '' : p.substring(size(p.find('^[{}]*')), size(p) - size(p.find('[{}]*$')))].map(t,
    t.split(',').map(x,
      x.split(':').size() != 2
        ? 'patch format is not valid - one ":" expected in a single key-value json patch: ' + x
        : (x.split(':')[0].trim() == '"path"'
            && !x.split(':')[1].trim().startsWith('"/spec/')
            && !x.split(':')[1].trim().startsWith('"/metadata/labels/')
            && !x.split(':')[1].trim().startsWith('"/metadata/annotations/')
          ? 'patching is valid only for elements under /spec/ only: ' + x
          : '')
    ).filter(m, m != '').join(', ')
  )[0]
).filter(m, m != '').join(', ')"#;

fn target_rules(field: &str, operation_guard: &str) -> Vec<Value> {
    vec![
        json!({
            "expression": format!("{operation_guard} || has(object.spec.{field}.apiGroup)"),
            "message": "missing apiGroup",
        }),
        json!({
            "expression": format!(
                "{operation_guard} || !has(object.spec.{field}.apiGroup) || object.spec.{field}.apiGroup == 'kubevirt.io'"
            ),
            "message": "invalid apiGroup",
        }),
        json!({
            "expression": format!(
                "{operation_guard} || !has(object.spec.{field}.apiGroup) || object.spec.{field}.apiGroup != 'kubevirt.io' || object.spec.{field}.kind == 'VirtualMachine'"
            ),
            "message": "invalid kind",
        }),
    ]
}

fn immutable_spec(skip: &str) -> Value {
    json!({
        "expression": format!("{skip}request.operation != 'UPDATE' || object.spec == oldObject.spec"),
        "message": "spec in immutable after creation",
    })
}

fn match_rules(resource: &str, operations: &[&str]) -> Value {
    json!({
        "resourceRules": [{
            "apiGroups": ["snapshot.kubevirt.io"],
            "apiVersions": ["*"],
            "operations": operations,
            "resources": [resource],
        }],
    })
}

fn policy(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kubevirt-sim"}},
        "spec": spec,
    })
}

fn binding(name: &str, policy: &str, param_ref: Option<Value>) -> Value {
    let mut spec = json!({"policyName": policy, "validationActions": ["Deny"]});
    if let Some(param_ref) = param_ref {
        spec["paramRef"] = param_ref;
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kubevirt-sim"}},
        "spec": spec,
    })
}

/// KubeVirt's restore admission and the annotation-driven rejection.
pub fn restore_policy() -> Value {
    let create_only = "request.operation != 'CREATE'";
    // Where the sim's webhook validates, KubeVirt's rules are its.
    let kubevirt_rules = "variables.webhookServes || request.operation != 'CREATE'";
    let mut validations = target_rules("target", kubevirt_rules);
    validations.push(json!({
        "expression": format!("{kubevirt_rules} || !variables.validTarget || variables.patchErrors == ''"),
        "messageExpression": bounded("variables.patchErrors"),
    }));
    validations.push(immutable_spec("variables.webhookServes || "));
    let annotation = REJECT_RESTORE_ANNOTATION;
    validations.push(json!({
        "expression": format!(
            "{create_only} || !has(namespaceObject.metadata.annotations) || !('{annotation}' in namespaceObject.metadata.annotations)"
        ),
        "messageExpression": bounded(&format!("namespaceObject.metadata.annotations['{annotation}']")),
    }));
    validations.push(json!({
        "expression": format!(
            "{create_only} || !has(object.metadata.annotations) || !('{annotation}' in object.metadata.annotations)"
        ),
        "messageExpression": bounded(&format!("object.metadata.annotations['{annotation}']")),
    }));
    policy(
        RESTORE_POLICY,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": match_rules("virtualmachinerestores", &["CREATE", "UPDATE"]),
            "variables": [
                {
                    "name": "webhookServes",
                    "expression": format!(
                        "has(namespaceObject.metadata.labels) && '{RESTORE_WEBHOOK_LABEL}' in namespaceObject.metadata.labels"
                    ),
                },
                {
                    "name": "validTarget",
                    "expression": "has(object.spec.target.apiGroup) && object.spec.target.apiGroup == 'kubevirt.io' && object.spec.target.kind == 'VirtualMachine'",
                },
                {"name": "patchErrors", "expression": PATCH_ERRORS},
            ],
            "validations": validations,
        }),
    )
}

/// KubeVirt's snapshot admission.
pub fn snapshot_policy() -> Value {
    let mut validations = target_rules("source", "request.operation != 'CREATE'");
    validations.push(immutable_spec(""));
    policy(
        SNAPSHOT_POLICY,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": match_rules("virtualmachinesnapshots", &["CREATE", "UPDATE"]),
            "validations": validations,
        }),
    )
}

/// The ConfigMap-driven rejection (the sim's `reject_restores`). `Ignore`: a parameter the API
/// server has not synced yet must not block restores.
pub fn rejection_policy() -> Value {
    let key = CONFIG_REJECT_RESTORES;
    policy(
        REJECTION_POLICY,
        json!({
            "failurePolicy": "Ignore",
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": match_rules("virtualmachinerestores", &["CREATE"]),
            "validations": [{
                "expression": format!("!has(params.data) || !('{key}' in params.data)"),
                "messageExpression": bounded(&format!("params.data['{key}']")),
            }],
        }),
    )
}

/// The bindings: one per policy; the rejection policy twice (its ConfigMap in the restore's own
/// namespace, and cluster-wide in [`CONFIG_NAMESPACE`]).
pub fn bindings() -> Vec<Value> {
    vec![
        binding(RESTORE_POLICY, RESTORE_POLICY, None),
        binding(SNAPSHOT_POLICY, SNAPSHOT_POLICY, None),
        binding(
            &format!("{REJECTION_POLICY}-local"),
            REJECTION_POLICY,
            Some(json!({"name": CONFIG_MAP, "parameterNotFoundAction": "Allow"})),
        ),
        binding(
            &format!("{REJECTION_POLICY}-global"),
            REJECTION_POLICY,
            Some(json!({
                "name": CONFIG_MAP,
                "namespace": CONFIG_NAMESPACE,
                "parameterNotFoundAction": "Allow",
            })),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policies_name_what_they_enforce() {
        let restore = restore_policy();
        let text = restore.to_string();
        for message in [
            "missing apiGroup",
            "invalid apiGroup",
            "invalid kind",
            "spec in immutable after creation",
        ] {
            assert!(text.contains(message), "{message}");
        }
        assert!(text.contains("patch format is not valid"));
        assert!(text.contains(REJECT_RESTORE_ANNOTATION));
        assert_eq!(bindings().len(), 4);
        assert_eq!(rejection_policy()["spec"]["failurePolicy"], "Ignore");
        assert_eq!(
            snapshot_policy()["spec"]["validations"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
    }
}
