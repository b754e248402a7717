//! Everything the bench measured, as written to `benchmarks.json` (and rendered into
//! `benchmarks.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::attribution::{EventTally, Row, Writes};
use super::criterion::EngineResult;
use super::stats::{Latency, Spread};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The command line that produced the report.
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    pub raw_creates: Option<RawCreates>,
    pub calibration: Option<Calibration>,
    pub limit: Option<Limit>,
    pub scenarios: Vec<Scenario>,
    pub engine: Engine,
    /// Steps that failed; the rest of the report stands.
    pub errors: Vec<String>,
    pub total_seconds: f64,
    /// Where the controller and stand-in logs of this run are.
    pub logs_dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub kernel: String,
    pub load_average_start: [f64; 3],
    pub load_average_end: [f64; 3],
    pub date_start: String,
    pub date_end: String,
    pub git_commit: String,
    /// Whether the work tree had uncommitted changes (other people edit it during the run).
    pub git_dirty: bool,
    pub clock_ticks_per_second: u64,
    pub kube_apiserver_version: String,
    pub rustc: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub sizes: Vec<usize>,
    pub unrelated_vms: usize,
    pub concurrency: u16,
    pub raw_objects: usize,
    pub raw_runs: usize,
    pub calibration_clones: usize,
    /// Source VMs per namespace.
    pub sources: usize,
    /// Per size, the time after which a scenario stops waiting.
    pub scenario_timeout_seconds: Vec<u64>,
    pub controller_log_level: String,
    pub stand_in_latency: String,
    /// `--controller-bin`, when the controller measured is not this workspace's release build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_bin: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawCreates {
    pub objects_per_run: usize,
    pub concurrency: u16,
    /// ConfigMaps created per second, per run.
    pub runs: Vec<f64>,
    pub spread: Spread,
}

/// The writes one clone needs, measured on clones run one after the other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    pub clones: usize,
    pub succeeded: usize,
    pub seconds: f64,
    pub latency: Option<Latency>,
    pub requests: Requests,
    pub writes: Writes,
    /// Controller CPU milliseconds per clone (clones one at a time).
    #[serde(default)]
    pub controller_cpu_ms_per_clone: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limit {
    /// Median ConfigMap creates per second.
    pub raw_creates_per_second: f64,
    /// Writes one clone needs (controller + stand-in + garbage collector).
    pub writes_per_clone: f64,
    /// `raw_creates_per_second / writes_per_clone`.
    pub clones_per_second: f64,
    /// The same counting the clone's own creation as one more write.
    pub clones_per_second_with_create: f64,
}

/// API requests in a measurement window, after taking out the bench's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requests {
    pub rows: Vec<Row>,
    /// Per clone, by actor label and verb.
    pub per_clone: BTreeMap<String, BTreeMap<String, f64>>,
    /// The bench's own requests in the window (subtracted).
    pub bench_own: BTreeMap<String, f64>,
    pub events: EventTally,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub clones: usize,
    pub unrelated_vms: usize,
    pub namespace: String,
    pub succeeded: usize,
    pub failed: usize,
    pub unfinished: usize,
    /// Failure reasons of failed clones, with counts.
    pub failures: BTreeMap<String, usize>,
    /// Time for the bench to create all clones.
    pub create_seconds: f64,
    /// First create call → last clone seen `Succeeded`.
    pub duration_seconds: f64,
    pub clones_per_second: f64,
    pub latency: Option<Latency>,
    /// Per clone, create call returned → `Succeeded` seen by the watch, seconds, by clone index
    /// (`null` for clones that did not succeed).
    pub latencies_seconds: Vec<Option<f64>>,
    /// Last clone `Succeeded` → no temporary snapshot, restore or content left.
    pub cleanup_seconds: f64,
    pub requests: Option<Requests>,
    pub writes: Option<Writes>,
    /// Writes per second (every actor) while clones were in flight.
    pub writes_per_second_in_flight: f64,
    /// Requests per second (every actor, reads too) while clones were in flight.
    pub requests_per_second_in_flight: f64,
    /// The scenario stopped at its timeout with clones unfinished.
    pub timed_out: bool,
    pub controller: Controller,
    pub cpu: Option<CpuBreakdown>,
    pub stand_in_log: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Controller {
    /// Seconds from the process start to `/readyz` answering 200 (caches synced).
    pub ready_seconds: f64,
    /// CPU seconds from the first create to the last `Succeeded`.
    pub cpu_seconds_in_flight: f64,
    /// CPU seconds from the first create to the end of cleanup.
    pub cpu_seconds: f64,
    pub cpu_ms_per_clone: f64,
    /// Peak resident set size (`VmHWM`) over the process's life, MiB.
    pub peak_rss_mib: f64,
    /// `vmclone_reconciles_total` by result, from the controller's own /metrics.
    pub reconciles: BTreeMap<String, f64>,
    /// Passes over clones (`vmclone_reconcile_duration_seconds_count`), whatever their result.
    #[serde(default)]
    pub passes: f64,
    /// Seconds those passes took in all (`vmclone_reconcile_duration_seconds_sum`).
    #[serde(default)]
    pub pass_seconds: f64,
    pub log: String,
    pub log_warnings: usize,
    pub log_errors: usize,
    /// A few distinct warning and error lines.
    pub log_excerpt: Vec<String>,
}

/// Average CPU cores used from the first create to the end of cleanup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuBreakdown {
    pub wall_seconds: f64,
    pub cores_available: usize,
    pub machine_busy: f64,
    pub kube_apiserver: f64,
    pub etcd: f64,
    pub kube_controller_manager: f64,
    pub controller: f64,
    pub stand_in: f64,
    pub bench: f64,
    /// Busy minus the processes above: other people's work on the machine.
    pub other: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Engine {
    pub ran: bool,
    pub command: String,
    pub note: Option<String>,
    pub results: Vec<EngineResult>,
}
