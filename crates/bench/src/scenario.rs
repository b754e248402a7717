//! The measurements against the live testbed: the calibration batch and the clone scenarios.
//!
//! The controller, the stand-in and the bench each talk to the API server as a user of their own
//! ([`CONTROLLER_USER`], [`STAND_IN_USER`], [`BENCH_USER`]), so kube-apiserver's audit log tells
//! whose every request was.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clone_api::kubevirt::{
    VirtualMachineRestore, VirtualMachineSnapshot, VirtualMachineSnapshotContent,
};
use clone_api::v1beta1::VirtualMachineClone;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::{Value, json};
use testenv::{Supervised, TestEnv};

use super::audit::{self, AuditRequests, Moment};
use super::live::{
    CloneWatch, ControllerPorts, CpuSnapshot, Progress, ServerPids, already_exists, cpu_snapshot,
    http_get, run_parallel, start_process, wait_controller_ready,
};
use super::model::{Calibration, Controller, CpuSeconds, Scenario};
use super::procfs;
use super::prom;
use super::stats;

/// The source VM, as `cargo xtask demo` creates it (with one source; `vm-cirros-<k>` with more).
pub const SOURCE_VM: &str = "vm-cirros";
/// A label the demo's source VM carries (and unrelated VMs do not).
const SOURCE_LABEL: &str = "app=cirros";
const CONTROLLER_LOG_LEVEL: &str = "warn";
/// The controller's user (one of `testenv::IDENTITIES`).
pub const CONTROLLER_USER: &str = "clone-controller";
/// The stand-in's user.
pub const STAND_IN_USER: &str = "kubevirt-sim";
/// The bench's own user: its creates, watch, polls and cleanup.
pub const BENCH_USER: &str = "bench";

/// The testbed and what the bench runs on it.
pub struct Bed {
    pub env: TestEnv,
    /// The bench's client, as [`BENCH_USER`].
    pub client: Client,
    /// kube-apiserver's audit log.
    pub audit_log: PathBuf,
    pub controller_bin: PathBuf,
    pub sim_bin: PathBuf,
    pub logs: PathBuf,
    pub concurrency: u16,
    pub servers: ServerPids,
    pub clock_ticks: u64,
    /// The machine's cores, for the CPU ceiling.
    pub cores: usize,
    pub progress: Progress,
    pub keep_namespaces: bool,
    /// Source VMs per scenario; clone `i` clones source `i % sources`.
    pub sources: usize,
}

fn vm_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachine",
    ))
}

impl Bed {
    fn say(&self, text: &str) {
        self.progress.say(text);
    }

    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"vmclone.dev/bench": "true"}},
        }))?;
        api.create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(())
    }

    /// Deletes a namespace and waits until it is gone (the namespace controller deletes its
    /// objects first).
    pub async fn delete_namespace(&self, name: &str, timeout: Duration) -> Result<()> {
        if self.keep_namespaces {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let started = Instant::now();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(err) => return Err(err).with_context(|| format!("deleting namespace {name}")),
        }
        let mut last_report = Instant::now();
        loop {
            match api.get_opt(name).await {
                Ok(None) => break,
                Ok(Some(_)) => {}
                Err(err) => return Err(err).context("reading a namespace being deleted"),
            }
            self.release_pvcs(name).await?;
            if started.elapsed() > timeout {
                bail!("namespace {name} still exists after {timeout:?}");
            }
            if last_report.elapsed() > Duration::from_secs(15) {
                self.say(&format!(
                    "  still deleting namespace {name} ({:.0}s)",
                    started.elapsed().as_secs_f64()
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.say(&format!(
            "  namespace {name} deleted in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Removes the `kubernetes.io/pvc-protection` finalizer from the PVCs being deleted in
    /// `namespace`: the testbed's kube-controller-manager does not run the PVC protection
    /// controller that would remove it, so a namespace with PVCs would never go away.
    async fn release_pvcs(&self, namespace: &str) -> Result<()> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let mut params = ListParams::default().limit(500);
        let mut names = Vec::new();
        loop {
            let page = api.list_metadata(&params).await.context("listing PVCs")?;
            names.extend(
                page.items
                    .iter()
                    .filter(|pvc| {
                        pvc.metadata.deletion_timestamp.is_some()
                            && pvc
                                .metadata
                                .finalizers
                                .as_ref()
                                .is_some_and(|f| !f.is_empty())
                    })
                    .filter_map(|pvc| pvc.metadata.name.clone()),
            );
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        let names = Arc::new(names);
        let count = names.len();
        run_parallel(count, usize::from(self.concurrency), move |i| {
            let (api, names) = (api.clone(), names.clone());
            async move {
                let patch = json!({"metadata": {"finalizers": null}});
                match api
                    .patch(&names[i], &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(err) => Err(err.into()),
                }
            }
        })
        .await
        .map(|_| ())
    }

    /// The demo's source VM and its PVC, in `namespace`, `self.sources` times (renamed when
    /// more than one).
    pub async fn create_sources(&self, namespace: &str) -> Result<()> {
        let list: Value = serde_json::from_str(&kubevirt_sim::examples::source_vm())?;
        let items: Arc<Vec<Value>> = Arc::new(
            list["items"]
                .as_array()
                .context("the demo's source VM is not a List")?
                .clone(),
        );
        let (client, namespace, total) = (self.client.clone(), namespace.to_owned(), self.sources);
        run_parallel(total, usize::from(self.concurrency), move |k| {
            let (client, namespace, items) = (client.clone(), namespace.clone(), items.clone());
            async move {
                for item in items.iter() {
                    let mut object = source_object(item, k, total);
                    object["metadata"]["namespace"] = json!(namespace);
                    let created = match item["kind"].as_str().unwrap_or_default() {
                        "PersistentVolumeClaim" => {
                            let pvc: PersistentVolumeClaim = serde_json::from_value(object)?;
                            Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
                                .create(&PostParams::default(), &pvc)
                                .await
                                .map(|_| ())
                        }
                        "VirtualMachine" => {
                            let vm: DynamicObject = serde_json::from_value(object)?;
                            Api::<DynamicObject>::namespaced_with(
                                client.clone(),
                                &namespace,
                                &vm_resource(),
                            )
                            .create(&PostParams::default(), &vm)
                            .await
                            .map(|_| ())
                        }
                        other => bail!("unexpected {other} in the demo's source VM"),
                    };
                    match created {
                        Ok(()) => {}
                        Err(err) if already_exists(&err) => {}
                        Err(err) => return Err(err).context("creating a source"),
                    }
                }
                Ok(())
            }
        })
        .await
        .map(|_| ())
    }

    /// Waits until the stand-in has bound the sources' PVCs and reports their volumes
    /// snapshottable.
    pub async fn wait_sources_ready(&self, namespace: &str, sim: &mut Supervised) -> Result<()> {
        let vms: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &vm_resource());
        let started = Instant::now();
        let timeout = Duration::from_secs(120 + self.sources as u64 / 20);
        loop {
            if let Some(status) = sim.exited() {
                bail!(
                    "the stand-in exited ({status}); see {}",
                    sim.log_path().display()
                );
            }
            let list = vms
                .list(&ListParams::default().labels(SOURCE_LABEL))
                .await
                .context("listing the source VMs")?;
            let ready = list
                .items
                .iter()
                .filter(|vm| {
                    vm.data
                        .pointer("/status/volumeSnapshotStatuses/0/enabled")
                        .and_then(Value::as_bool)
                        == Some(true)
                })
                .count();
            if ready >= self.sources {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "the stand-in made only {ready} of {} source VMs snapshottable within {timeout:?}",
                    self.sources
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn start_sim(&self, namespace: &str) -> Result<Supervised> {
        let args = vec![
            "--namespace".to_owned(),
            namespace.to_owned(),
            "--latency".to_owned(),
            "0s".to_owned(),
            // Storage classes and admission policies are installed once, at the start.
            "--no-install".to_owned(),
        ];
        start_process(
            "kubevirt-sim",
            &self.sim_bin,
            &args,
            &[
                (
                    "KUBECONFIG",
                    self.env
                        .identity_kubeconfig(STAND_IN_USER)
                        .display()
                        .to_string(),
                ),
                ("RUST_LOG", CONTROLLER_LOG_LEVEL.to_owned()),
            ],
            &self.logs.join(format!("{namespace}-stand-in.log")),
        )
        .await
    }

    /// A fresh controller for `namespace`; returns once `/readyz` answers 200.
    pub async fn start_controller(
        &self,
        namespace: &str,
        ready_timeout: Duration,
    ) -> Result<(Supervised, ControllerPorts, f64)> {
        let args = vec![
            "--kubeconfig".to_owned(),
            self.env
                .identity_kubeconfig(CONTROLLER_USER)
                .display()
                .to_string(),
            "--namespace".to_owned(),
            namespace.to_owned(),
            "--metrics-addr=127.0.0.1:0".to_owned(),
            "--health-addr=127.0.0.1:0".to_owned(),
            "--concurrency".to_owned(),
            self.concurrency.to_string(),
        ];
        let started = Instant::now();
        let mut controller = start_process(
            "clone-controller",
            &self.controller_bin,
            &args,
            &[("RUST_LOG", CONTROLLER_LOG_LEVEL.to_owned())],
            &self.logs.join(format!("{namespace}-controller.log")),
        )
        .await?;
        let ports = wait_controller_ready(&mut controller, ready_timeout).await?;
        Ok((controller, ports, started.elapsed().as_secs_f64()))
    }

    /// `count` halted VMs without volumes, created by `concurrency` creators.
    pub async fn create_unrelated_vms(&self, namespace: &str, count: usize) -> Result<()> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &vm_resource());
        let started = Instant::now();
        let progress = self.progress;
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let step = (count / 5).max(1);
        let counter = done.clone();
        run_parallel(
            count,
            usize::from(self.concurrency),
            move |i| {
                let api = api.clone();
                let counter = counter.clone();
                async move {
                    let vm: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                        "metadata": {"name": format!("unrelated-{i:05}"), "labels": {"vmclone.dev/bench": "unrelated"}},
                        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
                            "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}},
                    }))?;
                    match api.create(&PostParams::default(), &vm).await {
                        Ok(_) => {}
                        Err(err) if already_exists(&err) => {}
                        Err(err) => return Err(err.into()),
                    }
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_multiple_of(step) {
                        progress.say(&format!("  {n}/{count} unrelated VMs created"));
                    }
                    Ok(())
                }
            },
        )
        .await?;
        self.say(&format!(
            "  {count} unrelated VMs created in {:.1}s ({:.0}/s)",
            started.elapsed().as_secs_f64(),
            count as f64 / started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Waits until the stand-in has written the status of every unrelated VM.
    pub async fn wait_unrelated_processed(
        &self,
        namespace: &str,
        count: usize,
        sim_started: Instant,
    ) -> Result<()> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &vm_resource());
        let started = Instant::now();
        let timeout = Duration::from_secs(120 + (count as u64) / 20);
        loop {
            let mut with_status = 0;
            let mut params = ListParams::default()
                .labels("vmclone.dev/bench=unrelated")
                .limit(1000);
            loop {
                let page = api.list(&params).await.context("listing unrelated VMs")?;
                with_status += page
                    .items
                    .iter()
                    .filter(|vm| vm.data.pointer("/status/printableStatus").is_some())
                    .count();
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
            if with_status >= count {
                self.say(&format!(
                    "  the stand-in wrote the status of all {count} unrelated VMs ({:.1}s after it started)",
                    sim_started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!("only {with_status}/{count} unrelated VMs got a status within {timeout:?}");
            }
            self.say(&format!(
                "  waiting for the stand-in: {with_status}/{count} unrelated VMs have a status"
            ));
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// Waits until no temporary snapshot, restore or snapshot content is left in the namespace
    /// (cleanup done, garbage collected).
    pub async fn wait_quiet(&self, namespace: &str, timeout: Duration) -> Result<f64> {
        let started = Instant::now();
        let probe = ListParams::default().limit(1);
        let snapshots: Api<VirtualMachineSnapshot> =
            Api::namespaced(self.client.clone(), namespace);
        let restores: Api<VirtualMachineRestore> = Api::namespaced(self.client.clone(), namespace);
        let contents: Api<VirtualMachineSnapshotContent> =
            Api::namespaced(self.client.clone(), namespace);
        loop {
            let mut left = Vec::new();
            if !snapshots.list_metadata(&probe).await?.items.is_empty() {
                left.push("snapshots");
            }
            if !restores.list_metadata(&probe).await?.items.is_empty() {
                left.push("restores");
            }
            if !contents.list_metadata(&probe).await?.items.is_empty() {
                left.push("snapshot contents");
            }
            if left.is_empty() {
                return Ok(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > timeout {
                bail!(
                    "temporary {} still exist {timeout:?} after the last clone finished",
                    left.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn clone_api(&self, namespace: &str) -> Api<VirtualMachineClone> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Everything before a window: namespace, source, stand-in, controller, clone watch.
    async fn prepare(&self, namespace: &str, unrelated: usize) -> Result<Prepared> {
        self.create_namespace(namespace).await?;
        self.create_sources(namespace).await?;
        if unrelated > 0 {
            self.say(&format!(
                "  creating {unrelated} unrelated VMs in {namespace}"
            ));
            self.create_unrelated_vms(namespace, unrelated).await?;
        }
        let sim_started = Instant::now();
        let mut sim = self.start_sim(namespace).await?;
        self.wait_sources_ready(namespace, &mut sim).await?;
        if unrelated > 0 {
            self.wait_unrelated_processed(namespace, unrelated, sim_started)
                .await?;
        }
        let ready_timeout = Duration::from_secs(120 + (unrelated as u64) / 50);
        let (controller, ports, ready_seconds) =
            self.start_controller(namespace, ready_timeout).await?;
        self.say(&format!(
            "  controller pid {} ready in {ready_seconds:.1}s (health :{}, metrics :{}), stand-in pid {}",
            controller.pid().unwrap_or_default(), ports.health, ports.metrics, sim.pid().unwrap_or_default()
        ));
        let watch = CloneWatch::start(self.client.clone(), namespace).await?;
        Ok(Prepared {
            sim,
            controller,
            ports,
            ready_seconds,
            watch,
        })
    }

    /// A moment of a measurement: the audit log's length and the clock, and CPU counters.
    fn mark(&self, prepared: &Prepared) -> Mark {
        Mark {
            audit: Moment::now(&self.audit_log),
            cpu: cpu_snapshot(&self.servers, prepared.controller.pid(), prepared.sim.pid()),
        }
    }

    /// Every request received from `start` to `end`, from the audit log.
    async fn requests_between(&self, start: &Mark, end: &Mark) -> Result<AuditRequests> {
        // Blocking audit mode writes a request's event as it completes: a moment for the
        // requests that were in flight at `end`.
        tokio::time::sleep(Duration::from_secs(1)).await;
        audit::tally_file(&self.audit_log, start.audit, end.audit.wall)
    }

    /// CPU seconds of the machine and of every testbed process between two marks.
    fn cpu_between(&self, start: &CpuSnapshot, end: &CpuSnapshot) -> CpuSeconds {
        let tick = self.clock_ticks.max(1) as f64;
        let seconds = |a: u64, b: u64| b.saturating_sub(a) as f64 / tick;
        CpuSeconds {
            wall_seconds: match (start.at, end.at) {
                (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
                _ => 0.0,
            },
            cores_available: self.cores,
            machine_busy: seconds(start.machine.busy, end.machine.busy),
            processes: start
                .processes
                .iter()
                .map(|(name, &a)| {
                    let b = end.processes.get(name).copied().unwrap_or(a);
                    ((*name).to_owned(), seconds(a, b))
                })
                .collect(),
        }
    }

    /// Clones created one after the other, each waited for (succeeded and cleaned up): the
    /// writes one clone needs without any contention.
    pub async fn calibrate(&self, clones: usize) -> Result<Calibration> {
        let namespace = "bench-calibration";
        self.say(&format!(
            "calibration: {clones} clones one after the other in {namespace}"
        ));
        let prepared = self.prepare(namespace, 0).await?;
        let start = self.mark(&prepared);
        let api = self.clone_api(namespace);
        let began = Instant::now();
        let mut latencies = Vec::new();
        for i in 0..clones {
            let name = format!("clone-{i:05}");
            api.create(
                &PostParams::default(),
                &clone_object(&name, i, self.sources)?,
            )
            .await
            .with_context(|| format!("creating {name}"))?;
            let created = Instant::now();
            loop {
                let (succeeded, failed) = prepared.watch.counts();
                if succeeded + failed > i {
                    break;
                }
                if created.elapsed() > Duration::from_secs(120) {
                    bail!("{name} did not finish within 120s");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some(at) = prepared
                .watch
                .seen
                .lock()
                .ok()
                .and_then(|s| s.succeeded.get(&name).copied())
            {
                latencies.push(at.duration_since(created).as_secs_f64());
            }
            self.wait_quiet(namespace, Duration::from_secs(60)).await?;
        }
        let seconds = began.elapsed().as_secs_f64();
        let end = self.mark(&prepared);
        let cpu = self.cpu_between(&start.cpu, &end.cpu);
        let requests = self.requests_between(&start, &end).await;
        let seen = prepared.finish(self, namespace).await;
        Ok(Calibration {
            clones,
            succeeded: seen.succeeded.len(),
            seconds,
            latency: stats::latency(&latencies),
            audit: Some(requests?),
            cpu_seconds: Some(cpu),
        })
    }

    /// `clones` clones created at once with `unrelated` unrelated VMs in the namespace.
    pub async fn scenario(&self, clones: usize, unrelated: usize, timeout: Duration) -> Scenario {
        let namespace = format!("bench-n{clones}-vms{unrelated}");
        let mut scenario = Scenario {
            name: scenario_name(clones, unrelated, self.sources),
            clones,
            unrelated_vms: unrelated,
            namespace: namespace.clone(),
            ..Scenario::default()
        };
        if let Err(err) = self.run_scenario(&mut scenario, timeout).await {
            self.say(&format!("  scenario {} failed: {err:#}", scenario.name));
            scenario.error = Some(format!("{err:#}"));
        }
        scenario
    }

    async fn run_scenario(&self, scenario: &mut Scenario, timeout: Duration) -> Result<()> {
        let namespace = scenario.namespace.clone();
        let clones = scenario.clones;
        self.say(&format!(
            "scenario {}: preparing namespace {namespace}",
            scenario.name
        ));
        let mut prepared = self.prepare(&namespace, scenario.unrelated_vms).await?;
        scenario.controller.ready_seconds = prepared.ready_seconds;
        scenario.controller.log = prepared.controller.log_path().display().to_string();
        scenario.stand_in_log = prepared.sim.log_path().display().to_string();

        let start = self.mark(&prepared);
        self.say(&format!(
            "  creating {clones} clones with {} creators",
            self.concurrency
        ));
        let began = Instant::now();
        let creators = {
            let api = self.clone_api(&namespace);
            let sources = self.sources;
            tokio::spawn(run_parallel(
                clones,
                usize::from(self.concurrency),
                move |i| {
                    let api = api.clone();
                    async move {
                        let name = format!("clone-{i:05}");
                        match api
                            .create(&PostParams::default(), &clone_object(&name, i, sources)?)
                            .await
                        {
                            Ok(_) => Ok(()),
                            Err(err) if already_exists(&err) => Ok(()),
                            Err(err) => Err(err.into()),
                        }
                    }
                },
            ))
        };
        let mut creators = Some(creators);
        let mut created: Option<Vec<Instant>> = None;
        let mut last_report = Instant::now();
        let deadline = began + timeout;
        loop {
            if let Some(task) = creators.as_ref()
                && task.is_finished()
                && let Some(task) = creators.take()
            {
                let done = task.await.context("the creators panicked")??;
                let last = done.iter().max().copied().unwrap_or(began);
                scenario.create_seconds = last.duration_since(began).as_secs_f64();
                self.say(&format!(
                    "  all {clones} clones created in {:.1}s ({:.0}/s)",
                    scenario.create_seconds,
                    clones as f64 / scenario.create_seconds.max(1e-9)
                ));
                created = Some(done);
            }
            let (succeeded, failed) = prepared.watch.counts();
            if created.is_some() && succeeded + failed >= clones {
                break;
            }
            if let Some(status) = prepared.controller.exited() {
                bail!(
                    "the controller exited ({status}); see {}",
                    prepared.controller.log_path().display()
                );
            }
            if Instant::now() > deadline {
                self.say(&format!(
                    "  timeout after {timeout:?}: {succeeded} succeeded, {failed} failed of {clones}"
                ));
                break;
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                self.say(&format!(
                    "  {:.0}s: {succeeded} Succeeded, {failed} Failed of {clones}",
                    began.elapsed().as_secs_f64()
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let created = match created {
            Some(created) => created,
            None => {
                if let Some(task) = creators {
                    task.abort();
                }
                bail!("the clones were not all created within {timeout:?}")
            }
        };
        let in_flight = self.mark(&prepared);
        let (succeeded_at, failed) = {
            let seen = prepared
                .watch
                .seen
                .lock()
                .map_err(|_| anyhow::anyhow!("the clone watch state is poisoned"))?;
            (seen.succeeded.clone(), seen.failed.clone())
        };
        let last_terminal = succeeded_at
            .values()
            .chain(failed.values().map(|(at, _)| at))
            .max()
            .copied();
        scenario.succeeded = succeeded_at.len();
        scenario.failed = failed.len();
        scenario.unfinished = clones.saturating_sub(scenario.succeeded + scenario.failed);
        scenario.timed_out = scenario.unfinished > 0;
        for (_, reason) in failed.values() {
            *scenario.failures.entry(reason.clone()).or_default() += 1;
        }
        scenario.duration_seconds = if scenario.unfinished == 0 {
            last_terminal.map_or(0.0, |t| t.duration_since(began).as_secs_f64())
        } else {
            timeout.as_secs_f64()
        };
        scenario.clones_per_second =
            scenario.succeeded as f64 / scenario.duration_seconds.max(1e-9);
        scenario.latencies_seconds = (0..clones)
            .map(|i| {
                succeeded_at
                    .get(&format!("clone-{i:05}"))
                    .map(|at| at.saturating_duration_since(created[i]).as_secs_f64())
            })
            .collect();
        let latencies: Vec<f64> = scenario
            .latencies_seconds
            .iter()
            .flatten()
            .copied()
            .collect();
        scenario.latency = stats::latency(&latencies);
        self.say(&format!(
            "  {} Succeeded, {} Failed, {} unfinished in {:.1}s: {:.1} clones/s, p50 {:.2}s, p99 {:.2}s",
            scenario.succeeded,
            scenario.failed,
            scenario.unfinished,
            scenario.duration_seconds,
            scenario.clones_per_second,
            scenario.latency.map_or(f64::NAN, |l| l.p50),
            scenario.latency.map_or(f64::NAN, |l| l.p99),
        ));

        self.say("  waiting for cleanup (temporary snapshots, restores, contents gone)");
        let quiet_timeout = if scenario.failed + scenario.unfinished > 0 {
            Duration::from_secs(20)
        } else {
            Duration::from_secs(60 + clones as u64 / 20)
        };
        match self.wait_quiet(&namespace, quiet_timeout).await {
            Ok(seconds) => scenario.cleanup_seconds = seconds,
            Err(err) => {
                self.say(&format!("  {err:#}"));
                scenario.cleanup_seconds = quiet_timeout.as_secs_f64();
            }
        }
        let end = self.mark(&prepared);
        scenario.cpu_seconds = Some(self.cpu_between(&start.cpu, &end.cpu));
        scenario.controller.peak_rss_mib = procfs::process_peak_rss_kib(
            prepared.controller.pid().unwrap_or_default(),
        )
        .unwrap_or(0) as f64
            / 1024.0;
        if let Ok((200, body)) = http_get(prepared.ports.metrics, "/metrics").await
            && let Ok(metrics) = prom::controller_metrics(&body)
        {
            scenario.controller.reconciles = metrics.reconciles;
            scenario.controller.passes = metrics.passes;
            scenario.controller.pass_seconds = metrics.pass_seconds;
        }
        scenario.audit = Some(self.requests_between(&start, &end).await?);
        // Counts (per clone of one clone) of every user together, leases left out.
        let flight = audit::sum_except(
            &audit::per_clone_by_user(&self.requests_between(&start, &in_flight).await?, 1),
            &[],
        );
        let flight_seconds = in_flight
            .cpu
            .at
            .map_or(0.0, |t| t.duration_since(began).as_secs_f64())
            .max(1e-9);
        scenario.writes_per_second_in_flight = flight.writes / flight_seconds;
        scenario.requests_per_second_in_flight = flight.total() / flight_seconds;
        prepared.controller_log_summary(&mut scenario.controller);
        let _ = prepared.finish(self, &namespace).await;
        Ok(())
    }
}

/// What runs during a measurement.
#[derive(Debug)]
struct Prepared {
    sim: Supervised,
    controller: Supervised,
    ports: ControllerPorts,
    ready_seconds: f64,
    watch: CloneWatch,
}

impl Prepared {
    /// Stops the watch and the controller, deletes the namespace while the stand-in still runs
    /// (it releases its finalizers), then stops the stand-in.
    async fn finish(mut self, bed: &Bed, namespace: &str) -> super::live::Seen {
        let seen = self.watch.stop();
        self.controller.terminate(Duration::from_secs(10)).await;
        if let Err(err) = bed
            .delete_namespace(namespace, Duration::from_secs(900))
            .await
        {
            bed.say(&format!("  {err:#}"));
        }
        self.sim.terminate(Duration::from_secs(10)).await;
        seen
    }

    fn controller_log_summary(&self, controller: &mut Controller) {
        let text = std::fs::read_to_string(self.controller.log_path()).unwrap_or_default();
        let (warnings, errors, excerpt) = log_summary(&text);
        controller.log_warnings = warnings;
        controller.log_errors = errors;
        controller.log_excerpt = excerpt;
    }
}

/// Counts `WARN` and `ERROR` lines of a tracing text log and keeps up to 8 distinct messages
/// (timestamps cut off).
pub fn log_summary(text: &str) -> (usize, usize, Vec<String>) {
    let mut warnings = 0;
    let mut errors = 0;
    let mut excerpt: Vec<String> = Vec::new();
    for line in text.lines() {
        let level = if line.contains(" WARN ") {
            warnings += 1;
            "WARN"
        } else if line.contains(" ERROR ") {
            errors += 1;
            "ERROR"
        } else {
            continue;
        };
        let message = line
            .split_once(&format!(" {level} "))
            .map_or(line, |(_, m)| m)
            .trim();
        let entry = format!("{level} {message}");
        let key: String = entry.chars().take(100).collect();
        if excerpt.len() < 8 && !excerpt.iter().any(|e| e.starts_with(&key)) {
            excerpt.push(entry.chars().take(400).collect());
        }
    }
    (warnings, errors, excerpt)
}

/// A moment of a measurement: where the audit log was, the clock, and CPU counters.
#[derive(Debug, Clone)]
struct Mark {
    audit: Moment,
    cpu: CpuSnapshot,
}

pub fn scenario_name(clones: usize, unrelated: usize, sources: usize) -> String {
    let mut name = format!("N={clones}");
    if unrelated > 0 {
        name.push_str(&format!(" + {unrelated} VMs"));
    }
    if sources > 1 {
        name.push_str(&format!(", {sources} sources"));
    }
    name
}

/// The name of source `k` of `total`: the demo's `vm-cirros` when there is one.
pub fn source_name(k: usize, total: usize) -> String {
    if total <= 1 {
        SOURCE_VM.to_owned()
    } else {
        format!("{SOURCE_VM}-{k:05}")
    }
}

/// An item of the demo's source List (the PVC or the VM) for source `k` of `total`: renamed,
/// with the VM's claim and `kubevirt.io/vm` template label following, when there are several.
pub fn source_object(item: &Value, k: usize, total: usize) -> Value {
    let mut object = item.clone();
    if total <= 1 {
        return object;
    }
    let vm = source_name(k, total);
    let disk = format!("{vm}-disk");
    match item["kind"].as_str() {
        Some("PersistentVolumeClaim") => object["metadata"]["name"] = json!(disk),
        Some("VirtualMachine") => {
            object["metadata"]["name"] = json!(vm);
            if let Some(labels) = object
                .pointer_mut("/spec/template/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                labels.insert("kubevirt.io/vm".into(), json!(vm));
            }
            if let Some(volumes) = object
                .pointer_mut("/spec/template/spec/volumes")
                .and_then(Value::as_array_mut)
            {
                for volume in volumes {
                    if let Some(claim) = volume.pointer_mut("/persistentVolumeClaim/claimName") {
                        *claim = json!(disk);
                    }
                }
            }
        }
        _ => {}
    }
    object
}

/// Clone `name` of source `i % sources` into `target-<i>`, with the example's filters.
fn clone_object(name: &str, i: usize, sources: usize) -> Result<VirtualMachineClone> {
    let object = json!({
        "apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
        "metadata": {"name": name},
        "spec": {
            "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": source_name(i % sources.max(1), sources)},
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": format!("target-{i:05}")},
            "labelFilters": ["*", "!somekey/*"],
            "template": {"labelFilters": ["*", "!somekey/*"]},
        },
    });
    Ok(serde_json::from_value(object)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_renamed_consistently_when_there_are_several() {
        let list: Value = serde_json::from_str(&kubevirt_sim::examples::source_vm()).unwrap();
        let items = list["items"].as_array().unwrap();
        let (pvc, vm) = (&items[0], &items[1]);
        assert_eq!(source_object(vm, 3, 1), *vm);
        let pvc = source_object(pvc, 3, 10);
        let vm = source_object(vm, 3, 10);
        assert_eq!(pvc["metadata"]["name"], "vm-cirros-00003-disk");
        assert_eq!(vm["metadata"]["name"], "vm-cirros-00003");
        assert_eq!(
            vm.pointer("/spec/template/spec/volumes/0/persistentVolumeClaim/claimName"),
            Some(&json!("vm-cirros-00003-disk"))
        );
        assert_eq!(
            vm.pointer("/spec/template/metadata/labels/kubevirt.io~1vm"),
            Some(&json!("vm-cirros-00003"))
        );
        assert_eq!(vm["metadata"]["labels"]["app"], "cirros");
    }

    #[test]
    fn log_lines_are_counted_and_deduplicated() {
        let log = "2026-01-01T00:00:00.000001Z  WARN clone_controller::reconcile: creation refused what=x\n\
2026-01-01T00:00:00.000002Z  WARN clone_controller::reconcile: creation refused what=x\n\
2026-01-01T00:00:00.000003Z ERROR clone_controller::run: reconcile failed err=boom\n\
2026-01-01T00:00:00.000004Z  INFO clone_controller: starting\n";
        let (warnings, errors, excerpt) = log_summary(log);
        assert_eq!((warnings, errors), (2, 1));
        assert_eq!(
            excerpt,
            [
                "WARN clone_controller::reconcile: creation refused what=x",
                "ERROR clone_controller::run: reconcile failed err=boom"
            ]
        );
    }

    #[test]
    fn clone_objects_are_valid_v1beta1_clones() {
        let clone = clone_object("clone-00007", 7, 1).unwrap();
        assert_eq!(
            clone.spec.target.map(|t| t.name).as_deref(),
            Some("target-00007")
        );
        assert_eq!(clone.spec.source.name, SOURCE_VM);
        let spread = clone_object("clone-00007", 7, 5).unwrap();
        assert_eq!(spread.spec.source.name, "vm-cirros-00002");
        assert_eq!(scenario_name(1000, 0, 1), "N=1000");
        assert_eq!(scenario_name(5000, 10000, 1), "N=5000 + 10000 VMs");
        assert_eq!(scenario_name(50, 0, 50), "N=50, 50 sources");
    }
}
