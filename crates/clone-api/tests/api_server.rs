//! The CRD against a real kube-apiserver (testenv), driven with the real `kubectl`: the
//! validation table of api.md, spec immutability, the seed's manifest and the printer columns.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde::Deserialize;
use serde_json::{Value, json};
use testenv::TestEnv;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    spec: Value,
    #[serde(default)]
    error: Option<String>,
}

fn manifest(name: &str, version: &str, spec: &Value) -> String {
    json!({
        "apiVersion": format!("clone.kubevirt.io/{version}"),
        "kind": "VirtualMachineClone",
        "metadata": {"name": name},
        "spec": spec,
    })
    .to_string()
}

#[tokio::test]
async fn the_api_server_enforces_the_validation_table() {
    let env = TestEnv::shared().await.unwrap();
    let ns = env.namespace("crd-table").await.unwrap();
    let cases: Vec<Case> =
        serde_saphyr::from_str(include_str!("../testdata/validation-cases.yaml")).unwrap();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        for version in ["v1alpha1", "v1beta1"] {
            let name = format!("case-{i}-{version}");
            let out = env
                .kubectl_output(
                    &["create", "-n", &ns, "-f", "-"],
                    Some(&manifest(&name, version, &case.spec)),
                )
                .unwrap();
            match (&case.error, out.success()) {
                (None, true) => {}
                (None, false) => failures.push(format!(
                    "{version} `{}` refused: {}",
                    case.name,
                    out.stderr.trim()
                )),
                (Some(want), false) if out.stderr.contains(want.as_str()) => {}
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
        .unwrap();
    assert!(!out.success(), "spec edit accepted");
    assert!(out.stderr.contains("spec is immutable"), "{}", out.stderr);
    // Labels (metadata) may change; status cannot be written through the main resource.
    env.kubectl_output(&["label", "-n", &ns, "vmclone", "c", "team=a"], None)
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
        .unwrap();
    assert!(!out.success(), "the placeholder MAC 00-11-22 was accepted");
    assert!(
        out.stderr.contains("spec.newMacAddresses[interfaceName]"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("malformed MAC address (00-11-22)."),
        "{}",
        out.stderr
    );

    let fixed = seed.replace("\"00-11-22\"", "\"00-11-22-33-44-55\"");
    assert_ne!(fixed, seed);
    env.kubectl_output(&["create", "-n", &ns, "-f", "-"], Some(&fixed))
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
            ["NAME", "PHASE", "SOURCE", "TARGET", "AGE"],
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
