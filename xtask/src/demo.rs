//! `cargo xtask demo [--keep]`: the product's main job on the local testbed.
//!
//! Starts a real control plane (building it on first use) with KubeVirt v1.7.0's own
//! virt-controller and virt-api (`--kubevirt real`, the default; the stand-in plays storage and
//! CDI) or with the stand-in for KubeVirt too (`--kubevirt sim`), and the clone controller, then
//! follows the KubeVirt user guide with the real `kubectl`: create the source VM
//! `vm-cirros`, `kubectl create -f clone.yaml`, `kubectl wait vmclone testclone --for
//! condition=Ready`, `kubectl get vm vm-clone-target -o yaml`. Prints a summary and stops
//! everything, or with `--keep` leaves the sandbox running until Ctrl-C.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use kube::api::Api;
use testenv::TestEnv;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Leave the sandbox running (until Ctrl-C) and print the KUBECONFIG to use with kubectl.
    #[arg(long)]
    keep: bool,
    /// `real`: KubeVirt v1.7.0's own virt-controller and virt-api (built from Go modules on
    /// first use); `sim`: the stand-in, kubevirt-sim.
    #[arg(long, value_enum, default_value_t = crate::Backend::Real)]
    kubevirt: crate::Backend,
}

fn step(started: Instant, text: &str) {
    eprintln!("[demo {:>5.1}s] {text}", started.elapsed().as_secs_f64());
}

/// Installs the stand-in's storage classes and admission policies, and a `KubeVirt` CR
/// (`kubevirt/kubevirt`) with the `Snapshot` feature gate on. Shared with `cargo xtask bench`.
pub(crate) async fn install_stand_in(client: &kube::Client) -> Result<()> {
    kubevirt_sim::install(client.clone()).await?;
    kubevirt_sim::set_feature_gates(client.clone(), &["Snapshot"]).await
}

async fn kubectl(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> Result<String> {
    Ok(env.kubectl_output(args, stdin).await?.ok()?.stdout)
}

pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

async fn demo(args: Args) -> Result<()> {
    let started = Instant::now();
    let clone_yaml = crate::repo().join("manifests/examples/clone.yaml");
    if !clone_yaml.exists() {
        bail!("{} is missing", clone_yaml.display());
    }
    let backend = args.kubevirt;
    step(
        started,
        match backend {
            crate::Backend::Real => {
                "finding or building etcd, kube-apiserver, kube-controller-manager and KubeVirt \
                 v1.7.0's virt-controller and virt-api (minutes on first use)"
            }
            crate::Backend::Sim => {
                "finding or building etcd, kube-apiserver and kube-controller-manager (minutes on \
                 first use)"
            }
        },
    );
    let env = TestEnv::start_with_options(backend.options())
        .await
        .context("starting the control plane")?;
    step(
        started,
        &format!("control plane up at {}", env.apiserver_url()),
    );
    let client = env.client().await?;

    let sim = match backend {
        crate::Backend::Real => {
            step(
                started,
                &format!(
                    "KubeVirt {} virt-controller and virt-api (real) run with the Snapshot feature \
                     gate; the stand-in plays storage (CSI snapshots, PVC binding) and CDI",
                    testenv::KUBEVIRT_VERSION
                ),
            );
            kubevirt_sim::install_storage(client.clone()).await?;
            kubevirt_sim::SimConfig::default().storage_only(true)
        }
        crate::Backend::Sim => {
            step(
                started,
                "KubeVirt stand-in (kubevirt-sim): installing it and enabling the Snapshot \
                 feature gate",
            );
            install_stand_in(&client).await?;
            kubevirt_sim::SimConfig::default()
        }
    };
    let sim = kubevirt_sim::Sim::start(client.clone(), sim).await?;

    step(started, "starting the clone controller");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(clone_controller::run(
        client.clone(),
        clone_controller::Config::default(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    step(started, "creating the source VM vm-cirros");
    kubectl(
        &env,
        &["apply", "--server-side", "-f", "-"],
        Some(&kubevirt_sim::examples::source_vm()),
    )
    .await?;

    let clone_path = clone_yaml.to_string_lossy().into_owned();
    let clone_started = Instant::now();
    step(
        started,
        &format!(
            "$ kubectl create -f {}",
            clone_yaml
                .strip_prefix(crate::repo())
                .unwrap_or(&clone_yaml)
                .display()
        ),
    );
    eprint!(
        "{}",
        kubectl(&env, &["create", "-f", &clone_path], None).await?
    );

    // Record the phases the clone passes through while kubectl waits.
    let clones: Api<VirtualMachineClone> = Api::namespaced(client.clone(), "default");
    let recorder = tokio::spawn(async move {
        let mut phases: Vec<ClonePhase> = Vec::new();
        loop {
            if let Ok(c) = clones.get("testclone").await {
                let phase = c.status.map(|s| s.phase).unwrap_or_default();
                if phases.last() != Some(&phase) {
                    phases.push(phase);
                }
                if phase.is_terminal() {
                    return phases;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    step(
        started,
        "$ kubectl wait vmclone testclone --for condition=Ready",
    );
    let waited = env
        .kubectl_output(
            &[
                "wait",
                "vmclone",
                "testclone",
                "--for",
                "condition=Ready",
                "--timeout=180s",
            ],
            None,
        )
        .await?;
    eprint!("{}", waited.stdout);
    if !waited.success() {
        let status = kubectl(&env, &["get", "vmclone", "testclone", "-o", "yaml"], None)
            .await
            .unwrap_or_default();
        bail!(
            "the clone did not become Ready: {}\n{status}",
            waited.stderr.trim()
        );
    }
    let clone_took = clone_started.elapsed();
    let phases = tokio::time::timeout(Duration::from_secs(10), recorder).await??;

    step(started, "$ kubectl get vm vm-clone-target -o yaml");
    println!(
        "{}",
        kubectl(&env, &["get", "vm", "vm-clone-target", "-o", "yaml"], None).await?
    );
    println!("{}", kubectl(&env, &["get", "vmclone"], None).await?);

    let names: Vec<&str> = phases
        .iter()
        .map(|p| {
            if *p == ClonePhase::Unset {
                "\"\""
            } else {
                p.as_str()
            }
        })
        .collect();
    let kubevirt = match backend {
        crate::Backend::Real => format!(
            "KubeVirt {} virt-controller (real)",
            testenv::KUBEVIRT_VERSION
        ),
        crate::Backend::Sim => "the KubeVirt stand-in (kubevirt-sim)".to_owned(),
    };
    println!(
        "Summary: on {kubevirt}, testclone went {} in {:.1}s (demo so far {:.1}s).",
        names.join(" → "),
        clone_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    if args.keep {
        println!(
            "\nThe sandbox keeps running. In another shell:\n  export KUBECONFIG={}\n  kubectl get vmclone,vm -A\nPress Ctrl-C to stop it.",
            env.kubeconfig_path().display()
        );
        tokio::signal::ctrl_c().await?;
    }
    step(started, "stopping");
    let _ = stop_tx.send(());
    let _ = controller.await;
    sim.stop().await;
    drop(env);
    Ok(())
}
