//! The controller binary: parse flags, set up logging, connect, check the CRDs, serve metrics
//! and health, elect a leader if asked, run until SIGTERM or Ctrl-C.

use anyhow::{Context as _, bail};
use clap::Parser;
use clone_api::kubevirt::VirtualMachineSnapshot;
use clone_api::v1beta1::VirtualMachineClone;
use std::time::Duration;

use clone_controller::cli::{Args, LogFormat, SnapshotGate, UpstreamCloneController};
use clone_controller::leader::LeaderElection;
use clone_controller::telemetry::{Telemetry, health_router, metrics_router, serve};
use clone_core::decide::GateMode;
use clone_core::upstream::UpstreamMode;
use kube::api::{Api, ListParams};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Fails with an install hint when a CRD the controller needs is not served.
async fn check_crds(client: &kube::Client) -> anyhow::Result<()> {
    fn missing<T>(result: Result<T, kube::Error>) -> bool {
        matches!(result, Err(kube::Error::Api(s)) if s.code == 404)
    }
    let probe = ListParams::default().limit(1);
    let clones = Api::<VirtualMachineClone>::all(client.clone());
    if missing(clones.list_metadata(&probe).await) {
        bail!(
            "the VirtualMachineClone CRD is not installed: run `kubectl apply -f manifests/crds/`"
        );
    }
    let snapshots = Api::<VirtualMachineSnapshot>::all(client.clone());
    if missing(snapshots.list_metadata(&probe).await) {
        bail!(
            "KubeVirt's snapshot CRDs (snapshot.kubevirt.io) are not installed: install KubeVirt first"
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested: finishing in-flight reconciles");
}

/// mimalloc: the controller allocates many small, short-lived objects (decoded watch events,
/// statuses), and glibc's allocator was a fifth of its CPU in a profile at N=1000. Built without
/// transparent huge pages (`no_thp`): with them its peak RSS rose by 18 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One thread: every watch, the controller's scheduler and every pass share it, so waking a pass
/// or handing a response to it is not a switch between threads (with tokio's multi-threaded
/// runtime, the kernel took 28 % of the controller's CPU at N=1000, mostly switching threads). A pass
/// spends its time waiting for the API server, not computing.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let client = client(&args).await?;
    check_crds(&client).await?;
    // The pod name identifies this replica in events and in the Lease.
    let identity = std::env::var("POD_NAME").ok();
    let config = clone_controller::Config {
        namespace: args.namespace.clone(),
        concurrency: args.concurrency,
        gate_mode: args.snapshot_gate.map(|gate| match gate {
            SnapshotGate::Listed => GateMode::Listed,
            SnapshotGate::DefaultOn => GateMode::DefaultOn,
        }),
        upstream: match args.upstream_clone_controller {
            UpstreamCloneController::Detect => UpstreamMode::Detect,
            UpstreamCloneController::Ignore => UpstreamMode::Ignore,
        },
        instance: identity.clone(),
        leader_election: args.leader_elect.then(|| LeaderElection {
            namespace: args.leader_election_namespace.clone(),
            lease_name: "vmclone-controller".into(),
            identity: identity.unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "clone-controller".into());
                format!("{host}-{}", std::process::id())
            }),
            lease_duration: Duration::from_secs(args.lease_duration_seconds),
        }),
        restore_stall_timeout: Duration::from_secs(args.restore_stall_timeout_seconds),
    };
    let telemetry = Telemetry::default();
    let metrics = serve(args.metrics_addr, metrics_router(telemetry.clone()))
        .await
        .with_context(|| format!("serving metrics on {}", args.metrics_addr))?;
    let health = serve(args.health_addr, health_router(telemetry.clone()))
        .await
        .with_context(|| format!("serving health on {}", args.health_addr))?;
    tracing::info!(%metrics, %health, ?config, "clone-controller starting");
    clone_controller::run_with(client, config, telemetry, shutdown_signal()).await
}
