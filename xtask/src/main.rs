//! Project automation: `cargo xtask <command>`.
//!
//! Each command lives in its own module; this file only parses the command line.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod control_plane;
mod demo;
mod gen_crds;

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
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::GenCrds(args) => gen_crds::run(args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::Demo(args) => demo::run(args),
    }
}
