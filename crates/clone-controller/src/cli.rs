//! Flags of the controller binary. Every flag can also be set through an environment variable.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// How the `Snapshot` feature gate is read from the `KubeVirt` CR, when not from its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotGate {
    /// On only when `featureGates` lists `Snapshot` (KubeVirt up to v1.8).
    Listed,
    /// On unless `disabledFeatureGates` lists it and `featureGates` does not (KubeVirt from
    /// v1.9).
    DefaultOn,
}

/// Whether the `KubeVirt` CR is read to see if upstream KubeVirt's own clone controller runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpstreamCloneController {
    /// Act on no clone while the CR does not set virt-controller's `clone-controller-threads`
    /// to "0".
    Detect,
    /// Do not look (clusters where virt-operator does not deploy virt-controller).
    Ignore,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The vmclone controller: clones KubeVirt VirtualMachines through snapshot and restore.
#[derive(Debug, Clone, Parser)]
#[command(name = "clone-controller", version, about)]
pub struct Args {
    /// Path to a kubeconfig file; in-cluster configuration is used when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Only watch clones in this namespace (default: all namespaces).
    #[arg(long, env = "VMCLONE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Clones reconciled at the same time.
    #[arg(long, env = "VMCLONE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// How to read KubeVirt's Snapshot feature gate. Default: the rule of the KubeVirt release
    /// in the KubeVirt CR's status.observedKubeVirtVersion (listed up to v1.8, default-on from
    /// v1.9; listed when unknown).
    #[arg(long, env = "VMCLONE_SNAPSHOT_GATE", value_enum)]
    pub snapshot_gate: Option<SnapshotGate>,
    /// Whether to act on no clone while upstream KubeVirt's own clone controller runs (read from
    /// the KubeVirt CR's spec.customizeComponents.flags.controller).
    #[arg(
        long,
        env = "VMCLONE_UPSTREAM_CLONE_CONTROLLER",
        value_enum,
        default_value_t = UpstreamCloneController::Detect
    )]
    pub upstream_clone_controller: UpstreamCloneController,
    /// Address of the /metrics endpoint.
    #[arg(long, env = "VMCLONE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, env = "VMCLONE_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// Elect a leader through a Lease, for running two or more replicas.
    #[arg(long, env = "VMCLONE_LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "vmclone-system")]
    pub leader_election_namespace: String,
    /// Seconds a leader's Lease lasts without renewal (a dead leader is replaced after this).
    #[arg(long, env = "VMCLONE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds a restore may report the same KubeVirt error (which KubeVirt retries for ever)
    /// before its clone fails with `RestoreFailed`.
    #[arg(
        long,
        env = "VMCLONE_RESTORE_STALL_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    pub restore_stall_timeout_seconds: u64,
    /// Log format (the level comes from RUST_LOG).
    #[arg(long, env = "VMCLONE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_and_overrides() {
        let args = Args::parse_from(["clone-controller"]);
        assert_eq!(args.concurrency, 16);
        assert_eq!(args.snapshot_gate, None);
        assert_eq!(
            args.upstream_clone_controller,
            UpstreamCloneController::Detect
        );
        assert!(!args.leader_elect);
        assert_eq!(
            Duration::from_secs(args.restore_stall_timeout_seconds),
            clone_core::decide::DEFAULT_RESTORE_STALL_TIMEOUT
        );
        let args = Args::parse_from([
            "clone-controller",
            "--namespace=demo",
            "--snapshot-gate=default-on",
            "--log-format=json",
            "--leader-elect",
            "--upstream-clone-controller=ignore",
        ]);
        assert_eq!(args.namespace.as_deref(), Some("demo"));
        assert_eq!(args.snapshot_gate, Some(SnapshotGate::DefaultOn));
        assert_eq!(
            args.upstream_clone_controller,
            UpstreamCloneController::Ignore
        );
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(args.leader_elect);
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_name() {
        let err = Args::try_parse_from(["clone-controller", "--snapshot-gate=sometimes"])
            .expect_err("refused");
        assert!(err.to_string().contains("--snapshot-gate"), "{err}");
        let err = Args::try_parse_from(["clone-controller", "--upstream-clone-controller=off"])
            .expect_err("refused");
        assert!(
            err.to_string().contains("--upstream-clone-controller"),
            "{err}"
        );
    }
}
