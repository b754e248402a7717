//! `cargo xtask control-plane`.

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start a control plane in the foreground and print the KUBECONFIG to export.
    #[arg(long)]
    run: bool,
}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
