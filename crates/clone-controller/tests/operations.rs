//! Operating the controller binary: health and readiness endpoints, metrics that move, and leader
//! election between two replicas (only the leader reconciles; killing it hands over and in-flight
//! clones complete).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clone_api::v1beta1::ClonePhase;
use common::{Harness, clone_manifest, free_addr};
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;
use testenv::{Supervised, http_get, wait_for};

/// Long enough that a loaded machine (CI runs two cores) renews in time, short enough for a test.
const LEASE_SECONDS: u64 = 10;

/// The value of a sample line `name{labels} value` in an OpenMetrics text.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A replica of the controller binary; killed (`SIGKILL`) when dropped, so a failing test never
/// leaves one running.
struct Replica {
    name: String,
    _process: Supervised,
    metrics: SocketAddr,
    health: SocketAddr,
}

impl Replica {
    fn spawn(h: &Harness, name: &str, leader_elect: bool) -> Replica {
        let (metrics, health) = (free_addr().unwrap(), free_addr().unwrap());
        let mut args: Vec<std::ffi::OsString> = vec![
            format!("--namespace={}", h.ns).into(),
            format!("--kubeconfig={}", h.env.kubeconfig_path().display()).into(),
            format!("--metrics-addr={metrics}").into(),
            format!("--health-addr={health}").into(),
            format!("--leader-election-namespace={}", h.ns).into(),
            format!("--lease-duration-seconds={LEASE_SECONDS}").into(),
            "--log-format=json".into(),
        ];
        if leader_elect {
            args.push("--leader-elect".into());
        }
        let dir = std::env::temp_dir().join(format!(
            "vmclone-operations-{}-{}",
            std::process::id(),
            h.ns
        ));
        let mut process = Supervised::new(
            name,
            &dir,
            Path::new(env!("CARGO_BIN_EXE_clone-controller")),
            args,
        )
        .env("POD_NAME", name)
        .env("RUST_LOG", "info");
        process.start().unwrap();
        Replica {
            name: name.to_owned(),
            _process: process,
            metrics,
            health,
        }
    }

    async fn scrape(&self) -> anyhow::Result<String> {
        let (code, body) = http_get(self.metrics, "/metrics").await?;
        anyhow::ensure!(code == 200, "metrics answered {code}");
        Ok(body)
    }

    /// `kill -9`, as a crashed pod.
    fn kill(self) {
        drop(self);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_that_move() {
    let h = Harness::without_controller("ops-metrics").await.unwrap();
    let replica = Replica::spawn(&h, "solo", false);
    wait_for("/healthz ok", Duration::from_secs(30), || async {
        let (code, body) = http_get(replica.health, "/healthz").await?;
        anyhow::ensure!(code == 200 && body == "ok", "{code} {body}");
        Ok(())
    })
    .await
    .unwrap();
    wait_for(
        "/readyz ok once caches are synced",
        Duration::from_secs(30),
        || async {
            let (code, body) = http_get(replica.health, "/readyz").await?;
            anyhow::ensure!(code == 200, "{code} {body}");
            Ok(())
        },
    )
    .await
    .unwrap();

    let before = replica.scrape().await.unwrap();
    assert_eq!(sample(&before, "vmclone_leader "), Some(1.0), "{before}");
    assert_eq!(
        sample(&before, "vmclone_reconciles_total{result=\"ok\"}"),
        None,
        "{before}"
    );

    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();

    let after = wait_for(
        "metrics to show the clone",
        Duration::from_secs(30),
        || async {
            let text = replica.scrape().await?;
            anyhow::ensure!(
                sample(&text, "vmclone_clone_duration_seconds_count") == Some(1.0),
                "{text}"
            );
            anyhow::ensure!(
                sample(&text, "vmclone_clones{phase=\"Succeeded\"}") == Some(1.0),
                "{text}"
            );
            Ok(text)
        },
    )
    .await
    .unwrap();
    let reconciles = sample(&after, "vmclone_reconciles_total{result=\"ok\"}").unwrap_or(0.0);
    assert!(reconciles >= 3.0, "a clone takes several passes: {after}");
    assert!(
        sample(&after, "vmclone_reconcile_duration_seconds_count").unwrap_or(0.0) >= reconciles
    );
    replica.kill();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_killed_leader_hands_over() {
    // The replicas below are the only controllers.
    let h = Harness::slow("ops-leader", Duration::from_secs(1))
        .await
        .unwrap();
    let replicas = vec![
        Replica::spawn(&h, "replica-a", true),
        Replica::spawn(&h, "replica-b", true),
    ];

    let leases = h.api::<Lease>();
    // Both replicas become ready (caches synced); exactly one says it leads, and it holds the Lease.
    for r in &replicas {
        wait_for("replica ready", Duration::from_secs(60), || async {
            let (code, _) = http_get(r.health, "/readyz").await?;
            anyhow::ensure!(code == 200, "{code}");
            Ok(())
        })
        .await
        .unwrap();
    }
    let holder = wait_for(
        "exactly one replica leading, the Lease holder",
        Duration::from_secs(60),
        || async {
            let lease = leases.get_opt("vmclone-controller").await?;
            let holder = lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            let mut leading: Vec<&str> = Vec::new();
            for r in &replicas {
                let text = r.scrape().await.unwrap_or_default();
                if sample(&text, "vmclone_leader ") == Some(1.0) {
                    leading.push(r.name.as_str());
                }
            }
            anyhow::ensure!(
                leading == [holder.as_str()],
                "holder {holder:?}, leading {leading:?}"
            );
            Ok(holder)
        },
    )
    .await
    .unwrap();
    let (leader, follower): (Vec<_>, Vec<_>) = replicas.into_iter().partition(|r| r.name == holder);
    let (leader, follower) = (
        leader.into_iter().next().unwrap(),
        follower.into_iter().next().unwrap(),
    );
    assert_eq!(
        sample(&follower.scrape().await.unwrap(), "vmclone_leader "),
        Some(0.0)
    );

    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "first",
        "VirtualMachine",
        "vm",
        Some("t1"),
        json!({}),
    ))
    .await
    .unwrap();
    h.wait_phase("first", ClonePhase::Succeeded).await.unwrap();
    let follower_metrics = follower.scrape().await.unwrap();
    assert_eq!(
        sample(&follower_metrics, "vmclone_reconciles_total{result=\"ok\"}"),
        None,
        "the follower reconciled: {follower_metrics}"
    );
    assert!(
        sample(
            &leader.scrape().await.unwrap(),
            "vmclone_reconciles_total{result=\"ok\"}"
        )
        .unwrap_or(0.0)
            > 0.0
    );

    // A clone in flight when the leader dies completes under the new leader.
    h.create(&clone_manifest(
        "second",
        "VirtualMachine",
        "vm",
        Some("t2"),
        json!({}),
    ))
    .await
    .unwrap();
    h.wait_phase("second", ClonePhase::SnapshotInProgress)
        .await
        .unwrap();
    leader.kill();
    let handover = Duration::from_secs(LEASE_SECONDS * 3);
    wait_for("the follower takes the lease", handover, || async {
        let lease = leases.get("vmclone-controller").await?;
        let holder = lease.spec.and_then(|s| s.holder_identity);
        anyhow::ensure!(
            holder.as_deref() == Some(follower.name.as_str()),
            "holder {holder:?}"
        );
        Ok(())
    })
    .await
    .unwrap();
    h.wait_phase("second", ClonePhase::Succeeded).await.unwrap();
    assert_eq!(
        sample(&follower.scrape().await.unwrap(), "vmclone_leader "),
        Some(1.0)
    );
    follower.kill();
    h.stop().await;
}
