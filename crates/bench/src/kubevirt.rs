//! `cargo xtask bench --kubevirt real`: vmclone against upstream's own clone controller on
//! KubeVirt v1.7.0's real snapshot and restore path, and the bare path without any clone
//! controller, written to `docs/benchmarks-kubevirt.json` and a section of `docs/benchmarks.md`.
//!
//! Per size N and per path (bare, vmclone, upstream), in that order: a fresh private control
//! plane with KubeVirt's own virt-api and virt-controller and kube-apiserver's audit log; N
//! containerDisk source VMs (no storage, so no stand-in), created and reconciled by
//! virt-controller before anything is measured; then
//! - bare: the bench creates a `VirtualMachineSnapshot` of each source and, when the watch sees
//!   it ready, a `VirtualMachineRestore` of it to a new VM;
//! - vmclone: virt-controller with `--clone-controller-threads 0`, vmclone's CRD, and vmclone's
//!   controller process; the bench creates N clones at once;
//! - upstream: virt-controller with its clone controller on, upstream's clone CRD; N clones.
//!
//! Every component runs as a user of its own (`testenv::IDENTITIES`; the bench as `bench`), so
//! the audit log attributes every request exactly. Numbers are reported, never asserted.

pub(crate) mod model;
mod report;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};
use testenv::{CloneCrd, KubeVirtOptions, Options, Supervised, TestEnv};

pub use self::model::KubeVirtReport;
use self::model::{Cpu, LogSummary, Path, ProcessUse, Run, Settings};
/// The section's title and anchor in `benchmarks.md`.
pub use self::report::{ANCHOR, TITLE};
use self::watch::{ObjectWatch, Sighting, clone_states, restore_states, snapshot_states};
use super::audit;
use super::live::{
    CpuSnapshot, Progress, ServerPids, already_exists, run_parallel, start_process,
    wait_controller_ready,
};
use super::procfs;
use super::stats;
use crate::{repo, target_dir};

/// The file the real-backend report is written to, beside `benchmarks.json`.
pub const JSON_FILE: &str = "benchmarks-kubevirt.json";
/// An earlier run of the real-backend bench to compare with (see [`super::report::Before`]).
pub const BEFORE_FILE: &str = "benchmarks-kubevirt-before.json";
/// The sizes when `--sizes` is not given.
pub const DEFAULT_SIZES: [usize; 2] = [50, 100];
/// virt-controller's clone workers when upstream's clone controller is on (testenv starts it
/// with `--clone-controller-threads 3`, virt-controller's own default).
const UPSTREAM_CLONE_THREADS: u16 = 3;
const NAMESPACE: &str = "bench-kubevirt";
const SOURCE_LABEL: &str = "vmclone.dev/bench=source";
const CONTROLLER_LOG_LEVEL: &str = "warn";

/// The larger of 300 s and 120 s + 5 s per clone (upstream took about 2 s per clone here).
pub fn default_timeout(clones: usize) -> u64 {
    (120 + 5 * clones as u64).max(300)
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn vms() -> ApiResource {
    resource("kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}

fn clones() -> ApiResource {
    resource(
        "clone.kubevirt.io",
        "v1beta1",
        "VirtualMachineClone",
        "virtualmachineclones",
    )
}

fn snapshots() -> ApiResource {
    resource(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineSnapshot",
        "virtualmachinesnapshots",
    )
}

fn restores() -> ApiResource {
    resource(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineRestore",
        "virtualmachinerestores",
    )
}

fn contents() -> ApiResource {
    resource(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineSnapshotContent",
        "virtualmachinesnapshotcontents",
    )
}

fn name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:05}")
}

/// The index of `<prefix>-<i>`.
fn index_of(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

/// Source VM `i`: halted, one containerDisk (nothing to snapshot, so no storage is needed), an
/// interface with a MAC, a firmware serial, labels and an annotation a clone filters.
pub fn source_vm(i: usize) -> Value {
    let vm = name("source", i);
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {
            "name": vm,
            "labels": {"vmclone.dev/bench": "source", "app": "cirros", "somekey/owner": "team-a"},
            "annotations": {"somekey/note": "x"},
        },
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": vm, "somekey/template": "x"}},
                "spec": {
                    "domain": {
                        "firmware": {"serial": format!("serial-{i:05}")},
                        "devices": {
                            "disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}],
                            "interfaces": [{
                                "name": "default", "masquerade": {},
                                "macAddress": format!("02:b0:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
                            }],
                        },
                        "resources": {"requests": {"memory": "64Mi"}},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [{"name": "containerdisk", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}}],
                },
            },
        },
    })
}

/// Clone `i` of source `i` into `target-<i>`, with the filters of the user guide's example.
pub fn clone_object(i: usize) -> Value {
    json!({
        "apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
        "metadata": {"name": name("clone", i)},
        "spec": {
            "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name("source", i)},
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name("target", i)},
            "labelFilters": ["*", "!somekey/*"],
            "annotationFilters": ["*", "!somekey/*"],
            "template": {"labelFilters": ["*", "!somekey/*"]},
        },
    })
}

/// The bare path's snapshot of source `i`.
pub fn snapshot_object(i: usize) -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name("snapshot", i)},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name("source", i)}},
    })
}

/// The bare path's restore of snapshot `i` to the new VM `target-<i>` (no patches).
pub fn restore_object(i: usize) -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
        "metadata": {"name": name("restore", i)},
        "spec": {
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name("target", i)},
            "virtualMachineSnapshotName": name("snapshot", i),
        },
    })
}

/// Creates `value` (a retried create whose first attempt went through is fine).
async fn create(api: &Api<DynamicObject>, value: &Value) -> Result<()> {
    let object: DynamicObject = serde_json::from_value(value.clone())?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(err) if already_exists(&err) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// What the runs share.
struct Bench {
    controller_bin: PathBuf,
    logs: PathBuf,
    concurrency: u16,
    clock_ticks: u64,
    progress: Progress,
    timeout: Option<u64>,
    kube_apiserver_version: String,
}

pub async fn bench(args: &super::Args) -> Result<()> {
    let progress = Progress(Instant::now());
    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(std::env::args().skip(2))
        .collect::<Vec<_>>()
        .join(" ");
    let sizes = args.sizes.clone().unwrap_or_else(|| DEFAULT_SIZES.to_vec());
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("--sizes needs positive numbers of clones");
    }
    let out = super::out_dir(&args.out);
    let mut machine = super::machine_info();
    progress.say(&format!(
        "{command}: {} cores, load average {:?}",
        machine.nproc, machine.load_average_start
    ));
    if !args.no_build {
        progress.say("building the controller: cargo build --release -p clone-controller --bins");
        let status = Command::new(super::cargo())
            .args(["build", "--release", "-p", "clone-controller", "--bins"])
            .current_dir(repo())
            .stdout(super::to_stderr())
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release failed ({status})");
        }
    }
    let controller_bin = super::controller_bin(args, &target_dir().join("release"));
    if !controller_bin.is_file() {
        bail!(
            "{} is missing (run without --no-build)",
            controller_bin.display()
        );
    }
    progress.say(&format!(
        "finding or building etcd, kube-apiserver, kube-controller-manager and KubeVirt {} \
         virt-controller and virt-api (minutes on first use)",
        testenv::KUBEVIRT_VERSION
    ));
    tokio::task::spawn_blocking(|| {
        testenv::ensure_binaries()?;
        testenv::ensure_kubevirt_binaries()
    })
    .await
    .context("the binaries build panicked")??;

    let logs = target_dir().join("bench-logs").join(format!(
        "{}-kubevirt",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    ));
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut bench = Bench {
        controller_bin,
        logs: logs.clone(),
        concurrency: args.concurrency,
        clock_ticks: machine.clock_ticks_per_second,
        progress,
        timeout: args.scenario_timeout,
        kube_apiserver_version: String::new(),
    };
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for &size in &sizes {
        for path in Path::ALL {
            let run = bench.run(path, size).await;
            if let Some(err) = &run.error {
                errors.push(format!("{}: {err}", run.name));
            }
            runs.push(run);
        }
    }
    machine.load_average_end = procfs::loadavg();
    machine.date_end = jiff::Timestamp::now().to_string();
    machine.kube_apiserver_version = bench.kube_apiserver_version.clone();
    let report = KubeVirtReport {
        command,
        machine,
        settings: Settings {
            sizes: sizes.clone(),
            concurrency: args.concurrency,
            upstream_clone_threads: UPSTREAM_CLONE_THREADS,
            kubevirt_version: testenv::KUBEVIRT_VERSION.to_owned(),
            timeout_seconds: sizes
                .iter()
                .map(|&n| args.scenario_timeout.unwrap_or_else(|| default_timeout(n)))
                .collect(),
            controller_log_level: CONTROLLER_LOG_LEVEL.to_owned(),
        },
        comparisons: report::compare(&runs),
        runs,
        errors,
        total_seconds: progress.0.elapsed().as_secs_f64(),
        logs_dir: logs
            .strip_prefix(repo())
            .unwrap_or(&logs)
            .display()
            .to_string(),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(out.join(JSON_FILE), json + "\n")?;
    println!("{}", report::summary(&report));
    let section = if super::rewrite_markdown_if_reported(&out)? {
        "and the KubeVirt section of benchmarks.md"
    } else {
        "(no benchmarks.md: the folder has no benchmarks.json to render it with)"
    };
    progress.say(&format!(
        "wrote {}/{JSON_FILE} {section}; logs in {}",
        out.display(),
        logs.display()
    ));
    Ok(())
}

/// A moment of a run: the audit log's length and the wall clock, and CPU counters, ours and
/// every process's.
struct Mark {
    audit: audit::Moment,
    cpu: CpuSnapshot,
    all: HashMap<u32, (String, u64)>,
}

/// The processes whose CPU the bench follows.
#[derive(Debug, Clone, Default)]
struct Pids(Vec<(&'static str, u32)>);

impl Pids {
    fn snapshot(&self) -> CpuSnapshot {
        let mut processes = BTreeMap::new();
        for (name, pid) in &self.0 {
            if let Ok(ticks) = procfs::process_cpu_ticks(*pid) {
                processes.insert(*name, ticks);
            }
        }
        CpuSnapshot {
            at: Some(Instant::now()),
            machine: procfs::machine_cpu().unwrap_or_default(),
            processes,
        }
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }
}

fn mark(live: &Live) -> Mark {
    Mark {
        audit: audit::Moment::now(&live.audit_log),
        cpu: live.pids.snapshot(),
        all: procfs::all_processes(),
    }
}

/// What runs during one measurement besides the control plane.
struct Live {
    env: TestEnv,
    /// kube-apiserver's audit log.
    audit_log: PathBuf,
    client: Client,
    env_dir: PathBuf,
    controller: Option<Supervised>,
    pids: Pids,
}

impl Bench {
    fn say(&self, text: &str) {
        self.progress.say(text);
    }

    async fn run(&mut self, path: Path, clones: usize) -> Run {
        let mut run = Run::new(path, clones);
        run.load_average_before = procfs::loadavg();
        self.say(&format!(
            "{}: load average {:?}; starting a fresh control plane with KubeVirt {} ({})",
            run.name,
            run.load_average_before,
            testenv::KUBEVIRT_VERSION,
            match path {
                Path::Bare => "no clone controller",
                Path::Vmclone => "--clone-controller-threads 0, vmclone's CRD",
                Path::Upstream => "upstream's clone controller on, upstream's CRD",
            }
        ));
        let mut live = None;
        if let Err(err) = self.measure(&mut run, &mut live).await {
            self.say(&format!("  {} failed: {err:#}", run.name));
            run.error = Some(format!("{err:#}"));
        }
        if let Some(live) = live {
            self.finish(&mut run, live).await;
        }
        run.load_average_after = procfs::loadavg();
        run
    }

    /// Stops the controller, keeps the KubeVirt logs, and stops the control plane.
    async fn finish(&self, run: &mut Run, live: Live) {
        if let Some(mut controller) = live.controller {
            let log = controller.log_path().to_owned();
            controller.terminate(Duration::from_secs(10)).await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let (warnings, errors, excerpt) = super::scenario::log_summary(&text);
            run.logs.push(LogSummary {
                process: "vmclone controller".into(),
                file: file_name(&log),
                warnings,
                errors,
                excerpt,
            });
        }
        let window = run
            .requests
            .as_ref()
            .and_then(|r| Some((r.window_start.parse().ok()?, r.window_end.parse().ok()?)));
        for server in ["virt-controller", "virt-api"] {
            let from = live.env_dir.join("logs").join(format!("{server}.log"));
            let to = self
                .logs
                .join(format!("{}-n{}-{server}.log", run.path.slug(), run.clones));
            if std::fs::copy(&from, &to).is_ok() {
                let text = std::fs::read_to_string(&to).unwrap_or_default();
                let (warnings, errors, excerpt) = json_log_summary(&text, window);
                run.logs.push(LogSummary {
                    process: server.into(),
                    file: file_name(&to),
                    warnings,
                    errors,
                    excerpt,
                });
            }
        }
        drop(live.client);
        drop(live.env);
    }

    async fn measure(&mut self, run: &mut Run, slot: &mut Option<Live>) -> Result<()> {
        let (path, n) = (run.path, run.clones);
        let started = Instant::now();
        let env = TestEnv::start_with_options(Options {
            kubevirt: Some(KubeVirtOptions {
                upstream_clone_controller: path == Path::Upstream,
            }),
            clone_crd: if path == Path::Upstream {
                CloneCrd::Upstream
            } else {
                CloneCrd::Vmclone
            },
            audit_log: true,
        })
        .await
        .context("starting the control plane")?;
        run.control_plane_seconds = started.elapsed().as_secs_f64();
        let env_dir = env
            .kubeconfig_path()
            .parent()
            .map(FsPath::to_owned)
            .unwrap_or_default();
        let client = env.identity_client("bench").await?;
        if self.kube_apiserver_version.is_empty() {
            self.kube_apiserver_version = client
                .apiserver_version()
                .await
                .map(|v| v.git_version)
                .unwrap_or_default();
        }
        let servers = ServerPids::of(&env_dir);
        let needle = env_dir.display().to_string();
        let mut pids = Pids::default();
        for (name, pid) in [
            ("kube-apiserver", servers.kube_apiserver),
            ("etcd", servers.etcd),
            ("kube-controller-manager", servers.kube_controller_manager),
            (
                "virt-controller",
                procfs::find_process("virt-controller", &needle),
            ),
            ("virt-api", procfs::find_process("virt-api", &needle)),
        ] {
            if let Some(pid) = pid {
                pids.0.push((name, pid));
            }
        }
        pids.0.push(("bench", std::process::id()));
        if pids.get("virt-controller").is_none() {
            bail!(
                "no virt-controller process mentions {} in its command line",
                env_dir.display()
            );
        }
        let audit_log = env
            .audit_log_path()
            .context("the control plane writes no audit log")?;
        let live = slot.insert(Live {
            env,
            audit_log,
            client: client.clone(),
            env_dir,
            controller: None,
            pids,
        });

        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
            )
            .await
            .context("creating the namespace")?;
        let started = Instant::now();
        self.create_sources(&client, n).await?;
        self.wait_sources(&client, n).await?;
        run.sources_seconds = started.elapsed().as_secs_f64();
        self.say(&format!(
            "  {n} source VMs created and reconciled by virt-controller in {:.1}s",
            run.sources_seconds
        ));

        let restore_watch =
            ObjectWatch::start(client.clone(), NAMESPACE, &restores(), restore_states, None)
                .await?;
        if path == Path::Vmclone {
            let started = Instant::now();
            let mut controller = self.start_controller(live, n).await?;
            wait_controller_ready(&mut controller, Duration::from_secs(120)).await?;
            run.controller_ready_seconds = Some(started.elapsed().as_secs_f64());
            live.pids
                .0
                .push(("clone-controller", controller.pid().unwrap_or_default()));
            live.controller = Some(controller);
            self.say(&format!(
                "  vmclone's controller ready in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
        }
        let timeout = Duration::from_secs(self.timeout.unwrap_or_else(|| default_timeout(n)));
        let (start, in_flight) = match path {
            Path::Bare => self.bare(run, live, &restore_watch, timeout).await?,
            Path::Vmclone | Path::Upstream => {
                self.clones(run, live, &restore_watch, timeout).await?
            }
        };
        let end = if path == Path::Bare {
            in_flight
        } else {
            self.say("  waiting for cleanup (no snapshot, restore or snapshot content left)");
            let started = Instant::now();
            let quiet = self
                .wait_quiet(&client, Duration::from_secs(60 + n as u64 / 2))
                .await;
            match quiet {
                Ok(()) => run.cleanup_seconds = Some(started.elapsed().as_secs_f64()),
                Err(err) => self.say(&format!("  {err:#}")),
            }
            mark(live)
        };
        self.account(run, live, &start, &end).await
    }

    async fn create_sources(&self, client: &Client, n: usize) -> Result<()> {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &vms());
        run_parallel(n, usize::from(self.concurrency), move |i| {
            let api = api.clone();
            async move { create(&api, &source_vm(i)).await }
        })
        .await
        .map(|_| ())
        .context("creating the source VMs")
    }

    /// Until virt-controller has reconciled every source VM (`Stopped`, with its volumes'
    /// snapshot support recorded).
    async fn wait_sources(&self, client: &Client, n: usize) -> Result<()> {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &vms());
        let started = Instant::now();
        let timeout = Duration::from_secs(120 + n as u64);
        loop {
            let list = api
                .list(&ListParams::default().labels(SOURCE_LABEL))
                .await
                .context("listing the source VMs")?;
            let ready = list
                .items
                .iter()
                .filter(|vm| {
                    vm.data.pointer("/status/printableStatus") == Some(&json!("Stopped"))
                        && vm
                            .data
                            .pointer("/status/volumeSnapshotStatuses")
                            .and_then(Value::as_array)
                            .is_some_and(|s| !s.is_empty())
                })
                .count();
            if ready >= n {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "virt-controller reconciled only {ready} of {n} source VMs within {timeout:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn start_controller(&self, live: &Live, clones: usize) -> Result<Supervised> {
        let args = vec![
            "--kubeconfig".to_owned(),
            live.env
                .identity_kubeconfig("clone-controller")
                .display()
                .to_string(),
            "--namespace".to_owned(),
            NAMESPACE.to_owned(),
            "--metrics-addr=127.0.0.1:0".to_owned(),
            "--health-addr=127.0.0.1:0".to_owned(),
            "--concurrency".to_owned(),
            self.concurrency.to_string(),
        ];
        start_process(
            "clone-controller",
            &self.controller_bin,
            &args,
            &[("RUST_LOG", CONTROLLER_LOG_LEVEL.to_owned())],
            &self.logs.join(format!("vmclone-n{clones}-controller.log")),
        )
        .await
    }

    /// N clones at once; returns the marks at the first create and when all are terminal.
    async fn clones(
        &self,
        run: &mut Run,
        live: &mut Live,
        restore_watch: &ObjectWatch,
        timeout: Duration,
    ) -> Result<(Mark, Mark)> {
        let n = run.clones;
        let clone_watch = ObjectWatch::start(
            live.client.clone(),
            NAMESPACE,
            &clones(),
            clone_states,
            None,
        )
        .await?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(live.client.clone(), NAMESPACE, &clones());
        self.say(&format!(
            "  creating {n} clones with {} creators",
            self.concurrency
        ));
        let start = mark(live);
        let began = Instant::now();
        let creators = tokio::spawn(run_parallel(n, usize::from(self.concurrency), move |i| {
            let api = api.clone();
            async move { create(&api, &clone_object(i)).await }
        }));
        let created = self
            .wait(
                live,
                creators,
                began,
                timeout,
                run,
                || {
                    (
                        clone_watch.count("Succeeded"),
                        clone_watch.count("Failed"),
                        restore_watch.count("complete"),
                    )
                },
                "Succeeded",
            )
            .await?;
        let in_flight = mark(live);
        let (seen, clone_errors) = clone_watch.seen();
        let (restores_seen, restore_errors) = restore_watch.seen();
        run.watch_errors = clone_errors + restore_errors;
        let succeeded: HashMap<usize, Instant> = seen
            .iter()
            .filter_map(|(name, s)| Some((index_of(name, "clone")?, *s.first.get("Succeeded")?)))
            .collect();
        for (name, sighting) in &seen {
            if sighting.first.contains_key("Failed") && index_of(name, "clone").is_some() {
                let reason = sighting
                    .attributes
                    .get("reason")
                    .cloned()
                    .unwrap_or_else(|| "Failed".into());
                *run.failures.entry(reason).or_default() += 1;
            }
        }
        // A restore is the clone's by its owner reference (vmclone and upstream both set one).
        let restore_complete: HashMap<usize, Instant> = restores_seen
            .values()
            .filter_map(|s| {
                let owner = s.attributes.get("owner")?;
                Some((index_of(owner, "clone")?, *s.first.get("complete")?))
            })
            .collect();
        self.outcome(run, began, &created, &succeeded, &restore_complete, timeout);
        run.lags_seconds = (0..n)
            .map(|i| {
                let done = succeeded.get(&i)?;
                let restored = restore_complete.get(&i)?;
                Some(signed_seconds(*restored, *done))
            })
            .collect();
        run.lag_unmeasured = (0..n)
            .filter(|i| succeeded.contains_key(i) && !restore_complete.contains_key(i))
            .count();
        let lags: Vec<f64> = run.lags_seconds.iter().flatten().copied().collect();
        run.lag = stats::latency(&lags);
        self.say(&format!(
            "  {} Succeeded, {} Failed, {} unfinished in {:.1}s ({:.2} clones/s); restores all complete at {}; lag restore complete → Succeeded p50 {} p99 {} max {}",
            run.succeeded,
            run.failed,
            run.unfinished,
            run.duration_seconds,
            run.clones_per_second,
            run.restores_complete_seconds
                .map_or_else(|| "–".to_owned(), |s| format!("{s:.1}s")),
            seconds(run.lag.map(|l| l.p50)),
            seconds(run.lag.map(|l| l.p99)),
            seconds(run.lag.map(|l| l.max)),
        ));
        Ok((start, in_flight))
    }

    /// The bare path: a snapshot of each source, and a restore of each once it is ready.
    async fn bare(
        &self,
        run: &mut Run,
        live: &mut Live,
        restore_watch: &ObjectWatch,
        timeout: Duration,
    ) -> Result<(Mark, Mark)> {
        let n = run.clones;
        let (tell, mut ready) = tokio::sync::mpsc::unbounded_channel();
        let snapshot_watch = ObjectWatch::start(
            live.client.clone(),
            NAMESPACE,
            &snapshots(),
            snapshot_states,
            Some(tell),
        )
        .await?;
        let snapshot_api: Api<DynamicObject> =
            Api::namespaced_with(live.client.clone(), NAMESPACE, &snapshots());
        let restore_api: Api<DynamicObject> =
            Api::namespaced_with(live.client.clone(), NAMESPACE, &restores());
        let concurrency = usize::from(self.concurrency).max(1);
        // Restores are created as the watch reports snapshots ready, up to `concurrency` at
        // once.
        let restorer = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut started = 0;
            while started < n {
                let Some((snapshot, state)) = ready.recv().await else {
                    break;
                };
                let Some(i) = (state == "ready")
                    .then(|| index_of(&snapshot, "snapshot"))
                    .flatten()
                else {
                    continue;
                };
                while tasks.len() >= concurrency {
                    if let Some(done) = tasks.join_next().await {
                        done.context("a restore creator panicked")??;
                    }
                }
                let api = restore_api.clone();
                tasks.spawn(async move {
                    let mut attempt = 1;
                    loop {
                        match create(&api, &restore_object(i)).await {
                            Ok(()) => return anyhow::Ok(()),
                            Err(err) if attempt < 5 => {
                                eprintln!(
                                    "  (restore {i}, attempt {attempt}: {err:#}; trying again)"
                                );
                                attempt += 1;
                                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                            }
                            Err(err) => return Err(err.context(format!("creating restore {i}"))),
                        }
                    }
                });
                started += 1;
            }
            while let Some(done) = tasks.join_next().await {
                done.context("a restore creator panicked")??;
            }
            anyhow::Ok(())
        });
        self.say(&format!(
            "  creating {n} snapshots with {} creators; a restore of each once it is ready",
            self.concurrency
        ));
        let start = mark(live);
        let began = Instant::now();
        let creators = tokio::spawn(run_parallel(n, concurrency, move |i| {
            let api = snapshot_api.clone();
            async move { create(&api, &snapshot_object(i)).await }
        }));
        let waited = self
            .wait(
                live,
                creators,
                began,
                timeout,
                run,
                || {
                    (
                        restore_watch.count("complete"),
                        restore_watch.count("failed") + snapshot_watch.count("failed"),
                        restore_watch.count("complete"),
                    )
                },
                "restores complete",
            )
            .await;
        let in_flight = mark(live);
        if restorer.is_finished() {
            restorer.await.context("the restore creators panicked")??;
        } else {
            restorer.abort();
        }
        let created = waited?;
        let (restores_seen, restore_errors) = restore_watch.seen();
        let (snapshots_seen, snapshot_errors) = snapshot_watch.seen();
        run.watch_errors = restore_errors + snapshot_errors;
        let complete: HashMap<usize, Instant> = restores_seen
            .iter()
            .filter_map(|(name, s)| Some((index_of(name, "restore")?, *s.first.get("complete")?)))
            .collect();
        for (kind, seen) in [("snapshot", &snapshots_seen), ("restore", &restores_seen)] {
            let failed = seen
                .values()
                .filter(|s: &&Sighting| s.first.contains_key("failed"))
                .count();
            if failed > 0 {
                run.failures.insert(format!("{kind} failed"), failed);
            }
        }
        self.outcome(run, began, &created, &complete, &complete, timeout);
        self.say(&format!(
            "  {} restores complete, {} failed, {} unfinished in {:.1}s ({:.2} targets/s)",
            run.succeeded, run.failed, run.unfinished, run.duration_seconds, run.clones_per_second
        ));
        Ok((start, in_flight))
    }

    /// Waits until the creators are done and `done + failed` reaches N, printing progress;
    /// returns when each create call returned.
    #[allow(clippy::too_many_arguments)]
    async fn wait(
        &self,
        live: &mut Live,
        creators: tokio::task::JoinHandle<Result<Vec<Instant>>>,
        began: Instant,
        timeout: Duration,
        run: &mut Run,
        counts: impl Fn() -> (usize, usize, usize),
        what: &str,
    ) -> Result<Vec<Instant>> {
        let n = run.clones;
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
                run.create_seconds = last.duration_since(began).as_secs_f64();
                self.say(&format!("  all {n} created in {:.1}s", run.create_seconds));
                created = Some(done);
            }
            let (done, failed, restored) = counts();
            if created.is_some() && done + failed >= n {
                break;
            }
            if let Some(controller) = live.controller.as_mut()
                && let Some(status) = controller.exited()
            {
                bail!(
                    "the controller exited ({status}); see {}",
                    controller.log_path().display()
                );
            }
            if Instant::now() > deadline {
                self.say(&format!(
                    "  timeout after {timeout:?}: {done} {what}, {failed} failed of {n}"
                ));
                break;
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                self.say(&format!(
                    "  {:.0}s: {done} {what}, {failed} failed, {restored} restores complete of {n}",
                    began.elapsed().as_secs_f64()
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match created {
            Some(created) => Ok(created),
            None => {
                if let Some(task) = creators {
                    task.abort();
                }
                bail!("the objects were not all created within {timeout:?}")
            }
        }
    }

    /// Fills counts, duration, throughput and latency from when each item was created and
    /// finished.
    fn outcome(
        &self,
        run: &mut Run,
        began: Instant,
        created: &[Instant],
        finished: &HashMap<usize, Instant>,
        restores_complete: &HashMap<usize, Instant>,
        timeout: Duration,
    ) {
        let n = run.clones;
        let finished_in: HashMap<usize, Instant> = finished
            .iter()
            .filter(|(i, _)| **i < n)
            .map(|(i, t)| (*i, *t))
            .collect();
        run.succeeded = finished_in.len();
        run.failed = run
            .failures
            .values()
            .sum::<usize>()
            .min(n.saturating_sub(run.succeeded));
        run.unfinished = n.saturating_sub(run.succeeded + run.failed);
        run.timed_out = run.unfinished > 0;
        run.duration_seconds = if run.timed_out {
            timeout.as_secs_f64()
        } else {
            finished_in
                .values()
                .max()
                .map_or(0.0, |t| t.duration_since(began).as_secs_f64())
        };
        run.clones_per_second = run.succeeded as f64 / run.duration_seconds.max(1e-9);
        run.restores_complete_seconds = (restores_complete.len() >= n)
            .then(|| restores_complete.values().max())
            .flatten()
            .map(|t| t.duration_since(began).as_secs_f64());
        run.latencies_seconds = (0..n)
            .map(|i| {
                let done = finished_in.get(&i)?;
                Some(
                    done.saturating_duration_since(*created.get(i)?)
                        .as_secs_f64(),
                )
            })
            .collect();
        let latencies: Vec<f64> = run.latencies_seconds.iter().flatten().copied().collect();
        run.latency = stats::latency(&latencies);
    }

    /// Until no snapshot, restore or snapshot content is left in the namespace.
    async fn wait_quiet(&self, client: &Client, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let kinds = [snapshots(), restores(), contents()];
        loop {
            let mut left = Vec::new();
            for kind in &kinds {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, kind);
                let page = api
                    .list_metadata(&ListParams::default().limit(1))
                    .await
                    .with_context(|| format!("listing {}", kind.plural))?;
                if !page.items.is_empty() {
                    left.push(kind.plural.clone());
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!("after {timeout:?} there are still {}", left.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// CPU, memory and API requests between two marks.
    async fn account(&self, run: &mut Run, live: &Live, start: &Mark, end: &Mark) -> Result<()> {
        let n = run.clones.max(1) as f64;
        let tick = self.clock_ticks.max(1) as f64;
        let used = |name: &str| -> f64 {
            let a = start.cpu.processes.get(name).copied().unwrap_or(0);
            let b = end.cpu.processes.get(name).copied().unwrap_or(a);
            b.saturating_sub(a) as f64 / tick
        };
        for name in ["clone-controller", "virt-controller"] {
            if let Some(pid) = live.pids.get(name) {
                let cpu_seconds = used(name);
                run.processes.push(ProcessUse {
                    name: name.to_owned(),
                    cpu_seconds,
                    cpu_ms_per_clone: cpu_seconds * 1000.0 / n,
                    peak_rss_mib: procfs::process_peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0,
                });
            }
        }
        let wall = match (start.cpu.at, end.cpu.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        if wall > 0.0 {
            let busy = end.cpu.machine.busy.saturating_sub(start.cpu.machine.busy) as f64 / tick;
            let processes: BTreeMap<String, f64> = live
                .pids
                .0
                .iter()
                .map(|(name, _)| ((*name).to_owned(), used(name) / wall))
                .collect();
            let ours: f64 = processes.values().sum();
            let mine: Vec<u32> = live.pids.0.iter().map(|(_, pid)| *pid).collect();
            run.cpu = Some(Cpu {
                wall_seconds: wall,
                cores_available: std::thread::available_parallelism().map_or(1, usize::from),
                machine_busy: busy / wall,
                other: (busy / wall - ours).max(0.0),
                processes,
                other_processes: busiest_others(&start.all, &end.all, &mine, tick * wall, 5),
            });
        }
        // Blocking audit mode writes an event before the response; a moment for requests that
        // were in flight at the end mark.
        tokio::time::sleep(Duration::from_secs(1)).await;
        run.requests = Some(audit::tally_file(
            &live.audit_log,
            start.audit,
            end.audit.wall,
        )?);
        Ok(())
    }
}

/// The `top` busiest processes between two listings, except `mine` and kernel workers, summed
/// by command name, in
/// average cores (`per_core_second`: ticks in one core for the window). A process that started
/// in the window counts from zero; one that ended in it is not seen.
fn busiest_others(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
    mine: &[u32],
    window_ticks: f64,
    top: usize,
) -> Vec<(String, f64)> {
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for (pid, (name, ticks)) in after {
        // Kernel workers rename themselves by the work they pick up (so a pid's name changes
        // between listings) and mostly do I/O for the processes above: left out.
        if mine.contains(pid) || name.starts_with("kworker/") {
            continue;
        }
        let earlier = before
            .get(pid)
            .filter(|(n, _)| n == name)
            .map_or(0, |(_, t)| *t);
        *by_name.entry(name.as_str()).or_default() += ticks.saturating_sub(earlier);
    }
    let mut out: Vec<(String, f64)> = by_name
        .into_iter()
        .filter(|(_, ticks)| *ticks > 0)
        .map(|(name, ticks)| (name.to_owned(), ticks as f64 / window_ticks.max(1e-9)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.truncate(top);
    out
}

/// `to − from` in seconds, negative when `to` came first.
fn signed_seconds(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64()
    } else {
        -from.duration_since(to).as_secs_f64()
    }
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}s"))
}

fn file_name(path: &FsPath) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Counts the warning and error lines of a KubeVirt JSON log (`"level":"warning"` /
/// `"level":"error"`) whose `timestamp` is in `window` (every line without a window or a
/// readable timestamp), and keeps up to 8 distinct messages.
pub fn json_log_summary(
    text: &str,
    window: Option<(jiff::Timestamp, jiff::Timestamp)>,
) -> (usize, usize, Vec<String>) {
    let mut warnings = 0;
    let mut errors = 0;
    let mut excerpt: Vec<String> = Vec::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let level = match entry["level"].as_str() {
            Some("warning" | "warn") => "WARN",
            Some("error" | "fatal") => "ERROR",
            _ => continue,
        };
        if let (Some((from, to)), Some(at)) = (
            window,
            entry["timestamp"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
        ) && (at < from || at > to)
        {
            continue;
        }
        if level == "WARN" {
            warnings += 1;
        } else {
            errors += 1;
        }
        let message = [entry["msg"].as_str(), entry["reason"].as_str()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        let text = format!("{level} {message}");
        let key: String = text.chars().take(80).collect();
        if excerpt.len() < 8 && !excerpt.iter().any(|e| e.starts_with(&key)) {
            excerpt.push(text.chars().take(300).collect());
        }
    }
    (warnings, errors, excerpt)
}

/// The report of an earlier `--kubevirt real` run in `out`, if there is one.
pub fn load(out: &FsPath) -> Result<Option<KubeVirtReport>> {
    super::load_json(&out.join(JSON_FILE))
}

/// The section of `benchmarks.md` (see [`report::markdown`]).
pub fn markdown(report: &KubeVirtReport, previous: &str) -> String {
    report::markdown(report, previous)
}

/// The short summary printed at the end.
pub fn summary(report: &KubeVirtReport) -> String {
    report::summary(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_name_their_counterparts() {
        let clone = clone_object(7);
        assert_eq!(clone["metadata"]["name"], "clone-00007");
        assert_eq!(clone["spec"]["source"]["name"], "source-00007");
        assert_eq!(clone["spec"]["target"]["name"], "target-00007");
        let vm = source_vm(258);
        assert_eq!(vm["metadata"]["name"], "source-00258");
        assert_eq!(
            vm.pointer("/spec/template/spec/domain/devices/interfaces/0/macAddress"),
            Some(&json!("02:b0:00:00:01:02"))
        );
        assert_eq!(
            vm.pointer("/spec/template/metadata/labels/kubevirt.io~1vm"),
            Some(&json!("source-00258"))
        );
        assert_eq!(snapshot_object(3)["spec"]["source"]["name"], "source-00003");
        let restore = restore_object(3);
        assert_eq!(
            restore["spec"]["virtualMachineSnapshotName"],
            "snapshot-00003"
        );
        assert_eq!(restore["spec"]["target"]["name"], "target-00003");
        assert_eq!(index_of("clone-00042", "clone"), Some(42));
        assert_eq!(index_of("tmp-restore-x", "restore"), None);
        assert_eq!(index_of("clone-x", "clone"), None);
    }

    #[test]
    fn kubevirt_log_levels_are_counted_within_the_window() {
        let log = r#"{"component":"virt-controller","level":"warning","msg":"certificate load failed","timestamp":"2026-11-30T01:00:00.000000Z"}
{"component":"virt-controller","level":"error","msg":"reenqueuing VirtualMachine","reason":"Operation cannot be fulfilled","timestamp":"2026-11-30T01:00:05.000000Z"}
{"component":"virt-controller","level":"error","msg":"reenqueuing VirtualMachine","reason":"Operation cannot be fulfilled","timestamp":"2026-11-30T01:00:06.000000Z"}
{"component":"virt-controller","level":"info","msg":"fine","timestamp":"2026-11-30T01:00:06.000000Z"}
not json
"#;
        let (w, e, excerpt) = json_log_summary(log, None);
        assert_eq!((w, e), (1, 2));
        assert_eq!(
            excerpt,
            [
                "WARN certificate load failed",
                "ERROR reenqueuing VirtualMachine: Operation cannot be fulfilled"
            ]
        );
        let window = Some((
            "2026-11-30T01:00:01Z".parse().unwrap(),
            "2026-11-30T01:00:05.5Z".parse().unwrap(),
        ));
        assert_eq!(json_log_summary(log, window).0, 0);
        assert_eq!(json_log_summary(log, window).1, 1);
    }

    #[test]
    fn timeouts_grow_with_size() {
        assert_eq!(default_timeout(5), 300);
        assert_eq!(default_timeout(100), 620);
    }

    #[test]
    fn the_busiest_other_processes_are_summed_by_name() {
        let before: HashMap<u32, (String, u64)> = [
            (1, ("rustc".to_owned(), 100)),
            (2, ("rustc".to_owned(), 50)),
            (3, ("kube-apiserver".to_owned(), 10)),
            (4, ("bash".to_owned(), 5)),
        ]
        .into();
        let after: HashMap<u32, (String, u64)> = [
            (1, ("rustc".to_owned(), 200)),
            (2, ("rustc".to_owned(), 100)),
            (3, ("kube-apiserver".to_owned(), 90)),
            (4, ("bash".to_owned(), 5)),
            (5, ("cc1".to_owned(), 20)),
            (6, ("kworker/0:1-events".to_owned(), 900)),
        ]
        .into();
        // 3 is ours; 4 did nothing; 5 started in the window; 6 is a kernel worker. 100 ticks =
        // one core.
        assert_eq!(
            busiest_others(&before, &after, &[3], 100.0, 5),
            [("rustc".to_owned(), 1.5), ("cc1".to_owned(), 0.2)]
        );
        assert_eq!(busiest_others(&before, &after, &[3], 100.0, 1).len(), 1);
    }

    #[test]
    fn signed_lags() {
        let a = Instant::now();
        let b = a + Duration::from_millis(1500);
        assert_eq!(signed_seconds(a, b), 1.5);
        assert_eq!(signed_seconds(b, a), -1.5);
    }
}
