//! The bench's tools against the live testbed: child processes, the controller's ports,
//! parallel creators, the clone watch and CPU snapshots.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use futures::StreamExt;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use testenv::Supervised;

use super::procfs::{self, MachineTicks};

/// Prints a progress line to stderr with the time since the bench started.
#[derive(Debug, Clone, Copy)]
pub struct Progress(pub Instant);

impl Progress {
    pub fn say(&self, text: &str) {
        eprintln!("[bench {:>7.1}s] {text}", self.0.elapsed().as_secs_f64());
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// Starts a child process of the bench (the controller or the stand-in) as a
/// [`Supervised`] process, its output in `log` (its pid file beside it, in `pids/`): it dies with
/// the bench however the bench dies. Returns once it runs.
pub async fn start_process(
    name: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, String)],
    log: &Path,
) -> Result<Supervised> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let stem = log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned());
    let mut process =
        Supervised::new(stem, dir, program, args.iter().map(Into::into).collect()).log_to(log);
    for (key, value) in env {
        process = process.env(key, value);
    }
    process
        .start()
        .with_context(|| format!("starting {name} ({})", program.display()))?;
    process
        .started(Duration::from_secs(10))
        .await
        .with_context(|| format!("starting {name}"))?;
    Ok(process)
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// `GET path` on `127.0.0.1:port` ([`testenv::http_get`]): the status code and the body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    testenv::http_get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path).await
}

/// The controller's health and metrics ports: the listening ports of its process, told apart by
/// what they answer.
#[derive(Debug, Clone, Copy)]
pub struct ControllerPorts {
    pub health: u16,
    pub metrics: u16,
}

/// Waits until the controller listens on two ports and `/readyz` answers 200.
pub async fn wait_controller_ready(
    controller: &mut Supervised,
    timeout: Duration,
) -> Result<ControllerPorts> {
    let started = Instant::now();
    let mut last = String::from("no listening port yet");
    loop {
        if let Some(status) = controller.exited() {
            bail!(
                "the controller exited ({status}); see {}",
                controller.log_path().display()
            );
        }
        if started.elapsed() > timeout {
            bail!(
                "the controller was not ready within {timeout:?} ({last}); see {}",
                controller.log_path().display()
            );
        }
        let ports = procfs::process_listening_ports(controller.pid().unwrap_or_default())
            .unwrap_or_default();
        let mut health = None;
        let mut metrics = None;
        for port in ports {
            match http_get(port, "/readyz").await {
                Ok((200, _)) => health = Some(port),
                Ok((503, body)) => {
                    last = format!("/readyz: 503 {}", body.trim());
                }
                _ => {
                    if let Ok((200, body)) = http_get(port, "/metrics").await
                        && body.contains("vmclone_")
                    {
                        metrics = Some(port);
                    }
                }
            }
        }
        if let (Some(health), Some(metrics)) = (health, metrics) {
            return Ok(ControllerPorts { health, metrics });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Parallel creators
// ---------------------------------------------------------------------------------------------

/// Runs `make(i)` for `i` in `0..count` with `concurrency` tasks; returns, per index, when the
/// call returned. A failed call is tried again (up to 5 times, with a short pause).
pub async fn run_parallel<F, Fut>(count: usize, concurrency: usize, make: F) -> Result<Vec<Instant>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let done: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (make, next, done) = (make.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let mut attempt = 1;
                loop {
                    match make(i).await {
                        Ok(()) => break,
                        Err(err) if attempt < 5 => {
                            eprintln!(
                                "  (attempt {attempt} of item {i} failed: {err:#}; trying again)"
                            );
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                        Err(err) => return Err(err.context(format!("item {i}"))),
                    }
                }
                if let Ok(mut done) = done.lock() {
                    done[i] = Some(Instant::now());
                }
            }
        }));
    }
    for task in tasks {
        task.await.context("a creator task panicked")??;
    }
    let done = done.lock().map(|d| d.clone()).unwrap_or_default();
    done.into_iter()
        .enumerate()
        .map(|(i, t)| t.with_context(|| format!("item {i} was never created")))
        .collect()
}

/// Whether an API error is "already exists" (a retried create whose first attempt went through).
pub fn already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409 && status.reason == "AlreadyExists")
}

// ---------------------------------------------------------------------------------------------
// The clone watch
// ---------------------------------------------------------------------------------------------

/// What the watch has seen of the clones of one namespace.
#[derive(Debug, Default)]
pub struct Seen {
    pub succeeded: HashMap<String, Instant>,
    /// Name → (when, reason of the `Ready` condition or the phase).
    pub failed: HashMap<String, (Instant, String)>,
    pub watch_errors: usize,
}

/// A watch on the clones of a namespace that records when each first reaches a terminal phase.
#[derive(Debug)]
pub struct CloneWatch {
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CloneWatch {
    pub async fn start(client: Client, namespace: &str) -> Result<Self> {
        let api: Api<VirtualMachineClone> = Api::namespaced(client, namespace);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        // The first list before returning, so nothing created afterwards is missed.
        let list = api
            .list(&ListParams::default())
            .await
            .context("listing clones")?;
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        for clone in &list.items {
            record(&seen, clone);
        }
        let task = {
            let (seen, stop) = (seen.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let params = WatchParams::default().timeout(290);
                    let stream = match api.watch(&params, &version).await {
                        Ok(stream) => stream,
                        Err(_) => {
                            note_error(&seen);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    };
                    let mut stream = std::pin::pin!(stream);
                    let mut relist = false;
                    while let Some(event) = stream.next().await {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        match event {
                            Ok(WatchEvent::Added(c) | WatchEvent::Modified(c)) => {
                                version = c.resource_version().unwrap_or(version);
                                record(&seen, &c);
                            }
                            Ok(WatchEvent::Deleted(c)) => {
                                version = c.resource_version().unwrap_or(version);
                            }
                            Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                            Ok(WatchEvent::Error(status)) => {
                                note_error(&seen);
                                relist = status.code == 410;
                                break;
                            }
                            Err(_) => note_error(&seen),
                        }
                    }
                    if relist {
                        // Too old a version: list again (pages of 500) and go on from there.
                        let mut params = ListParams::default().limit(500);
                        loop {
                            match api.list(&params).await {
                                Ok(page) => {
                                    for clone in &page.items {
                                        record(&seen, clone);
                                    }
                                    match page.metadata.continue_.filter(|c| !c.is_empty()) {
                                        Some(token) => params = params.continue_token(&token),
                                        None => {
                                            version =
                                                page.metadata.resource_version.unwrap_or_default();
                                            break;
                                        }
                                    }
                                }
                                Err(_) => {
                                    note_error(&seen);
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                    params = ListParams::default().limit(500);
                                }
                            }
                        }
                    }
                }
            })
        };
        Ok(Self { seen, stop, task })
    }

    /// (succeeded, failed) so far.
    pub fn counts(&self) -> (usize, usize) {
        self.seen
            .lock()
            .map(|s| (s.succeeded.len(), s.failed.len()))
            .unwrap_or_default()
    }

    /// Stops watching and returns what was seen.
    pub fn stop(&self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        self.seen
            .lock()
            .map(|s| Seen {
                succeeded: s.succeeded.clone(),
                failed: s.failed.clone(),
                watch_errors: s.watch_errors,
            })
            .unwrap_or_default()
    }
}

impl Drop for CloneWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

fn note_error(seen: &Mutex<Seen>) {
    if let Ok(mut seen) = seen.lock() {
        seen.watch_errors += 1;
    }
}

fn record(seen: &Mutex<Seen>, clone: &VirtualMachineClone) {
    let Some(status) = &clone.status else { return };
    let now = Instant::now();
    let name = clone.name_any();
    let Ok(mut seen) = seen.lock() else { return };
    match status.phase {
        ClonePhase::Succeeded => {
            seen.succeeded.entry(name).or_insert(now);
        }
        ClonePhase::Failed => {
            let reason = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .and_then(|c| c.reason.clone())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "Failed".to_owned());
            seen.failed.entry(name).or_insert((now, reason));
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// CPU
// ---------------------------------------------------------------------------------------------

/// CPU time of the machine and of each process of interest at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    pub at: Option<Instant>,
    pub machine: MachineTicks,
    pub processes: BTreeMap<&'static str, u64>,
}

/// Pids of the testbed's servers, from the pid files testenv's supervisor writes.
#[derive(Debug, Clone, Default)]
pub struct ServerPids {
    pub kube_apiserver: Option<u32>,
    pub etcd: Option<u32>,
    pub kube_controller_manager: Option<u32>,
}

impl ServerPids {
    pub fn of(env_dir: &Path) -> Self {
        let pid = |name: &str| -> Option<u32> {
            std::fs::read_to_string(env_dir.join("pids").join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        Self {
            kube_apiserver: pid("kube-apiserver"),
            etcd: pid("etcd"),
            kube_controller_manager: pid("kube-controller-manager"),
        }
    }
}

pub fn cpu_snapshot(
    servers: &ServerPids,
    controller: Option<u32>,
    stand_in: Option<u32>,
) -> CpuSnapshot {
    let mut processes = BTreeMap::new();
    let mut put = |name: &'static str, pid: Option<u32>| {
        if let Some(pid) = pid
            && let Ok(ticks) = procfs::process_cpu_ticks(pid)
        {
            processes.insert(name, ticks);
        }
    };
    put("kube-apiserver", servers.kube_apiserver);
    put("etcd", servers.etcd);
    put("kube-controller-manager", servers.kube_controller_manager);
    put("controller", controller);
    put("stand-in", stand_in);
    put("bench", Some(std::process::id()));
    CpuSnapshot {
        at: Some(Instant::now()),
        machine: procfs::machine_cpu().unwrap_or_default(),
        processes,
    }
}
