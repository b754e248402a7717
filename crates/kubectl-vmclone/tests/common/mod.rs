//! The plugin's test bed: a real control plane with an audit log (so a test can count the
//! plugin's requests), KubeVirt (its own virt-controller and virt-api, or the stand-in), the
//! clone controller in-process, one fresh namespace per test, and the `kubectl-vmclone` binary
//! run as its own user (`kubectl-vmclone`, one of testenv's identities).

#![allow(dead_code)]

use std::process::{Command, Output};

use anyhow::{Context as _, Result};
use kubevirt_sim::{Sim, SimConfig, SimHandle};
use testenv::{Options, TestEnv};
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;

/// Which KubeVirt a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The stand-in plays KubeVirt and CDI.
    Sim,
    /// KubeVirt v1.7.0's own virt-controller and virt-api; the stand-in plays storage and CDI.
    KubeVirt,
}

static SIM_ENV: OnceCell<std::result::Result<TestEnv, String>> = OnceCell::const_new();
static KUBEVIRT_ENV: OnceCell<std::result::Result<TestEnv, String>> = OnceCell::const_new();

impl Backend {
    /// This backend's control plane for the test process, with an audit log.
    pub async fn env(self) -> Result<&'static TestEnv> {
        let (cell, options) = match self {
            Backend::Sim => (&SIM_ENV, Options::default()),
            Backend::KubeVirt => (&KUBEVIRT_ENV, Options::kubevirt()),
        };
        let options = Options {
            audit_log: true,
            ..options
        };
        let started = cell
            .get_or_init(|| async {
                TestEnv::start_with_options(options)
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await;
        started
            .as_ref()
            .map_err(|message| anyhow::anyhow!("the control plane did not start: {message}"))
    }
}

/// One test's world: a fresh namespace, the stand-in and the clone controller scoped to it.
pub struct Bed {
    pub env: &'static TestEnv,
    pub backend: Backend,
    pub client: kube::Client,
    pub ns: String,
    sim: Option<SimHandle>,
    controller: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

// By hand: `kube::Client` has no `Debug`.
impl std::fmt::Debug for Bed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bed")
            .field("backend", &self.backend)
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

impl Bed {
    /// A fresh namespace `<prefix>-<n>` with KubeVirt, storage, CDI and the clone controller.
    pub async fn start(backend: Backend, prefix: &str) -> Result<Bed> {
        let env = backend.env().await?;
        let client = env.client().await?;
        let sim = match backend {
            Backend::Sim => {
                kubevirt_sim::install(client.clone()).await?;
                kubevirt_sim::set_feature_gates(client.clone(), &["Snapshot"]).await?;
                SimConfig::default()
            }
            Backend::KubeVirt => {
                kubevirt_sim::install_storage(client.clone()).await?;
                SimConfig::default().storage_only(true)
            }
        };
        let ns = env.namespace(prefix).await?;
        let sim = Sim::start(client.clone(), sim.namespace(ns.clone())).await?;
        let (tx, rx) = oneshot::channel::<()>();
        let config = clone_controller::Config {
            namespace: Some(ns.clone()),
            ..Default::default()
        };
        let controller = tokio::spawn({
            let client = env.identity_client("clone-controller").await?;
            async move {
                clone_controller::run(client, config, async move {
                    let _ = rx.await;
                })
                .await
            }
        });
        Ok(Bed {
            env,
            backend,
            client,
            ns,
            sim: Some(sim),
            controller: Some((tx, controller)),
        })
    }

    /// `kubectl-vmclone <args>` in the test namespace, as the `kubectl-vmclone` user.
    pub async fn plugin(&self, args: &[&str]) -> Result<Output> {
        tokio::process::Command::from(self.plugin_command(args))
            .output()
            .await
            .context("running kubectl-vmclone")
    }

    /// The command that runs the plugin (for a caller that wants a terminal or a pipe).
    pub fn plugin_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-vmclone"));
        command
            .arg("--kubeconfig")
            .arg(self.env.identity_kubeconfig("kubectl-vmclone"))
            .arg("-n")
            .arg(&self.ns)
            .args(args)
            .env_remove("KUBECONFIG");
        command
    }

    /// `kubectl -n <ns> <args>`, failing on a non-zero exit; its stdout.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut all: Vec<&str> = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        Ok(self.env.kubectl_output(&all, stdin).await?.ok()?.stdout)
    }

    /// Requests the plugin's user made with `verb` on `resource`, from the audit log.
    pub fn plugin_requests(&self, verb: &str, resource: &str) -> Result<usize> {
        let path = self.env.audit_log_path().context("no audit log")?;
        let text = std::fs::read_to_string(&path)?;
        let mut count = 0;
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let user = event["user"]["username"].as_str().unwrap_or_default();
            let stage = event["stage"].as_str().unwrap_or_default();
            // A watch logs `ResponseStarted` when it opens (and `ResponseComplete` when it
            // closes); other requests log `ResponseComplete` only.
            let counted = if verb == "watch" {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            };
            if user == "kubectl-vmclone"
                && event["verb"] == verb
                && event["objectRef"]["resource"] == resource
                && event["objectRef"]["namespace"] == self.ns.as_str()
                && stage == counted
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Stops the controller and the stand-in.
    pub async fn stop(mut self) {
        if let Some((tx, task)) = self.controller.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
        if let Some(sim) = self.sim.take() {
            sim.stop().await;
        }
    }
}
