//! vmclone's fault suite (test layer 5 of `testbed.md`).
//!
//! A run starts a private control plane (etcd, kube-apiserver, kube-controller-manager) with
//! kubevirt-sim (scoped to the run's namespace, so it also serves KubeVirt's restore admission
//! webhook there), creates source VMs, a golden snapshot and VMs no clone may touch, installs an
//! admission policy that refuses to create VMs named `stuck-*` except in dry runs, starts the real
//! controller binary (one replica, or several with leader election; a short restore stall
//! timeout), and then creates clones spread over time while it injects faults:
//!
//! - kill -9 of the (leading) controller at random moments and the first time a clone reaches
//!   each phase; kube-apiserver and etcd restarts; clones deleted mid-way;
//! - the doomed source VM deleted while the snapshots of it are held at their first step (the
//!   sim's `hold-snapshot-ready`: snapshot `Succeeded`, content not ready), then the hold lifted;
//! - a window in which the restore admission webhook answers every restore creation with an
//!   internal error (HTTP 400, the namespace annotated `admission-error`), and another in which
//!   KubeVirt's `Snapshot` feature gate is off;
//! - snapshot and restore failures from the sim, and restores KubeVirt retries for ever (their
//!   target VM refused by the policy) until the controller gives up on them.
//!
//! While it runs it records every clone's phase and Ready reason ([`history`]). Once every clone
//! has settled it checks the invariants ([`check`]) and returns a [`Report`].
//!
//! `cargo xtask chaos` runs a large configuration; the clone-controller test suite runs
//! [`Config::small`].

pub mod check;
pub mod history;
pub mod plan;
pub mod replicas;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clone_api::kubevirt::{KubeVirt, VirtualMachine, VirtualMachineSnapshot};
use clone_api::names::TEMP_SNAPSHOT_PREFIX;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use clone_core::decide::{FeatureGate, GateMode, snapshot_gate};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kubevirt_sim::names::{
    ADMISSION_ERROR_ANNOTATION, HOLD_SNAPSHOT_READY_ANNOTATION, KUBEVIRT_INSTALL_NAMESPACE,
    SNAPSHOT_GATE,
};
use kubevirt_sim::{Sim, SimConfig};
use serde_json::{Value, json};
use testenv::{TestEnv, wait_for};
use tracing::info;

use crate::history::History;
use crate::plan::{Expect, Fault, FaultCounts, PlannedClone, PlannedFault, Rng, Trigger};
use crate::replicas::{ReplicaSpec, Replicas};

/// How long a fault's own API calls may keep failing (right after an API server or etcd
/// restart) before the run gives up.
const FAULT_API_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// The controller's `--restore-stall-timeout-seconds`: how long the stuck clones' restores
    /// retry before their clones fail.
    pub restore_stall_timeout: Duration,
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
    /// once, a 15 s restore stall timeout.
    pub fn small(controller_binary: PathBuf, log_dir: PathBuf) -> Config {
        Config {
            seed: 1,
            clones: 12,
            spread: Duration::from_secs(8),
            sim_latency: Duration::from_millis(150),
            replicas: 1,
            lease_seconds: 5,
            restore_stall_timeout: Duration::from_secs(15),
            faults: FaultCounts {
                kill_at_each_phase: true,
                random_kills: 1,
                apiserver_restarts: 1,
                etcd_restarts: 1,
                clone_deletions: 1,
                delete_source: true,
                admission_errors: true,
                gate_off: true,
                window: Duration::from_secs(2),
            },
            settle_timeout: Duration::from_secs(120),
            controller_binary,
            log_dir,
        }
    }

    /// The configuration of `cargo xtask chaos`: more clones and faults, two replicas, a 20 s
    /// restore stall timeout.
    pub fn large(controller_binary: PathBuf, log_dir: PathBuf) -> Config {
        Config {
            seed: 42,
            clones: 80,
            spread: Duration::from_secs(40),
            sim_latency: Duration::from_millis(250),
            replicas: 2,
            lease_seconds: 5,
            restore_stall_timeout: Duration::from_secs(20),
            faults: FaultCounts {
                kill_at_each_phase: true,
                random_kills: 6,
                apiserver_restarts: 2,
                etcd_restarts: 2,
                clone_deletions: 5,
                delete_source: true,
                admission_errors: true,
                gate_off: true,
                window: Duration::from_secs(6),
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
    /// Its kind ([`Fault::kind`]).
    pub kind: &'static str,
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
    /// Clone name → how it ended (`Succeeded`, `Failed/<reason>`, `Failed/RestoreFailed (stalled)`,
    /// `deleted`, ...).
    pub outcomes: BTreeMap<String, String>,
    /// Hold event reason (`RestoreCreationFailed`, ...) → clones that got that event.
    pub holds: BTreeMap<String, usize>,
    /// Temporary snapshots and restores, and `stuck-*` VMs, left after the cleanup time.
    pub leaks: Vec<String>,
    /// Every invariant violation; empty means the run passed.
    pub problems: Vec<String>,
    /// Wall time of the run.
    pub duration: Duration,
    /// Where the controller logs are.
    pub log_dir: PathBuf,
}

/// How many times each item occurs, by item.
fn tally<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        *tally.entry(item).or_default() += 1;
    }
    tally
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// A human-readable account of the run: its size, the faults by kind and in order, the
    /// outcomes by reason, the holds the faults caused, the leaks and the violations.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos run (seed {}) took {:.1}s: {} clones, {} faults, {} leaks",
            self.seed,
            self.duration.as_secs_f64(),
            self.outcomes.len(),
            self.faults.len(),
            self.leaks.len()
        );
        let _ = writeln!(out, "faults by kind:");
        for (kind, n) in tally(self.faults.iter().map(|f| f.kind)) {
            let _ = writeln!(out, "  {n:>4}  {kind}");
        }
        let _ = writeln!(out, "faults in order:");
        for f in &self.faults {
            let _ = writeln!(out, "  {:>6.1}s  {}", f.at.as_secs_f64(), f.what);
        }
        for s in &self.skipped {
            let _ = writeln!(out, "  skipped: {s}");
        }
        let _ = writeln!(out, "outcomes by reason:");
        for (outcome, n) in tally(self.outcomes.values().map(String::as_str)) {
            let _ = writeln!(out, "  {n:>4}  {outcome}");
        }
        let _ = writeln!(out, "clones held (by event reason):");
        for (reason, n) in &self.holds {
            let _ = writeln!(out, "  {n:>4}  {reason}");
        }
        let _ = writeln!(out, "leaks: {}", self.leaks.len());
        for leak in &self.leaks {
            let _ = writeln!(out, "  - {leak}");
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
    /// Its snapshot had taken its first step (held there) when the run deleted its source: it
    /// must succeed.
    pub snapshot_held: bool,
}

/// A stretch of the run during which a fault was in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the run started the fault (before its first API call).
    pub from: Timestamp,
    /// When the run saw it lifted (after its last API call); `None` while in force.
    pub to: Option<Timestamp>,
}

/// What the faults changed, as the driver and the checks need to know it.
#[derive(Debug, Clone, Default)]
pub struct FaultState {
    /// When the restore admission webhook answered with internal errors.
    pub admission_errors: Option<Window>,
    /// When KubeVirt's `Snapshot` feature gate was off.
    pub gate_off: Option<Window>,
    /// The doomed source is deleted.
    pub source_deleted: bool,
    /// The snapshots of the doomed source the run held across its deletion.
    pub held_snapshots: Vec<String>,
    /// That hold is lifted.
    pub released: bool,
    /// Hold reasons (Ready reasons) seen on some clone while the window causing them was open.
    pub holds_seen: BTreeSet<&'static str>,
}

impl FaultState {
    /// Notes the Ready reasons of the holds an open window causes, when some clone shows them.
    fn note_holds(&mut self, list: &kube::core::ObjectList<VirtualMachineClone>) {
        for (window, fault) in [
            (self.admission_errors, Fault::AdmissionErrorsOff),
            (self.gate_off, Fault::FeatureGateOn),
        ] {
            let open = window.is_some_and(|w| w.to.is_none());
            if let Some(reason) = fault.hold_reason().filter(|_| open)
                && list
                    .items
                    .iter()
                    .any(|c| check::ready_reason(c).as_deref() == Some(reason))
            {
                self.holds_seen.insert(reason);
            }
        }
    }

    fn window_open(&self) -> bool {
        [self.admission_errors, self.gate_off]
            .iter()
            .flatten()
            .any(|w| w.to.is_none())
    }
}

/// Runs the suite once.
pub async fn run(config: Config) -> Result<Report> {
    let started = Instant::now();
    if !config.faults.delete_source {
        // The doomed source holds its snapshots: without the deletion (and the release after
        // it) its clones never finish.
        bail!("the chaos plan needs the source deletion (FaultCounts::delete_source)");
    }
    let mut rng = Rng::new(config.seed);
    let plan = plan::clones(&mut rng, config.clones, config.spread);
    let mut pending_faults = plan::faults(&mut rng, &config.faults, config.spread);

    info!("starting a private control plane");
    let mut env = TestEnv::start()
        .await
        .context("starting the control plane")?;
    let client = env.client().await?;
    kubevirt_sim::install(client.clone()).await?;
    kubevirt_sim::set_feature_gates(client.clone(), &[SNAPSHOT_GATE]).await?;
    let ns = env.namespace("chaos").await?;
    // The policy takes a moment to be enforced: created now, awaited once the world is set up.
    let stall_policy = create_stall_policy(&client, &ns).await?;
    // Scoped to the namespace, the sim also serves KubeVirt's restore admission webhook there
    // (the gate check and the injected internal errors come from it).
    let sim = Sim::start(
        client.clone(),
        SimConfig::default()
            .namespace(ns.clone())
            .latency(config.sim_latency),
    )
    .await?;

    info!(after = ?started.elapsed(), "control plane and sim ready");
    let world = setup_world(&env, &client, &ns).await?;
    info!(after = ?started.elapsed(), "sources and golden snapshot ready");
    wait_for_stall_policy(&client, &ns).await?;
    info!(after = ?started.elapsed(), "stall policy in force");
    let history = History::start(client.clone(), &ns);
    let mut replicas = Replicas::start(ReplicaSpec {
        binary: config.controller_binary.clone(),
        kubeconfig: env.kubeconfig_path().to_owned(),
        namespace: ns.clone(),
        count: config.replicas.max(1),
        lease_seconds: config.lease_seconds,
        restore_stall_timeout: config.restore_stall_timeout,
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
            snapshot_held: false,
        })
        .collect();
    let mut state = FaultState::default();
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
        let orphaned = if state.released {
            check::orphaned_snapshots(&client, &ns).await.ok()
        } else {
            Some(BTreeSet::new())
        };
        let all_settled = listed
            .as_ref()
            .zip(orphaned.as_ref())
            .is_some_and(|(l, o)| l.items.iter().all(|c| settled(c, &tracked, &state, o)));
        if let Some(list) = &listed {
            state.note_holds(list);
        }
        // A window stays open past its planned end until a clone is seen held by it (so that the
        // run exercises what it claims to), but no longer than twice more.
        let is_due = |f: &PlannedFault| match &f.trigger {
            Trigger::At(at) => {
                *at <= now
                    && (f
                        .fault
                        .hold_reason()
                        .is_none_or(|r| state.holds_seen.contains(r))
                        || *at + config.faults.window * 2 <= now)
            }
            Trigger::Phase(p) => seen_phases.contains(p),
        };
        // What ends a window goes first, so that restarts queued meanwhile do not stretch it.
        let due = pending_faults
            .iter()
            .position(|f| f.fault.ends_a_window() && is_due(f))
            .or_else(|| pending_faults.iter().position(is_due));
        if let Some(index) = due {
            let fault = pending_faults.remove(index);
            let mut fault_env = FaultEnv {
                env: &mut env,
                client: &client,
                ns: &ns,
                replicas: &mut replicas,
                tracked: &mut tracked,
                state: &mut state,
            };
            let last_chance = all_created && all_settled;
            match fire(&fault, &mut fault_env, listed.as_ref(), last_chance).await? {
                Some(what) => {
                    note_fault(&mut report, t0, &fault.fault, what);
                    if let Some(next) = fault.fault.follow_up() {
                        pending_faults.push(PlannedFault {
                            fault: next,
                            trigger: Trigger::At(t0.elapsed() + config.faults.window),
                        });
                    }
                    continue;
                }
                // Nothing to act on yet (no clone midway): try again on a later tick.
                None if !last_chance => pending_faults.push(fault),
                None => report
                    .skipped
                    .push(format!("{fault:?}: nothing left to act on")),
            }
        }
        if all_created && (pending_faults.is_empty() || all_settled) {
            for f in pending_faults.drain(..) {
                if f.fault.ends_a_window() {
                    // What a fault started is always undone before the checks.
                    let mut fault_env = FaultEnv {
                        env: &mut env,
                        client: &client,
                        ns: &ns,
                        replicas: &mut replicas,
                        tracked: &mut tracked,
                        state: &mut state,
                    };
                    if let Some(what) = fire(&f, &mut fault_env, None, true).await? {
                        note_fault(&mut report, t0, &f.fault, what);
                    }
                } else {
                    report
                        .skipped
                        .push(format!("{f:?}: never triggered (clones settled first)"));
                }
            }
            break;
        }
        if now > config.spread + config.settle_timeout {
            let working: Vec<String> = listed
                .iter()
                .flat_map(|l| &l.items)
                .filter(|c| !phase(c).is_terminal())
                .map(|c| {
                    let reason = check::ready_reason(c).unwrap_or_default();
                    format!("{} ({:?}, {reason})", c.name_any(), phase(c))
                })
                .collect();
            bail!(
                "the run did not get through its schedule in time: faults fired {:?}, pending {pending_faults:?}, clones not done {working:?}",
                report.faults.iter().map(|f| &f.what).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    info!(after = ?started.elapsed(), "schedule done");
    // Settle: every clone terminal (or waiting for good), then let the garbage collector finish.
    let settled_in = wait_for("every clone to settle", config.settle_timeout, || async {
        let list = clones.list(&ListParams::default()).await?;
        let orphaned = check::orphaned_snapshots(&client, &ns).await?;
        let waiting: Vec<String> = list
            .items
            .iter()
            .filter(|c| !settled(c, &tracked, &state, &orphaned))
            .map(|c| format!("{} ({:?})", c.name_any(), phase(c)))
            .collect();
        anyhow::ensure!(waiting.is_empty(), "still working: {waiting:?}");
        Ok::<_, anyhow::Error>(())
    })
    .await;
    if let Err(e) = settled_in {
        report.problems.push(format!("{e:#}"));
    }
    info!(after = ?started.elapsed(), "settled");
    replicas.collect_exits()?;
    let observed = check::Observed {
        tracked: &tracked,
        world: &world,
        replicas: &replicas,
        history: &history,
        faults: &state,
    };
    check::run(&client, &ns, &observed, &mut report).await?;
    info!(after = ?started.elapsed(), "checked");

    drop(history);
    remove_stall_policy(&client, &stall_policy).await;
    sim.stop().await;
    drop(replicas);
    drop(env);
    report.duration = started.elapsed();
    Ok(report)
}

fn note_fault(report: &mut Report, t0: Instant, fault: &Fault, what: String) {
    info!(at = ?t0.elapsed(), what, "fault");
    report.faults.push(FiredFault {
        at: t0.elapsed(),
        kind: fault.kind(),
        what,
    });
}

fn phase(c: &VirtualMachineClone) -> ClonePhase {
    c.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Whether a clone is where it may stay: terminal, or (its source deleted before it took a
/// snapshot) waiting for good — on a source that will not come back, or on a snapshot KubeVirt
/// reports without source (`orphaned`) — once the run has lifted the hold on the doomed source's
/// snapshots. A clone whose snapshot the run held across the deletion must get to the end.
fn settled(
    c: &VirtualMachineClone,
    tracked: &[Tracked],
    state: &FaultState,
    orphaned: &BTreeSet<String>,
) -> bool {
    if phase(c).is_terminal() {
        return true;
    }
    let Some(t) = tracked.iter().find(|t| t.plan.name == c.name_any()) else {
        return false;
    };
    if t.plan.expect != Expect::SourceMayVanish || t.snapshot_held || !state.released {
        return false;
    }
    check::ready_reason(c).as_deref() == Some("SourceDoesNotExist")
        || (phase(c) == ClonePhase::SnapshotInProgress
            && c.status
                .as_ref()
                .and_then(|s| s.snapshot_name.as_ref())
                .is_some_and(|n| orphaned.contains(n)))
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

/// What a fault acts on.
struct FaultEnv<'a> {
    env: &'a mut TestEnv,
    client: &'a Client,
    ns: &'a str,
    replicas: &'a mut Replicas,
    tracked: &'a mut [Tracked],
    state: &'a mut FaultState,
}

/// Retries `attempt` until it succeeds: a fault's API calls may land right after an API server
/// or etcd restart.
async fn retrying<T, F, Fut>(what: &str, attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    wait_for(what, FAULT_API_TIMEOUT, attempt).await
}

/// Fires one fault; `None` when there is nothing to act on yet. With `last_chance` (every clone
/// has settled) a fault that waits for its moment fires anyway when firing it still means
/// something.
async fn fire(
    planned: &PlannedFault,
    f: &mut FaultEnv<'_>,
    listed: Option<&kube::core::ObjectList<VirtualMachineClone>>,
    last_chance: bool,
) -> Result<Option<String>> {
    let when = match &planned.trigger {
        Trigger::At(_) => "at random".to_owned(),
        Trigger::Phase(p) => format!("on first {}", p.as_str()),
    };
    let (client, ns) = (f.client, f.ns);
    Ok(Some(match planned.fault {
        Fault::KillController => {
            let what = f.replicas.kill_leader(client).await?;
            format!("kill -9 {what} ({when})")
        }
        Fault::RestartApiserver => {
            f.env.restart_apiserver().await?;
            "kube-apiserver restarted".to_owned()
        }
        Fault::RestartEtcd => {
            f.env.restart_etcd().await?;
            "etcd restarted".to_owned()
        }
        Fault::DeleteSource => match delete_source(f, last_chance).await? {
            Some(what) => what,
            None => return Ok(None),
        },
        Fault::ReleaseSnapshots => {
            let snapshots: Api<VirtualMachineSnapshot> = Api::namespaced(client.clone(), ns);
            for name in &f.state.held_snapshots {
                let unhold =
                    json!({"metadata": {"annotations": {HOLD_SNAPSHOT_READY_ANNOTATION: null}}});
                retrying(&format!("releasing snapshot {name}"), || async {
                    match snapshots
                        .patch(name, &PatchParams::default(), &Patch::Merge(&unhold))
                        .await
                    {
                        Ok(_) => Ok(()),
                        // Deleted with its clone.
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(e.into()),
                    }
                })
                .await?;
            }
            f.state.released = true;
            format!(
                "released the hold on {} snapshots of {}",
                f.state.held_snapshots.len(),
                plan::DOOMED_SOURCE
            )
        }
        Fault::AdmissionErrorsOn | Fault::FeatureGateOff if f.state.window_open() => {
            // The windows never overlap: each hold has one cause.
            return Ok(None);
        }
        Fault::AdmissionErrorsOn if !about_to_restore(listed, f.tracked) => {
            // The window opens when a clone is about to create its restore.
            return Ok(None);
        }
        Fault::FeatureGateOff if last_chance => return Ok(None),
        Fault::AdmissionErrorsOn => {
            let from = Timestamp::now();
            annotate_namespace(client, ns, json!("")).await?;
            f.state.admission_errors = Some(Window { from, to: None });
            format!(
                "namespace {ns} annotated {ADMISSION_ERROR_ANNOTATION}: restore admission answers 400"
            )
        }
        Fault::AdmissionErrorsOff => {
            annotate_namespace(client, ns, Value::Null).await?;
            if let Some(w) = f.state.admission_errors.as_mut() {
                w.to = Some(Timestamp::now());
            }
            format!("namespace {ns} annotation {ADMISSION_ERROR_ANNOTATION} removed")
        }
        Fault::FeatureGateOff => {
            let from = Timestamp::now();
            switch_gate(client, false).await?;
            f.state.gate_off = Some(Window { from, to: None });
            format!("KubeVirt's {SNAPSHOT_GATE} feature gate turned off")
        }
        Fault::FeatureGateOn => {
            switch_gate(client, true).await?;
            if let Some(w) = f.state.gate_off.as_mut() {
                w.to = Some(Timestamp::now());
            }
            format!("KubeVirt's {SNAPSHOT_GATE} feature gate turned on again")
        }
        Fault::DeleteClone => {
            let Some(list) = listed else { return Ok(None) };
            let Some(victim) = clone_to_delete(list, f.tracked) else {
                return Ok(None);
            };
            let name = victim.name_any();
            let p = phase(victim);
            let api: Api<VirtualMachineClone> = Api::namespaced(client.clone(), ns);
            api.delete(&name, &DeleteParams::background()).await?;
            if let Some(t) = f.tracked.iter_mut().find(|t| t.plan.name == name) {
                t.deleted = true;
            }
            format!("deleted clone {name} in phase {}", p.as_str())
        }
    }))
}

/// Whether some clone takes its snapshot now (and creates its restore next): in
/// `SnapshotInProgress`, and not of the doomed source (whose snapshots wait for its deletion).
fn about_to_restore(
    listed: Option<&kube::core::ObjectList<VirtualMachineClone>>,
    tracked: &[Tracked],
) -> bool {
    listed.is_some_and(|list| {
        list.items.iter().any(|c| {
            phase(c) == ClonePhase::SnapshotInProgress
                && tracked
                    .iter()
                    .any(|t| t.plan.name == c.name_any() && t.plan.flavour != plan::Flavour::Doomed)
        })
    })
}

/// A clone that is midway — preferably one whose flavour keeps another clone, so that every
/// flavour of the plan still has a clone that gets to its end.
fn clone_to_delete<'l>(
    list: &'l kube::core::ObjectList<VirtualMachineClone>,
    tracked: &[Tracked],
) -> Option<&'l VirtualMachineClone> {
    let midway = |c: &&VirtualMachineClone| {
        let p = phase(c);
        !p.is_terminal() && p != ClonePhase::Unset
    };
    let others_of_its_flavour = |c: &&VirtualMachineClone| {
        let flavour = tracked
            .iter()
            .find(|t| t.plan.name == c.name_any())
            .map(|t| t.plan.flavour);
        tracked
            .iter()
            .filter(|t| !t.deleted && Some(t.plan.flavour) == flavour)
            .count()
            > 1
    };
    list.items
        .iter()
        .filter(midway)
        .find(others_of_its_flavour)
        .or_else(|| list.items.iter().find(midway))
}

/// [`Fault::DeleteSource`]: once a snapshot of the doomed source has taken its first step (held
/// there by the source's annotation), annotates every snapshot of the source so that the hold
/// outlives the VM, notes the clones whose snapshot is at that step (they must succeed), and
/// deletes the VM. `None` while no snapshot is at that step (unless `last_chance`).
async fn delete_source(f: &mut FaultEnv<'_>, last_chance: bool) -> Result<Option<String>> {
    let (client, ns) = (f.client, f.ns);
    let snapshots: Api<VirtualMachineSnapshot> = Api::namespaced(client.clone(), ns);
    let Ok(list) = snapshots.list(&ListParams::default()).await else {
        return Ok(None);
    };
    let of_source: Vec<&VirtualMachineSnapshot> = list
        .items
        .iter()
        .filter(|s| {
            s.name_any().starts_with(TEMP_SNAPSHOT_PREFIX)
                && s.spec.source.name == plan::DOOMED_SOURCE
                && s.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let first_step: Vec<String> = of_source
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.phase.as_deref() == Some("Succeeded") && !st.is_ready())
        })
        .map(|s| s.name_any())
        .collect();
    if first_step.is_empty() && !last_chance {
        return Ok(None);
    }
    let hold = json!({"metadata": {"annotations": {HOLD_SNAPSHOT_READY_ANNOTATION: "true"}}});
    let mut held = Vec::new();
    for snapshot in of_source {
        let name = snapshot.name_any();
        let patched = snapshots
            .patch(&name, &PatchParams::default(), &Patch::Merge(&hold))
            .await;
        match patched {
            Ok(_) => held.push(name),
            // Deleted with its clone meanwhile.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for name in &first_step {
        let uid = name.trim_start_matches(TEMP_SNAPSHOT_PREFIX);
        if let Some(t) = f.tracked.iter_mut().find(|t| t.uid.as_deref() == Some(uid)) {
            t.snapshot_held = true;
        }
    }
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    match vms
        .delete(plan::DOOMED_SOURCE, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let what = format!(
        "deleted source VM {} with {} snapshots of it held ({} at their first step)",
        plan::DOOMED_SOURCE,
        held.len(),
        first_step.len()
    );
    f.state.source_deleted = true;
    f.state.held_snapshots = held;
    Ok(Some(what))
}

/// Sets (a string) or removes (`null`) the admission-error annotation of the run's namespace.
/// The sim's webhook reads the namespace on every request, so the change is in force at once.
async fn annotate_namespace(client: &Client, ns: &str, value: Value) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {ADMISSION_ERROR_ANNOTATION: value}}});
    retrying(&format!("annotating namespace {ns}"), || async {
        namespaces
            .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    })
    .await
}

/// Turns KubeVirt's `Snapshot` gate on or off, and reads the `KubeVirt` CR back until the gate is
/// as wanted (as the controller reads it), so that server-side apply's list ownership cannot leave
/// it otherwise unnoticed.
async fn switch_gate(client: &Client, on: bool) -> Result<()> {
    let gates: &[&str] = if on { &[SNAPSHOT_GATE] } else { &[] };
    let want = if on {
        FeatureGate::Enabled
    } else {
        FeatureGate::Disabled
    };
    let kubevirts: Api<KubeVirt> = Api::namespaced(client.clone(), KUBEVIRT_INSTALL_NAMESPACE);
    retrying(&format!("the Snapshot gate to be {want:?}"), || async {
        kubevirt_sim::set_feature_gates(client.clone(), gates).await?;
        let kv = kubevirts.get("kubevirt").await?;
        let got = snapshot_gate(Some(&kv.spec), GateMode::Listed);
        anyhow::ensure!(
            got == want,
            "the KubeVirt CR's gate is {got:?}: {:?}",
            kv.spec
        );
        Ok(())
    })
    .await
}

/// The run's admission policy: VMs named [`plan::STUCK_PREFIX`]`*` in its namespace are refused
/// unless the request is a dry run — the controller's server-side dry run of the target admits
/// them, KubeVirt's restore then fails to create them and retries for ever.
const STALL_POLICY_MESSAGE: &str = "chaos: no room for stuck-* VMs (dry runs only)";

/// Creates the stall policy and its binding, named for the run's namespace; returns that name.
async fn create_stall_policy(client: &Client, ns: &str) -> Result<String> {
    let name = format!("chaos-stuck-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["kubevirt.io"], "apiVersions": ["*"],
                "operations": ["CREATE"], "resources": ["virtualmachines"]}]},
            "validations": [{
                "expression": format!(
                    "request.dryRun == true || !object.metadata.name.startsWith('{}')",
                    plan::STUCK_PREFIX
                ),
                "message": STALL_POLICY_MESSAGE,
            }],
        },
    }))?;
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": ns}}},
        },
    }))?;
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .context("creating the stall policy")?;
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .context("creating the stall policy's binding")?;
    Ok(name)
}

/// Returns once the API server enforces the stall policy: once a real create of
/// [`plan::STUCK_PROBE`] is refused (a probe admitted before that is deleted, and gone, before
/// the next try).
async fn wait_for_stall_policy(client: &Client, ns: &str) -> Result<()> {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    let probe: VirtualMachine = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": plan::STUCK_PROBE},
        "spec": {"runStrategy": "Halted", "template": {"spec": {
            "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}},
    }))?;
    wait_for(
        "the stall policy to refuse stuck-* VMs",
        Duration::from_secs(60),
        || async {
            match vms.create(&PostParams::default(), &probe).await {
                Ok(_) => {
                    // Nothing depends on the probe: a background deletion removes it at once
                    // (a foreground one would wait for the garbage collector).
                    vms.delete(plan::STUCK_PROBE, &DeleteParams::background())
                        .await?;
                    wait_for(
                        "the admitted probe VM to be gone",
                        Duration::from_secs(30),
                        || async {
                            anyhow::ensure!(
                                vms.get_opt(plan::STUCK_PROBE).await?.is_none(),
                                "still there"
                            );
                            Ok(())
                        },
                    )
                    .await?;
                    bail!("the probe VM was admitted")
                }
                Err(kube::Error::Api(s)) if s.message.contains(STALL_POLICY_MESSAGE) => Ok(()),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await
}

/// Deletes the stall policy and its binding (best effort: the control plane goes with the run).
async fn remove_stall_policy(client: &Client, name: &str) {
    let dp = DeleteParams::default();
    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(name, &dp)
        .await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(name, &dp)
        .await;
}

/// Creates the sources, the untouchable VMs and the golden snapshot; returns their fingerprints.
async fn setup_world(env: &TestEnv, client: &Client, ns: &str) -> Result<check::World> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": plan::initial_objects()});
    env.kubectl_output(
        &["apply", "--server-side", "-n", ns, "-f", "-"],
        Some(&list.to_string()),
    )
    .await?
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
