//! What `cargo xtask bench --kubevirt real` measured, as written to `benchmarks-kubevirt.json`
//! (and rendered into a section of `benchmarks.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::AuditRequests;
use crate::model::Machine;
use crate::stats::Latency;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubeVirtReport {
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    /// Per size: the bare path, then vmclone, then upstream.
    pub runs: Vec<Run>,
    /// Per size, the controllers against the bare path and each other (computed from `runs`).
    pub comparisons: Vec<Comparison>,
    /// Steps that failed; the rest of the report stands.
    pub errors: Vec<String>,
    pub total_seconds: f64,
    /// Where the logs of this run are.
    pub logs_dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub sizes: Vec<usize>,
    /// vmclone's `--concurrency`, and the bench's concurrent creators.
    pub concurrency: u16,
    /// virt-controller's `--clone-controller-threads` in the upstream run.
    pub upstream_clone_threads: u16,
    pub kubevirt_version: String,
    /// Per size, the time after which a run stops waiting.
    pub timeout_seconds: Vec<u64>,
    pub controller_log_level: String,
}

/// Which way the N targets are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    /// The bench itself creates a snapshot of each source and, once it is ready, a restore to a
    /// new VM: no clone controller.
    Bare,
    /// vmclone's controller (virt-controller with `--clone-controller-threads 0`, vmclone's CRD).
    Vmclone,
    /// Upstream's clone controller inside virt-controller (upstream's CRD).
    Upstream,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Bare, Path::Vmclone, Path::Upstream];

    pub fn label(self) -> &'static str {
        match self {
            Path::Bare => "bare snapshot + restore",
            Path::Vmclone => "vmclone",
            Path::Upstream => "upstream",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Path::Bare => "bare",
            Path::Vmclone => "vmclone",
            Path::Upstream => "upstream",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub path: Path,
    pub clones: usize,
    pub name: String,
    pub load_average_before: [f64; 3],
    pub load_average_after: [f64; 3],
    /// Seconds to start the private control plane with KubeVirt.
    pub control_plane_seconds: f64,
    /// Seconds to create the N source VMs and have virt-controller reconcile them.
    pub sources_seconds: f64,
    /// vmclone only: process start → `/readyz`.
    pub controller_ready_seconds: Option<f64>,
    /// First create call → last create call returned (clones; bare: snapshots).
    pub create_seconds: f64,
    pub succeeded: usize,
    pub failed: usize,
    pub unfinished: usize,
    pub timed_out: bool,
    /// Failure reasons with counts.
    pub failures: BTreeMap<String, usize>,
    /// First create call → last clone seen `Succeeded` (bare: last restore seen complete).
    pub duration_seconds: f64,
    /// First create call → last restore seen complete.
    pub restores_complete_seconds: Option<f64>,
    /// Succeeded ÷ duration.
    pub clones_per_second: f64,
    /// Per clone: its create call returned → `Succeeded` seen (bare: snapshot create returned →
    /// restore complete seen).
    pub latency: Option<Latency>,
    pub latencies_seconds: Vec<Option<f64>>,
    /// Per clone: its restore first seen complete → the clone first seen `Succeeded`.
    pub lag: Option<Latency>,
    pub lags_seconds: Vec<Option<f64>>,
    /// Clones that succeeded but whose restore was never seen complete by the bench.
    pub lag_unmeasured: usize,
    /// Last `Succeeded` → no snapshot, restore or snapshot content left (clone runs).
    pub cleanup_seconds: Option<f64>,
    /// CPU and peak memory of the clone controller's process(es).
    pub processes: Vec<ProcessUse>,
    pub cpu: Option<Cpu>,
    /// From the first create to the end of cleanup.
    pub requests: Option<AuditRequests>,
    pub logs: Vec<LogSummary>,
    pub watch_errors: usize,
    pub error: Option<String>,
}

impl Run {
    pub fn new(path: Path, clones: usize) -> Self {
        Self {
            path,
            clones,
            name: format!("{}, N={clones}", path.label()),
            load_average_before: [0.0; 3],
            load_average_after: [0.0; 3],
            control_plane_seconds: 0.0,
            sources_seconds: 0.0,
            controller_ready_seconds: None,
            create_seconds: 0.0,
            succeeded: 0,
            failed: 0,
            unfinished: clones,
            timed_out: false,
            failures: BTreeMap::new(),
            duration_seconds: 0.0,
            restores_complete_seconds: None,
            clones_per_second: 0.0,
            latency: None,
            latencies_seconds: Vec::new(),
            lag: None,
            lags_seconds: Vec::new(),
            lag_unmeasured: 0,
            cleanup_seconds: None,
            processes: Vec::new(),
            cpu: None,
            requests: None,
            logs: Vec::new(),
            watch_errors: 0,
            error: None,
        }
    }

    pub fn process(&self, name: &str) -> Option<&ProcessUse> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// CPU time and peak memory of one process over a run's window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessUse {
    pub name: String,
    /// `utime + stime` from the first create to the end of cleanup.
    pub cpu_seconds: f64,
    pub cpu_ms_per_clone: f64,
    /// `VmHWM` at the end: the peak RSS over the process's life (it started with the run's
    /// control plane, or for vmclone's controller just before the clones).
    pub peak_rss_mib: f64,
}

/// Average cores used from the first create to the end of cleanup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cpu {
    pub wall_seconds: f64,
    pub cores_available: usize,
    pub machine_busy: f64,
    /// Process name → average cores.
    pub processes: BTreeMap<String, f64>,
    /// Busy minus the processes above: other people's work on the machine.
    pub other: f64,
    /// The busiest other processes (alive at the end of the window), by command name, in
    /// average cores: what else ran on the machine.
    #[serde(default)]
    pub other_processes: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogSummary {
    pub process: String,
    pub file: String,
    pub warnings: usize,
    pub errors: usize,
    /// A few distinct warning and error lines.
    pub excerpt: Vec<String>,
}

/// One controller's run against the bare path of the same size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub path: Path,
    pub duration_seconds: f64,
    /// It stopped at its timeout with clones unfinished (its duration is a lower bound).
    pub timed_out: bool,
    /// Its duration ÷ the bare path's (1.0 = as fast as the bare path).
    pub times_bare: Option<f64>,
    /// Its clones/s ÷ the bare path's targets/s.
    pub share_of_bare_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub clones: usize,
    pub bare_seconds: Option<f64>,
    pub controllers: Vec<Ratio>,
    /// Upstream's duration ÷ vmclone's (how many times faster vmclone was).
    pub vmclone_speedup: Option<f64>,
}
