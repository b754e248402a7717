//! `kubectl-vmclone`: see the library's documentation.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    kubectl_vmclone::main_with(kubectl_vmclone::cli::Cli::parse()).await
}
