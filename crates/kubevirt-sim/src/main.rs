//! `kubevirt-sim`: runs the KubeVirt and CDI stand-in against the cluster of the current
//! kubeconfig (as `kubectl` finds it), for the sandbox and demos.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use kubevirt_sim::{Sim, SimConfig};

/// Runs the KubeVirt/CDI stand-in (VM, snapshot, restore, DataVolume controllers and a PVC
/// binder) until interrupted.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Storage classes whose PVCs can be snapshotted (comma-separated).
    #[arg(
        long,
        env = "SIM_SNAPSHOT_STORAGE_CLASSES",
        value_delimiter = ',',
        default_value = "sim-snapshot,sim-wffc"
    )]
    snapshot_storage_classes: Vec<String>,
    /// Pause before each step, as a Go duration (`250ms`, `1s`).
    #[arg(long, env = "SIM_LATENCY", default_value = "0s", value_parser = parse_latency)]
    latency: Duration,
    /// Make every snapshot fail (`snapshot deadline exceeded`).
    #[arg(long, env = "SIM_FAIL_SNAPSHOTS")]
    fail_snapshots: bool,
    /// Make every restore fail (target-readiness `Failure` condition).
    #[arg(long, env = "SIM_FAIL_RESTORES")]
    fail_restores: bool,
    /// Have the API server refuse restore creation with this message.
    #[arg(long, env = "SIM_REJECT_RESTORES")]
    reject_restores: Option<String>,
    /// Only act in this namespace.
    #[arg(long, env = "SIM_NAMESPACE")]
    namespace: Option<String>,
    /// Today's lenient CDI clone checks instead of the historical strict ones.
    #[arg(long, env = "SIM_LENIENT_CLONE_CHECKS")]
    lenient_clone_checks: bool,
    /// Objects each controller reconciles at once.
    #[arg(long, env = "SIM_WORKERS", default_value_t = 16)]
    workers: usize,
    /// Do not create the storage classes and admission policies at start.
    #[arg(long, env = "SIM_NO_INSTALL")]
    no_install: bool,
    /// Play only storage and CDI (KubeVirt's own virt-controller and virt-api run beside it):
    /// installs no admission policies and runs no VM, snapshot or restore controller.
    #[arg(long, env = "SIM_STORAGE_ONLY")]
    storage_only: bool,
}

fn parse_latency(text: &str) -> Result<Duration, String> {
    kubevirt_sim::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 250ms or 1s"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster of the current kubeconfig")?;
    if !args.no_install {
        if args.storage_only {
            kubevirt_sim::install_storage(client.clone()).await?;
        } else {
            kubevirt_sim::install(client.clone()).await?;
        }
    }
    let config = SimConfig {
        snapshot_storage_classes: args.snapshot_storage_classes,
        latency: args.latency,
        fail_snapshots: args.fail_snapshots,
        fail_restores: args.fail_restores,
        reject_restores: args.reject_restores,
        namespace: args.namespace,
        strict_clone_checks: !args.lenient_clone_checks,
        workers: args.workers,
        storage_only: args.storage_only,
    };
    let sim = Sim::start(client, config).await?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("stopping");
    sim.stop().await;
    Ok(())
}
