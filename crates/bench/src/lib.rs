//! The bench (`cargo xtask bench` runs [`run`]): measures the controller on the local testbed and writes
//! `docs/benchmarks.json`, `docs/benchmarks.md` and `docs/benchmarks-latency.svg`.
//!
//! In order: build the release binaries; run the engine's criterion bench; start a private
//! testbed (etcd, kube-apiserver with its audit log, kube-controller-manager) with the stand-in's
//! storage classes, admission and a `KubeVirt` CR with the `Snapshot` gate; measure what one
//! clone costs (clones one after the other); then, per size N (and again with unrelated VMs
//! present), create N clones at once in a fresh namespace with a fresh controller and stand-in
//! process, and measure time, latency, API requests (by user, from the audit log), CPU of every
//! testbed process (and from it the CPU ceiling) and memory. Numbers are reported, never
//! asserted. See `docs/benchmarks.md` for the method.
//!
//! With `--kubevirt real` it measures something else instead (module `kubevirt`): vmclone
//! against upstream's own clone controller on KubeVirt v1.7.0's real snapshot and restore path,
//! and the bare path, written to `docs/benchmarks-kubevirt.json` and a section of
//! `docs/benchmarks.md`.

mod audit;
mod criterion;
mod kubevirt;
pub mod live;
mod model;
mod procfs;
mod prom;
mod report;
mod scenario;
mod stats;
mod svg;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use testenv::TestEnv;

use self::live::{Progress, ServerPids};
use self::model::{Engine, Machine, Report, Settings};
use self::scenario::Bed;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Numbers of clones created at once, one scenario each (default 100,1000,5000; with
    /// `--kubevirt real` 50,100).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// `real`: instead of the stand-in bench, compare vmclone with upstream's own clone
    /// controller and the bare snapshot-and-restore path on KubeVirt v1.7.0's real
    /// virt-controller (writes benchmarks-kubevirt.json and its section of benchmarks.md).
    /// `sim` or absent: the bench on the stand-in, kubevirt-sim.
    #[arg(long, value_enum)]
    kubevirt: Option<Backend>,
    /// Unrelated VMs present in the namespace for the second series (0: skip that series).
    #[arg(long, default_value_t = 10_000)]
    unrelated_vms: usize,
    /// The controller's `--concurrency`, and the number of concurrent creators of the bench.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Folder for benchmarks.json, benchmarks.md and benchmarks-latency.svg (relative paths are
    /// relative to the workspace root).
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// Skip the engine's criterion bench.
    #[arg(long)]
    no_engine: bool,
    /// Skip `cargo build --release` and use the binaries in target/release as they are.
    #[arg(long)]
    no_build: bool,
    /// The `clone-controller` binary to measure instead of this workspace's release build (for
    /// example one built from an earlier commit, to measure before and after a change on the same
    /// machine with the same stand-in). Recorded in the report. Its benchmarks.json (or
    /// benchmarks-kubevirt.json), copied beside the main report as benchmarks-before.json (or
    /// benchmarks-kubevirt-before.json), adds a before-and-after table to benchmarks.md.
    #[arg(long, value_name = "PATH")]
    controller_bin: Option<PathBuf>,
    /// Clones run one after the other to measure what one clone costs without contention.
    #[arg(long, default_value_t = 10)]
    calibration_clones: usize,
    /// Source VMs per namespace; clone i clones source i mod K. With 1 (the golden-image case)
    /// every clone's snapshot waits for that one VM's snapshot lock, which measures the lock
    /// rather than the controller.
    #[arg(long, default_value_t = 1000)]
    sources: usize,
    /// Seconds a scenario may take at most; unfinished clones are then reported as such
    /// (default: the larger of 180 and 60 + N / 10, i.e. it gives up below about 10 clones/s;
    /// with `--kubevirt real` the larger of 300 and 120 + 5 N).
    #[arg(long)]
    scenario_timeout: Option<u64>,
    /// Leave each scenario's namespace in place instead of deleting it.
    #[arg(long)]
    keep_namespaces: bool,
    /// Measure nothing: write benchmarks.md and the plot again from this benchmarks.json (after
    /// changing the report's generator), with the KubeVirt section from benchmarks-kubevirt.json
    /// in the output folder if it is there. With `--kubevirt real`: from this
    /// benchmarks-kubevirt.json, with the rest from the output folder's benchmarks.json.
    #[arg(long, value_name = "JSON")]
    from_json: Option<PathBuf>,
}

/// The sizes when `--sizes` is not given.
const DEFAULT_SIZES: [usize; 3] = [100, 1000, 5000];

/// What a run of the stand-in bench measures with, as the report records it.
fn settings(args: &Args, sizes: &[usize]) -> Settings {
    Settings {
        sizes: sizes.to_vec(),
        unrelated_vms: args.unrelated_vms,
        concurrency: args.concurrency,
        calibration_clones: args.calibration_clones,
        sources: args.sources,
        scenario_timeout_seconds: sizes
            .iter()
            .map(|&n| args.scenario_timeout.unwrap_or_else(|| default_timeout(n)))
            .collect(),
        controller_log_level: "warn".into(),
        stand_in_latency: "0s".into(),
        controller_bin: args
            .controller_bin
            .as_ref()
            .map(|p| p.display().to_string()),
    }
}

/// The larger of 180 s and 60 s + N / 10 clones per second.
fn default_timeout(clones: usize) -> u64 {
    (60 + clones as u64 / 10).max(180)
}

/// Which KubeVirt the bench runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// KubeVirt v1.7.0's own virt-controller and virt-api (built from Go modules), with the
    /// stand-in playing only storage and CDI.
    Real,
    /// The stand-in, kubevirt-sim, for KubeVirt too.
    Sim,
}

impl Backend {
    /// The testbed options for this backend.
    pub fn options(self) -> testenv::Options {
        match self {
            Self::Real => testenv::Options::kubevirt(),
            Self::Sim => testenv::Options::default(),
        }
    }
}

/// The controller binary measured: `--controller-bin`, else the release build in `release`.
fn controller_bin(args: &Args, release: &Path) -> PathBuf {
    args.controller_bin
        .clone()
        .unwrap_or_else(|| release.join("clone-controller"))
}

/// The workspace root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// Cargo's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Child output goes to our stderr, so stdout carries only the summary.
fn to_stderr() -> Stdio {
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::inherit(), Stdio::from)
}

pub fn run(args: Args) -> Result<()> {
    let real = args.kubevirt == Some(Backend::Real);
    if let Some(json) = &args.from_json {
        let text =
            std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
        let out = out_dir(&args.out);
        if real {
            let kubevirt: kubevirt::KubeVirtReport =
                serde_json::from_str(&text).with_context(|| {
                    format!("parsing {} as a KubeVirt bench report", json.display())
                })?;
            let report = load_report(&out)?;
            write_markdown_and_plot(&out, &report, Some(&kubevirt))?;
            println!("{}", kubevirt::summary(&kubevirt));
        } else {
            let report: Report = serde_json::from_str(&text)
                .with_context(|| format!("parsing {} as a bench report", json.display()))?;
            write_markdown_and_plot(&out, &report, kubevirt::load(&out)?.as_ref())?;
            println!("{}", report::summary(&report));
        }
        eprintln!(
            "[bench] wrote {}/benchmarks.md and benchmarks-latency.svg from {}",
            out.display(),
            json.display()
        );
        return Ok(());
    }
    if real {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return runtime.block_on(kubevirt::bench(&args));
    }
    let sizes = args.sizes.clone().unwrap_or_else(|| DEFAULT_SIZES.to_vec());
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("--sizes needs positive numbers of clones");
    }
    if args.sources == 0 {
        bail!("--sources needs at least one source VM");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(args, sizes))
}

async fn bench(args: Args, sizes: Vec<usize>) -> Result<()> {
    let progress = Progress(Instant::now());
    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(std::env::args().skip(2))
        .collect::<Vec<_>>()
        .join(" ");
    let out = out_dir(&args.out);
    let mut machine = machine_info();
    let mut errors = Vec::new();
    progress.say(&format!(
        "{command}: {} cores, load average {:?}",
        machine.nproc, machine.load_average_start
    ));

    let release = target_dir().join("release");
    if !args.no_build {
        progress.say(
            "building the release binaries: cargo build --release -p clone-controller -p kubevirt-sim --bins",
        );
        let status = Command::new(cargo())
            .args([
                "build",
                "--release",
                "-p",
                "clone-controller",
                "-p",
                "kubevirt-sim",
                "--bins",
            ])
            .current_dir(repo())
            .stdout(to_stderr())
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release failed ({status})");
        }
    }
    let controller_bin = controller_bin(&args, &release);
    let sim_bin = release.join("kubevirt-sim");
    for bin in [&controller_bin, &sim_bin] {
        if !bin.is_file() {
            bail!("{} is missing (run without --no-build)", bin.display());
        }
    }

    let engine = if args.no_engine {
        Engine {
            ran: false,
            note: Some("skipped (--no-engine)".into()),
            ..Engine::default()
        }
    } else {
        run_engine(progress)
    };

    progress.say(
        "starting a private testbed: etcd, kube-apiserver, kube-controller-manager (minutes on first use)",
    );
    let env = TestEnv::start_with_options(testenv::Options {
        audit_log: true,
        ..testenv::Options::default()
    })
    .await
    .context("starting the testbed")?;
    let client = env.identity_client(scenario::BENCH_USER).await?;
    let audit_log = env
        .audit_log_path()
        .context("the testbed writes no audit log")?;
    machine.kube_apiserver_version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_default();
    progress.say("installing the stand-in's storage classes and admission, and the KubeVirt CR");
    kubevirt_sim::install(client.clone()).await?;
    kubevirt_sim::set_feature_gates(client.clone(), &["Snapshot"]).await?;
    let env_dir = env
        .kubeconfig_path()
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    // One folder per run, so a later run never removes the logs an earlier report points at.
    let logs = target_dir().join("bench-logs").join(
        jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string(),
    );
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let bed = Bed {
        servers: ServerPids::of(&env_dir),
        env,
        client,
        audit_log,
        controller_bin,
        sim_bin,
        logs: logs.clone(),
        concurrency: args.concurrency,
        clock_ticks: machine.clock_ticks_per_second,
        cores: machine.nproc,
        progress,
        keep_namespaces: args.keep_namespaces,
        sources: args.sources,
    };

    let calibration = match bed.calibrate(args.calibration_clones).await {
        Ok(calibration) => {
            progress.say(&format!(
                "  one clone at a time: {}",
                report::calibration_line(&calibration)
            ));
            Some(calibration)
        }
        Err(err) => {
            progress.say(&format!("  calibration failed: {err:#}"));
            errors.push(format!("calibration: {err:#}"));
            None
        }
    };
    let mut scenarios = Vec::new();
    let series: Vec<usize> = if args.unrelated_vms > 0 {
        vec![0, args.unrelated_vms]
    } else {
        vec![0]
    };
    for &unrelated in &series {
        for &size in &sizes {
            let timeout = Duration::from_secs(
                args.scenario_timeout
                    .unwrap_or_else(|| default_timeout(size)),
            );
            let scenario = bed.scenario(size, unrelated, timeout).await;
            if let Some(err) = &scenario.error {
                errors.push(format!("scenario {}: {err}", scenario.name));
            }
            scenarios.push(scenario);
        }
    }

    progress.say("stopping the testbed");
    drop(bed);
    machine.load_average_end = procfs::loadavg();
    machine.date_end = jiff::Timestamp::now().to_string();
    let report = Report {
        command,
        machine,
        settings: settings(&args, &sizes),
        calibration,
        scenarios,
        engine,
        errors,
        total_seconds: progress.0.elapsed().as_secs_f64(),
        logs_dir: logs
            .strip_prefix(repo())
            .unwrap_or(&logs)
            .display()
            .to_string(),
    };
    write_outputs(&out, &report)?;
    println!("{}", report::summary(&report));
    progress.say(&format!(
        "wrote {}/benchmarks.json, benchmarks.md and benchmarks-latency.svg; logs in {}",
        out.display(),
        logs.display()
    ));
    Ok(())
}

fn run_engine(progress: Progress) -> Engine {
    let command =
        "cargo bench -p clone-core --bench engine -- --warm-up-time 1 --measurement-time 3";
    progress.say(&format!("engine: {command}"));
    let started = SystemTime::now();
    let status = Command::new(cargo())
        .args([
            "bench",
            "-p",
            "clone-core",
            "--bench",
            "engine",
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
        ])
        .current_dir(repo())
        .stdout(to_stderr())
        .status();
    let mut engine = Engine {
        ran: true,
        command: command.into(),
        ..Engine::default()
    };
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => engine.note = Some(format!("`{command}` failed ({status})")),
        Err(err) => engine.note = Some(format!("`{command}` could not run: {err}")),
    }
    let root = target_dir().join("criterion");
    match criterion::read_results(&root, Some(started)) {
        Ok(results) => {
            if results.is_empty() && engine.note.is_none() {
                engine.note = Some(format!(
                    "no criterion results were written under {} (the bench defines no benchmarks yet?)",
                    root.display()
                ));
            }
            engine.results = results;
        }
        Err(err) => engine.note = Some(format!("reading criterion results: {err:#}")),
    }
    progress.say(&format!(
        "  {} engine benchmarks{}",
        engine.results.len(),
        engine
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    ));
    engine
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine_info() -> Machine {
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model: procfs::cpu_model(),
        memory_mib: procfs::memory_mib(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_average_start: procfs::loadavg(),
        load_average_end: [0.0; 3],
        date_start: jiff::Timestamp::now().to_string(),
        date_end: String::new(),
        git_commit: output("git", &["rev-parse", "HEAD"]),
        git_dirty: !output("git", &["--no-optional-locks", "status", "--porcelain"]).is_empty(),
        clock_ticks_per_second: procfs::clock_ticks_per_second(),
        kube_apiserver_version: String::new(),
        rustc: output("rustc", &["--version"]),
    }
}

fn out_dir(out: &Path) -> PathBuf {
    if out.is_absolute() {
        out.to_owned()
    } else {
        repo().join(out)
    }
}

fn write_outputs(out: &Path, report: &Report) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("benchmarks.json"), json + "\n")?;
    write_markdown_and_plot(out, report, kubevirt::load(out)?.as_ref())
}

/// An earlier run's report to compare with (see [`report::Before`]), put beside
/// `benchmarks.json` by hand: `--out` of a run with `--controller-bin`, renamed.
pub const BEFORE_FILE: &str = "benchmarks-before.json";

/// A JSON file that may be absent.
fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("parsing {}", path.display()))
}

/// The report of the last `cargo xtask bench` in `out`.
fn load_report(out: &Path) -> Result<Report> {
    let path = out.join("benchmarks.json");
    load_json(&path)?.with_context(|| {
        format!(
            "no {} (benchmarks.md is generated from it and benchmarks-kubevirt.json)",
            path.display()
        )
    })
}

/// Writes benchmarks.md (and the plot) again from the JSON reports in `out`.
fn rewrite_markdown(out: &Path) -> Result<()> {
    let report = load_report(out)?;
    write_markdown_and_plot(out, &report, kubevirt::load(out)?.as_ref())
}

/// Like [`rewrite_markdown`], but a folder without a main report (`benchmarks.json`) is not an
/// error: only `--kubevirt real` ran there, so there is no benchmarks.md to put its section in.
/// Returns whether benchmarks.md was written.
fn rewrite_markdown_if_reported(out: &Path) -> Result<bool> {
    if !out.join("benchmarks.json").exists() {
        return Ok(false);
    }
    rewrite_markdown(out)?;
    Ok(true)
}

fn write_markdown_and_plot(
    out: &Path,
    report: &Report,
    kubevirt: Option<&kubevirt::KubeVirtReport>,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let md_path = out.join("benchmarks.md");
    let previous = std::fs::read_to_string(&md_path).unwrap_or_default();
    let before = report::Before {
        report: load_json(&out.join(BEFORE_FILE))?,
        kubevirt: load_json(&out.join(kubevirt::BEFORE_FILE))?,
    };
    std::fs::write(
        &md_path,
        report::markdown(report, kubevirt, &before, &previous),
    )?;
    std::fs::write(
        out.join("benchmarks-latency.svg"),
        report::latency_svg(report),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn a_folder_without_a_main_report_gets_no_markdown_and_no_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!rewrite_markdown_if_reported(dir.path()).unwrap());
        assert!(!dir.path().join("benchmarks.md").exists());
        // A main report that is there but unreadable is still an error.
        std::fs::write(dir.path().join("benchmarks.json"), "{").unwrap();
        let err = rewrite_markdown_if_reported(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("parsing"), "{err:#}");
    }

    #[test]
    fn the_default_run_is_the_committed_reports() {
        // `cargo xtask bench` without flags measures with the settings docs/benchmarks.json was
        // generated with, so running it reproduces the committed report.
        let committed: Report =
            serde_json::from_str(include_str!("../../../docs/benchmarks.json")).unwrap();
        let args = Cli::try_parse_from(["bench"]).unwrap().args;
        assert_eq!(
            serde_json::to_value(settings(&args, &DEFAULT_SIZES)).unwrap(),
            serde_json::to_value(&committed.settings).unwrap()
        );
        let flags = Cli::try_parse_from(["bench", "--sources", "1"])
            .unwrap()
            .args;
        assert_ne!(
            settings(&flags, &DEFAULT_SIZES).sources,
            committed.settings.sources
        );
    }
}
