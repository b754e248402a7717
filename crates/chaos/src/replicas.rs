//! The controller under test: one or more processes of the real binary, killed with SIGKILL and
//! started again the way a kubelet would restart a crashed container.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use testenv::Supervised;

/// The Lease the replicas elect a leader through (the controller's fixed name).
const LEASE: &str = "vmclone-controller";

/// How the replicas are started.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// The `clone-controller` binary.
    pub binary: PathBuf,
    /// Its kubeconfig.
    pub kubeconfig: PathBuf,
    /// The namespace it watches (also where the Lease lives).
    pub namespace: String,
    /// Processes; more than one turns on leader election.
    pub count: usize,
    /// Lease duration in seconds (with leader election).
    pub lease_seconds: u64,
    /// How long a restore KubeVirt keeps retrying may stall before its clone fails
    /// (`--restore-stall-timeout-seconds`, whole seconds).
    pub restore_stall_timeout: Duration,
    /// Where each replica's log goes (appended across restarts).
    pub log_dir: PathBuf,
}

#[derive(Debug)]
struct Replica {
    name: String,
    /// Killed (`SIGKILL`) when dropped.
    process: Supervised,
}

/// The controller's `RUST_LOG`: `CHAOS_CONTROLLER_LOG` when set (for example
/// `info,kube_runtime=debug,kube_client=debug` to see every watch and list), else `info`.
fn controller_log_filter() -> String {
    std::env::var("CHAOS_CONTROLLER_LOG").unwrap_or_else(|_| "info".into())
}

/// The running replicas; all are killed (`SIGKILL`) on drop.
#[derive(Debug)]
pub struct Replicas {
    spec: ReplicaSpec,
    running: Vec<Replica>,
    /// Exits we did not cause: `(replica, exit status)`.
    pub unexpected_exits: Vec<(String, String)>,
    /// kill -9s we did.
    pub kills: usize,
}

impl Replicas {
    /// Starts `spec.count` replicas.
    pub fn start(spec: ReplicaSpec) -> Result<Replicas> {
        std::fs::create_dir_all(&spec.log_dir)
            .with_context(|| format!("creating {}", spec.log_dir.display()))?;
        let mut replicas = Replicas {
            running: Vec::new(),
            spec,
            unexpected_exits: Vec::new(),
            kills: 0,
        };
        for index in 0..replicas.spec.count {
            let name = format!("replica-{index}");
            let process = replicas.spawn(&name)?;
            replicas.running.push(Replica { name, process });
        }
        Ok(replicas)
    }

    fn spawn(&self, name: &str) -> Result<Supervised> {
        let spec = &self.spec;
        let mut args: Vec<OsString> = vec![
            "--kubeconfig".into(),
            spec.kubeconfig.clone().into(),
            "--namespace".into(),
            spec.namespace.clone().into(),
            "--metrics-addr=127.0.0.1:0".into(),
            "--health-addr=127.0.0.1:0".into(),
            format!(
                "--restore-stall-timeout-seconds={}",
                spec.restore_stall_timeout.as_secs()
            )
            .into(),
        ];
        if spec.count > 1 {
            args.extend([
                "--leader-elect".into(),
                "--leader-election-namespace".into(),
                spec.namespace.clone().into(),
                format!("--lease-duration-seconds={}", spec.lease_seconds).into(),
            ]);
        }
        // Logs are appended across restarts: `<log_dir>/<name>.log`.
        let mut process = Supervised::new(name, &spec.log_dir, &spec.binary, args)
            .log_to(spec.log_dir.join(format!("{name}.log")))
            .env("RUST_LOG", controller_log_filter())
            .env("POD_NAME", name);
        process
            .start()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        Ok(process)
    }

    /// The replica to kill: the Lease holder when there is one we can read, else the first.
    async fn victim(&self, client: &Client) -> usize {
        if self.running.len() < 2 {
            return 0;
        }
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.spec.namespace);
        let holder = leases
            .get_opt(LEASE)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        holder
            .and_then(|h| self.running.iter().position(|r| r.name == h))
            .unwrap_or(0)
    }

    /// kill -9 the leader (or the only replica) and start it again at once. Every other kill
    /// starts the replacement under a new identity: a container restarted in its pod keeps its
    /// name (and resumes a Lease it still holds), a replaced pod does not (the other replica
    /// takes over once the Lease expires). Returns what happened.
    pub async fn kill_leader(&mut self, client: &Client) -> Result<String> {
        let index = self.victim(client).await;
        self.collect_exits()?;
        let old = self.running[index].name.clone();
        let replica = &mut self.running[index];
        // SIGKILL: no shutdown hook runs, the Lease is not released.
        replica.process.stop();
        self.kills += 1;
        let new = if self.kills.is_multiple_of(2) {
            format!("replica-{index}-{}", self.kills)
        } else {
            old.clone()
        };
        let process = self.spawn(&new)?;
        self.running[index] = Replica {
            name: new.clone(),
            process,
        };
        Ok(if new == old {
            format!("{old}, restarted in place")
        } else {
            format!("{old}, replaced by {new}")
        })
    }

    /// Notes replicas that exited without being killed and starts them again (as a kubelet
    /// would), so one crash does not end the run; the checks report every such exit.
    pub fn collect_exits(&mut self) -> Result<()> {
        for index in 0..self.running.len() {
            let exited = self.running[index].process.exited();
            if let Some(status) = exited {
                let name = self.running[index].name.clone();
                self.unexpected_exits
                    .push((name.clone(), status.to_string()));
                self.running[index].process = self.spawn(&name)?;
            }
        }
        Ok(())
    }

    /// Every log written so far (replaced replicas included), by replica name.
    pub fn logs(&self) -> Result<Vec<(String, String)>> {
        let mut logs = Vec::new();
        for entry in std::fs::read_dir(&self.spec.log_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                logs.push((name, std::fs::read_to_string(&path)?));
            }
        }
        logs.sort();
        Ok(logs)
    }
}
