//! The controller binary. It parses its flags, sets up logging and, until the reconciler lands,
//! says so and exits cleanly.

use clap::Parser;
use clone_controller::cli::{Args, LogFormat};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    tracing::info!(?args, "clone-controller configured");
    tracing::warn!("this build has no reconciler yet; exiting");
    Ok(())
}
