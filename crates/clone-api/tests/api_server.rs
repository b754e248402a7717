//! The API against a real kube-apiserver (testenv), driven with the real `kubectl`: the validation
//! table through vmclone's ValidatingAdmissionPolicy on upstream KubeVirt's own CRD (as on a
//! KubeVirt cluster) and on the generated one, immutability of the spec and of the extension
//! annotations, the seed's manifest and upstream's printer columns.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde::Deserialize;
use serde_json::{Value, json};
use testenv::{CloneCrd, Options, TestEnv};

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    spec: Value,
    #[serde(default)]
    annotations: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    /// The refusal on KubeVirt v1.7's CRD, where it differs (a field v1.7 does not define).
    #[serde(default)]
    v1_7_error: Option<String>,
    /// Refused by the schema itself (the message is the API server's), not by the policy.
    #[serde(default)]
    structural: bool,
}

/// Whether kubectl's error shows exactly `want`: the policy's denial ends with the message; a
/// schema refusal contains it.
fn refused_with(stderr: &str, want: &str, by_policy: bool) -> bool {
    if by_policy {
        stderr
            .trim_end()
            .ends_with(&format!("denied request: {want}"))
    } else {
        stderr.contains(want)
    }
}

fn manifest(name: &str, version: &str, spec: &Value) -> String {
    manifest_with(name, version, spec, None)
}

fn manifest_with(name: &str, version: &str, spec: &Value, annotations: Option<&Value>) -> String {
    json!({
        "apiVersion": format!("clone.kubevirt.io/{version}"),
        "kind": "VirtualMachineClone",
        "metadata": {"name": name, "annotations": annotations.cloned().unwrap_or(json!({}))},
        "spec": spec,
    })
    .to_string()
}

/// A control plane with upstream KubeVirt v1.7.0's clone CRD and the policy, and no KubeVirt
/// webhooks (virt-api would add upstream's own clone validation on top).
async fn upstream_env() -> TestEnv {
    TestEnv::start_with_options(Options {
        clone_crd: CloneCrd::Upstream,
        ..Options::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_policy_enforces_the_validation_table_on_upstreams_crd() {
    let env = upstream_env().await;
    run_table(&env, true).await;
}

#[tokio::test]
async fn the_policy_enforces_the_validation_table_on_the_generated_crd() {
    run_table(TestEnv::shared().await.unwrap(), false).await;
}

async fn run_table(env: &TestEnv, kubevirt_v1_7_crd: bool) {
    let ns = env.namespace("crd-table").await.unwrap();
    let cases: Vec<Case> =
        serde_saphyr::from_str(include_str!("../testdata/validation-cases.yaml")).unwrap();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (error, by_policy) = match (&case.v1_7_error, kubevirt_v1_7_crd) {
            (Some(error), true) => (Some(error), false),
            _ => (case.error.as_ref(), !case.structural),
        };
        for version in ["v1alpha1", "v1beta1"] {
            let name = format!("case-{i}-{version}");
            let out = env
                .kubectl_output(
                    &["create", "-n", &ns, "-f", "-"],
                    Some(&manifest_with(
                        &name,
                        version,
                        &case.spec,
                        case.annotations.as_ref(),
                    )),
                )
                .await
                .unwrap();
            match (error, out.success()) {
                (None, true) => {}
                (None, false) => failures.push(format!(
                    "{version} `{}` refused: {}",
                    case.name,
                    out.stderr.trim()
                )),
                (Some(want), false) if refused_with(&out.stderr, want, by_policy) => {}
                (Some(want), false) => failures.push(format!(
                    "{version} `{}` refused with another message.\n  want: {want}\n  got:  {}",
                    case.name,
                    out.stderr.trim()
                )),
                (Some(want), true) => {
                    failures.push(format!("{version} `{}` accepted; want: {want}", case.name))
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n")
    );
}

#[tokio::test]
async fn spec_edits_are_refused_and_status_is_a_subresource() {
    let env = TestEnv::shared().await.unwrap();
    let ns = env.namespace("crd-immutable").await.unwrap();
    let spec =
        json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}});
    env.kubectl_output(
        &["create", "-n", &ns, "-f", "-"],
        Some(&manifest("c", "v1beta1", &spec)),
    )
    .await
    .unwrap()
    .ok()
    .unwrap();
    let out = env
        .kubectl_output(
            &[
                "patch",
                "-n",
                &ns,
                "vmclone",
                "c",
                "--type=merge",
                "-p",
                r#"{"spec":{"newSMBiosSerial":"other"}}"#,
            ],
            None,
        )
        .await
        .unwrap();
    assert!(!out.success(), "spec edit accepted");
    assert!(out.stderr.contains("spec is immutable"), "{}", out.stderr);
    // The extension annotations cannot change, and no unknown one can be added.
    for (annotation, message) in [
        (
            "vmclone.dev/strategy=Auto",
            "annotation vmclone.dev/strategy cannot change after the clone is created",
        ),
        (
            "vmclone.dev/typo=x",
            "unknown annotation vmclone.dev/typo: the vmclone.dev/ annotations are \
             vmclone.dev/strategy, vmclone.dev/source-namespace, vmclone.dev/target-run-strategy",
        ),
    ] {
        let out = env
            .kubectl_output(&["annotate", "-n", &ns, "vmclone", "c", annotation], None)
            .await
            .unwrap();
        assert!(!out.success(), "{annotation} accepted");
        assert!(refused_with(&out.stderr, message, true), "{}", out.stderr);
    }
    env.kubectl_output(
        &["annotate", "-n", &ns, "vmclone", "c", "example.com/note=x"],
        None,
    )
    .await
    .unwrap()
    .ok()
    .unwrap();
    // Labels (metadata) may change; status cannot be written through the main resource.
    env.kubectl_output(&["label", "-n", &ns, "vmclone", "c", "team=a"], None)
        .await
        .unwrap()
        .ok()
        .unwrap();
    env.kubectl_output(
        &[
            "patch",
            "-n",
            &ns,
            "vmclone",
            "c",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ],
        None,
    )
    .await
    .unwrap()
    .ok()
    .unwrap();
    let phase = env
        .kubectl_output(
            &[
                "get",
                "-n",
                &ns,
                "vmclone",
                "c",
                "-o",
                "jsonpath={.status.phase}",
            ],
            None,
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(phase.stdout, "", "status written through the main resource");
}

#[tokio::test]
async fn the_seeds_manifest_needs_a_full_mac_and_shows_the_columns() {
    let env = TestEnv::shared().await.unwrap();
    let ns = env.namespace("crd-seed").await.unwrap();
    let seed = include_str!("../testdata/seed-clone.yaml");
    let out = env
        .kubectl_output(&["create", "-n", &ns, "-f", "-"], Some(seed))
        .await
        .unwrap();
    assert!(!out.success(), "the placeholder MAC 00-11-22 was accepted");
    assert!(
        out.stderr.contains(&format!(
            "ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: \
             interface interfaceName has malformed MAC address (00-11-22).",
            policy = clone_api::names::ADMISSION_POLICY_NAME
        )),
        "{}",
        out.stderr
    );

    let fixed = seed.replace("\"00-11-22\"", "\"00-11-22-33-44-55\"");
    assert_ne!(fixed, seed);
    env.kubectl_output(&["create", "-n", &ns, "-f", "-"], Some(&fixed))
        .await
        .unwrap()
        .ok()
        .unwrap();
    for resource in [
        "vmclone",
        "vmclones",
        "virtualmachineclones.clone.kubevirt.io",
    ] {
        let out = env
            .kubectl_output(&["get", "-n", &ns, resource], None)
            .await
            .unwrap()
            .ok()
            .unwrap();
        let header: Vec<&str> = out
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "NAME",
                "PHASE",
                "SOURCEVIRTUALMACHINE",
                "TARGETVIRTUALMACHINE"
            ],
            "{}",
            out.stdout
        );
        let row: Vec<&str> = out
            .stdout
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(row.first(), Some(&"testclone"), "{}", out.stdout);
        assert_eq!(
            row.get(1),
            Some(&"vm-cirros"),
            "phase is empty, source shown: {}",
            out.stdout
        );
    }
    // The category `all` includes clones.
    let all = env
        .kubectl_output(&["get", "all", "-n", &ns], None)
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert!(
        all.stdout
            .contains("virtualmachineclone.clone.kubevirt.io/testclone"),
        "{}",
        all.stdout
    );
}
