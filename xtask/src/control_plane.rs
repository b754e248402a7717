//! `cargo xtask control-plane [--run]`: the testbed's control plane by hand.
//!
//! Without flags it finds or builds (once, into the cache) etcd, kube-apiserver,
//! kube-controller-manager and KubeVirt's virt-controller and virt-api, and prints where they are.
//! With `--run` it also starts a control plane with the project's CRDs and KubeVirt (`--kubevirt
//! sim` leaves KubeVirt out, for the stand-in), prints the `export KUBECONFIG=...` line to use it
//! from a shell, and stops it (removing its temporary folder) on Ctrl-C or SIGTERM.

use anyhow::{Context, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start a control plane in the foreground and print the KUBECONFIG to export.
    #[arg(long)]
    run: bool,
    /// With `--run`: `real` runs KubeVirt's own virt-api and virt-controller; `sim` none (run
    /// the stand-in, `kubevirt-sim`, beside it).
    #[arg(long, value_enum, default_value_t = crate::Backend::Real)]
    kubevirt: crate::Backend,
}

pub fn run(args: Args) -> Result<()> {
    let binaries = testenv::ensure_binaries()?;
    println!("etcd                     {}", binaries.etcd.display());
    println!(
        "kube-apiserver           {}",
        binaries.kube_apiserver.display()
    );
    println!(
        "kube-controller-manager  {}",
        binaries.kube_controller_manager.display()
    );
    let kubevirt = testenv::ensure_kubevirt_binaries()?;
    println!(
        "virt-controller          {}",
        kubevirt.virt_controller.display()
    );
    println!("virt-api                 {}", kubevirt.virt_api.display());
    println!("virt-api webhooks        {}", kubevirt.webhooks.display());
    let virtctl = testenv::ensure_virtctl()?;
    println!("virtctl                  {}", virtctl.display());
    if !args.run {
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run_in_foreground(args.kubevirt))
}

async fn run_in_foreground(backend: crate::Backend) -> Result<()> {
    let env = testenv::TestEnv::start_with_options(backend.options()).await?;
    println!();
    println!("export KUBECONFIG={}", env.kubeconfig_path().display());
    println!("# API server {}; Ctrl-C stops it.", env.apiserver_url());
    wait_for_stop_signal().await?;
    eprintln!("stopping the control plane");
    drop(env);
    Ok(())
}

#[cfg(unix)]
async fn wait_for_stop_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_stop_signal() -> Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("listening for Ctrl-C")
}
