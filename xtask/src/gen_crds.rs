//! `cargo xtask gen-crds [--check]`.

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit non-zero when the committed files differ from the generated ones.
    #[arg(long)]
    check: bool,
}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("not implemented yet")
}
