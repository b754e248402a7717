//! One clone controller at a time: follows what the `KubeVirt` CR says about upstream KubeVirt's
//! own clone controller (`clone_core::upstream`) and makes it visible.
//!
//! While upstream's clone controller runs, `reconcile` acts on no clone (it reads the same rule
//! from the same cache on every pass). This task reports it: the gauge
//! `vmclone_upstream_clone_controller_active` is 1, `/readyz` fails with the reason and the fix,
//! the log says the exact `kubectl patch` once per change, and the leader publishes one Warning
//! event to the `KubeVirt` CR each time upstream's controller becomes active (not one per pass).
//! When the CR turns it off (or goes away), every clone is reconciled again.

use std::sync::Arc;

use clone_api::names::EventReason;
use clone_core::upstream::UpstreamCloneController;
use futures::{Stream, StreamExt};
use kube::Resource;
use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};

use crate::context::Context;

/// Wakes [`watch`] on every change of the `KubeVirt` cache, and yields `()` whenever every clone
/// must be reconciled because upstream's clone controller stopped.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Notified on every `KubeVirt` watch event (after the cache applied it).
    pub(crate) changed: Arc<Notify>,
    resume: mpsc::UnboundedSender<()>,
}

impl Signals {
    /// The signals and the stream of "reconcile every clone" triggers (for
    /// `Controller::reconcile_all_on`).
    pub(crate) fn new() -> (Signals, impl Stream<Item = ()> + Send + 'static) {
        let (resume, resumed) = mpsc::unbounded_channel();
        let resumed = futures::stream::unfold(resumed, |mut rx| async move {
            rx.recv().await.map(|()| ((), rx))
        });
        (
            Signals {
                changed: Arc::new(Notify::new()),
                resume,
            },
            resumed,
        )
    }
}

/// Follows the rule until the controller stops (the task is aborted then).
pub(crate) async fn watch(ctx: Arc<Context>, signals: Signals) {
    ctx.caches.ready().await;
    let metrics = ctx.telemetry.metrics.clone();
    let mut leadership = std::pin::pin!(ctx.leadership.changes().fuse());
    let mut last: Option<UpstreamCloneController> = None;
    // Whether this activation has had its event (published by the leader only).
    let mut announced = false;
    loop {
        let now = ctx.upstream();
        if last.as_ref() != Some(&now) {
            match &now {
                UpstreamCloneController::Active(active) => {
                    metrics.upstream_clone_controller_active.set(1);
                    ctx.telemetry.set_held(Some(active.advice()));
                    warn!(
                        kubevirt = %format!("{}/{}", active.namespace, active.name),
                        fix = %active.fix(),
                        "{}",
                        active.advice()
                    );
                }
                idle => {
                    metrics.upstream_clone_controller_active.set(0);
                    ctx.telemetry.set_held(None);
                    announced = false;
                    if last
                        .as_ref()
                        .is_some_and(UpstreamCloneController::is_active)
                    {
                        info!(
                            now = ?idle,
                            "upstream KubeVirt's clone controller is off: reconciling every clone"
                        );
                        let _ = signals.resume.send(());
                    }
                }
            }
            last = Some(now.clone());
        }
        if let UpstreamCloneController::Active(active) = &now
            && !announced
            && ctx.leadership.is_leader()
            && let Some(kubevirt) = ctx.caches.kubevirt()
        {
            announced = true;
            ctx.events.publish(
                kubevirt.object_ref(&()),
                EventReason::UpstreamCloneControllerActive,
                active.advice(),
            );
        }
        tokio::select! {
            () = signals.changed.notified() => {}
            Some(_) = leadership.next() => {}
        }
    }
}
