//! Everything the bench measured, as written to `benchmarks.json` (and rendered into
//! `benchmarks.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::audit::AuditRequests;
use super::criterion::EngineResult;
use super::stats::Latency;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The command line that produced the report.
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    pub calibration: Option<Calibration>,
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

/// Clones run one after the other, each waited for: what one clone costs without contention.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    pub clones: usize,
    pub succeeded: usize,
    pub seconds: f64,
    pub latency: Option<Latency>,
    /// Every API request in the window, from the audit log.
    #[serde(default)]
    pub audit: Option<AuditRequests>,
    #[serde(default)]
    pub cpu_seconds: Option<CpuSeconds>,
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
    /// Every API request from the first create to the end of cleanup, from the audit log.
    #[serde(default)]
    pub audit: Option<AuditRequests>,
    /// Writes per second (every user) while clones were in flight.
    pub writes_per_second_in_flight: f64,
    /// Requests per second (every user, reads too; leases left out) while clones were in flight.
    pub requests_per_second_in_flight: f64,
    /// The scenario stopped at its timeout with clones unfinished.
    pub timed_out: bool,
    pub controller: Controller,
    /// CPU seconds from the first create to the end of cleanup.
    #[serde(default)]
    pub cpu_seconds: Option<CpuSeconds>,
    pub stand_in_log: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Controller {
    /// Seconds from the process start to `/readyz` answering 200 (caches synced).
    pub ready_seconds: f64,
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

/// The processes of the testbed, in the order the report shows them: the CPU ceiling counts
/// them all.
pub const TESTBED: [&str; 6] = [
    "controller",
    "stand-in",
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "bench",
];

/// CPU time used in a window: by the whole machine and by each process of the testbed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSeconds {
    pub wall_seconds: f64,
    /// Cores the bench could use (`available_parallelism`).
    pub cores_available: usize,
    /// Busy CPU seconds of the whole machine (the `cpu` line of `/proc/stat`).
    pub machine_busy: f64,
    /// `utime + stime` seconds by [`TESTBED`] process.
    pub processes: BTreeMap<String, f64>,
}

impl CpuSeconds {
    /// CPU seconds of one testbed process (0 if it was not measured).
    pub fn of(&self, process: &str) -> f64 {
        self.processes.get(process).copied().unwrap_or(0.0)
    }

    /// CPU seconds of every testbed process together.
    pub fn testbed(&self) -> f64 {
        self.processes.values().sum()
    }

    /// Busy seconds of the machine that no testbed process used: other people's work.
    pub fn other(&self) -> f64 {
        (self.machine_busy - self.testbed()).max(0.0)
    }

    /// Average cores used over the window.
    pub fn cores(&self, seconds: f64) -> f64 {
        if self.wall_seconds > 0.0 {
            seconds / self.wall_seconds
        } else {
            0.0
        }
    }

    /// The CPU ceiling: the clones per second the machine's cores would allow if the testbed
    /// had them all and every clone cost what it cost here (cores ÷ CPU seconds per clone of
    /// every testbed process together).
    pub fn ceiling(&self, clones: usize) -> Option<f64> {
        let per_clone = self.testbed() / clones.max(1) as f64;
        (per_clone > 0.0).then(|| self.cores_available as f64 / per_clone)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Engine {
    pub ran: bool,
    pub command: String,
    pub note: Option<String>,
    pub results: Vec<EngineResult>,
}
