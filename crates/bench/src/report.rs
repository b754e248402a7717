//! `benchmarks.md` (and the short summary printed at the end) from a [`Report`], and the
//! latency plot.

use std::fmt::Write as _;

use super::audit::{self, AuditRequests, AuditRow, PerClone};
use super::kubevirt::KubeVirtReport;
use super::model::{Calibration, CpuSeconds, Machine, Report, Scenario, TESTBED};
use super::scenario::{BENCH_USER, CONTROLLER_USER, STAND_IN_USER};
use super::svg;

/// Marks the part of the Analysis that is written by hand and kept when the file is generated
/// again.
const HAND_BEGIN: &str =
    "<!-- hand-written analysis: begin (kept when `cargo xtask bench` writes this file again) -->";
const HAND_END: &str = "<!-- hand-written analysis: end -->";

/// The audit verbs, in the order of the tables' columns ("dry run": a write submitted with
/// `dryRun`, whatever its verb; "other": `deletecollection`, …).
const VERBS: [&str; 9] = [
    "create", "update", "patch", "delete", "dry run", "get", "list", "watch", "other",
];

/// The column of [`VERBS`] a row is counted in.
fn verb_column(row: &AuditRow) -> &'static str {
    if row.dry_run {
        return "dry run";
    }
    VERBS
        .iter()
        .find(|v| **v == row.verb)
        .copied()
        .unwrap_or("other")
}

/// Requests per clone of the rows that `keep`.
fn sum_per_clone(rows: &[&AuditRow], n: f64, keep: impl Fn(&AuditRow) -> bool) -> f64 {
    rows.iter()
        .filter(|r| keep(r))
        .fold(0.0, |sum, r| sum + r.count as f64 / n)
}

/// The throughput share of the CPU ceiling the targets ask for, in percent.
const CEILING_SHARE_GOAL: f64 = 50.0;

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

/// Requests per clone in a window, by the testbed's users.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Requests {
    pub controller: PerClone,
    pub stand_in: PerClone,
    pub bench: PerClone,
    /// Every other user: kube-controller-manager (`admin`), kube-apiserver itself, any other.
    pub others: PerClone,
    /// Every user together: the sum of the four above.
    pub all: PerClone,
}

impl Requests {
    pub fn of(audit: &AuditRequests, clones: usize) -> Self {
        let by_user = audit::per_clone_by_user(audit, clones);
        let user = |name: &str| by_user.get(name).copied().unwrap_or_default();
        Self {
            controller: user(CONTROLLER_USER),
            stand_in: user(STAND_IN_USER),
            bench: user(BENCH_USER),
            others: audit::sum_except(&by_user, &[CONTROLLER_USER, STAND_IN_USER, BENCH_USER]),
            all: audit::sum_except(&by_user, &[]),
        }
    }

    /// Every user but the bench: what making the clones cost the API server.
    pub fn without_bench(&self) -> PerClone {
        let mut sum = self.controller;
        sum += self.stand_in;
        sum += self.others;
        sum
    }
}

fn scenario_requests(s: &Scenario) -> Option<Requests> {
    s.audit.as_ref().map(|a| Requests::of(a, s.clones))
}

fn calibration_requests(c: &Calibration) -> Option<Requests> {
    c.audit.as_ref().map(|a| Requests::of(a, c.clones))
}

/// Milliseconds of one testbed process's CPU per clone.
fn ms_per_clone(cpu: Option<&CpuSeconds>, process: &str, clones: usize) -> Option<f64> {
    cpu.map(|c| c.of(process) * 1000.0 / clones.max(1) as f64)
}

fn controller_cpu_ms(s: &Scenario) -> Option<f64> {
    ms_per_clone(s.cpu_seconds.as_ref(), "controller", s.clones)
}

/// The scenario's CPU ceiling in clones/s and its throughput's share of it in percent.
fn ceiling(s: &Scenario) -> Option<(f64, f64)> {
    let ceiling = s.cpu_seconds.as_ref()?.ceiling(s.clones)?;
    Some((ceiling, s.clones_per_second / ceiling * 100.0))
}

/// Clones one after the other: clones that succeeded ÷ the time they took.
fn calibration_rate(c: &Calibration) -> f64 {
    c.succeeded as f64 / c.seconds.max(1e-9)
}

/// One line about the calibration, for the progress output.
pub fn calibration_line(c: &Calibration) -> String {
    let mut line = String::new();
    if let Some(r) = calibration_requests(c) {
        let _ = write!(
            line,
            "controller {} writes ({} without events), {} GETs, {} requests in all; stand-in {} \
             writes; others {} requests; ",
            f(r.controller.writes, 1),
            f(r.controller.writes - r.controller.event_writes, 1),
            f(r.controller.gets, 1),
            f(r.controller.total(), 1),
            f(r.stand_in.writes, 1),
            f(r.others.total(), 1),
        );
    }
    let cpu = c.cpu_seconds.as_ref();
    let _ = write!(
        line,
        "controller CPU {} ms per clone; CPU ceiling {} clones/s",
        opt(ms_per_clone(cpu, "controller", c.clones), 2),
        opt(cpu.and_then(|cpu| cpu.ceiling(c.clones)), 1)
    );
    line
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

/// A scenario's name, with † when it stopped at its timeout.
fn marked(s: &Scenario) -> String {
    format!("{}{}", s.name, if s.timed_out { " †" } else { "" })
}

const CALIBRATION: &str = "calibration (one at a time)";

pub fn checks(report: &Report) -> Vec<Check> {
    let mut out = Vec::new();
    let name = |s: Option<&Scenario>| s.map_or_else(|| "–".to_owned(), marked);
    // Per-clone counts need clones that finished: an unfinished clone has made only part of
    // its requests. Else the calibration stands in.
    let done = completed(report, 1000);
    let (source, requests) = match (done.and_then(scenario_requests), &report.calibration) {
        (Some(r), _) => (name(done), Some(r)),
        (None, Some(c)) => (CALIBRATION.to_owned(), calibration_requests(c)),
        (None, None) => ("–".to_owned(), None),
    };
    let controller = requests.map(|r| r.controller);
    for (target, value, goal, unit) in [
        (
            "controller requests per clone ≤ 11 (writes, dry runs, GETs, lists and watches)",
            controller.map(PerClone::total),
            11.0,
            "requests",
        ),
        (
            "controller writes per clone ≤ 10 (events included)",
            controller.map(|c| c.writes),
            10.0,
            "writes",
        ),
        (
            "controller GETs per clone ≤ 1",
            controller.map(|c| c.gets),
            1.0,
            "GETs",
        ),
    ] {
        out.push(Check {
            target: target.to_owned(),
            scenario: source.clone(),
            measured: value,
            goal,
            unit,
            verdict: verdict(value, goal, false, unit),
        });
    }
    let cpu_at = |label: &str, scenario: Option<&Scenario>, cpu: Option<f64>| {
        let mut verdict = verdict(cpu, 2.0, false, "ms");
        if let Some(ms) = cpu {
            let _ = write!(verdict, "; {}× the 1 ms aim", f(ms, 1));
        }
        Check {
            target: format!("controller CPU ≤ 2 ms per clone at {label}"),
            scenario: name(scenario),
            measured: cpu,
            goal: 2.0,
            unit: "ms",
            verdict,
        }
    };
    let (source, cpu) = match (done, &report.calibration) {
        (Some(s), _) => (name(Some(s)), controller_cpu_ms(s)),
        (None, Some(c)) => (
            CALIBRATION.to_owned(),
            ms_per_clone(c.cpu_seconds.as_ref(), "controller", c.clones),
        ),
        (None, None) => ("–".to_owned(), None),
    };
    out.push(Check {
        scenario: source,
        ..cpu_at("N=1000", done, cpu)
    });
    let big = pick(report, 5000, false);
    out.push(cpu_at("N=5000", big, big.and_then(controller_cpu_ms)));
    // Peak memory needs the clones present, not finished.
    let big = pick(report, 5000, true);
    let rss = big.map(|s| s.controller.peak_rss_mib);
    out.push(Check {
        target: "controller peak RSS ≤ 64 MiB with 10,000 VMs and 5,000 clones".into(),
        scenario: name(big),
        measured: rss,
        goal: 64.0,
        unit: "MiB",
        verdict: verdict(rss, 64.0, false, "MiB"),
    });
    // Throughput is taken at N=1000 even when it stopped at its timeout: the rate it reached.
    let main = pick(report, 1000, false);
    let share = main.and_then(ceiling).map(|(_, share)| share);
    out.push(Check {
        target: format!(
            "throughput at N=1000 ≥ {} % of its CPU ceiling",
            f(CEILING_SHARE_GOAL, 0)
        ),
        scenario: name(main),
        measured: share,
        goal: CEILING_SHARE_GOAL,
        unit: "%",
        verdict: verdict(share, CEILING_SHARE_GOAL, true, "%"),
    });
    out
}

/// A per-clone figure, `·` for none.
fn cell(value: f64) -> String {
    if value > 0.0 {
        f(value, 2)
    } else {
        "·".to_owned()
    }
}

/// Requests per clone by user and verb, with every user's sum last.
fn verb_table(out: &mut String, audit: &AuditRequests, clones: usize) {
    let n = clones.max(1) as f64;
    let _ = writeln!(
        out,
        "| who | {} | writes | reads | all |",
        VERBS.join(" | ")
    );
    let _ = writeln!(out, "|---|{}---:|---:|---:|", "---:|".repeat(VERBS.len()));
    let rows: Vec<&AuditRow> = audit.rows.iter().filter(|r| !audit::is_lease(r)).collect();
    let line = |out: &mut String, who: &str, rows: &[&AuditRow]| {
        let cells: Vec<String> = VERBS
            .iter()
            .map(|v| cell(sum_per_clone(rows, n, |r| verb_column(r) == *v)))
            .collect();
        let _ = writeln!(
            out,
            "| {who} | {} | {} | {} | {} |",
            cells.join(" | "),
            f(sum_per_clone(rows, n, AuditRow::is_write), 2),
            f(sum_per_clone(rows, n, |r| !audit::is_write(&r.verb)), 2),
            f(sum_per_clone(rows, n, |_| true), 2)
        );
    };
    for user in audit::users_in_order([audit]) {
        let mine: Vec<&AuditRow> = rows.iter().filter(|r| r.user == user).copied().collect();
        if !mine.is_empty() {
            line(out, &audit::who(&user), &mine);
        }
    }
    line(out, "**every user**", &rows);
}

/// Every kind of request per clone: writes first, by user.
fn resource_table(out: &mut String, audit: &AuditRequests, clones: usize) {
    let n = clones.max(1) as f64;
    let _ = writeln!(out, "| who | verb | resource | per clone |");
    let _ = writeln!(out, "|---|---|---|---:|");
    let users = audit::users_in_order([audit]);
    let rank = |user: &str| users.iter().position(|u| u == user).unwrap_or(usize::MAX);
    let mut rows: Vec<&AuditRow> = audit.rows.iter().filter(|r| !audit::is_lease(r)).collect();
    rows.sort_by(|a, b| {
        (
            rank(&a.user),
            !a.is_write(),
            a.dry_run,
            &a.verb,
            &a.resource,
        )
            .cmp(&(
                rank(&b.user),
                !b.is_write(),
                b.dry_run,
                &b.verb,
                &b.resource,
            ))
    });
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} |",
            row.user,
            row.verb_label(),
            row.resource,
            f(row.count as f64 / n, 2)
        );
    }
}

/// The summary of a window's requests by the testbed's users, as cells.
fn request_cells(requests: Option<Requests>, leases: Option<u64>) -> String {
    let Some(r) = requests else {
        return "– | – | – | – | – | – | – | – | – | – | – | – |".to_owned();
    };
    let c = r.controller;
    format!(
        "{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        f(c.writes, 2),
        f(c.writes - c.event_writes, 2),
        f(c.dry_runs, 2),
        f(c.gets, 2),
        f(c.other_reads(), 2),
        f(c.total(), 2),
        f(r.stand_in.writes, 2),
        f(r.stand_in.total(), 2),
        f(r.others.total(), 2),
        f(r.bench.total(), 2),
        f(r.all.total(), 2),
        leases.map_or_else(|| "–".to_owned(), |l| l.to_string())
    )
}

const REQUESTS_HEADER: &str = "| window | controller writes | controller writes without events | controller dry runs | controller GETs | controller lists, watches, other | controller all | stand-in writes | stand-in all | others | the bench | all | leases in the window |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// CPU milliseconds per clone of every testbed process, their sum, the ceiling and the share of
/// it the throughput reached.
fn ceiling_row(
    name: &str,
    clones: usize,
    clones_per_second: f64,
    cpu: Option<&CpuSeconds>,
) -> String {
    let mut row = format!("| {name} | {} |", f(clones_per_second, 1));
    for process in TESTBED {
        let _ = write!(row, " {} |", opt(ms_per_clone(cpu, process, clones), 2));
    }
    let all = cpu.map(|c| c.testbed() * 1000.0 / clones.max(1) as f64);
    let ceiling = cpu.and_then(|c| c.ceiling(clones));
    let _ = write!(
        row,
        " {} | {} | {} |",
        opt(all, 2),
        opt(ceiling, 1),
        opt(ceiling.map(|c| clones_per_second / c * 100.0), 0)
    );
    row
}

fn scenario_row(s: &Scenario) -> String {
    let r = scenario_requests(s);
    let c = r.map(|r| r.controller);
    let ceiling = ceiling(s);
    format!(
        "| {} | {} | {}/{}/{} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        marked(s),
        s.clones,
        s.succeeded,
        s.failed,
        s.unfinished,
        f(s.create_seconds, 1),
        f(s.duration_seconds, 1),
        f(s.clones_per_second, 1),
        opt(s.latency.map(|l| l.p50), 2),
        opt(s.latency.map(|l| l.p99), 2),
        opt(c.map(|c| c.writes), 2),
        opt(c.map(|c| c.writes - c.event_writes), 2),
        opt(c.map(|c| c.gets), 2),
        opt(c.map(PerClone::total), 2),
        opt(r.map(|r| r.stand_in.writes), 2),
        opt(r.map(|r| r.all.total()), 1),
        opt(controller_cpu_ms(s), 2),
        opt(ceiling.map(|c| c.0), 1),
        opt(ceiling.map(|c| c.1), 0),
        f(s.controller.peak_rss_mib, 1),
        f(s.controller.ready_seconds, 1),
    )
}

const SCENARIO_HEADER: &str = "| scenario | clones | succeeded/failed/unfinished | create s | duration s | clones/s | p50 s | p99 s | controller writes/clone (without events) | controller GETs/clone | controller requests/clone | stand-in writes/clone | all requests/clone | controller CPU ms/clone | CPU ceiling clones/s | % of ceiling | controller peak RSS MiB | controller ready s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// The short summary printed to stdout at the end.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{SCENARIO_HEADER}");
    for s in &report.scenarios {
        let _ = writeln!(out, "{}", scenario_row(s));
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
/// An earlier run to compare with: the same bench with an earlier controller (`--controller-bin`)
/// on the same machine, read from `benchmarks-before.json` and `benchmarks-kubevirt-before.json`
/// beside the report.
#[derive(Debug, Default)]
pub struct Before {
    pub report: Option<Report>,
    pub kubevirt: Option<KubeVirtReport>,
}

/// vmclone's duration ÷ the bare path's at N=`clones` on real KubeVirt.
fn times_bare(kubevirt: &KubeVirtReport, clones: usize) -> Option<f64> {
    use super::kubevirt::model::Path;
    kubevirt
        .comparisons
        .iter()
        .find(|c| c.clones == clones)?
        .controllers
        .iter()
        .find(|r| r.path == Path::Vmclone)?
        .times_bare
}

/// The targets and the figures the issue asks about, before and after.
fn before_and_after(
    md: &mut String,
    after: &Report,
    kubevirt: Option<&KubeVirtReport>,
    before: &Before,
) {
    let Some(earlier) = &before.report else {
        return;
    };
    let _ = writeln!(md, "\n### Before and after\n");
    let _ = writeln!(
        md,
        "The same bench, run back to back on the same machine with another controller binary \
         (`{}`, run by the bench, stand-in and testbed of commit `{}`): \
         [benchmarks-before.json](benchmarks-before.json){}. The verdict is the after run's.\n",
        earlier
            .settings
            .controller_bin
            .as_deref()
            .unwrap_or("this workspace's build"),
        short_commit(&earlier.machine.git_commit),
        if before.kubevirt.is_some() {
            " and [benchmarks-kubevirt-before.json](benchmarks-kubevirt-before.json)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| measure | before | after | target | verdict (after) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    let figure = |check: &Check| format!("{} [{}]", opt(check.measured, 2), check.scenario);
    for (b, a) in checks(earlier).iter().zip(checks(after).iter()) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} {} | {} |",
            a.target,
            figure(b),
            figure(a),
            f(a.goal, 2),
            a.unit,
            a.verdict
        );
    }
    let passes = |r: &Report| {
        completed(r, 1000)
            .filter(|s| s.controller.passes > 0.0 && s.clones > 0)
            .map(|s| s.controller.passes / s.clones as f64)
    };
    let rate = |r: &Report| pick(r, 1000, false).map(|s| s.clones_per_second);
    let ceiling_rate = |r: &Report| pick(r, 1000, false).and_then(ceiling).map(|(c, _)| c);
    for (measure, b, a) in [
        ("passes per clone, N=1000", passes(earlier), passes(after)),
        ("throughput, N=1000 (clones/s)", rate(earlier), rate(after)),
        (
            "CPU ceiling, N=1000 (clones/s)",
            ceiling_rate(earlier),
            ceiling_rate(after),
        ),
    ] {
        let _ = writeln!(md, "| {measure} | {} | {} | – | – |", opt(b, 2), opt(a, 2));
    }
    if let (Some(b), Some(a)) = (&before.kubevirt, kubevirt) {
        let (b, a) = (times_bare(b, 100), times_bare(a, 100));
        let _ = writeln!(
            md,
            "| real KubeVirt, N=100: vmclone's time ÷ the bare path's | {} | {} | 1.20 × | {} |",
            opt(b, 2),
            opt(a, 2),
            verdict(a, 1.2, false, "×")
        );
    }
}

fn short_commit(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

pub fn markdown(
    report: &Report,
    kubevirt: Option<&KubeVirtReport>,
    before: &Before,
    previous: &str,
) -> String {
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
         kube-controller-manager and the bench itself all share those {} cores; the \
         [CPU ceiling](#cpu-ceiling) section shows how much of them other work took (\"other\"). \
         Expect large run-to-run differences.\n",
        m.nproc,
        load(&m.load_average_start),
        load(&m.load_average_end),
        m.nproc,
    );

    let _ = writeln!(md, "Contents:\n");
    for (title, anchor) in [
        ("How it was run", "how-it-was-run"),
        ("Results", "results"),
        ("Targets", "targets"),
        ("CPU ceiling", "cpu-ceiling"),
        ("API requests per clone", "api-requests-per-clone"),
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
        "| kube-apiserver | {} (testenv: etcd with `--unsafe-no-fsync`, kube-controller-manager with GC, audit log at `Metadata` level, blocking) |",
        m.kube_apiserver_version
    );
    let _ = writeln!(md, "| toolchain | {} (release binaries) |", m.rustc);
    let st = &report.settings;
    let _ = writeln!(
        md,
        "| controller | `{} --kubeconfig <{CONTROLLER_USER}'s> --namespace <scenario> --metrics-addr=127.0.0.1:0 --health-addr=127.0.0.1:0 --concurrency {}`, `RUST_LOG={}`, user `{CONTROLLER_USER}`, a fresh process per scenario |",
        st.controller_bin
            .as_deref()
            .unwrap_or("target/release/clone-controller"),
        st.concurrency,
        st.controller_log_level
    );
    let _ = writeln!(
        md,
        "| stand-in | `target/release/kubevirt-sim --namespace <scenario> --latency {} --no-install` (16 workers per kind), user `{STAND_IN_USER}`, a fresh process per scenario |",
        st.stand_in_latency
    );
    let _ = writeln!(
        md,
        "| creators | {} concurrent creators (tokio tasks sharing one kube client, user `{BENCH_USER}`) |",
        st.concurrency
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Method:\n\n\
         - **Testbed.** `TestEnv::start_with_options` with the audit log: a private etcd, \
           kube-apiserver and kube-controller-manager on the same machine, the stand-in's storage \
           classes and admission policies, and a `KubeVirt` CR with the `Snapshot` feature gate \
           (as `cargo xtask demo` does). Every component talks to the API server as a user of \
           its own (`testenv::IDENTITIES`, each with a token of its own): the controller as \
           `{CONTROLLER_USER}`, the stand-in as `{STAND_IN_USER}`, the bench as `{BENCH_USER}`; \
           kube-controller-manager (garbage collector, namespace controller) runs as `admin`.\n\
         - **Scenarios.** Each scenario gets a fresh namespace with its source VMs and their PVCs \
           (storage class `sim-snapshot`), then, for the second series, {} halted VMs without \
           volumes (created by {} creators before the controller starts; the bench waits until \
           the stand-in has written their status). Then a fresh stand-in and a fresh controller \
           start, the bench waits for the controller's `/readyz`, and creates N clones at once \
           (`clone-<i>` → `target-<i>`, with the example's label filters) with {} concurrent \
           creators. The namespace is deleted after each scenario.\n\
         - **Sources.** {}\n\
         - **Calibration.** {} clones run one after the other in a namespace of their own, each \
           waited for until `Succeeded` and cleaned up: what a clone costs without contention.\n\
         - **Duration and throughput.** From the first create call to the last clone seen \
           `Succeeded`; throughput = clones that succeeded ÷ duration. A scenario stops waiting \
           after {} s (per size), and clones not `Succeeded` by then are reported as unfinished.\n\
         - **Latency.** Per clone, from the moment the bench's create call returned to the moment \
           the bench's own watch on the clones first delivered it with phase `Succeeded` (both \
           client-side monotonic clocks). `metadata.creationTimestamp` is not used: it has 1 s \
           resolution.\n\
         - **API requests.** kube-apiserver's audit log (`Metadata` level: user, verb, resource; \
           no bodies): every request received from the first create to the end of cleanup (no \
           temporary snapshot, restore or content left), each audit ID once, attributed by its \
           user, so exactly. Writes are `create`, `update`, `patch` (server-side apply included) \
           and `delete`, except dry runs (`dryRun=All`: admitted and validated, never stored), \
           which are counted on their own; \"without events\" leaves out writes of \
           `events.k8s.io` and core \
           events; GETs are `get`s of a resource; the other reads are `list`s and `watch`es (a \
           watch started or re-established within the window) and non-resource requests. \
           Leases (leader election, kube-apiserver's identity heartbeat) are left out of the \
           per-clone figures. \"others\" are every user but the controller, the stand-in and the \
           bench: kube-controller-manager (its garbage collector and namespace controller) and \
           kube-apiserver's own requests. The bench's own requests (its clone creates, its \
           watch, its cleanup polls) are shown as its own.\n\
         - **The audit log's cost.** kube-apiserver serialises an event of every request and \
           writes it to a file before it answers (blocking mode). That CPU is part of \
           kube-apiserver's figures below, and so of the CPU ceiling; the bench does not \
           subtract it. Measured once, apart from this run (2026-12-06, on this 2-core machine \
           under a load average of about 5: two rounds of 3,000 small ConfigMap creates and \
           3,000 GETs by 16 creators on a testbed with the log and one without), it was about \
           0.1 ms of kube-apiserver CPU per request, 13–15 % of what those small requests cost \
           without it; at the 50–60 requests of a clone, about 5–6 ms per clone.\n\
         - **Controller CPU.** `utime + stime` of `/proc/<pid>/stat` (clock ticks, {} per second) \
           from the first create to the end of cleanup, ÷ N.\n\
         - **Controller memory.** `VmHWM` of `/proc/<pid>/status` at the end of the scenario: the \
           peak RSS over the process's life, including its start-up with the unrelated VMs.\n\
         - **CPU ceiling.** The same counters, over the same window, for every process of the \
           testbed: the controller, the stand-in, kube-apiserver, etcd, kube-controller-manager \
           and the bench; ÷ N, the CPU seconds one clone cost. The ceiling is the machine's \
           cores ({}) ÷ their sum: the clones per second these cores would allow if the testbed \
           had them to itself and every clone cost what it cost in that scenario. The share is \
           the measured throughput ÷ the ceiling: below 100 % when cores were idle (waiting, the \
           start of the window, cleanup) or other work took them. The `cpu` line of \
           `/proc/stat` gives the machine's busy time; \"other\" is what no testbed process \
           used.\n",
        st.unrelated_vms,
        st.concurrency,
        st.concurrency,
        if st.sources <= 1 {
            format!(
                "One source VM per namespace, the demo's `{}`: every clone of a scenario clones \
                 it (the golden-image case).",
                super::scenario::SOURCE_VM
            )
        } else {
            format!(
                "{} source VMs per namespace (`vm-cirros-<k>`, each with its own PVC); clone i \
                 clones source i mod {}.",
                st.sources, st.sources
            )
        },
        st.calibration_clones,
        st.scenario_timeout_seconds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        m.clock_ticks_per_second,
        m.nproc
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
        "\n\"controller requests\" are its writes, dry runs, GETs, lists and watches; \"all \
         requests\" are \
         every user's, the bench's included (see [API requests per clone](#api-requests-per-clone)). \
         \"controller ready s\" is the time from starting the controller process to `/readyz` \
         (its caches synced). The latency distribution of every scenario:\n\n\
         ![Latency CDF per scenario](benchmarks-latency.svg)\n"
    );
    let _ = writeln!(
        md,
        "| scenario | p50 s | p90 s | p99 s | max s | mean s | cleanup s | requests/s in flight | writes/s in flight | reconciles (by result) | passes per clone | ms per pass |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    );
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            marked(s),
            opt(l.map(|l| l.p50), 2),
            opt(l.map(|l| l.p90), 2),
            opt(l.map(|l| l.p99), 2),
            opt(l.map(|l| l.max), 2),
            opt(l.map(|l| l.mean), 2),
            f(s.cleanup_seconds, 1),
            f(s.requests_per_second_in_flight, 0),
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
        "Reported, never asserted. Requests and CPU per clone at N=1000 are taken from a scenario \
         whose clones all finished (N=1000 if they did, else the largest one that did, else the \
         calibration), because an unfinished clone has made only part of its requests; at \
         N=5000 from N=5000 whether or not it finished (marked †). Memory is taken at N=5000 \
         with 10,000 VMs, where all clones were present whether or not they finished. \
         Throughput is taken at N=1000 even when that scenario stopped at its timeout (it is \
         the rate it reached), against that scenario's own [CPU ceiling](#cpu-ceiling).\n"
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
    before_and_after(&mut md, report, kubevirt, before);
    if let Some(cal) = &report.calibration {
        let _ = writeln!(
            md,
            "\nFor comparison, clones run one after the other (calibration): {}.",
            calibration_line(cal)
        );
    }
    if pick(report, 1000, false).is_some_and(|s| s.clones != 1000)
        || pick(report, 5000, false).is_some_and(|s| s.clones != 5000)
        || pick(report, 5000, true).is_some_and(|s| s.clones != 5000 || s.unrelated_vms != 10_000)
    {
        let _ = writeln!(
            md,
            "\nThis run did not have the targets' sizes; the largest scenario of each series \
             stands in for them (named in the table)."
        );
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n## CPU ceiling\n");
    let _ = writeln!(
        md,
        "CPU milliseconds per clone of every process of the testbed, from the first create to the \
         end of cleanup; the CPU ceiling = {} cores ÷ their sum; the throughput's share of it (see \
         the method above).\n",
        m.nproc
    );
    let _ = write!(md, "| scenario | clones/s |");
    for process in TESTBED {
        let _ = write!(md, " {process} ms |");
    }
    let _ = writeln!(md, " all ms | CPU ceiling clones/s | % of ceiling |");
    let _ = writeln!(
        md,
        "|---|---:|{}---:|---:|---:|",
        "---:|".repeat(TESTBED.len())
    );
    if let Some(cal) = &report.calibration {
        let _ = writeln!(
            md,
            "{}",
            ceiling_row(
                CALIBRATION,
                cal.clones,
                calibration_rate(cal),
                cal.cpu_seconds.as_ref()
            )
        );
    }
    for s in &report.scenarios {
        let _ = writeln!(
            md,
            "{}",
            ceiling_row(
                &marked(s),
                s.clones,
                s.clones_per_second,
                s.cpu_seconds.as_ref()
            )
        );
    }
    let _ = writeln!(
        md,
        "\nThe calibration's clones/s is its clones ÷ the time they took one after the other. \
         Average cores used over the same windows (the machine has {}):\n",
        m.nproc
    );
    let _ = write!(md, "| scenario | wall s | machine busy |");
    for process in TESTBED {
        let _ = write!(md, " {process} |");
    }
    let _ = writeln!(md, " other |");
    let _ = writeln!(md, "|---|---:|---:|{}---:|", "---:|".repeat(TESTBED.len()));
    let windows = report
        .calibration
        .iter()
        .map(|c| (CALIBRATION.to_owned(), c.cpu_seconds.as_ref()))
        .chain(
            report
                .scenarios
                .iter()
                .map(|s| (marked(s), s.cpu_seconds.as_ref())),
        );
    for (name, cpu) in windows {
        let Some(c) = cpu else { continue };
        let _ = write!(
            md,
            "| {name} | {} | {} |",
            f(c.wall_seconds, 1),
            f(c.cores(c.machine_busy), 2)
        );
        for process in TESTBED {
            let _ = write!(md, " {} |", f(c.cores(c.of(process)), 2));
        }
        let _ = writeln!(md, " {} |", f(c.cores(c.other()), 2));
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n## API requests per clone\n");
    let _ = writeln!(
        md,
        "Per clone, from the audit log, by user (see the method above): \"others\" are every user \
         but the controller, the stand-in and the bench; \"all\" is every user together, the \
         bench's own requests included. Leases are left out; the last column counts them.\n"
    );
    let _ = writeln!(md, "{REQUESTS_HEADER}");
    if let Some(cal) = &report.calibration {
        let _ = writeln!(
            md,
            "| {CALIBRATION} | {}",
            request_cells(
                calibration_requests(cal),
                cal.audit.as_ref().map(audit::lease_requests)
            )
        );
    }
    for s in &report.scenarios {
        let _ = writeln!(
            md,
            "| {} | {}",
            marked(s),
            request_cells(
                scenario_requests(s),
                s.audit.as_ref().map(audit::lease_requests)
            )
        );
    }
    let _ = writeln!(md, "\nBy user and verb (`·` is none):\n");
    if let Some(audit) = report.calibration.as_ref().and_then(|c| c.audit.as_ref()) {
        let _ = writeln!(md, "### Calibration: one clone at a time\n");
        verb_table(
            &mut md,
            audit,
            report.calibration.as_ref().map_or(1, |c| c.clones),
        );
        let _ = writeln!(md);
    }
    for s in &report.scenarios {
        let Some(audit) = &s.audit else {
            continue;
        };
        let _ = writeln!(md, "### {}\n", marked(s));
        verb_table(&mut md, audit, s.clones);
        let _ = writeln!(md);
    }
    if let Some(cal) = &report.calibration
        && let Some(audit) = &cal.audit
    {
        let _ = writeln!(
            md,
            "Every kind of request, clones one at a time ({} clones, {} succeeded, {:.1} s in \
             all, p50 latency of a clone alone {} s):\n",
            cal.clones,
            cal.succeeded,
            cal.seconds,
            opt(cal.latency.map(|l| l.p50), 2)
        );
        resource_table(&mut md, audit, cal.clones);
        let _ = writeln!(md);
    }
    if let Some(s) = pick(report, 1000, false)
        && let Some(audit) = &s.audit
    {
        let _ = writeln!(md, "Every kind of request, {}:\n", marked(s));
        resource_table(&mut md, audit, s.clones);
        let _ = writeln!(md);
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
    for s in report.scenarios.iter().filter(|s| s.error.is_none()) {
        let mut text = format!("{}: {} clones/s", marked(s), f(s.clones_per_second, 1));
        if let (Some((ceiling, share)), Some(c)) = (ceiling(s), &s.cpu_seconds) {
            let all = c.testbed();
            let _ = write!(
                text,
                ", {} % of its CPU ceiling of {} clones/s ({} cores ÷ {} ms of CPU per clone, \
                 {} % of it kube-apiserver's)",
                f(share, 0),
                f(ceiling, 1),
                c.cores_available,
                f(all * 1000.0 / s.clones.max(1) as f64, 1),
                f(c.of("kube-apiserver") / all.max(1e-9) * 100.0, 0)
            );
        }
        let _ = write!(
            text,
            "; while clones were in flight the API server handled {} requests/s from every user \
             together, {} of them writes",
            f(s.requests_per_second_in_flight, 0),
            f(s.writes_per_second_in_flight, 0)
        );
        if let Some(c) = &s.cpu_seconds {
            let busy = c.cores(c.machine_busy) / c.cores_available.max(1) as f64 * 100.0;
            let mut parts: Vec<(&str, f64)> = TESTBED
                .iter()
                .map(|p| (*p, c.cores(c.of(p))))
                .chain([("other processes", c.cores(c.other()))])
                .collect();
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
    if report.settings.sources <= 1
        && let Some(audit) = report.calibration.as_ref().and_then(|c| c.audit.as_ref())
    {
        let clones = report.calibration.as_ref().map_or(1, |c| c.clones);
        let lock: u64 = audit
            .rows
            .iter()
            .filter(|r| {
                r.user == STAND_IN_USER
                    && r.verb == "patch"
                    && r.resource.starts_with("virtualmachines")
                    && r.resource.ends_with(".kubevirt.io")
            })
            .map(|r| r.count)
            .sum();
        facts.push(format!(
            "Every clone of a scenario has the same source VM. Like KubeVirt, the stand-in takes \
             one snapshot of a VM at a time: it locks the source (`status.snapshotInProgress` \
             and a finalizer) for each snapshot and releases it afterwards \
             (`crates/kubevirt-sim/src/snapshot.rs`), so the snapshots of all N clones queue \
             behind one lock. The stand-in's patches of `virtualmachines` and \
             `virtualmachines/status` (lock, unlock and the target's status) were {} per clone \
             in the calibration.",
            f(lock as f64 / clones.max(1) as f64, 2)
        ));
    }
    if let Some(cal) = report.calibration.as_ref().and_then(calibration_requests) {
        // Only where every clone finished: an unfinished clone made only part of its writes.
        for s in report
            .scenarios
            .iter()
            .filter(|s| s.error.is_none() && !s.timed_out)
        {
            let Some(r) = scenario_requests(s) else {
                continue;
            };
            let (writes, alone) = (r.without_bench().writes, cal.without_bench().writes);
            if (writes - alone).abs() >= 0.5 {
                facts.push(format!(
                    "{}: {} writes per clone by every user but the bench, against {} for clones \
                     one at a time ({}{} per clone; controller {} vs {}, stand-in {} vs {}).",
                    s.name,
                    f(writes, 2),
                    f(alone, 2),
                    if writes > alone { "+" } else { "" },
                    f(writes - alone, 2),
                    f(r.controller.writes, 2),
                    f(cal.controller.writes, 2),
                    f(r.stand_in.writes, 2),
                    f(cal.stand_in.writes, 2)
                ));
            }
        }
    }
    let finished = report
        .scenarios
        .iter()
        .filter(|s| s.error.is_none() && !s.timed_out && s.audit.is_some())
        .max_by_key(|s| (s.clones, s.unrelated_vms));
    let largest = report
        .scenarios
        .iter()
        .filter(|s| s.error.is_none() && s.audit.is_some())
        .max_by_key(|s| (s.clones, s.unrelated_vms));
    for (s, per_clone) in [(finished, true), (largest, false)] {
        let Some(s) = s else { continue };
        if !per_clone && finished.is_some_and(|f| f.name == s.name) {
            continue;
        }
        let Some(audit) = &s.audit else {
            continue;
        };
        let mut rows: Vec<&AuditRow> = audit.rows.iter().filter(|r| !audit::is_lease(r)).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.count));
        let all: u64 = rows.iter().map(|r| r.count).sum();
        let n = s.clones.max(1) as f64;
        let top: Vec<String> = rows
            .iter()
            .take(4)
            .map(|r| {
                let share = f(r.count as f64 / all.max(1) as f64 * 100.0, 0);
                if per_clone {
                    format!(
                        "{} `{}` by `{}` {} per clone ({share} %)",
                        r.verb,
                        r.resource,
                        r.user,
                        f(r.count as f64 / n, 1)
                    )
                } else {
                    format!("{} `{}` by `{}` {share} %", r.verb, r.resource, r.user)
                }
            })
            .collect();
        facts.push(if per_clone {
            format!(
                "The most frequent requests at {} ({} per clone in all): {}.",
                s.name,
                f(all as f64 / n, 1),
                top.join("; ")
            )
        } else {
            format!(
                "The mix at {}, of {} requests in all: {}.",
                marked(s),
                all,
                top.join("; ")
            )
        });
    }
    let per_clone: Vec<String> = report
        .calibration
        .iter()
        .filter_map(|c| {
            let r = calibration_requests(c)?;
            Some(format!(
                "{} for clones one at a time",
                f(r.without_bench().total(), 1)
            ))
        })
        .chain(
            report
                .scenarios
                .iter()
                .filter(|s| s.error.is_none() && s.unrelated_vms == 0)
                .filter_map(|s| {
                    let r = scenario_requests(s)?;
                    Some(format!(
                        "{} at {}",
                        f(r.without_bench().total(), 1),
                        marked(s)
                    ))
                }),
        )
        .collect();
    if per_clone.len() > 1 {
        facts.push(format!(
            "API requests per clone (every user but the bench, reads too): {}.",
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
                opt(controller_cpu_ms(s), 2),
                opt(controller_cpu_ms(p), 2)
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{Controller, Engine, Settings};
    use crate::stats::latency;

    /// The audit rows of `n` clones: the controller writes 11 per clone (6 of them events),
    /// dry-runs 1 and GETs 2, plus one watch; the stand-in writes 4 and GETs 1; kube-controller-manager
    /// deletes 1; kube-apiserver and the bench make a few more; leases are left out.
    fn audit_of(n: u64) -> AuditRequests {
        let rows = [
            (CONTROLLER_USER, "create", "events.events.k8s.io", 6 * n),
            (
                CONTROLLER_USER,
                "patch",
                "virtualmachineclones/status.clone.kubevirt.io",
                3 * n,
            ),
            (
                CONTROLLER_USER,
                "create",
                "virtualmachinesnapshots.snapshot.kubevirt.io",
                n,
            ),
            (
                CONTROLLER_USER,
                "delete",
                "virtualmachinesnapshots.snapshot.kubevirt.io",
                n,
            ),
            (CONTROLLER_USER, "get", "virtualmachines.kubevirt.io", 2 * n),
            (
                CONTROLLER_USER,
                "create (dry run)",
                "virtualmachines.kubevirt.io",
                n,
            ),
            (CONTROLLER_USER, "watch", "virtualmachines.kubevirt.io", 1),
            (CONTROLLER_USER, "update", "leases.coordination.k8s.io", 50),
            (
                STAND_IN_USER,
                "patch",
                "virtualmachines/status.kubevirt.io",
                4 * n,
            ),
            (STAND_IN_USER, "get", "namespaces", n),
            (
                "admin",
                "delete",
                "virtualmachinesnapshotcontents.snapshot.kubevirt.io",
                n,
            ),
            ("system:apiserver", "get", "non-resource", 3),
            (
                BENCH_USER,
                "create",
                "virtualmachineclones.clone.kubevirt.io",
                n,
            ),
            (
                BENCH_USER,
                "watch",
                "virtualmachineclones.clone.kubevirt.io",
                1,
            ),
        ];
        AuditRequests {
            rows: rows
                .iter()
                .map(|(user, verb, resource, count)| AuditRow {
                    user: (*user).to_owned(),
                    verb: verb.trim_end_matches(" (dry run)").to_owned(),
                    resource: (*resource).to_owned(),
                    dry_run: verb.ends_with(" (dry run)"),
                    count: *count,
                })
                .collect(),
            ..AuditRequests::default()
        }
    }

    /// CPU of `n` clones: 40 ms per clone in all, 1.5 of them the controller's, over `wall`
    /// seconds on 2 cores.
    fn cpu_of(n: usize, wall: f64) -> CpuSeconds {
        let n = n as f64;
        let per_clone_ms = [
            ("controller", 1.5),
            ("stand-in", 3.5),
            ("kube-apiserver", 30.0),
            ("etcd", 3.0),
            ("kube-controller-manager", 1.0),
            ("bench", 1.0),
        ];
        CpuSeconds {
            wall_seconds: wall,
            cores_available: 2,
            machine_busy: 2.0 * wall,
            processes: per_clone_ms
                .iter()
                .map(|(p, ms)| ((*p).to_owned(), ms / 1000.0 * n))
                .collect(),
        }
    }

    fn scenario(clones: usize, unrelated: usize, cps: f64) -> Scenario {
        let duration = clones as f64 / cps;
        Scenario {
            name: crate::scenario::scenario_name(clones, unrelated, 1),
            clones,
            unrelated_vms: unrelated,
            succeeded: clones,
            duration_seconds: duration,
            clones_per_second: cps,
            latency: latency(&[0.5, 1.0, 2.0]),
            latencies_seconds: vec![Some(0.5), Some(1.0), Some(2.0)],
            audit: Some(audit_of(clones as u64)),
            cpu_seconds: Some(cpu_of(clones, duration)),
            controller: Controller {
                peak_rss_mib: 40.0,
                passes: 4.0 * clones as f64,
                pass_seconds: 0.002 * clones as f64,
                ..Controller::default()
            },
            ..Scenario::default()
        }
    }

    fn report() -> Report {
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
                calibration_clones: 10,
                sources: 1000,
                scenario_timeout_seconds: vec![180, 180],
                controller_log_level: "warn".into(),
                stand_in_latency: "0s".into(),
                controller_bin: None,
            },
            calibration: Some(Calibration {
                clones: 10,
                succeeded: 10,
                seconds: 5.0,
                latency: latency(&[0.4]),
                audit: Some(audit_of(10)),
                cpu_seconds: Some(cpu_of(10, 5.0)),
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

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
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
    fn requests_by_user_add_up_to_every_users() {
        let r = Requests::of(&audit_of(100), 100);
        assert_eq!(r.controller.writes, 11.0);
        assert_eq!(r.controller.event_writes, 6.0);
        assert_eq!(r.controller.gets, 2.0);
        assert_eq!(r.controller.dry_runs, 1.0);
        assert!(close(r.controller.total(), 14.01));
        assert_eq!(r.stand_in.writes, 4.0);
        assert_eq!(r.stand_in.gets, 1.0);
        // kube-controller-manager's delete and kube-apiserver's own reads.
        assert_eq!(r.others.writes, 1.0);
        assert_eq!(r.others.total(), 1.03);
        assert_eq!(r.bench.total(), 1.01);
        let sum = r.controller.total() + r.stand_in.total() + r.others.total() + r.bench.total();
        assert!(
            (r.all.total() - sum).abs() < 1e-9,
            "{} vs {sum}",
            r.all.total()
        );
        assert!((r.without_bench().total() - (sum - 1.01)).abs() < 1e-9);
    }

    #[test]
    fn the_cpu_ceiling_is_the_cores_over_every_processs_cpu_per_clone() {
        let s = scenario(1000, 0, 20.0);
        // 40 ms per clone on 2 cores: 50 clones/s; 20 clones/s is 40 % of it.
        let (ceiling, share) = ceiling(&s).unwrap();
        assert!((ceiling - 50.0).abs() < 1e-9);
        assert!((share - 40.0).abs() < 1e-9);
        assert_eq!(controller_cpu_ms(&s), Some(1.5));
        let md = markdown(&report(), None, &Before::default(), "");
        assert!(
            md.contains(
                "| N=1000 | 20.0 | 1.50 | 3.50 | 30.00 | 3.00 | 1.00 | 1.00 | 40.00 | 50.0 | 40 |"
            ),
            "{md}"
        );
        // The calibration: 10 clones in 5 s.
        assert!(
            md.contains("| calibration (one at a time) | 2.0 | 1.50 |"),
            "{md}"
        );
        assert!(CpuSeconds::default().ceiling(10).is_none());
    }

    #[test]
    fn checks_use_the_targets_scenarios_or_the_largest() {
        let checks = checks(&report());
        let targets: Vec<&str> = checks.iter().map(|c| c.target.as_str()).collect();
        assert_eq!(checks.len(), 7, "{targets:?}");
        // Requests per clone at N=1000: 11 writes + 2 GETs + a watch ÷ 1000.
        assert_eq!(checks[0].scenario, "N=1000");
        assert!(close(checks[0].measured.unwrap(), 14.001));
        assert!(checks[0].verdict.starts_with("**missed**"));
        assert_eq!(checks[1].measured, Some(11.0));
        assert_eq!(checks[2].measured, Some(2.0));
        assert_eq!(checks[3].measured, Some(1.5));
        assert!(
            checks[3].verdict.starts_with("met"),
            "{}",
            checks[3].verdict
        );
        assert!(checks[3].verdict.ends_with("; 1.5× the 1 ms aim"));
        // No N=5000: the largest of each series stands in.
        assert_eq!(checks[4].scenario, "N=1000");
        assert_eq!(checks[5].scenario, "N=1000 + 10000 VMs");
        assert_eq!(checks[6].measured, Some(40.0));
        assert!(
            checks[6]
                .verdict
                .starts_with("**missed** by 10 % (20 % short")
        );
    }

    #[test]
    fn per_clone_targets_come_from_finished_scenarios() {
        let mut report = report();
        report.scenarios[1].timed_out = true;
        report.scenarios[1].audit = Some(audit_of(10));
        let checks = checks(&report);
        // Throughput stays at N=1000, marked; requests and CPU come from N=100, which finished.
        assert_eq!(checks[6].scenario, "N=1000 †");
        assert_eq!(checks[0].scenario, "N=100");
        assert!(close(checks[0].measured.unwrap(), 14.01));
        assert_eq!(checks[3].scenario, "N=100");
        report.scenarios[0].timed_out = true;
        let checks = super::checks(&report);
        assert_eq!(checks[0].scenario, CALIBRATION);
        assert!(close(checks[0].measured.unwrap(), 14.1));
        assert_eq!(checks[3].scenario, CALIBRATION);
        assert_eq!(checks[3].measured, Some(1.5));
    }

    /// The number of cells of a Markdown table row.
    fn cells(line: &str) -> usize {
        line.trim().trim_matches('|').split('|').count()
    }

    #[test]
    fn every_table_row_has_as_many_cells_as_its_header() {
        let md = markdown(&report(), None, &Before::default(), "");
        let mut header: Option<usize> = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                header = None;
                continue;
            }
            match header {
                None => header = Some(cells(line)),
                Some(n) => assert_eq!(cells(line), n, "{line}"),
            }
        }
        assert!(md.contains("| vmclone controller (`clone-controller`) | 7.00 | · | 3.00 | 1.00 | 1.00 | 2.00 | · | 0.00 | · | 11.00 | 2.00 | 14.00 |"), "{md}");
        // kube-apiserver itself wrote nothing: 0.00, not -0.00.
        assert!(md.contains("| kube-apiserver itself (`system:apiserver`) | · | · | · | · | · | 0.00 | · | · | · | 0.00 | 0.00 | 0.00 |"), "{md}");
        assert!(!md.contains("-0.00"), "{md}");
        assert!(md.contains("| **every user** |"), "{md}");
    }

    #[test]
    fn the_markdown_keeps_the_hand_written_analysis() {
        let report = report();
        let first = markdown(&report, None, &Before::default(), "");
        assert!(first.contains("_Not written yet"));
        assert!(first.contains("| N=1000 + 10000 VMs |"));
        let edited = first.replace(
            "_Not written yet: add profiling results and conclusions here._",
            "The snapshot lock bounds it.",
        );
        let second = markdown(&report, None, &Before::default(), &edited);
        assert!(second.contains("The snapshot lock bounds it."));
        assert!(!second.contains("_Not written yet"));
        assert_eq!(
            hand_written(&second).as_deref(),
            Some("The snapshot lock bounds it.")
        );
        assert!(
            summary(&report).contains("throughput at N=1000 ≥ 50 % of its CPU ceiling [N=1000]")
        );
    }

    #[test]
    fn passes_per_clone_and_their_mean_duration_are_reported() {
        let md = markdown(&report(), None, &Before::default(), "");
        assert!(md.contains("| passes per clone | ms per pass |"), "{md}");
        // 4 passes per clone, 2 ms of passes per clone: 0.5 ms per pass.
        assert!(md.contains("| 4.00 | 0.50 |"), "{md}");
    }

    #[test]
    fn an_earlier_run_beside_the_report_gets_a_before_and_after_table() {
        let after = report();
        assert!(!markdown(&after, None, &Before::default(), "").contains("### Before and after"));
        // The earlier controller: twice the passes and half the throughput at N=1000.
        let mut earlier = report();
        earlier.machine.git_commit = "1c0ae3c0123".into();
        earlier.settings.controller_bin = Some("/old/clone-controller".into());
        for s in &mut earlier.scenarios {
            s.controller.passes *= 2.0;
            s.clones_per_second /= 2.0;
        }
        let before = Before {
            report: Some(earlier),
            kubevirt: None,
        };
        let md = markdown(&after, None, &before, "");
        assert!(md.contains("### Before and after"), "{md}");
        assert!(
            md.contains(
                "(`/old/clone-controller`, run by the bench, stand-in and testbed of commit \
                 `1c0ae3c`)"
            ),
            "{md}"
        );
        // 14 controller requests per clone both times (the fixture's audit).
        assert!(
            md.contains(
                "| controller requests per clone ≤ 11 (writes, dry runs, GETs, lists and watches) \
                 | 14.00 [N=1000] | 14.00 [N=1000] | 11.00 requests | **missed**"
            ),
            "{md}"
        );
        assert!(
            md.contains("| passes per clone, N=1000 | 8.00 | 4.00 | – | – |"),
            "{md}"
        );
        assert!(
            md.contains("| throughput, N=1000 (clones/s) | 10.00 | 20.00 | – | – |"),
            "{md}"
        );
    }

    #[test]
    fn the_plot_has_one_line_per_scenario() {
        let svg = latency_svg(&report());
        assert_eq!(svg.matches("<polyline").count(), 3);
    }

    #[test]
    fn the_committed_report_still_loads() {
        // `--from-json` and `--kubevirt real` read docs/benchmarks.json back.
        let text = include_str!("../../../docs/benchmarks.json");
        let report: Report = serde_json::from_str(text).unwrap();
        assert!(!report.scenarios.is_empty());
        assert!(markdown(&report, None, &Before::default(), "").contains("## CPU ceiling"));
        let _: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).unwrap();
    }
}
