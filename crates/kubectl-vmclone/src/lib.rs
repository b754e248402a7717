//! `kubectl vmclone`: a kubectl plugin for KubeVirt's `VirtualMachineClone` API.
//!
//! - [`create`]: prints clone manifests with `virtctl create clone`'s flags (and vmclone's own);
//! - [`run`]: creates clones and follows them with one watch and a live display;
//! - [`plan`]: shows the target VM a clone would produce, computed by `clone-core`;
//! - [`disk`]: clones one VM disk into a new DataVolume.
//!
//! The binary is `kubectl-vmclone`, so `kubectl vmclone …` finds it on `PATH`.

use std::process::ExitCode;

pub mod cli;
pub mod client;
pub mod create;
pub mod disk;
pub mod plan;
pub mod run;

/// The exit statuses, as kubectl users expect them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything succeeded.
    Success = 0,
    /// Something failed (each failure is printed with its reason and message).
    Failed = 1,
    /// The command line or the input is wrong; nothing was created.
    Usage = 2,
    /// `--wait` ran out of time; the clones keep going.
    TimedOut = 3,
    /// Ctrl-C stopped `--wait`; the clones keep going (128 + SIGINT, as shells report it).
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A mistake in what the user asked for: printed as `error: <message>`, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs a parsed command line and returns its exit status. Errors are printed to stderr.
pub async fn main_with(cli: cli::Cli) -> ExitCode {
    let result = match cli.command {
        cli::Command::Create(args) => create::command(&cli.global, &args),
        cli::Command::Run(args) => run::command(&cli.global, &args).await,
        cli::Command::Plan(args) => plan::command(&cli.global, &args).await,
        cli::Command::Disk(args) => disk::command(&cli.global, &args).await,
    };
    match result {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<UsageError>().is_some() {
                Exit::Usage.into()
            } else {
                Exit::Failed.into()
            }
        }
    }
}
