//! Metrics (OpenMetrics on `/metrics`) and health (`/healthz`, `/readyz`).
//!
//! `/healthz` answers as long as the process serves HTTP. `/readyz` turns ready once the caches
//! hold their first full list, whether or not this replica leads (a standby with warm caches can
//! take over at once), and is not ready, saying why, while upstream KubeVirt's own clone
//! controller runs (then vmclone acts on no clone).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Label: how a reconcile ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or an error label.
    pub result: String,
}

/// Label: a clone phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The phase (`Pending` for `""`).
    pub phase: String,
}

/// Label: the API verb of a failed call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    /// `get`, `create`, `delete`, `patch`.
    pub verb: String,
}

/// The controller's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Reconciles by result.
    pub reconciles: Family<ResultLabel, Counter>,
    /// Reconcile duration in seconds.
    pub reconcile_duration: Histogram,
    /// Clones by phase (computed at scrape time from the cache).
    pub clones: Family<PhaseLabel, Gauge>,
    /// Seconds from a clone's creation to `Succeeded`.
    pub clone_duration: Histogram,
    /// Failed API calls by verb.
    pub api_errors: Family<VerbLabel, Counter>,
    /// 1 while this replica leads (or runs without leader election).
    pub leader: Gauge,
    /// Entries of per-clone state (backoffs and remembered status writes): live clones only.
    pub clone_state_entries: Gauge,
    /// 1 while upstream KubeVirt's clone controller runs (vmclone then acts on no clone).
    pub upstream_clone_controller_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ResultLabel, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let clones = Family::<PhaseLabel, Gauge>::default();
        let clone_duration = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        let api_errors = Family::<VerbLabel, Counter>::default();
        let leader = Gauge::default();
        let clone_state_entries = Gauge::default();
        let upstream_clone_controller_active = Gauge::default();
        let mut registry = Registry::with_prefix("vmclone");
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        registry.register("clones", "Clones by phase", clones.clone());
        registry.register(
            "clone_duration_seconds",
            "Time from a clone's creation to Succeeded",
            clone_duration.clone(),
        );
        registry.register("api_errors", "Failed API calls by verb", api_errors.clone());
        registry.register("leader", "1 while this replica reconciles", leader.clone());
        registry.register(
            "clone_state_entries",
            "Entries of per-clone state the controller keeps (backoffs, remembered status writes)",
            clone_state_entries.clone(),
        );
        registry.register(
            "upstream_clone_controller_active",
            "1 while upstream KubeVirt's own clone controller runs (vmclone then acts on no clone)",
            upstream_clone_controller_active.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_duration,
            clones,
            clone_duration,
            api_errors,
            leader,
            clone_state_entries,
            upstream_clone_controller_active,
        }
    }
}

impl Metrics {
    /// The metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }

    /// Recounts the clones by phase.
    pub fn count_clones(&self, clones: &Store<VirtualMachineClone>) {
        let phases = [
            ClonePhase::Unset,
            ClonePhase::SnapshotInProgress,
            ClonePhase::RestoreInProgress,
            ClonePhase::CreatingTargetVM,
            ClonePhase::Succeeded,
            ClonePhase::Failed,
        ];
        let state = clones.state();
        for phase in phases {
            let n = state
                .iter()
                .filter(|c| c.status.as_ref().map(|s| s.phase).unwrap_or_default() == phase)
                .count();
            self.clones
                .get_or_create(&PhaseLabel {
                    phase: phase_label(phase).to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

fn phase_label(phase: ClonePhase) -> &'static str {
    match phase {
        ClonePhase::Unset => "Pending",
        other => other.as_str(),
    }
}

/// What the HTTP endpoints report on: shared by the controller and the servers.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    held: Arc<Mutex<Option<String>>>,
    clones: Arc<OnceLock<Store<VirtualMachineClone>>>,
}

impl Telemetry {
    /// Marks the controller ready (caches synced).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the caches are synced.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Holds readiness back with a reason (`None`: released).
    pub fn set_held(&self, reason: Option<String>) {
        if let Ok(mut held) = self.held.lock() {
            *held = reason;
        }
    }

    /// What `/readyz` answers: `Ok(())`, or why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.is_ready() {
            return Err("caches not synced yet".to_owned());
        }
        match self.held.lock().ok().and_then(|held| held.clone()) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Gives the scrape handler the clone cache (to count clones by phase).
    pub fn watch_clones(&self, store: Store<VirtualMachineClone>) {
        let _ = self.clones.set(store);
    }

    fn scrape(&self) -> String {
        if let Some(store) = self.clones.get() {
            self.metrics.count_clones(store);
        }
        self.metrics.encode()
    }
}

async fn metrics(State(t): State<Telemetry>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.scrape(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(t): State<Telemetry>) -> (StatusCode, String) {
    match t.readiness() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// The `/metrics` router.
pub fn metrics_router(telemetry: Telemetry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(telemetry)
}

/// The `/healthz` and `/readyz` router.
pub fn health_router(telemetry: Telemetry) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry)
}

/// Binds `addr` (port 0 picks a free one) and serves `router` in a task; returns the address.
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "HTTP server stopped");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_and_typed() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&ResultLabel {
                result: "ok".into(),
            })
            .inc();
        m.api_errors
            .get_or_create(&VerbLabel {
                verb: "create".into(),
            })
            .inc();
        m.reconcile_duration.observe(0.01);
        m.clone_duration.observe(3.0);
        m.leader.set(1);
        m.upstream_clone_controller_active.set(1);
        let text = m.encode();
        for expected in [
            "# TYPE vmclone_reconciles counter",
            "vmclone_reconciles_total{result=\"ok\"} 1",
            "vmclone_api_errors_total{verb=\"create\"} 1",
            "# TYPE vmclone_reconcile_duration_seconds histogram",
            "# TYPE vmclone_clone_duration_seconds histogram",
            "vmclone_leader 1",
            "# TYPE vmclone_upstream_clone_controller_active gauge",
            "vmclone_upstream_clone_controller_active 1",
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    #[test]
    fn readiness_waits_for_the_caches_then_for_no_hold() {
        let t = Telemetry::default();
        assert_eq!(t.readiness(), Err("caches not synced yet".to_owned()));
        t.set_held(Some("upstream runs".into()));
        assert_eq!(t.readiness(), Err("caches not synced yet".to_owned()));
        t.set_ready();
        assert_eq!(t.readiness(), Err("upstream runs".to_owned()));
        t.set_held(None);
        assert_eq!(t.readiness(), Ok(()));
    }
}
