//! clone-api is a library others depend on: it must not choose their Kubernetes version. A
//! `k8s-openapi` version feature (`v1_*`) in its normal dependencies would force that version on
//! every crate that depends on clone-api (k8s-openapi allows exactly one).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

#[test]
fn the_libraries_leave_the_kubernetes_version_to_their_users() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    for library in ["clone-api", "clone-core"] {
        let package = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == library)
            .unwrap_or_else(|| panic!("no package {library}"));
        let normal: Vec<&Value> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["name"] == "k8s-openapi" && d["kind"].is_null())
            .collect();
        assert_eq!(normal.len(), 1, "{library}: {normal:?}");
        let features: Vec<&str> = normal[0]["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !features.iter().any(|f| f.starts_with("v1_")),
            "{library} forces a Kubernetes version on its users: {features:?}"
        );
    }
}
