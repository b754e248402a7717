//! Leader election through a `Lease`, for running two or more replicas.
//!
//! Every replica watches and caches (so a standby can take over at once); only the leader
//! reconciles. When a replica becomes leader every clone is reconciled once, so nothing that
//! happened while it stood by is missed. On shutdown the lease is released.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to elect a leader.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Namespace of the Lease (the controller's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease lasts without renewal; a dead leader is replaced after this.
    pub lease_duration: Duration,
}

/// Whether this replica may reconcile.
#[derive(Debug, Clone)]
pub struct Leadership(Option<watch::Receiver<bool>>);

impl Leadership {
    /// Without leader election: always leading.
    pub fn always() -> Self {
        Leadership(None)
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.0.as_ref().is_none_or(|rx| *rx.borrow())
    }

    /// Yields `true`/`false` each time leadership changes (nothing without leader election).
    pub fn changes(&self) -> impl Stream<Item = bool> + Send + 'static {
        let rx = self.0.clone();
        futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            rx.changed().await.ok()?;
            let leading = *rx.borrow_and_update();
            Some((leading, Some(rx)))
        })
    }
}

/// A running election: holds the lease manager's task until shutdown.
#[derive(Debug)]
pub struct Election {
    task:
        JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

impl Election {
    /// Waits (bounded) for the lease manager to release the lease; call after every
    /// [`Leadership`] handle is dropped.
    pub async fn release(self) {
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("lease released"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "releasing the lease"),
            Ok(Err(error)) => tracing::warn!(%error, "lease task"),
            Err(_) => tracing::warn!("lease not released within 10s"),
        }
    }
}

/// Starts competing for the lease.
pub async fn elect(
    client: Client,
    config: &LeaderElection,
) -> anyhow::Result<(Leadership, Election)> {
    let seconds = config.lease_duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(seconds)
        .with_grace((seconds / 3).max(1))
        .with_field_manager(format!("{}-lease", clone_api::names::FIELD_MANAGER))
        .build()
        .await?;
    let (rx, task) = manager.watch().await;
    Ok((Leadership(Some(rx)), Election { task }))
}

/// A stream that yields `()` each time this replica becomes leader.
pub fn on_acquired(leadership: &Leadership) -> impl Stream<Item = ()> + Send + 'static {
    leadership
        .changes()
        .filter_map(|leading| async move { leading.then_some(()) })
}
