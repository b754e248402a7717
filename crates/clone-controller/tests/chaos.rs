//! Test layer 5 at small size: a dozen clones while the controller is killed with SIGKILL at
//! every phase and at random, kube-apiserver and etcd restart, a clone and a source VM are
//! deleted mid-way and the sim fails snapshots and restores; then every invariant of
//! `chaos::check` must hold. `cargo xtask chaos` runs the same suite larger.

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
        "kill -9",
        "kube-apiserver restarted",
        "etcd restarted",
        "deleted clone",
        "deleted source VM",
    ] {
        assert!(
            report.faults.iter().any(|f| f.what.contains(kind)),
            "no {kind:?} fault fired:\n{}",
            report.summary()
        );
    }
    assert!(
        report.outcomes.values().any(|o| o == "Succeeded")
            && report.outcomes.values().any(|o| o.starts_with("Failed/")),
        "{}",
        report.summary()
    );
}
