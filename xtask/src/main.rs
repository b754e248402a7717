//! Project automation: `cargo xtask <command>`.
//!
//! Each command lives in its own module; this file only parses the command line.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

mod chaos;
mod control_plane;
mod demo;
mod gen_crds;
mod image;
mod publish_check;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "vmclone project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions generated from clone-api into manifests/crds/.
    GenCrds(gen_crds::Args),
    /// Build (or find) the control-plane binaries and print where they are; `--run` starts one.
    ControlPlane(control_plane::Args),
    /// Clone a VM on the local testbed, as the KubeVirt user guide does, and show the result.
    Demo(demo::Args),
    /// Run the fault suite: many clones while the controller, kube-apiserver and etcd are killed.
    Chaos(chaos::Args),
    /// Measure throughput, latency, API requests, CPU and memory of cloning on a private testbed
    /// and write docs/benchmarks.{json,md} and docs/benchmarks-latency.svg.
    Bench(bench::Args),
    /// `cargo publish --dry-run -p clone-api`, then build a scratch crate that uses clone-api with
    /// another Kubernetes version feature.
    PublishCheck(publish_check::Args),
    /// Build the controller's image (a static executable on `FROM scratch`) with buildah, check
    /// it, and with `--smoke` clone a VM with it under podman on a local testbed.
    Image(image::Args),
}

/// Which KubeVirt a command runs against (the bench's choice, shared by every command).
pub(crate) use bench::Backend;

/// The workspace root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// Cargo's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::GenCrds(args) => gen_crds::run(args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Bench(args) => bench::run(args),
        Command::PublishCheck(args) => publish_check::run(args),
        Command::Image(args) => image::run(args),
    }
}
