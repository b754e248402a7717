//! Test layer 5 at small size: a dozen clones while the controller is killed with SIGKILL at
//! every phase and at random, kube-apiserver and etcd restart, a clone is deleted mid-way, a
//! source VM is deleted while the snapshots of it are held at their first step (then released),
//! KubeVirt's restore admission answers internal errors (HTTP 400) for a while, its `Snapshot`
//! feature gate is off for another while, the sim fails snapshots and restores, and a stuck
//! clone's restore is retried by KubeVirt for ever (its target refused except in dry runs) until
//! the controller's 15 s stall timeout fails it; then every invariant of `chaos::check` must
//! hold (outcomes, one target per success, no leaked temporary object or `stuck-*` VM, one event
//! per hold, the holds inside their fault windows, ...). `cargo xtask chaos` runs the same suite
//! larger.

#![allow(clippy::panic)]

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_survive_crashes_restarts_and_deletions() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let logs = std::env::temp_dir().join(format!("vmclone-chaos-{}", std::process::id()));
    let config = chaos::Config::small(PathBuf::from(env!("CARGO_BIN_EXE_clone-controller")), logs);
    let report = match chaos::run(config).await {
        Ok(report) => report,
        Err(e) => panic!("the chaos run could not complete: {e:#}"),
    };
    eprintln!("{}", report.summary());
    assert!(report.passed(), "{}", report.summary());
    // The run really did what it claims: every kind of fault fired.
    for kind in [
        "kill -9 controller",
        "kube-apiserver restart",
        "etcd restart",
        "clone deletion",
        "source deletion (snapshots held)",
        "held snapshots released",
        "restore admission errors on",
        "restore admission errors off",
        "Snapshot feature gate off",
        "Snapshot feature gate on",
    ] {
        assert!(
            report.faults.iter().any(|f| f.kind == kind),
            "no {kind:?} fault fired:\n{}",
            report.summary()
        );
    }
    let outcome = |o: &str| report.outcomes.values().any(|x| x == o);
    assert!(
        outcome("Succeeded")
            && outcome("Failed/RestoreFailed")
            && outcome("Failed/RestoreFailed (stalled)")
            && report.leaks.is_empty(),
        "{}",
        report.summary()
    );
}
