//! `cargo xtask chaos`: the fault suite at full size (test layer 5 of `testbed.md`).
//!
//! Builds the controller binary (debug profile: overflow checks and debug assertions stay on,
//! so a crash that only a check would reveal shows up), then runs [`chaos::run`] once per seed on
//! a private control plane and prints each run's report: its clones, the faults injected by kind
//! (controller kills, API server and etcd restarts, clone and source deletions, the restore
//! admission's internal errors, the `Snapshot` gate off), the outcomes by reason, the holds the
//! faults caused, the leaks and any broken invariant. Exits non-zero when an invariant broke.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seeds to run, one run each (the plan of clones and fault moments follows the seed).
    #[arg(long, value_delimiter = ',', default_values_t = [42u64, 7, 2026])]
    seeds: Vec<u64>,
    /// Clones per run.
    #[arg(long, default_value_t = 80)]
    clones: usize,
    /// Controller replicas (two or more elect a leader; the leader is the one killed).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// The small configuration that `cargo test` runs, instead of the large one.
    #[arg(long)]
    small: bool,
}

/// Builds a workspace binary with cargo (dev profile) and returns its path.
pub fn build_binary(package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("[xtask] cargo build -p {package} --bin {bin}");
    let status = Command::new(cargo)
        .args(["build", "-p", package, "--bin", bin])
        .current_dir(crate::repo())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p {package} failed ({status})");
    }
    Ok(crate::target_dir().join("debug").join(bin))
}

pub fn run(args: Args) -> Result<()> {
    let binary = build_binary("clone-controller", "clone-controller")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut failed = Vec::new();
    for seed in &args.seeds {
        let logs = std::env::temp_dir().join(format!("vmclone-chaos-seed-{seed}"));
        // Logs of an earlier run with this seed would be scanned too.
        let _ = std::fs::remove_dir_all(&logs);
        let mut config = if args.small {
            chaos::Config::small(binary.clone(), logs)
        } else {
            let mut config = chaos::Config::large(binary.clone(), logs);
            config.clones = args.clones;
            config.replicas = args.replicas;
            config
        };
        config.seed = *seed;
        eprintln!(
            "[xtask] chaos run with seed {seed}: {} clones, {} replica(s)",
            config.clones, config.replicas
        );
        let report = runtime.block_on(chaos::run(config))?;
        println!("{}", report.summary());
        if !report.passed() {
            failed.push(*seed);
        }
    }
    if !failed.is_empty() {
        bail!("invariants broke in the runs with seeds {failed:?} (reports above)");
    }
    Ok(())
}
