//! `cargo xtask publish-check`: proves that `clone-api` can be published and used by others.
//!
//! 1. `cargo publish --dry-run -p clone-api` packages the crate and builds the package as crates.io
//!    would (with a `k8s-openapi` version feature, which the library leaves to its users).
//! 2. A scratch crate outside the workspace depends on `clone-api` with *another* Kubernetes
//!    version feature than vmclone's binaries use (`v1_33`), and builds: the library forces no
//!    version on its users.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The Kubernetes version the scratch crate selects (not the `v1_36` vmclone uses).
const OTHER_VERSION_FEATURE: &str = "v1_33";

#[derive(Debug, clap::Args)]
pub struct Args {}

fn run_cargo(what: &str, dir: &Path, args: &[&str]) -> Result<()> {
    println!("==> {what}: cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("running cargo for {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn run(_: Args) -> Result<()> {
    let repo = crate::repo();
    run_cargo(
        "publish dry run",
        &repo,
        &[
            "publish",
            "--dry-run",
            "--allow-dirty",
            "-p",
            "clone-api",
            "--features",
            "k8s-openapi/v1_36",
        ],
    )?;

    let scratch = crate::target_dir().join("publish-check");
    std::fs::create_dir_all(scratch.join("src"))?;
    let api = repo.join("crates/clone-api");
    std::fs::write(
        scratch.join("Cargo.toml"),
        format!(
            "[package]\nname = \"uses-clone-api\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
             [workspace]\n\n[dependencies]\n\
             clone-api = {{ path = {api:?} }}\n\
             k8s-openapi = {{ version = \"0.29\", features = [\"{OTHER_VERSION_FEATURE}\"] }}\n\
             serde_json = \"1\"\n"
        ),
    )?;
    std::fs::write(
        scratch.join("src/main.rs"),
        "fn main() {\n    \
         let crd = clone_api::crd();\n    \
         let clone: clone_api::v1beta1::VirtualMachineClone = serde_json::from_str(\n        \
         r#\"{\"apiVersion\":\"clone.kubevirt.io/v1beta1\",\"kind\":\"VirtualMachineClone\",\
         \"metadata\":{\"name\":\"c\"},\"spec\":{\"source\":{\"kind\":\"VirtualMachine\",\"name\":\"vm\"}}}\"#,\n    \
         )\n    .expect(\"a clone\");\n    \
         println!(\"{} {}\", crd.spec.versions.len(), clone.spec.source.name);\n}\n",
    )?;
    run_cargo(
        &format!("a crate using clone-api with k8s-openapi/{OTHER_VERSION_FEATURE}"),
        &scratch,
        &["build", "--quiet"],
    )?;
    println!("clone-api packages, and builds for a user on another Kubernetes version");
    Ok(())
}
