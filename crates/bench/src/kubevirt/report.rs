//! The KubeVirt section of `benchmarks.md` and the summary printed at the end, from a
//! [`KubeVirtReport`]. Every ratio and per-clone figure is computed here or in the bench, never
//! by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::{Comparison, KubeVirtReport, Path, Ratio, Run};
use crate::audit::{self, PerClone};
use crate::report::{f, load, opt, write_machine_rows};

pub const TITLE: &str = "Against KubeVirt's own clone controller";
pub const ANCHOR: &str = "against-kubevirts-own-clone-controller";

const HAND_BEGIN: &str = "<!-- hand-written kubevirt analysis: begin (kept when `cargo xtask bench` writes this file again) -->";
const HAND_END: &str = "<!-- hand-written kubevirt analysis: end -->";

/// The hand-written part of the section in an earlier `benchmarks.md`, if any.
pub fn hand_written(previous: &str) -> Option<String> {
    let start = previous.find(HAND_BEGIN)? + HAND_BEGIN.len();
    let end = previous[start..].find(HAND_END)? + start;
    Some(previous[start..end].trim().to_owned())
}

fn usable(run: &Run) -> bool {
    run.error.is_none()
}

/// Per size (in the order the runs came), the controllers against the bare path and each other.
pub fn compare(runs: &[Run]) -> Vec<Comparison> {
    let mut sizes: Vec<usize> = Vec::new();
    for run in runs {
        if !sizes.contains(&run.clones) {
            sizes.push(run.clones);
        }
    }
    sizes
        .into_iter()
        .map(|clones| {
            let find = |path: Path| {
                runs.iter()
                    .find(|r| r.clones == clones && r.path == path && usable(r))
            };
            // The bare path is a reference only if every restore completed.
            let bare = find(Path::Bare).filter(|r| !r.timed_out && r.duration_seconds > 0.0);
            let controllers: Vec<Ratio> = [Path::Vmclone, Path::Upstream]
                .into_iter()
                .filter_map(find)
                .map(|run| Ratio {
                    path: run.path,
                    duration_seconds: run.duration_seconds,
                    timed_out: run.timed_out,
                    times_bare: bare.map(|b| run.duration_seconds / b.duration_seconds),
                    share_of_bare_rate: bare
                        .filter(|b| b.clones_per_second > 0.0)
                        .map(|b| run.clones_per_second / b.clones_per_second),
                })
                .collect();
            let duration = |path: Path| {
                controllers
                    .iter()
                    .find(|r| r.path == path)
                    .map(|r| r.duration_seconds)
            };
            let vmclone_speedup = match (duration(Path::Vmclone), duration(Path::Upstream)) {
                (Some(v), Some(u)) if v > 0.0 => Some(u / v),
                _ => None,
            };
            Comparison {
                clones,
                bare_seconds: bare.map(|b| b.duration_seconds),
                controllers,
                vmclone_speedup,
            }
        })
        .collect()
}

fn ratio<'a>(report: &'a KubeVirtReport, run: &Run) -> Option<&'a Ratio> {
    report
        .comparisons
        .iter()
        .find(|c| c.clones == run.clones)?
        .controllers
        .iter()
        .find(|r| r.path == run.path)
}

/// `≥ ` for a run that stopped at its timeout (its duration is a lower bound).
fn at_least(run: &Run) -> &'static str {
    if run.timed_out { "≥ " } else { "" }
}

fn times_bare(report: &KubeVirtReport, run: &Run) -> String {
    if run.path == Path::Bare {
        return if usable(run) {
            "1.00×".into()
        } else {
            "–".into()
        };
    }
    ratio(report, run)
        .and_then(|r| r.times_bare)
        .map_or_else(|| "–".into(), |t| format!("{}{}×", at_least(run), f(t, 2)))
}

fn outcome(run: &Run) -> String {
    if let Some(err) = &run.error {
        let short: String = err.chars().take(60).collect();
        return format!("error: {}", short.replace('|', "/").replace('\n', " "));
    }
    format!("{}/{}/{}", run.succeeded, run.failed, run.unfinished)
}

fn process_cell(run: &Run, name: &str) -> (String, String) {
    run.process(name).map_or_else(
        || ("–".to_owned(), "–".to_owned()),
        |p| (f(p.cpu_ms_per_clone, 1), f(p.peak_rss_mib, 1)),
    )
}

const RESULTS_HEADER: &str = "| N | path | succeeded/failed/unfinished | duration s | × bare path | clones/s | all restores complete s | lag p50 s | lag p99 s | lag max s | latency p50 s | latency p99 s |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

fn results_row(report: &KubeVirtReport, run: &Run) -> String {
    let lag = |pick: fn(&crate::stats::Latency) -> f64| {
        if run.path == Path::Bare {
            "·".to_owned()
        } else {
            opt(run.lag.as_ref().map(pick), 2)
        }
    };
    format!(
        "| {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
        run.clones,
        run.path.label(),
        outcome(run),
        at_least(run),
        f(run.duration_seconds, 1),
        times_bare(report, run),
        f(run.clones_per_second, 2),
        opt(run.restores_complete_seconds, 1),
        lag(|l| l.p50),
        lag(|l| l.p99),
        lag(|l| l.max),
        opt(run.latency.map(|l| l.p50), 2),
        opt(run.latency.map(|l| l.p99), 2),
    )
}

/// The users in the order the tables show them: the clone controllers, KubeVirt, the rest.
fn users(report: &KubeVirtReport) -> Vec<String> {
    audit::users_in_order(report.runs.iter().filter_map(|r| r.requests.as_ref()))
}

/// Requests per clone of every user but the bench (the cost of making the clones).
fn without_bench(by_user: &BTreeMap<String, PerClone>) -> PerClone {
    audit::sum_except(by_user, &["bench"])
}

/// Writes as this section counts them: dry runs included (write requests, only never stored).
fn writes(v: PerClone) -> f64 {
    v.writes + v.dry_runs
}

fn per_clone_cell(value: Option<PerClone>) -> String {
    match value {
        Some(v) if v.total() > 0.0 => format!("{} / {}", f(writes(v), 2), f(v.reads, 2)),
        Some(_) => "·".to_owned(),
        None => "–".to_owned(),
    }
}

/// The short summary printed to stdout at the end.
pub fn summary(report: &KubeVirtReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{RESULTS_HEADER}");
    for run in &report.runs {
        let _ = writeln!(out, "{}", results_row(report, run));
    }
    let _ = writeln!(out);
    for line in facts(report) {
        let _ = writeln!(out, "- {line}");
    }
    for error in &report.errors {
        let _ = writeln!(out, "error: {error}");
    }
    out
}

/// Statements of fact for the section's analysis.
pub fn facts(report: &KubeVirtReport) -> Vec<String> {
    let mut out = Vec::new();
    for comparison in &report.comparisons {
        let n = comparison.clones;
        let Some(bare) = comparison.bare_seconds else {
            out.push(format!(
                "N={n}: the bare path did not complete, so no ratio to it."
            ));
            continue;
        };
        let mut parts = Vec::new();
        for ratio in &comparison.controllers {
            let run = report
                .runs
                .iter()
                .find(|r| r.clones == n && r.path == ratio.path);
            let rate = run.map_or(f64::NAN, |r| r.clones_per_second);
            parts.push(format!(
                "{} {}{} s ({}{}× the bare path, {} clones/s)",
                ratio.path.label(),
                if ratio.timed_out { "≥ " } else { "" },
                f(ratio.duration_seconds, 1),
                if ratio.timed_out { "≥ " } else { "" },
                opt(ratio.times_bare, 2),
                f(rate, 2),
            ));
        }
        let mut line = format!(
            "N={n}: the bare path made {n} targets in {} s; {}.",
            f(bare, 1),
            if parts.is_empty() {
                "no controller run completed".to_owned()
            } else {
                parts.join("; ")
            }
        );
        if let Some(speedup) = comparison.vmclone_speedup {
            let _ = write!(
                line,
                " vmclone finished in {} of upstream's time ({}× as fast).",
                percent(1.0 / speedup),
                f(speedup, 2)
            );
        }
        out.push(line);
    }
    for run in report
        .runs
        .iter()
        .filter(|r| r.path != Path::Bare && usable(r))
    {
        if let Some(lag) = run.lag {
            out.push(format!(
                "{}: from a restore seen complete to its clone seen `Succeeded`: p50 {} s, p99 {} s, max {} s (mean {} s){}.",
                run.name,
                f(lag.p50, 2),
                f(lag.p99, 2),
                f(lag.max, 2),
                f(lag.mean, 2),
                if run.lag_unmeasured > 0 {
                    format!(
                        "; {} clones succeeded without the bench seeing their restore complete",
                        run.lag_unmeasured
                    )
                } else {
                    String::new()
                }
            ));
        }
        if let Some(all) = run.restores_complete_seconds
            && run.unfinished == 0
            && run.duration_seconds > 0.0
        {
            out.push(format!(
                "{}: the last restore completed {} s after the first create, the last clone succeeded {} s after it ({} s later).",
                run.name,
                f(all, 1),
                f(run.duration_seconds, 1),
                f(run.duration_seconds - all, 1)
            ));
        }
    }
    let sizes: Vec<usize> = report.comparisons.iter().map(|c| c.clones).collect();
    for n in sizes {
        let find = |path: Path| {
            report
                .runs
                .iter()
                .find(|r| r.clones == n && r.path == path && usable(r))
        };
        let requests = |path: Path| -> Option<(PerClone, BTreeMap<String, PerClone>)> {
            let run = find(path)?;
            let by_user = audit::per_clone_by_user(run.requests.as_ref()?, run.clones);
            Some((without_bench(&by_user), by_user))
        };
        if let (Some((v, v_users)), Some((u, u_users))) =
            (requests(Path::Vmclone), requests(Path::Upstream))
        {
            let get = |m: &BTreeMap<String, PerClone>, user: &str| {
                m.get(user).copied().unwrap_or_default()
            };
            let with = get(&u_users, "virt-controller");
            let without = get(&v_users, "virt-controller");
            out.push(format!(
                "N={n}, API requests per clone (writes / reads, every component but the bench): vmclone run {} / {}, upstream run {} / {}. The clone controller's own: vmclone's process {} / {}; upstream's is inside virt-controller, whose requests were {} / {} with upstream's clone controller and {} / {} without it (a difference of {} / {}, upstream's clone controller's share if the rest of virt-controller did the same work in both runs).",
                f(writes(v), 1),
                f(v.reads, 1),
                f(writes(u), 1),
                f(u.reads, 1),
                f(writes(get(&v_users, "clone-controller")), 1),
                f(get(&v_users, "clone-controller").reads, 1),
                f(writes(get(&u_users, "virt-controller")), 1),
                f(get(&u_users, "virt-controller").reads, 1),
                f(writes(get(&v_users, "virt-controller")), 1),
                f(get(&v_users, "virt-controller").reads, 1),
                f(writes(with) - writes(without), 1),
                f(with.reads - without.reads, 1),
            ));
        }
        if let (Some(v), Some(u)) = (find(Path::Vmclone), find(Path::Upstream)) {
            let cpu = |run: &Run, name: &str| run.process(name).map(|p| p.cpu_ms_per_clone);
            out.push(format!(
                "N={n}, CPU per clone: vmclone's controller {} ms plus virt-controller {} ms (clone threads 0); virt-controller with upstream's clone controller {} ms.",
                opt(cpu(v, "clone-controller"), 1),
                opt(cpu(v, "virt-controller"), 1),
                opt(cpu(u, "virt-controller"), 1),
            ));
        }
    }
    for run in report.runs.iter().filter(|r| usable(r)) {
        if run.failed > 0 || run.unfinished > 0 {
            let failures = run
                .failures
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(format!(
                "{}: {} failed ({}) and {} did not finish in time.",
                run.name,
                run.failed,
                if failures.is_empty() {
                    "–".to_owned()
                } else {
                    failures
                },
                run.unfinished
            ));
        }
        if run.watch_errors > 0 {
            out.push(format!(
                "{}: the bench's watches were interrupted {} times (they list again and go on; a state seen only after a relist is timed late).",
                run.name, run.watch_errors
            ));
        }
    }
    out
}

/// Without kernel workers (`kworker/…`): they rename themselves by the work they pick up, so
/// their time between two listings cannot be told (and is mostly I/O for the processes above).
pub fn without_kernel_workers(processes: &[(String, f64)]) -> Vec<(String, f64)> {
    processes
        .iter()
        .filter(|(name, _)| !name.starts_with("kworker/"))
        .cloned()
        .collect()
}

fn percent(share: f64) -> String {
    format!("{} %", f(share * 100.0, 0))
}

fn cores(value: Option<f64>) -> String {
    opt(value, 2)
}

/// The section of `benchmarks.md`: `## Against KubeVirt's own clone controller` and its
/// subsections. `previous` is the earlier file, for the hand-written part.
pub fn markdown(report: &KubeVirtReport, previous: &str) -> String {
    let mut md = String::new();
    let m = &report.machine;
    let st = &report.settings;
    let _ = writeln!(md, "## {TITLE}\n");
    let _ = writeln!(
        md,
        "Generated by `{}` on {} (took {:.0} min), a separate run from the sections above: \
         KubeVirt {}'s real virt-controller and virt-api instead of the stand-in. The raw numbers \
         are in [benchmarks-kubevirt.json](benchmarks-kubevirt.json).\n",
        report.command,
        m.date_start,
        report.total_seconds / 60.0,
        st.kubevirt_version
    );
    let _ = writeln!(
        md,
        "> **One run on a shared, noisy machine.** Each path ran once per size on a {}-core VM \
         that other engineers' builds and tests used at the same time (load average {} at the \
         start, {} at the end; per run below). kube-apiserver, etcd, virt-controller, virt-api, \
         the clone controller and the bench share those cores; the CPU table shows how much \
         went to other work (\"other\").\n",
        m.nproc,
        load(&m.load_average_start),
        load(&m.load_average_end),
    );

    let _ = writeln!(md, "### How it was run ({})\n", st.kubevirt_version);
    let _ = writeln!(md, "```sh\n{}\n```\n", report.command);
    write_machine_rows(&mut md, m);
    let _ = writeln!(
        md,
        "| kube-apiserver | {} (testenv: etcd with `--unsafe-no-fsync`, kube-controller-manager with GC, audit log at `Metadata` level, blocking) |",
        m.kube_apiserver_version
    );
    let _ = writeln!(
        md,
        "| KubeVirt | {} virt-controller and virt-api built from the Go module, headless, with KubeVirt's own webhooks; `Snapshot` feature gate |",
        st.kubevirt_version
    );
    let _ = writeln!(
        md,
        "| vmclone | `target/release/clone-controller --kubeconfig <clone-controller's> --namespace <run> --concurrency {}`, `RUST_LOG={}`; virt-controller with `--clone-controller-threads 0`; vmclone's CRD |",
        st.concurrency, st.controller_log_level
    );
    let _ = writeln!(
        md,
        "| upstream | virt-controller's own clone controller, `--clone-controller-threads {}` (its default); upstream's v1.7.0 clone CRD |",
        st.upstream_clone_threads
    );
    let _ = writeln!(
        md,
        "| creators | {} concurrent creators (tokio tasks sharing one client, user `bench`) |",
        st.concurrency
    );
    let _ = writeln!(
        md,
        "| timeouts | {} s (per size {}) |",
        st.timeout_seconds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        st.sizes
            .iter()
            .map(|n| format!("N={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(md, "\nMethod:\n");
    for line in [
        "**Testbed.** A fresh private control plane per size and path (`TestEnv::start_with_options`): etcd, kube-apiserver, kube-controller-manager, KubeVirt's virt-api with its admission webhooks and virt-controller, and the audit log. Every component has its own user (`testenv::IDENTITIES`): virt-controller, virt-api, clone-controller, bench; kube-controller-manager runs as `admin`. No stand-in runs: containerDisk VMs need no storage.",
        "**Sources.** N source VMs per run, one per clone (`source-<i>`: halted, one containerDisk, an interface with a MAC, a firmware serial, labels and an annotation under `somekey/`), created by the bench and reconciled by virt-controller (`Stopped`, volume snapshot support recorded) before anything is measured.",
        "**Clone runs.** The bench creates N clones at once (`clone-<i>`: source `source-<i>`, target `target-<i>`, label and annotation filters `[\"*\", \"!somekey/*\"]`) with the creators above. vmclone's controller process is started (and `/readyz`) before the first create.",
        "**The bare path.** No clone controller: the bench creates a `VirtualMachineSnapshot` of each source (`snapshot-<i>`) and, as soon as its watch sees it `readyToUse`, a `VirtualMachineRestore` of it to a new VM `target-<i>` (no patches). Its time runs from the first snapshot create to the last restore seen complete. It leaves its snapshots and restores in place (the clone controllers delete theirs), so it is the least a clone controller can take on this path.",
        "**Duration and throughput.** From the first create call to the last clone seen `Succeeded` by the bench's watch; clones/s = clones that succeeded ÷ duration; × bare path = duration ÷ the bare path's at the same N.",
        "**Lag.** Per clone, from the moment the bench's watch on restores first saw the clone's restore (`tmp-restore-<clone UID>`, found by its owner reference) with `status.complete: true` to the moment its watch on clones first saw the clone `Succeeded` (both on the bench's monotonic clock). Both controllers delete the restore in the pass that marks the clone `Succeeded`. Latency: a clone's create call returned → `Succeeded` seen (bare path: snapshot create returned → restore complete seen).",
        "**API requests.** kube-apiserver's audit log, every request received from the first create to the end of cleanup (all snapshots, restores and contents gone; the bare path: the last restore complete), each audit ID once, attributed by user. Writes: `create`, `update`, `patch` (server-side apply too), `delete`, dry runs included; reads: `get`, `list`, `watch` and non-resource requests. Leases (leader election, API server identity) are left out of the per-clone figures. Shown as writes / reads per clone.",
        "**CPU and memory.** `utime + stime` of `/proc/<pid>/stat` over the same window ÷ N, and `VmHWM` (peak RSS over the process's life) at its end. virt-controller's pid is found through `/proc/*/cmdline` (its kubeconfig is inside the run's control-plane folder). Upstream's clone controller runs inside virt-controller, so for the upstream run only virt-controller's figures exist; they are given for every run, so that the vmclone run's virt-controller (clone threads 0) shows what the rest of KubeVirt costs on the same path.",
    ] {
        let _ = writeln!(md, "- {line}");
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n### Results ({})\n", st.kubevirt_version);
    let _ = writeln!(md, "{RESULTS_HEADER}");
    for run in &report.runs {
        let _ = writeln!(md, "{}", results_row(report, run));
    }
    let _ = writeln!(
        md,
        "\n\"≥\": the run stopped at its timeout with clones unfinished. Lag and latency are in \
         seconds; the bare path has no clone, so no lag.\n"
    );
    let _ = writeln!(
        md,
        "| N | vmclone × bare path | upstream × bare path | upstream ÷ vmclone |\n|---:|---:|---:|---:|"
    );
    for c in &report.comparisons {
        let get = |path: Path| {
            c.controllers
                .iter()
                .find(|r| r.path == path)
                .and_then(|r| {
                    r.times_bare
                        .map(|t| format!("{}{}", if r.timed_out { "≥ " } else { "" }, f(t, 2)))
                })
                .unwrap_or_else(|| "–".to_owned())
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            c.clones,
            get(Path::Vmclone),
            get(Path::Upstream),
            opt(c.vmclone_speedup, 2)
        );
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n### Controller CPU and memory\n");
    let _ = writeln!(
        md,
        "Upstream's clone controller lives inside virt-controller: its CPU and memory are part of \
         virt-controller's. vmclone's controller is a process of its own; the virt-controller \
         beside it runs with `--clone-controller-threads 0`.\n"
    );
    let _ = writeln!(
        md,
        "| N | path | vmclone controller CPU ms/clone | vmclone controller peak RSS MiB | virt-controller CPU ms/clone | virt-controller peak RSS MiB | controller ready s |\n|---:|---|---:|---:|---:|---:|---:|"
    );
    for run in &report.runs {
        let (vc, vr) = process_cell(run, "clone-controller");
        let (kc, kr) = process_cell(run, "virt-controller");
        let _ = writeln!(
            md,
            "| {} | {} | {vc} | {vr} | {kc} | {kr} | {} |",
            run.clones,
            run.path.label(),
            opt(run.controller_ready_seconds, 1)
        );
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n### API requests per clone by writer\n");
    let users = users(report);
    let _ = writeln!(
        md,
        "Writes / reads per clone, by user (from the audit log; leases left out). \"all but the \
         bench\" is what making the clones cost the API server besides the bench's own creates, \
         watches and polls.\n"
    );
    let _ = write!(md, "| N | path |");
    for user in &users {
        let _ = write!(md, " {} |", audit::who(user));
    }
    let _ = writeln!(md, " all but the bench | leases in the window |");
    let _ = write!(md, "|---:|---|");
    for _ in &users {
        let _ = write!(md, "---:|");
    }
    let _ = writeln!(md, "---:|---:|");
    for run in &report.runs {
        let _ = write!(md, "| {} | {} |", run.clones, run.path.label());
        match &run.requests {
            Some(requests) => {
                let by_user = audit::per_clone_by_user(requests, run.clones);
                for user in &users {
                    let _ = write!(
                        md,
                        " {} |",
                        per_clone_cell(Some(by_user.get(user).copied().unwrap_or_default()))
                    );
                }
                let _ = writeln!(
                    md,
                    " {} | {} |",
                    per_clone_cell(Some(without_bench(&by_user))),
                    audit::lease_requests(requests)
                );
            }
            None => {
                for _ in &users {
                    let _ = write!(md, " – |");
                }
                let _ = writeln!(md, " – | – |");
            }
        }
    }
    if let Some(&largest) = report.settings.sizes.iter().max() {
        for run in report
            .runs
            .iter()
            .filter(|r| r.clones == largest && r.requests.is_some())
        {
            let Some(requests) = &run.requests else {
                continue;
            };
            let _ = writeln!(md, "\n#### {}: every request by user\n", run.name);
            let _ = writeln!(md, "| user | verb | resource | per clone | count |");
            let _ = writeln!(md, "|---|---|---|---:|---:|");
            let mut rows: Vec<_> = requests
                .rows
                .iter()
                .filter(|r| !audit::is_lease(r))
                .collect();
            let rank = |user: &str| users.iter().position(|u| u == user).unwrap_or(usize::MAX);
            rows.sort_by(|a, b| {
                (
                    rank(&a.user),
                    !audit::is_write(&a.verb),
                    &a.verb,
                    &a.resource,
                )
                    .cmp(&(
                        rank(&b.user),
                        !audit::is_write(&b.verb),
                        &b.verb,
                        &b.resource,
                    ))
            });
            for row in rows {
                let _ = writeln!(
                    md,
                    "| {} | {} | `{}` | {} | {} |",
                    row.user,
                    row.verb_label(),
                    row.resource,
                    f(row.count as f64 / run.clones.max(1) as f64, 2),
                    row.count
                );
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n### CPU and load ({})\n", st.kubevirt_version);
    let _ = writeln!(
        md,
        "Average cores used from the first create to the end of cleanup (the machine has {}), \
         and the load average before and after each run (its control plane's start included).\n",
        m.nproc
    );
    let _ = writeln!(
        md,
        "| N | path | wall s | machine busy | kube-apiserver | etcd | virt-controller | virt-api | vmclone controller | kube-controller-manager | bench | other | load before | load after |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for run in &report.runs {
        let cpu = run.cpu.as_ref();
        let of = |name: &str| cores(cpu.and_then(|c| c.processes.get(name).copied()));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.clones,
            run.path.label(),
            opt(cpu.map(|c| c.wall_seconds), 1),
            cores(cpu.map(|c| c.machine_busy)),
            of("kube-apiserver"),
            of("etcd"),
            of("virt-controller"),
            of("virt-api"),
            of("clone-controller"),
            of("kube-controller-manager"),
            of("bench"),
            cores(cpu.map(|c| c.other)),
            load(&run.load_average_before),
            load(&run.load_average_after),
        );
    }
    let _ = writeln!(
        md,
        "\nWhat else ran (the busiest processes that are not this run's, summed by command name, \
         average cores over the window; processes that ended within it, such as short compiler \
         runs, are not seen, and kernel workers are left out):\n"
    );
    let _ = writeln!(md, "| N | path | other processes |\n|---:|---|---|");
    for run in &report.runs {
        let others = run
            .cpu
            .as_ref()
            .map(|c| {
                without_kernel_workers(&c.other_processes)
                    .iter()
                    .map(|(name, cores)| format!("`{name}` {}", f(*cores, 2)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "–".to_owned());
        let _ = writeln!(md, "| {} | {} | {others} |", run.clones, run.path.label());
    }

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "\n### Analysis ({})\n", st.kubevirt_version);
    let _ = writeln!(
        md,
        "Facts the generator can state from this run (regenerated on every run):\n"
    );
    for line in facts(report) {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(md, "\n{HAND_BEGIN}\n");
    let hand = hand_written(previous)
        .unwrap_or_else(|| "(No hand-written analysis of this run yet.)".to_owned());
    let _ = writeln!(md, "{hand}\n");
    let _ = writeln!(md, "{HAND_END}\n");

    // ------------------------------------------------------------------------------------------
    let _ = writeln!(md, "### Logs and errors ({})\n", st.kubevirt_version);
    let _ = writeln!(
        md,
        "Each run's vmclone controller log and its control plane's virt-controller and virt-api \
         logs are kept in `{}` (not committed). KubeVirt's warning and error lines are counted \
         from the first create to the end of cleanup.\n",
        report.logs_dir
    );
    let _ = writeln!(md, "| run | process | log | WARN lines | ERROR lines |");
    let _ = writeln!(md, "|---|---|---|---:|---:|");
    for run in &report.runs {
        for log in &run.logs {
            let _ = writeln!(
                md,
                "| {} | {} | `{}` | {} | {} |",
                run.name, log.process, log.file, log.warnings, log.errors
            );
        }
    }
    for run in &report.runs {
        for log in run.logs.iter().filter(|l| !l.excerpt.is_empty()) {
            let _ = writeln!(
                md,
                "\n{}, {} (distinct lines, shortened):\n\n```text",
                run.name, log.process
            );
            for line in &log.excerpt {
                let _ = writeln!(md, "{line}");
            }
            let _ = writeln!(md, "```");
        }
    }
    if report.errors.is_empty() {
        let _ = writeln!(md, "\nNo run failed.");
    } else {
        let _ = writeln!(md, "\nRuns that failed:\n");
        for error in &report.errors {
            let _ = writeln!(md, "- {}", error.replace('\n', " "));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditRequests, AuditRow};
    use crate::model::Machine;
    use crate::stats;

    fn run(path: Path, clones: usize, duration: f64) -> Run {
        let mut run = Run::new(path, clones);
        run.succeeded = clones;
        run.unfinished = 0;
        run.duration_seconds = duration;
        run.clones_per_second = clones as f64 / duration;
        run
    }

    fn machine() -> Machine {
        Machine {
            nproc: 2,
            cpu_model: "cpu".into(),
            memory_mib: 1024,
            kernel: "6".into(),
            load_average_start: [1.0, 2.0, 3.0],
            load_average_end: [4.0, 5.0, 6.0],
            date_start: "start".into(),
            date_end: "end".into(),
            git_commit: "abc".into(),
            git_dirty: false,
            clock_ticks_per_second: 100,
            kube_apiserver_version: "v1.36.3".into(),
            rustc: "rustc".into(),
        }
    }

    fn report(runs: Vec<Run>) -> KubeVirtReport {
        KubeVirtReport {
            command: "cargo xtask bench --kubevirt real".into(),
            machine: machine(),
            settings: super::super::model::Settings {
                sizes: vec![100],
                concurrency: 16,
                upstream_clone_threads: 3,
                kubevirt_version: "v1.7.0".into(),
                timeout_seconds: vec![620],
                controller_log_level: "warn".into(),
            },
            comparisons: compare(&runs),
            runs,
            errors: Vec::new(),
            total_seconds: 600.0,
            logs_dir: "target/bench-logs/x".into(),
        }
    }

    #[test]
    fn ratios_are_computed_against_the_bare_path_of_the_same_size() {
        let runs = vec![
            run(Path::Bare, 100, 15.0),
            run(Path::Vmclone, 100, 45.0),
            run(Path::Upstream, 100, 200.0),
            run(Path::Bare, 50, 8.0),
        ];
        let comparisons = compare(&runs);
        assert_eq!(comparisons.len(), 2);
        let c = &comparisons[0];
        assert_eq!((c.clones, c.bare_seconds), (100, Some(15.0)));
        assert_eq!(c.controllers[0].path, Path::Vmclone);
        assert_eq!(c.controllers[0].times_bare, Some(3.0));
        assert_eq!(
            c.controllers[1].times_bare.map(|t| (t * 1000.0).round()),
            Some(13333.0)
        );
        assert_eq!(c.controllers[0].share_of_bare_rate, Some(15.0 / 45.0));
        assert_eq!(
            c.vmclone_speedup.map(|s| (s * 1000.0).round()),
            Some(4444.0)
        );
        assert!(comparisons[1].controllers.is_empty());
        assert_eq!(comparisons[1].vmclone_speedup, None);
    }

    #[test]
    fn kernel_workers_are_left_out() {
        let processes = vec![
            ("kworker/u8:1-events".to_owned(), 0.25),
            ("rustc".to_owned(), 0.4),
        ];
        assert_eq!(
            without_kernel_workers(&processes),
            [("rustc".to_owned(), 0.4)]
        );
    }

    #[test]
    fn a_bare_path_that_timed_out_is_no_reference() {
        let mut bare = run(Path::Bare, 10, 300.0);
        bare.timed_out = true;
        let mut failed = run(Path::Upstream, 10, 1.0);
        failed.error = Some("boom".into());
        let comparisons = compare(&[bare, run(Path::Vmclone, 10, 5.0), failed]);
        assert_eq!(comparisons[0].bare_seconds, None);
        assert_eq!(comparisons[0].controllers.len(), 1);
        assert_eq!(comparisons[0].controllers[0].times_bare, None);
        assert_eq!(comparisons[0].vmclone_speedup, None);
    }

    #[test]
    fn the_section_has_the_tables_and_keeps_the_hand_written_part() {
        let mut vmclone = run(Path::Vmclone, 100, 45.0);
        vmclone.lag = stats::latency(&[0.2, 0.3, 0.4]);
        vmclone.requests = Some(AuditRequests {
            window_start: "a".into(),
            window_end: "b".into(),
            rows: vec![
                AuditRow {
                    user: "clone-controller".into(),
                    verb: "patch".into(),
                    resource: "virtualmachineclones/status.clone.kubevirt.io".into(),
                    dry_run: false,
                    count: 300,
                },
                AuditRow {
                    user: "clone-controller".into(),
                    verb: "create".into(),
                    resource: "virtualmachines.kubevirt.io".into(),
                    dry_run: true,
                    count: 100,
                },
                AuditRow {
                    user: "bench".into(),
                    verb: "create".into(),
                    resource: "virtualmachineclones.clone.kubevirt.io".into(),
                    dry_run: false,
                    count: 100,
                },
                AuditRow {
                    user: "virt-controller".into(),
                    verb: "update".into(),
                    resource: "leases.coordination.k8s.io".into(),
                    dry_run: false,
                    count: 9,
                },
            ],
            unparsed_lines: 0,
        });
        let report = report(vec![
            run(Path::Bare, 100, 15.0),
            vmclone,
            run(Path::Upstream, 100, 200.0),
        ]);
        let previous = format!("x\n{HAND_BEGIN}\nMy words.\n{HAND_END}\ny");
        let md = markdown(&report, &previous);
        assert!(md.starts_with(&format!("## {TITLE}\n")));
        assert!(
            md.contains("| 100 | vmclone | 100/0/0 | 45.0 | 3.00× | 2.22 |"),
            "{md}"
        );
        assert!(md.contains("| 100 | 3.00 | 13.33 | 4.44 |"), "{md}");
        assert!(md.contains("My words."));
        // 300 status patches and 100 dry runs for 100 clones (a dry run counts as a write
        // here); the bench's creates are not the controller's.
        assert!(md.contains("| 4.00 / 0.00 |"), "{md}");
        assert!(md.contains("| 4.00 / 0.00 | 9 |"), "{md}");
        assert!(
            md.contains("| clone-controller | create (dry run) | `virtualmachines.kubevirt.io` | 1.00 | 100 |"),
            "{md}"
        );
        assert!(md.contains("vmclone finished in 22 % of upstream's time (4.44× as fast)"));
        assert!(md.contains("p50 0.30 s, p99 0.40 s, max 0.40 s"), "{md}");
        assert_eq!(hand_written(&md).as_deref(), Some("My words."));
    }
}
