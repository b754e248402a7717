//! vmclone's fault suite (test layer 5 of `testbed.md`).
//!
//! A run starts a private control plane (etcd, kube-apiserver, kube-controller-manager) with
//! kubevirt-sim, creates source VMs, a golden snapshot and VMs no clone may touch, starts the real
//! controller binary (one replica, or several with leader election), and then creates clones
//! spread over time while it injects faults: kill -9 of the (leading) controller at random moments
//! and the first time a clone reaches each phase, kube-apiserver and etcd restarts, clones and a
//! source VM deleted mid-way, and snapshot and restore failures from the sim. Once every clone has
//! settled it checks the invariants ([`check`]) and returns a [`Report`].
//!
//! `cargo xtask chaos` runs a large configuration; the clone-controller test suite runs
//! [`Config::small`].

pub mod check;
pub mod plan;
pub mod replicas;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clone_api::kubevirt::VirtualMachineSnapshot;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use kubevirt_sim::{Sim, SimConfig};
use serde_json::json;
use testenv::{TestEnv, wait_for};
use tracing::info;

use crate::plan::{Expect, Fault, FaultCounts, PlannedClone, PlannedFault, Rng, Trigger};
use crate::replicas::{ReplicaSpec, Replicas};

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed of the plan (clone flavours, fault moments); a failing run prints it.
    pub seed: u64,
    /// Clones created.
    pub clones: usize,
    /// The clones are created evenly over this time; random faults fall inside it.
    pub spread: Duration,
    /// The sim's pause before each step, so that faults land while clones are midway.
    pub sim_latency: Duration,
    /// Controller processes (2+ elect a leader).
    pub replicas: usize,
    /// Lease duration with leader election.
    pub lease_seconds: u64,
    /// Which faults, how many.
    pub faults: FaultCounts,
    /// How long the clones may take to settle after the last fault.
    pub settle_timeout: Duration,
    /// The `clone-controller` binary.
    pub controller_binary: PathBuf,
    /// Where the controller logs go.
    pub log_dir: PathBuf,
}

impl Config {
    /// The configuration `cargo test` runs: a dozen clones, one replica, every kind of fault
    /// once.
    pub fn small(controller_binary: PathBuf, log_dir: PathBuf) -> Config {
        Config {
            seed: 1,
            clones: 12,
            spread: Duration::from_secs(8),
            sim_latency: Duration::from_millis(150),
            replicas: 1,
            lease_seconds: 5,
            faults: FaultCounts {
                kill_at_each_phase: true,
                random_kills: 1,
                apiserver_restarts: 1,
                etcd_restarts: 1,
                clone_deletions: 1,
                delete_source: true,
            },
            settle_timeout: Duration::from_secs(120),
            controller_binary,
            log_dir,
        }
    }

    /// The configuration of `cargo xtask chaos`: more clones and faults, two replicas.
    pub fn large(controller_binary: PathBuf, log_dir: PathBuf) -> Config {
        Config {
            seed: 42,
            clones: 80,
            spread: Duration::from_secs(40),
            sim_latency: Duration::from_millis(250),
            replicas: 2,
            lease_seconds: 5,
            faults: FaultCounts {
                kill_at_each_phase: true,
                random_kills: 6,
                apiserver_restarts: 2,
                etcd_restarts: 2,
                clone_deletions: 5,
                delete_source: true,
            },
            settle_timeout: Duration::from_secs(300),
            controller_binary,
            log_dir,
        }
    }
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct FiredFault {
    /// When, from the start of the run.
    pub at: Duration,
    /// What was done.
    pub what: String,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Faults in the order they fired.
    pub faults: Vec<FiredFault>,
    /// Planned faults that never found their moment (e.g. no clone was seen in a short phase).
    pub skipped: Vec<String>,
    /// Clone name → how it ended (`Succeeded`, `Failed/<reason>`, `deleted`, ...).
    pub outcomes: BTreeMap<String, String>,
    /// Every invariant violation; empty means the run passed.
    pub problems: Vec<String>,
    /// Wall time of the run.
    pub duration: Duration,
    /// Where the controller logs are.
    pub log_dir: PathBuf,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// A human-readable account of the run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos run (seed {}) took {:.1}s, {} clones, {} faults",
            self.seed,
            self.duration.as_secs_f64(),
            self.outcomes.len(),
            self.faults.len()
        );
        for f in &self.faults {
            let _ = writeln!(out, "  {:>6.1}s  {}", f.at.as_secs_f64(), f.what);
        }
        for s in &self.skipped {
            let _ = writeln!(out, "  skipped: {s}");
        }
        let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
        for outcome in self.outcomes.values() {
            *tally.entry(outcome.as_str()).or_default() += 1;
        }
        let _ = writeln!(out, "outcomes:");
        for (outcome, n) in tally {
            let _ = writeln!(out, "  {n:>4}  {outcome}");
        }
        if self.problems.is_empty() {
            let _ = writeln!(out, "every invariant held");
        } else {
            let _ = writeln!(out, "{} invariant violations:", self.problems.len());
            for p in &self.problems {
                let _ = writeln!(out, "  - {p}");
            }
        }
        let _ = writeln!(out, "controller logs: {}", self.log_dir.display());
        out
    }
}

/// What the driver knows about one clone.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The plan.
    pub plan: PlannedClone,
    /// Its UID once created.
    pub uid: Option<String>,
    /// Deleted by a fault.
    pub deleted: bool,
}

/// Runs the suite once.
pub async fn run(config: Config) -> Result<Report> {
    let started = Instant::now();
    let mut rng = Rng::new(config.seed);
    let plan = plan::clones(&mut rng, config.clones, config.spread);
    let mut pending_faults = plan::faults(&mut rng, &config.faults, config.spread);

    info!("starting a private control plane");
    let mut env = TestEnv::start()
        .await
        .context("starting the control plane")?;
    let client = env.client().await?;
    kubevirt_sim::install(client.clone()).await?;
    kubevirt_sim::set_feature_gates(client.clone(), &["Snapshot"]).await?;
    let ns = env.namespace("chaos").await?;
    let sim = Sim::start(
        client.clone(),
        SimConfig::default()
            .namespace(ns.clone())
            .latency(config.sim_latency),
    )
    .await?;

    let world = setup_world(&env, &client, &ns).await?;
    let mut replicas = Replicas::start(ReplicaSpec {
        binary: config.controller_binary.clone(),
        kubeconfig: env.kubeconfig_path().to_owned(),
        namespace: ns.clone(),
        count: config.replicas.max(1),
        lease_seconds: config.lease_seconds,
        log_dir: config.log_dir.clone(),
    })?;

    let mut report = Report {
        seed: config.seed,
        log_dir: config.log_dir.clone(),
        ..Report::default()
    };
    let mut tracked: Vec<Tracked> = plan
        .into_iter()
        .map(|plan| Tracked {
            plan,
            uid: None,
            deleted: false,
        })
        .collect();
    let clones: Api<VirtualMachineClone> = Api::namespaced(client.clone(), &ns);
    let mut seen_phases: Vec<ClonePhase> = Vec::new();
    let t0 = Instant::now();

    // The run: create clones on schedule, fire each fault when its moment comes, one at a time.
    loop {
        let now = t0.elapsed();
        for t in tracked
            .iter_mut()
            .filter(|t| t.uid.is_none() && t.plan.at <= now)
        {
            // During an API server restart a create fails; the next tick tries again.
            if let Ok(uid) = create_clone(&clones, &t.plan).await {
                t.uid = Some(uid);
            }
        }
        let listed = clones.list(&ListParams::default()).await.ok();
        if let Some(list) = &listed {
            for p in list.items.iter().map(phase) {
                if !seen_phases.contains(&p) {
                    seen_phases.push(p);
                }
            }
        }
        replicas.collect_exits()?;

        let all_created = tracked.iter().all(|t| t.uid.is_some());
        let all_settled = listed
            .as_ref()
            .is_some_and(|l| l.items.iter().all(|c| settled(c, &tracked)));
        let due = pending_faults.iter().position(|f| match &f.trigger {
            Trigger::At(at) => *at <= now,
            Trigger::Phase(p) => seen_phases.contains(p),
        });
        if let Some(index) = due {
            let fault = pending_faults.remove(index);
            match fire(
                &fault,
                &mut env,
                &client,
                &ns,
                &mut replicas,
                &mut tracked,
                listed.as_ref(),
            )
            .await?
            {
                Some(what) => {
                    info!(at = ?t0.elapsed(), what, "fault");
                    report.faults.push(FiredFault {
                        at: t0.elapsed(),
                        what,
                    });
                    continue;
                }
                // Nothing to act on yet (no clone midway): try again on a later tick.
                None if !(all_created && all_settled) => pending_faults.push(fault),
                None => report
                    .skipped
                    .push(format!("{fault:?}: nothing left to act on")),
            }
        }
        if all_created && (pending_faults.is_empty() || all_settled) {
            for f in pending_faults.drain(..) {
                report
                    .skipped
                    .push(format!("{f:?}: never triggered (clones settled first)"));
            }
            break;
        }
        if now > config.spread + config.settle_timeout {
            bail!("the run did not get through its schedule in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Settle: every clone terminal (or gone), then let the garbage collector finish.
    let settled_in = wait_for("every clone to settle", config.settle_timeout, || async {
        let list = clones.list(&ListParams::default()).await?;
        let waiting: Vec<String> = list
            .items
            .iter()
            .filter(|c| !settled(c, &tracked))
            .map(|c| format!("{} ({:?})", c.name_any(), phase(c)))
            .collect();
        anyhow::ensure!(waiting.is_empty(), "still working: {waiting:?}");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    if let Err(e) = settled_in {
        report.problems.push(format!("{e:#}"));
    }
    replicas.collect_exits()?;
    check::run(&client, &ns, &tracked, &world, &replicas, &mut report).await?;

    sim.stop().await;
    drop(replicas);
    drop(env);
    report.duration = started.elapsed();
    Ok(report)
}

fn phase(c: &VirtualMachineClone) -> ClonePhase {
    c.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Whether a clone is where it may stay: terminal, or (source deleted under it) waiting for a
/// source that will not come back.
fn settled(c: &VirtualMachineClone, tracked: &[Tracked]) -> bool {
    if phase(c).is_terminal() {
        return true;
    }
    // A clone whose source was deleted waits for it (no snapshot yet), or follows a snapshot
    // taken first, which KubeVirt keeps in progress until its deadline (checked in `check`).
    let plan = tracked.iter().find(|t| t.plan.name == c.name_any());
    plan.is_some_and(|t| t.plan.expect == Expect::SourceMayVanish)
        && (check::ready_reason(c).as_deref() == Some("SourceDoesNotExist")
            || phase(c) == ClonePhase::SnapshotInProgress)
}

async fn create_clone(api: &Api<VirtualMachineClone>, plan: &PlannedClone) -> Result<String> {
    let clone: VirtualMachineClone = serde_json::from_value(plan.manifest.clone())?;
    match api.create(&PostParams::default(), &clone).await {
        Ok(created) => Ok(created.uid().unwrap_or_default()),
        // Created before a restart cut the response off.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Ok(api.get(&plan.name).await?.uid().unwrap_or_default())
        }
        Err(e) => Err(e.into()),
    }
}

/// Fires one fault; `None` when there is nothing to act on yet.
async fn fire(
    planned: &PlannedFault,
    env: &mut TestEnv,
    client: &Client,
    ns: &str,
    replicas: &mut Replicas,
    tracked: &mut [Tracked],
    listed: Option<&kube::core::ObjectList<VirtualMachineClone>>,
) -> Result<Option<String>> {
    let when = match &planned.trigger {
        Trigger::At(_) => "at random".to_owned(),
        Trigger::Phase(p) => format!("on first {}", p.as_str()),
    };
    Ok(Some(match planned.fault {
        Fault::KillController => {
            let what = replicas.kill_leader(client).await?;
            format!("kill -9 {what} ({when})")
        }
        Fault::RestartApiserver => {
            env.restart_apiserver().await?;
            "kube-apiserver restarted".to_owned()
        }
        Fault::RestartEtcd => {
            env.restart_etcd().await?;
            "etcd restarted".to_owned()
        }
        Fault::DeleteSource => {
            let vms: Api<clone_api::kubevirt::VirtualMachine> = Api::namespaced(client.clone(), ns);
            match vms
                .delete(plan::DOOMED_SOURCE, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            format!("deleted source VM {}", plan::DOOMED_SOURCE)
        }
        Fault::DeleteClone => {
            let Some(list) = listed else { return Ok(None) };
            // A clone that is midway, preferably past its snapshot.
            let midway = |c: &&VirtualMachineClone| {
                let p = phase(c);
                !p.is_terminal() && p != ClonePhase::Unset
            };
            let Some(victim) = list.items.iter().find(midway) else {
                return Ok(None);
            };
            let name = victim.name_any();
            let p = phase(victim);
            let api: Api<VirtualMachineClone> = Api::namespaced(client.clone(), ns);
            api.delete(&name, &DeleteParams::background()).await?;
            if let Some(t) = tracked.iter_mut().find(|t| t.plan.name == name) {
                t.deleted = true;
            }
            format!("deleted clone {name} in phase {}", p.as_str())
        }
    }))
}

/// Creates the sources, the untouchable VMs and the golden snapshot; returns their fingerprints.
async fn setup_world(env: &TestEnv, client: &Client, ns: &str) -> Result<check::World> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": plan::initial_objects()});
    env.kubectl_output(
        &["apply", "--server-side", "-n", ns, "-f", "-"],
        Some(&list.to_string()),
    )?
    .ok()?;
    let snapshots: Api<VirtualMachineSnapshot> = Api::namespaced(client.clone(), ns);
    let golden: VirtualMachineSnapshot = serde_json::from_value(plan::golden_snapshot())?;
    snapshots.create(&PostParams::default(), &golden).await?;
    wait_for(
        "the golden snapshot to be ready",
        Duration::from_secs(60),
        || async {
            let s = snapshots.get(plan::GOLDEN_SNAPSHOT).await?;
            anyhow::ensure!(
                s.status.as_ref().is_some_and(|s| s.is_ready()),
                "not ready yet"
            );
            Ok::<_, anyhow::Error>(())
        },
    )
    .await?;
    check::World::record(client, ns).await
}
