//! The ValidatingAdmissionPolicy (and its binding) built from the rule table
//! ([`crate::rules`]), as `cargo xtask gen-crds` writes it to `manifests/`.
//!
//! It matches CREATE and UPDATE of `virtualmachineclones` in every version of
//! `clone.kubevirt.io` (status writes go to the `status` subresource, which it does not match), so
//! it works on upstream KubeVirt's own CRD and needs no server of its own. A refusal is HTTP 422
//! (`Invalid`) and reads `ValidatingAdmissionPolicy '<name>' with binding '<name>' denied request:
//! <message>`; the API server reports the first failing validation in table order.

use clone_api::names::{ADMISSION_POLICY_NAME, GROUP, PLURAL};
use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::rules::{Operations, rules};

/// `expression`, applied only to the operations the rule names.
fn guarded(expression: &str, operations: Operations) -> String {
    match operations {
        Operations::Create => format!("request.operation != 'CREATE' || ({expression})"),
        Operations::Update => format!("request.operation != 'UPDATE' || ({expression})"),
        Operations::CreateAndUpdate => expression.to_owned(),
    }
}

fn metadata() -> ObjectMeta {
    ObjectMeta {
        name: Some(ADMISSION_POLICY_NAME.to_owned()),
        labels: Some(
            [("app.kubernetes.io/part-of".to_owned(), "vmclone".to_owned())]
                .into_iter()
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

/// The policy: one validation per rule of the table that has CEL.
pub fn admission_policy() -> ValidatingAdmissionPolicy {
    let validations = rules()
        .iter()
        .filter_map(|rule| {
            let cel = rule.cel.as_ref()?;
            Some(Validation {
                expression: guarded(&cel.expression, rule.operations),
                message_expression: Some(cel.message_expression.clone()),
                message: Some(format!("clone breaks vmclone rule {}", rule.id)),
                reason: Some("Invalid".to_owned()),
            })
        })
        .collect();
    ValidatingAdmissionPolicy {
        metadata: metadata(),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec![GROUP.to_owned()]),
                    api_versions: Some(vec!["*".to_owned()]),
                    operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                    resources: Some(vec![PLURAL.to_owned()]),
                    ..NamedRuleWithOperations::default()
                }]),
                ..MatchResources::default()
            }),
            validations: Some(validations),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        status: None,
    }
}

/// The binding that enforces the policy in every namespace.
pub fn admission_policy_binding() -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: metadata(),
        spec: ValidatingAdmissionPolicyBindingSpec {
            policy_name: ADMISSION_POLICY_NAME.to_owned(),
            validation_actions: vec!["Deny".to_owned()],
            ..ValidatingAdmissionPolicyBindingSpec::default()
        },
    }
}
