//! `benchmarks.md` (and the short summary printed at the end) from a [`Report`], and the
//! latency plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::attribution::{Actor, Row};
use super::kubevirt::KubeVirtReport;
use super::model::{Machine, Report, Scenario};
use super::prom::is_write_verb;
use super::svg;

/// Marks the part of the Analysis that is written by hand and kept when the file is generated
/// again.
const HAND_BEGIN: &str =
    "<!-- hand-written analysis: begin (kept when `cargo xtask bench` writes this file again) -->";
const HAND_END: &str = "<!-- hand-written analysis: end -->";

const VERBS: [&str; 9] = [
    "POST", "PUT", "PATCH", "APPLY", "DELETE", "GET", "LIST", "WATCH", "other",
];

pub(crate) fn f(value: f64, places: usize) -> String {
    if value.is_finite() {
        format!("{value:.places$}")
    } else {
        "–".to_owned()
    }
}

pub(crate) fn opt(value: Option<f64>, places: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| f(v, places))
}

/// The hand-written part of an earlier `benchmarks.md`, if any.
pub fn hand_written(previous: &str) -> Option<String> {
    let start = previous.find(HAND_BEGIN)? + HAND_BEGIN.len();
    let end = previous[start..].find(HAND_END)? + start;
    Some(previous[start..end].trim().to_owned())
}

/// One target of the issue, checked against the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub target: String,
    pub scenario: String,
    pub measured: Option<f64>,
    pub goal: f64,
    pub unit: &'static str,
    pub verdict: String,
}

/// "met" or "missed by how much".
pub fn verdict(measured: Option<f64>, goal: f64, higher_is_better: bool, unit: &str) -> String {
    let Some(measured) = measured.filter(|m| m.is_finite()) else {
        return "not measured".to_owned();
    };
    let met = if higher_is_better {
        measured >= goal
    } else {
        measured <= goal
    };
    let gap = (measured - goal).abs();
    let relative = if goal != 0.0 { gap / goal * 100.0 } else { 0.0 };
    let places = if gap >= 10.0 { 0 } else { 2 };
    if met {
        format!("met ({} {unit} to spare, {relative:.0} %)", f(gap, places))
    } else if higher_is_better {
        format!(
            "**missed** by {} {unit} ({relative:.0} % short; {:.1}× needed)",
            f(gap, places),
            goal / measured.max(f64::MIN_POSITIVE)
        )
    } else {
        format!(
            "**missed** by {} {unit} ({relative:.0} % over; {:.1}× the target)",
            f(gap, places),
            measured / goal
        )
    }
}

/// The scenario the targets at `clones` (and `unrelated` VMs) talk about: that one if it ran,
/// else the largest one of the same series (named in the report).
fn pick(report: &Report, clones: usize, with_unrelated: bool) -> Option<&Scenario> {
    let series: Vec<&Scenario> = report
        .scenarios
        .iter()
        .filter(|s| (s.unrelated_vms > 0) == with_unrelated && s.error.is_none())
        .collect();
    series
        .iter()
        .find(|s| s.clones == clones && (!with_unrelated || s.unrelated_vms == 10_000))
        .or_else(|| series.iter().max_by_key(|s| (s.clones, s.unrelated_vms)))
        .copied()
}

/// The scenario per-clone counts are taken from: N = `clones` without unrelated VMs if all its
/// clones finished, else the largest such scenario that finished.
fn completed(report: &Report, clones: usize) -> Option<&Scenario> {
    let done: Vec<&Scenario> = report
        .scenarios
        .iter()
        .filter(|s| s.unrelated_vms == 0 && s.error.is_none() && !s.timed_out)
        .collect();
    done.iter()
        .find(|s| s.clones == clones)
        .or_else(|| done.iter().max_by_key(|s| s.clones))
        .copied()
}

pub fn checks(report: &Report) -> Vec<Check> {
    let mut out = Vec::new();
    let main = pick(report, 1000, false);
    let name = |s: Option<&Scenario>| {
        s.map_or_else(
            || "–".to_owned(),
            |s| format!("{}{}", s.name, if s.timed_out { " †" } else { "" }),
        )
    };
    let throughput = main.map(|s| s.clones_per_second);
    if let Some(limit) = &report.limit {
        let goal = limit.clones_per_second / 2.0;
        out.push(Check {
            target: format!(
                "throughput at N=1000 ≥ half the API-server limit ({} / 2)",
                f(limit.clones_per_second, 1)
            ),
            scenario: name(main),
            measured: throughput,
            goal,
            unit: "clones/s",
            verdict: verdict(throughput, goal, true, "clones/s"),
        });
    }
    out.push(Check {
        target: "throughput at N=1000 ≥ 100 clones/s".into(),
        scenario: name(main),
        measured: throughput,
        goal: 100.0,
        unit: "clones/s",
        verdict: verdict(throughput, 100.0, true, "clones/s"),
    });
    // Per-clone counts need clones that finished: an unfinished clone has made only part of
    // its requests.
    let done = completed(report, 1000);
    let (source, writes) = match (done, &report.calibration) {
        (Some(s), _) if s.writes.is_some() => (name(Some(s)), s.writes.clone()),
        (_, Some(c)) => (
            "calibration (one at a time)".to_owned(),
            Some(c.writes.clone()),
        ),
        _ => ("–".to_owned(), None),
    };
    for (label, value) in [
        ("with events", writes.as_ref().map(|w| w.controller)),
        (
            "without events",
            writes.as_ref().map(|w| w.controller_without_events),
        ),
    ] {
        out.push(Check {
            target: format!("≤ 10 API writes per clone by the controller ({label})"),
            scenario: source.clone(),
            measured: value,
            goal: 10.0,
            unit: "writes",
            verdict: verdict(value, 10.0, false, "writes"),
        });
    }
    let (source, cpu) = match (done, &report.calibration) {
        (Some(s), _) => (name(Some(s)), Some(s.controller.cpu_ms_per_clone)),
        (None, Some(c)) => (
            "calibration (one at a time)".to_owned(),
            c.controller_cpu_ms_per_clone,
        ),
        (None, None) => ("–".to_owned(), None),
    };
    out.push(Check {
        target: "controller CPU ≤ 1 ms per clone".into(),
        scenario: source,
        measured: cpu,
        goal: 1.0,
        unit: "ms",
        verdict: verdict(cpu, 1.0, false, "ms"),
    });
    // Peak memory needs the clones present, not finished.
    let big = pick(report, 5000, true);
    let rss = big.map(|s| s.controller.peak_rss_mib);
    out.push(Check {
        target: "controller peak RSS ≤ 64 MiB with 10,000 VMs and 5,000 clones".into(),
        scenario: big.map_or_else(|| "–".to_owned(), |s| s.name.clone()),
        measured: rss,
        goal: 64.0,
        unit: "MiB",
        verdict: verdict(rss, 64.0, false, "MiB"),
    });
    out
}

/// Requests per clone of one actor, by verb.
fn verb_cells(
    rows: &[Row],
    actor: Actor,
    clones: usize,
) -> (BTreeMap<&'static str, f64>, f64, f64) {
    let n = clones.max(1) as f64;
    let mut cells: BTreeMap<&'static str, f64> = BTreeMap::new();
    let (mut writes, mut reads) = (0.0, 0.0);
    for row in rows.iter().filter(|r| r.actor == actor) {
        let verb = VERBS
            .iter()
            .find(|v| **v == row.verb)
            .copied()
            .unwrap_or("other");
        *cells.entry(verb).or_default() += row.count / n;
        if is_write_verb(&row.verb) {
            writes += row.count / n;
        } else {
            reads += row.count / n;
        }
    }
    (cells, writes, reads)
}

fn verb_table(out: &mut String, rows: &[Row], clones: usize) {
    let _ = writeln!(out, "| who | {} | writes | reads |", VERBS.join(" | "));
    let _ = writeln!(out, "|---|{}---:|---:|", "---:|".repeat(VERBS.len()));
    for actor in Actor::ALL {
        if actor == Actor::Excluded {
            continue;
        }
        let (cells, writes, reads) = verb_cells(rows, actor, clones);
        if cells.is_empty() {
            continue;
        }
        let values: Vec<String> = VERBS
            .iter()
            .map(|v| cells.get(v).map_or_else(|| "·".to_owned(), |c| f(*c, 2)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            actor.label(),
            values.join(" | "),
            f(writes, 2),
            f(reads, 2)
        );
    }
}

fn resource_table(out: &mut String, rows: &[Row], clones: usize) {
    let n = clones.max(1) as f64;
    let _ = writeln!(out, "| verb | resource | who | per clone |");
    let _ = writeln!(out, "|---|---|---|---:|");
    let mut sorted: Vec<&Row> = rows.iter().filter(|r| r.actor != Actor::Excluded).collect();
    sorted.sort_by(|a, b| {
        (!is_write_verb(&a.verb), a.actor, a.key()).cmp(&(
            !is_write_verb(&b.verb),
            b.actor,
            b.key(),
        ))
    });
    for row in sorted {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} |",
            row.verb,
            row.key().resource_path(),
            row.actor.label(),
            f(row.count / n, 2)
        );
    }
}

fn scenario_row(s: &Scenario) -> String {
    let w = s.writes.as_ref();
    let all_requests = s.requests.as_ref().map(|r| {
        r.rows
            .iter()
            .filter(|row| row.actor != Actor::Excluded)
            .map(|row| row.count)
            .sum::<f64>()
            / s.clones.max(1) as f64
    });
    format!(
        "| {}{} | {} | {}/{}/{} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
        s.name,
        if s.timed_out { " †" } else { "" },
        s.clones,
        s.succeeded,
        s.failed,
        s.unfinished,
        f(s.create_seconds, 1),
        f(s.duration_seconds, 1),
        f(s.clones_per_second, 1),
        opt(s.latency.map(|l| l.p50), 2),
        opt(s.latency.map(|l| l.p99), 2),
        opt(w.map(|w| w.controller), 2),
        opt(w.map(|w| w.controller_without_events), 2),
        opt(w.map(|w| w.stand_in + w.garbage_collector), 2),
        opt(all_requests, 1),
        f(s.controller.cpu_ms_per_clone, 2),
        f(s.controller.peak_rss_mib, 1),
        f(s.controller.ready_seconds, 1),
    )
}

const SCENARIO_HEADER: &str = "| scenario | clones | succeeded/failed/unfinished | create s | duration s | clones/s | p50 s | p99 s | controller writes/clone (without events) | stand-in + GC writes/clone | all requests/clone | controller CPU ms/clone | controller peak RSS MiB | controller ready s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// The short summary printed to stdout at the end.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{SCENARIO_HEADER}");
    for s in &report.scenarios {
        let _ = writeln!(out, "{}", scenario_row(s));
    }
    if let Some(limit) = &report.limit {
        let _ = writeln!(
            out,
            "\nAPI-server limit: {} creates/s / {} writes per clone = {} clones/s",
            f(limit.raw_creates_per_second, 0),
            f(limit.writes_per_clone, 1),
            f(limit.clones_per_second, 1)
        );
    }
    let _ = writeln!(out);
    for check in checks(report) {
        let _ = writeln!(
            out,
            "{} [{}]: {} {} → {}",
            check.target,
            check.scenario,
            opt(check.measured, 2),
            check.unit,
            check.verdict
        );
    }
    for error in &report.errors {
        let _ = writeln!(out, "error: {error}");
    }
    out
}

pub fn latency_svg(report: &Report) -> String {
    let series: Vec<svg::Series> = report
        .scenarios
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| {
            let values: Vec<f64> = s.latencies_seconds.iter().flatten().copied().collect();
            let label = if s.succeeded < s.clones {
                format!(
                    "{}: {} of {} Succeeded in {:.0} s",
                    s.name, s.succeeded, s.clones, s.duration_seconds
                )
            } else {
                let p = s
                    .latency
                    .map(|l| format!(" (p50 {:.1} s, p99 {:.1} s)", l.p50, l.p99))
                    .unwrap_or_default();
                format!("{}{p}", s.name)
            };
            svg::Series {
                label,
                values,
                total: s.clones,
            }
        })
        .collect();
    svg::latency_cdf(
        "vmclone: create → Succeeded latency per clone (CDF)",
        &series,
    )
}

/// `benchmarks.md`: the report of `cargo xtask bench`, then, if there is one, the section of
/// the last `cargo xtask bench --kubevirt real` run.
pub fn markdown(report: &Report, kubevirt: Option<&KubeVirtReport>, previous: &str) -> String {
    let mut md = String::new();
    let m = &report.machine;
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `{}` on {} (took {:.0} min). Do not edit this file by hand except for the \
         marked hand-written part of the [Analysis](#analysis): running the bench again rewrites \
         the rest. The raw numbers are in [benchmarks.json](benchmarks.json).\n",
        report.command,
        m.date_start,
        report.total_seconds / 60.0
    );
    let _ = writeln!(
        md,
        "> **One run on a shared, noisy machine.** These numbers come from a single run on a \
         {}-core VM that other engineers' builds and tests used at the same time (load average \
         {} at the start, {} at the end). The controller, the stand-in, kube-apiserver, etcd, \
         kube-controller-manager and the bench itself all share those {} cores. Expect large \
         run-to-run differences; the raw create throughput, measured {} times, varied from {} \
         to {} objects/s.\n",
        m.nproc,
        load(&m.load_average_start),
        load(&m.load_average_end),
        m.nproc,
        report.raw_creates.as_ref().map_or(0, |r| r.runs.len()),
        report
            .raw_creates
            .as_ref()
            .map_or_else(|| "–".to_owned(), |r| f(r.spread.min, 0)),
        report
            .raw_creates
            .as_ref()
            .map_or_else(|| "–".to_owned(), |r| f(r.spread.max, 0)),
    );

    let _ = writeln!(md, "Contents:\n");
    for (title, anchor) in [
        ("How it was run", "how-it-was-run"),
        ("Results", "results"),
        ("Targets", "targets"),
        ("The API server's limit", "the-api-servers-limit"),
        ("API requests per clone", "api-requests-per-clone"),
        ("CPU", "cpu"),
        ("The engine", "the-engine"),
        ("Analysis", "analysis"),
        ("Logs and errors", "logs-and-errors"),
    ] {
        let _ = writeln!(md, "- [{title}](#{anchor})");
    }
    if kubevirt.is_some() {
        let _ = writeln!(
            md,
            "- [{}](#{}) (a separate run: `cargo xtask bench --kubevirt real`)",
            super::kubevirt::TITLE,
            super::kubevirt::ANCHOR
        );
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n## How it was run\n");
    let _ = writeln!(md, "```sh\n{}\n```\n", report.command);
    write_machine_rows(&mut md, m);
    let _ = writeln!(
        md,
        "| kube-apiserver | {} (testenv: etcd with `--unsafe-no-fsync`, kube-controller-manager with GC) |",
        m.kube_apiserver_version
    );
    let _ = writeln!(md, "| toolchain | {} (release binaries) |", m.rustc);
    let st = &report.settings;
    let _ = writeln!(
        md,
        "| controller | `{} --kubeconfig … --namespace <scenario> --metrics-addr=127.0.0.1:0 --health-addr=127.0.0.1:0 --concurrency {}`, `RUST_LOG={}`, a fresh process per scenario |",
        st.controller_bin
            .as_deref()
            .unwrap_or("target/release/clone-controller"),
        st.concurrency,
        st.controller_log_level
    );
    let _ = writeln!(
        md,
        "| stand-in | `target/release/kubevirt-sim --namespace <scenario> --latency {} --no-install` (16 workers per kind), a fresh process per scenario |",
        st.stand_in_latency
    );
    let _ = writeln!(
        md,
        "| creators | {} concurrent creators (tokio tasks sharing one kube client) |",
        st.concurrency
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Method:\n\n\
         - **Testbed.** `TestEnv::start()`: a private etcd, kube-apiserver and kube-controller-manager \
           on the same machine, the stand-in's storage classes and admission policies, and a \
           `KubeVirt` CR with the `Snapshot` feature gate (as `cargo xtask demo` does).\n\
         - **Scenarios.** Each scenario gets a fresh namespace with the demo's source VM `vm-cirros` \
           and its PVC (storage class `sim-snapshot`), then, for the second series, \
           {} halted VMs without volumes (created by {} creators before the controller starts; the \
           bench waits until the stand-in has written their status). Then a fresh stand-in and a \
           fresh controller start, the bench waits for the controller's `/readyz`, and creates N \
           clones of `vm-cirros` at once (`clone-<i>` → `target-<i>`, with the example's label \
           filters) with {} concurrent creators. The namespace is deleted after each scenario.\n\
         - **Sources.** {}\n\
         - **Duration and throughput.** From the first create call to the last clone seen \
           `Succeeded`; throughput = clones that succeeded ÷ duration. A scenario stops waiting \
           after {} s (per size), and clones not `Succeeded` by then are reported as unfinished.\n\
         - **Latency.** Per clone, from the moment the bench's create call returned to the moment \
           the bench's own watch on the clones first delivered it with phase `Succeeded` (both \
           client-side monotonic clocks). `metadata.creationTimestamp` is not used: it has 1 s \
           resolution.\n\
         - **API requests.** kube-apiserver's `apiserver_request_total`, scraped from `/metrics` \
           with the admin token before the first create and after cleanup (no temporary snapshot, \
           restore or content left), summed over response codes and grouped by verb and \
           resource/subresource. Server-side apply is counted as `APPLY`. The bench counts its own \
           requests (clone creates, its watch, its cleanup polls, event lists) and subtracts them. \
           Leases and non-resource requests are excluded.\n\
         - **Who made a request** is decided by resource, from the code: the controller writes \
           `virtualmachineclones/status` (APPLY), creates and deletes `virtualmachinesnapshots` and \
           `virtualmachinerestores`, and deletes clones whose target is gone; the stand-in writes \
           everything else on the clone's path (snapshot/restore status and finalizers, snapshot \
           contents and their status, the target VM, the source VM's snapshot lock, VM status, \
           PVCs and their status); kube-controller-manager's garbage collector deletes the \
           snapshot content after the temporary snapshot is gone. **Both** the controller and the \
           stand-in publish `events.k8s.io` events (the stand-in as \
           `sim.vmclone.dev/virt-controller` and `sim.vmclone.dev/cdi-controller`), so events are \
           split by listing them before and after: each new event object is one POST by its \
           reporting controller, each further occurrence in its series one PATCH. In a window, \
           `GET`s are the controller's (the stand-in reads from its caches), while `LIST`s and \
           `WATCH`es are re-established watches of any of the three (\"any watcher\").\n\
         - **Controller CPU.** `utime + stime` of `/proc/<pid>/stat` (clock ticks, {} per second) \
           from the first create to the end of cleanup, ÷ N.\n\
         - **Controller memory.** `VmHWM` of `/proc/<pid>/status` at the end of the scenario: the \
           peak RSS over the process's life, including its start-up with the unrelated VMs.\n\
         - **CPU breakdown.** The same counters for kube-apiserver, etcd and \
           kube-controller-manager (their pid files), the stand-in and the bench, and the `cpu` line \
           of `/proc/stat` for the whole machine; \"other\" is the rest (other people's work).\n",
        st.unrelated_vms,
        st.concurrency,
        st.concurrency,
        if st.sources <= 1 {
            "All N clones of a scenario clone the same source VM (the golden-image case)."
                .to_owned()
        } else {
            format!(
                "{} source VMs per namespace (`vm-cirros-<k>`, each with its own PVC); clone i \
                 clones source i mod {}.",
                st.sources, st.sources
            )
        },
        st.scenario_timeout_seconds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        m.clock_ticks_per_second
    );

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(md, "{SCENARIO_HEADER}");
    for s in &report.scenarios {
        let _ = writeln!(md, "{}", scenario_row(s));
    }
    if report.scenarios.iter().any(|s| s.timed_out) {
        let _ = writeln!(
            md,
            "\n† Stopped at its timeout with clones unfinished: throughput counts the clones that \
             succeeded within it, the latency percentiles are over those clones only (the others \
             took longer), and requests and CPU per clone are divided by all N clones created, \
             most of which were still waiting."
        );
    }
    let _ = writeln!(
        md,
        "\n\"controller ready s\" is the time from starting the controller process to `/readyz` \
         (its caches synced). The latency distribution of every scenario:\n\n\
         ![Latency CDF per scenario](benchmarks-latency.svg)\n"
    );
    let _ = writeln!(
        md,
        "| scenario | p50 s | p90 s | p99 s | max s | mean s | cleanup s | writes/s in flight | reconciles (by result) | passes per clone | ms per pass |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for s in &report.scenarios {
        let l = s.latency;
        let reconciles: Vec<String> = s
            .controller
            .reconciles
            .iter()
            .map(|(k, v)| format!("{k}: {v:.0}"))
            .collect();
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            if s.timed_out { " †" } else { "" },
            opt(l.map(|l| l.p50), 2),
            opt(l.map(|l| l.p90), 2),
            opt(l.map(|l| l.p99), 2),
            opt(l.map(|l| l.max), 2),
            opt(l.map(|l| l.mean), 2),
            f(s.cleanup_seconds, 1),
            f(s.writes_per_second_in_flight, 0),
            reconciles.join(", "),
            opt(
                (s.controller.passes > 0.0 && s.clones > 0)
                    .then(|| s.controller.passes / s.clones as f64),
                2
            ),
            opt(
                (s.controller.passes > 0.0)
                    .then(|| 1000.0 * s.controller.pass_seconds / s.controller.passes),
                2
            ),
        );
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n## Targets\n");
    let _ = writeln!(
        md,
        "Reported, never asserted. Throughput is taken at N=1000 even when that scenario stopped \
         at its timeout (it is the rate it reached). Writes and CPU per clone are taken from a \
         scenario whose clones all finished (N=1000 if they did, else the largest one that did, \
         else the calibration), because an unfinished clone has made only part of its requests. \
         Memory is taken at N=5000 with 10,000 VMs, where all clones were present whether or not \
         they finished.\n"
    );
    let _ = writeln!(md, "| target | scenario | measured | target | verdict |");
    let _ = writeln!(md, "|---|---|---:|---:|---|");
    for check in checks(report) {
        let _ = writeln!(
            md,
            "| {} | {} | {} {} | {} {} | {} |",
            check.target,
            check.scenario,
            opt(check.measured, 2),
            check.unit,
            f(check.goal, 2),
            check.unit,
            check.verdict
        );
    }
    if let Some(cal) = &report.calibration {
        let _ = writeln!(
            md,
            "\nFor comparison, clones run one after the other (calibration) needed {} controller \
             writes per clone, {} without events, and {} ms of controller CPU per clone.",
            f(cal.writes.controller, 2),
            f(cal.writes.controller_without_events, 2),
            opt(cal.controller_cpu_ms_per_clone, 2)
        );
    }
    if pick(report, 1000, false).is_some_and(|s| s.clones != 1000)
        || pick(report, 5000, true).is_some_and(|s| s.clones != 5000 || s.unrelated_vms != 10_000)
    {
        let _ = writeln!(
            md,
            "\nThis run did not have the targets' sizes; the largest scenario of each series \
             stands in for them (named in the table)."
        );
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n## The API server's limit\n");
    if let Some(raw) = &report.raw_creates {
        let runs: Vec<String> = raw.runs.iter().map(|r| f(*r, 0)).collect();
        let _ = writeln!(
            md,
            "Raw create throughput: {} runs of {} ConfigMaps (one small data key) created by {} \
             concurrent creators: {} objects/s (min {}, median **{}**, max {}).\n",
            raw.runs.len(),
            raw.objects_per_run,
            raw.concurrency,
            runs.join(", "),
            f(raw.spread.min, 0),
            f(raw.spread.median, 0),
            f(raw.spread.max, 0)
        );
    } else {
        let _ = writeln!(
            md,
            "The raw create throughput was not measured (see errors).\n"
        );
    }
    if let Some(cal) = &report.calibration {
        let _ = writeln!(
            md,
            "The writes one clone needs, counted on {} clones run one after the other ({} \
             succeeded; each waited for until `Succeeded` and cleaned up; {:.1} s in all, p50 \
             latency of a clone alone {} s):\n",
            cal.clones,
            cal.succeeded,
            cal.seconds,
            opt(cal.latency.map(|l| l.p50), 2)
        );
        resource_table(&mut md, &cal.requests.rows, cal.clones);
        let w = &cal.writes;
        let _ = writeln!(
            md,
            "\nWrites per clone: controller {} ({} of them events, {} without), stand-in {} ({} \
             of them events), garbage collector {}, unattributed {}: **{} in all** (the clone's \
             own create not counted).\n",
            f(w.controller, 2),
            f(w.controller_events, 2),
            f(w.controller_without_events, 2),
            f(w.stand_in, 2),
            f(w.stand_in_events, 2),
            f(w.garbage_collector, 2),
            f(w.unattributed, 2),
            f(w.needed, 2)
        );
    }
    if let Some(limit) = &report.limit {
        let _ = writeln!(
            md,
            "**Limit** = raw creates/s ÷ writes per clone = {} ÷ {} = **{} clones/s** ({} \
             counting the clone's own create as one more write). This treats every write as \
             costing as much as a small ConfigMap create; status patches, server-side apply and \
             large objects (a snapshot content holds a whole VM) cost more, so the real limit is \
             lower.\n",
            f(limit.raw_creates_per_second, 0),
            f(limit.writes_per_clone, 2),
            f(limit.clones_per_second, 1),
            f(limit.clones_per_second_with_create, 1)
        );
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "## API requests per clone\n");
    let _ = writeln!(
        md,
        "Per clone, by verb and by who made them (see the method above). `·` is none.\n"
    );
    if let Some(cal) = &report.calibration {
        let _ = writeln!(md, "### Calibration: one clone at a time\n");
        verb_table(&mut md, &cal.requests.rows, cal.clones);
        let _ = writeln!(md);
    }
    for s in &report.scenarios {
        let Some(requests) = &s.requests else {
            continue;
        };
        let _ = writeln!(md, "### {}\n", s.name);
        verb_table(&mut md, &requests.rows, s.clones);
        let e = &requests.events;
        let _ = writeln!(
            md,
            "\nEvents in the window: controller {} new + {} repeated, stand-in {} new + {} \
             repeated, others {} + {}.\n",
            f(e.controller_posts, 0),
            f(e.controller_patches, 0),
            f(e.stand_in_posts, 0),
            f(e.stand_in_patches, 0),
            f(e.other_posts, 0),
            f(e.other_patches, 0)
        );
    }
    if let Some(s) = pick(report, 1000, false)
        && let Some(requests) = &s.requests
    {
        let _ = writeln!(md, "By resource, {}:\n", s.name);
        resource_table(&mut md, &requests.rows, s.clones);
        let _ = writeln!(md);
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "## CPU\n");
    let _ = writeln!(
        md,
        "Average cores used from the first create to the end of cleanup (the machine has {}).\n",
        m.nproc
    );
    let _ = writeln!(
        md,
        "| scenario | wall s | machine busy | kube-apiserver | etcd | kube-controller-manager | controller | stand-in | bench | other |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &report.scenarios {
        let Some(c) = &s.cpu else { continue };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            f(c.wall_seconds, 1),
            f(c.machine_busy, 2),
            f(c.kube_apiserver, 2),
            f(c.etcd, 2),
            f(c.kube_controller_manager, 2),
            f(c.controller, 2),
            f(c.stand_in, 2),
            f(c.bench, 2),
            f(c.other, 2)
        );
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n## The engine\n");
    let e = &report.engine;
    if e.ran {
        let _ = writeln!(md, "`{}`\n", e.command);
    }
    if let Some(note) = &e.note {
        let _ = writeln!(md, "{note}\n");
    }
    if !e.results.is_empty() {
        let _ = writeln!(
            md,
            "| benchmark | mean per iteration | 95 % interval | elements per iteration | elements/s |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        for r in &e.results {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} – {} | {} | {} |",
                r.id,
                duration(r.mean_ns),
                duration(r.mean_lower_ns),
                duration(r.mean_upper_ns),
                r.throughput.as_ref().map_or_else(
                    || "–".to_owned(),
                    |t| format!("{} {}", t.per_iteration, t.unit)
                ),
                r.per_second.map_or_else(|| "–".to_owned(), rate)
            );
        }
        let _ = writeln!(md);
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "## Analysis\n");
    let _ = writeln!(
        md,
        "Facts the generator can state from this run (regenerated on every run):\n"
    );
    for fact in analysis(report) {
        let _ = writeln!(md, "- {fact}");
    }
    let _ = writeln!(md, "\n### Hand-written analysis\n");
    let _ = writeln!(md, "{HAND_BEGIN}\n");
    let hand = hand_written(previous)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "_Not written yet: add profiling results and conclusions here._".into());
    let _ = writeln!(md, "{hand}\n");
    let _ = writeln!(md, "{HAND_END}\n");

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "## Logs and errors\n");
    let _ = writeln!(
        md,
        "Each scenario's controller and stand-in logs are kept in `{}` (not committed), named \
         after the scenario's namespace.\n",
        report.logs_dir
    );
    let _ = writeln!(
        md,
        "| scenario | controller log | WARN lines | ERROR lines |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|");
    for s in &report.scenarios {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} |",
            s.name,
            file_name(&s.controller.log),
            s.controller.log_warnings,
            s.controller.log_errors
        );
    }
    for s in &report.scenarios {
        if s.controller.log_excerpt.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n{} (distinct lines, shortened):\n\n```text", s.name);
        for line in &s.controller.log_excerpt {
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(md, "```");
    }
    if report.errors.is_empty() {
        let _ = writeln!(md, "\nNo step of the bench failed.");
    } else {
        let _ = writeln!(md, "\nSteps that failed:\n");
        for error in &report.errors {
            let _ = writeln!(md, "- {}", error.replace('\n', " "));
        }
    }
    if let Some(kubevirt) = kubevirt {
        let _ = write!(md, "\n{}", super::kubevirt::markdown(kubevirt, previous));
    }
    md
}

fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// The first rows of a "How it was run" table: the machine, its load, the dates and the commit.
pub(crate) fn write_machine_rows(md: &mut String, m: &Machine) {
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| machine | {} × {}, {} MiB memory, Linux {} |",
        m.nproc, m.cpu_model, m.memory_mib, m.kernel
    );
    let _ = writeln!(
        md,
        "| load average (1, 5, 15 min) | start {}, end {} |",
        load(&m.load_average_start),
        load(&m.load_average_end)
    );
    let _ = writeln!(md, "| date | {} to {} |", m.date_start, m.date_end);
    let _ = writeln!(
        md,
        "| commit | `{}`{} |",
        m.git_commit,
        if m.git_dirty {
            " with uncommitted changes in the work tree"
        } else {
            ""
        }
    );
}

pub(crate) fn load(values: &[f64; 3]) -> String {
    format!("{:.2} / {:.2} / {:.2}", values[0], values[1], values[2])
}

fn duration(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k/s", per_second / 1e3)
    } else {
        format!("{per_second:.1}/s")
    }
}

/// Statements of fact for the Analysis section.
pub fn analysis(report: &Report) -> Vec<String> {
    let mut facts = Vec::new();
    let raw = report.raw_creates.as_ref().map(|r| r.spread.median);
    for s in report.scenarios.iter().filter(|s| s.error.is_none()) {
        let mut text = format!(
            "{}: {} clones/s; while clones were in flight the API server handled {} requests/s \
             from every component together, {} of them writes",
            s.name,
            f(s.clones_per_second, 1),
            f(s.requests_per_second_in_flight, 0),
            f(s.writes_per_second_in_flight, 0)
        );
        if let Some(raw) = raw.filter(|r| *r > 0.0) {
            let _ = write!(
                text,
                " (writes: {} % of the raw ConfigMap create rate, {}/s)",
                f(s.writes_per_second_in_flight / raw * 100.0, 0),
                f(raw, 0)
            );
        }
        if let Some(c) = &s.cpu {
            let busy = c.machine_busy / c.cores_available.max(1) as f64 * 100.0;
            let mut parts = [
                ("kube-apiserver", c.kube_apiserver),
                ("etcd", c.etcd),
                ("controller", c.controller),
                ("stand-in", c.stand_in),
                ("kube-controller-manager", c.kube_controller_manager),
                ("bench", c.bench),
                ("other processes", c.other),
            ];
            parts.sort_by(|a, b| b.1.total_cmp(&a.1));
            let list: Vec<String> = parts
                .iter()
                .map(|(name, cores)| format!("{name} {}", f(*cores, 2)))
                .collect();
            let _ = write!(
                text,
                ". The machine was {} % busy (cores used: {})",
                f(busy, 0),
                list.join(", ")
            );
            if busy >= 90.0 {
                text.push_str(": CPU-bound, every component competed for the same cores");
            }
        }
        if let Some(l) = s.latency
            && s.duration_seconds > 0.0
        {
            let _ = write!(
                text,
                ". Median latency {} s is {} % of the scenario's duration",
                f(l.p50, 2),
                f(l.p50 / s.duration_seconds * 100.0, 0)
            );
        }
        text.push('.');
        facts.push(text);
    }
    if let Some(cal) = &report.calibration
        && let Some(l) = cal.latency
    {
        let sequential = 1.0 / l.p50.max(1e-9);
        let best = report
            .scenarios
            .iter()
            .filter(|s| s.error.is_none())
            .map(|s| s.clones_per_second)
            .fold(0.0_f64, f64::max);
        let conclusion = if best > sequential {
            "so the faster scenarios gain from clones overlapping".to_owned()
        } else {
            format!(
                "yet no scenario reached that (best {} clones/s): clones in flight together \
                 slowed each other down more than they overlapped",
                f(best, 1)
            )
        };
        facts.push(format!(
            "A clone alone (calibration) took {} s from create to `Succeeded` (p50 of {}); one \
             after the other that is {} clones/s, {conclusion}.",
            f(l.p50, 2),
            cal.clones,
            f(sequential, 1)
        ));
    }
    if let Some(cal) = report
        .calibration
        .as_ref()
        .filter(|_| report.settings.sources <= 1)
    {
        let lock: f64 = cal
            .requests
            .rows
            .iter()
            .filter(|r| {
                r.actor == Actor::StandIn
                    && r.group == "kubevirt.io"
                    && r.resource == "virtualmachines"
                    && r.verb == "PATCH"
            })
            .map(|r| r.count)
            .sum::<f64>()
            / cal.clones.max(1) as f64;
        facts.push(format!(
            "Every clone of a scenario has the same source VM. Like KubeVirt, the stand-in takes \
             one snapshot of a VM at a time: it locks the source (`status.snapshotInProgress` \
             and a finalizer) for each snapshot and releases it afterwards \
             (`crates/kubevirt-sim/src/snapshot.rs`), so the snapshots of all N clones queue \
             behind one lock. The stand-in's PATCHes of `virtualmachines` and \
             `virtualmachines/status` (lock, unlock and the target's status) were {} per clone \
             in the calibration.",
            f(lock, 2)
        ));
    }
    if let Some(cal) = &report.calibration {
        // Only where every clone finished: an unfinished clone made only part of its writes.
        for s in report
            .scenarios
            .iter()
            .filter(|s| s.error.is_none() && !s.timed_out)
        {
            let Some(w) = &s.writes else { continue };
            let extra = w.needed - cal.writes.needed;
            if extra.abs() >= 0.5 {
                facts.push(format!(
                    "{}: {} writes per clone against {} for clones one at a time ({}{} per \
                     clone; controller {} vs {}, stand-in {} vs {}).",
                    s.name,
                    f(w.needed, 2),
                    f(cal.writes.needed, 2),
                    if extra > 0.0 { "+" } else { "" },
                    f(extra, 2),
                    f(w.controller, 2),
                    f(cal.writes.controller, 2),
                    f(w.stand_in, 2),
                    f(cal.writes.stand_in, 2)
                ));
            }
        }
    }
    let finished = report
        .scenarios
        .iter()
        .filter(|s| s.error.is_none() && !s.timed_out && s.requests.is_some())
        .max_by_key(|s| (s.clones, s.unrelated_vms));
    let largest = report
        .scenarios
        .iter()
        .filter(|s| s.error.is_none() && s.requests.is_some())
        .max_by_key(|s| (s.clones, s.unrelated_vms));
    for (s, per_clone) in [(finished, true), (largest, false)] {
        let Some(s) = s else { continue };
        if !per_clone && finished.is_some_and(|f| f.name == s.name) {
            continue;
        }
        let Some(requests) = &s.requests else {
            continue;
        };
        let mut rows: Vec<&Row> = requests
            .rows
            .iter()
            .filter(|r| r.actor != Actor::Excluded)
            .collect();
        rows.sort_by(|a, b| b.count.total_cmp(&a.count));
        let all: f64 = rows.iter().map(|r| r.count).sum();
        let n = s.clones.max(1) as f64;
        let top: Vec<String> = rows
            .iter()
            .take(4)
            .map(|r| {
                let share = f(r.count / all.max(1.0) * 100.0, 0);
                if per_clone {
                    format!(
                        "{} `{}` by the {} {} per clone ({share} %)",
                        r.verb,
                        r.key().resource_path(),
                        r.actor.label(),
                        f(r.count / n, 1)
                    )
                } else {
                    format!(
                        "{} `{}` by the {} {share} %",
                        r.verb,
                        r.key().resource_path(),
                        r.actor.label()
                    )
                }
            })
            .collect();
        facts.push(if per_clone {
            format!(
                "The most frequent requests at {} ({} per clone in all): {}.",
                s.name,
                f(all / n, 1),
                top.join("; ")
            )
        } else {
            format!(
                "The mix at {}{}, of {} requests in all: {}.",
                s.name,
                if s.timed_out { " †" } else { "" },
                f(all, 0),
                top.join("; ")
            )
        });
    }
    let per_clone: Vec<String> = report
        .calibration
        .iter()
        .map(|c| {
            let all: f64 = c
                .requests
                .rows
                .iter()
                .filter(|r| r.actor != Actor::Excluded)
                .map(|r| r.count)
                .sum();
            format!(
                "{} for clones one at a time",
                f(all / c.clones.max(1) as f64, 1)
            )
        })
        .chain(
            report
                .scenarios
                .iter()
                .filter(|s| s.error.is_none() && s.unrelated_vms == 0)
                .filter_map(|s| {
                    let all: f64 = s
                        .requests
                        .as_ref()?
                        .rows
                        .iter()
                        .filter(|r| r.actor != Actor::Excluded)
                        .map(|r| r.count)
                        .sum();
                    Some(format!(
                        "{} at {}{}",
                        f(all / s.clones.max(1) as f64, 1),
                        s.name,
                        if s.timed_out { " †" } else { "" }
                    ))
                }),
        )
        .collect();
    if per_clone.len() > 1 {
        facts.push(format!(
            "API requests per clone (every component, reads too): {}.",
            per_clone.join(", ")
        ));
    }
    let plain: Vec<&Scenario> = report
        .scenarios
        .iter()
        .filter(|s| s.unrelated_vms == 0 && s.error.is_none())
        .collect();
    for s in report
        .scenarios
        .iter()
        .filter(|s| s.unrelated_vms > 0 && s.error.is_none())
    {
        if let Some(p) = plain.iter().find(|p| p.clones == s.clones) {
            facts.push(format!(
                "With {} unrelated VMs, N={}: {} clones/s (without: {}), p50 {} s (without: {}), \
                 controller peak RSS {} MiB (without: {}), ready after {} s (without: {}), CPU {} \
                 ms per clone (without: {}).",
                s.unrelated_vms,
                s.clones,
                f(s.clones_per_second, 1),
                f(p.clones_per_second, 1),
                opt(s.latency.map(|l| l.p50), 2),
                opt(p.latency.map(|l| l.p50), 2),
                f(s.controller.peak_rss_mib, 1),
                f(p.controller.peak_rss_mib, 1),
                f(s.controller.ready_seconds, 1),
                f(p.controller.ready_seconds, 1),
                f(s.controller.cpu_ms_per_clone, 2),
                f(p.controller.cpu_ms_per_clone, 2)
            ));
        }
    }
    for s in &report.scenarios {
        if s.failed + s.unfinished > 0 {
            let reasons: Vec<String> = s
                .failures
                .iter()
                .map(|(reason, n)| format!("{reason} ×{n}"))
                .collect();
            let deadline = match (
                s.failures.contains_key("SnapshotFailed"),
                report.settings.sources <= 1,
            ) {
                (true, true) => {
                    " In the stand-in a snapshot without injected failures fails only when it \
                     passes its `failureDeadline` (5 minutes by default, as in KubeVirt); these \
                     had waited that long for the source VM's snapshot lock."
                }
                (true, false) => {
                    " In the stand-in a snapshot without injected failures fails only when it \
                     passes its `failureDeadline` (5 minutes by default, as in KubeVirt)."
                }
                _ => "",
            };
            facts.push(format!(
                "{}: {} clones failed ({}) and {} did not finish in time.{deadline}",
                s.name,
                s.failed,
                if reasons.is_empty() {
                    "–".to_owned()
                } else {
                    reasons.join(", ")
                },
                s.unfinished
            ));
        }
        if s.controller.log_errors + s.controller.log_warnings > 0 {
            facts.push(format!(
                "{}: the controller logged {} warnings and {} errors (see below).",
                s.name, s.controller.log_warnings, s.controller.log_errors
            ));
        }
    }
    if facts.is_empty() {
        facts.push("No scenario completed, so there is nothing to analyse.".into());
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{EventTally, Writes};
    use crate::model::{
        Calibration, Controller, Engine, Limit, Machine, RawCreates, Requests, Settings,
    };
    use crate::stats::{Spread, latency};

    fn report() -> Report {
        let scenario = |clones: usize, unrelated: usize, cps: f64| Scenario {
            name: crate::scenario::scenario_name(clones, unrelated, 1),
            clones,
            unrelated_vms: unrelated,
            succeeded: clones,
            duration_seconds: clones as f64 / cps,
            clones_per_second: cps,
            latency: latency(&[0.5, 1.0, 2.0]),
            latencies_seconds: vec![Some(0.5), Some(1.0), Some(2.0)],
            writes: Some(Writes {
                controller: 9.0,
                controller_events: 3.0,
                controller_without_events: 6.0,
                needed: 20.0,
                ..Writes::default()
            }),
            controller: Controller {
                cpu_ms_per_clone: 1.5,
                peak_rss_mib: 40.0,
                passes: 4.0 * clones as f64,
                pass_seconds: 0.002 * clones as f64,
                ..Controller::default()
            },
            ..Scenario::default()
        };
        Report {
            command: "cargo xtask bench".into(),
            machine: Machine {
                nproc: 2,
                cpu_model: "AMD EPYC".into(),
                memory_mib: 1,
                kernel: "6".into(),
                load_average_start: [1.0, 1.0, 1.0],
                load_average_end: [2.0, 2.0, 2.0],
                date_start: "d".into(),
                date_end: "e".into(),
                git_commit: "abc".into(),
                git_dirty: true,
                clock_ticks_per_second: 100,
                kube_apiserver_version: "v1.36.3".into(),
                rustc: "rustc".into(),
            },
            settings: Settings {
                sizes: vec![100, 1000],
                unrelated_vms: 10_000,
                concurrency: 16,
                raw_objects: 3000,
                raw_runs: 3,
                calibration_clones: 10,
                sources: 1,
                scenario_timeout_seconds: vec![180, 180],
                controller_log_level: "warn".into(),
                stand_in_latency: "0s".into(),
                controller_bin: None,
            },
            raw_creates: Some(RawCreates {
                objects_per_run: 3000,
                concurrency: 16,
                runs: vec![900.0, 1000.0, 1100.0],
                spread: Spread {
                    min: 900.0,
                    median: 1000.0,
                    max: 1100.0,
                },
            }),
            calibration: Some(Calibration {
                clones: 10,
                succeeded: 10,
                seconds: 5.0,
                latency: latency(&[0.4]),
                requests: Requests {
                    rows: vec![],
                    per_clone: BTreeMap::new(),
                    bench_own: BTreeMap::new(),
                    events: EventTally::default(),
                },
                writes: Writes {
                    needed: 20.0,
                    controller: 12.0,
                    controller_without_events: 7.0,
                    ..Writes::default()
                },
                controller_cpu_ms_per_clone: Some(30.0),
            }),
            limit: Some(Limit {
                raw_creates_per_second: 1000.0,
                writes_per_clone: 20.0,
                clones_per_second: 50.0,
                clones_per_second_with_create: 47.6,
            }),
            scenarios: vec![
                scenario(100, 0, 30.0),
                scenario(1000, 0, 20.0),
                scenario(1000, 10_000, 15.0),
            ],
            engine: Engine::default(),
            errors: vec![],
            total_seconds: 60.0,
            logs_dir: "target/bench-logs".into(),
        }
    }

    #[test]
    fn verdicts_say_by_how_much() {
        assert_eq!(
            verdict(Some(20.0), 100.0, true, "clones/s"),
            "**missed** by 80 clones/s (80 % short; 5.0× needed)"
        );
        assert_eq!(
            verdict(Some(120.0), 100.0, true, "clones/s"),
            "met (20 clones/s to spare, 20 %)"
        );
        assert_eq!(
            verdict(Some(1.5), 1.0, false, "ms"),
            "**missed** by 0.50 ms (50 % over; 1.5× the target)"
        );
        assert_eq!(
            verdict(Some(40.0), 64.0, false, "MiB"),
            "met (24 MiB to spare, 38 %)"
        );
        assert_eq!(verdict(None, 1.0, false, "ms"), "not measured");
    }

    #[test]
    fn checks_use_the_targets_scenarios_or_the_largest() {
        let checks = checks(&report());
        assert_eq!(checks.len(), 6);
        assert_eq!(checks[0].goal, 25.0);
        assert_eq!(checks[0].scenario, "N=1000");
        assert_eq!(checks[0].measured, Some(20.0));
        assert!(checks[0].verdict.starts_with("**missed** by 5.00"));
        assert_eq!(checks[2].measured, Some(9.0));
        assert!(checks[2].verdict.starts_with("met"));
        assert_eq!(checks[3].measured, Some(6.0));
        // No N=5000 with 10,000 VMs: the largest of that series stands in.
        assert_eq!(checks[5].scenario, "N=1000 + 10000 VMs");
    }

    #[test]
    fn per_clone_targets_come_from_finished_scenarios() {
        let mut report = report();
        report.scenarios[1].timed_out = true;
        report.scenarios[1].writes = Some(Writes {
            controller: 2.0,
            ..Writes::default()
        });
        let checks = checks(&report);
        // Throughput stays at N=1000, marked; writes and CPU come from N=100, which finished.
        assert_eq!(checks[0].scenario, "N=1000 †");
        assert_eq!(checks[2].scenario, "N=100");
        assert_eq!(checks[2].measured, Some(9.0));
        report.scenarios[0].timed_out = true;
        let checks = super::checks(&report);
        assert_eq!(checks[2].scenario, "calibration (one at a time)");
        assert_eq!(checks[2].measured, Some(12.0));
        assert_eq!(checks[3].measured, Some(7.0));
        assert_eq!(checks[4].measured, Some(30.0));
    }

    #[test]
    fn the_markdown_keeps_the_hand_written_analysis() {
        let report = report();
        let first = markdown(&report, None, "");
        assert!(first.contains("_Not written yet"));
        assert!(first.contains("| N=1000 + 10000 VMs |"));
        let edited = first.replace(
            "_Not written yet: add profiling results and conclusions here._",
            "The snapshot lock bounds it.",
        );
        let second = markdown(&report, None, &edited);
        assert!(second.contains("The snapshot lock bounds it."));
        assert!(!second.contains("_Not written yet"));
        assert_eq!(
            hand_written(&second).as_deref(),
            Some("The snapshot lock bounds it.")
        );
        assert!(
            summary(&report).contains(
                "API-server limit: 1000 creates/s / 20.0 writes per clone = 50.0 clones/s"
            )
        );
    }

    #[test]
    fn passes_per_clone_and_their_mean_duration_are_reported() {
        let md = markdown(&report(), None, "");
        assert!(md.contains("| passes per clone | ms per pass |"), "{md}");
        // 4 passes per clone, 2 ms of passes per clone: 0.5 ms per pass.
        assert!(md.contains("| 4.00 | 0.50 |"), "{md}");
    }

    #[test]
    fn the_plot_has_one_line_per_scenario() {
        let svg = latency_svg(&report());
        assert_eq!(svg.matches("<polyline").count(), 3);
    }
}
