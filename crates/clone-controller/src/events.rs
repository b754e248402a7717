//! The event publisher: the controller's one way to publish Kubernetes events (events.k8s.io/v1),
//! about clones and about the `KubeVirt` CR.
//!
//! A reconcile pass hands its event over and goes on; a background task creates the Event objects,
//! a few at a time. Nothing is cached: `decide` publishes an event only with a transition (at most
//! one per status write, see `clone_core::Decision::event`), so there is no repeat to fold into a
//! series, and the controller's memory does not grow with the events it published. A full queue or
//! a refused create is logged and dropped: the clone's status already says what happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clone_api::names::EventReason;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::error::Error;

/// The `reportingController` of every event.
pub const REPORTING_CONTROLLER: &str = "vmclone-controller";
/// Events waiting to be created; beyond this a new one is dropped (and logged).
const QUEUE: usize = 4096;
/// Events created at once.
const IN_FLIGHT: usize = 8;
/// The API server's limit on an event's note, in bytes.
const NOTE_LIMIT: usize = 1024;
/// How long a stopping controller waits for queued events to be created.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// One event to create.
#[derive(Debug)]
struct Pending {
    regarding: ObjectReference,
    reason: EventReason,
    note: String,
    /// When it was published: its `eventTime`, so that events created concurrently keep the
    /// order of the passes that published them.
    at: jiff::Timestamp,
}

/// Hands events to the background task that creates them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Pending>,
}

impl Publisher {
    /// Starts the background task, which creates events as `instance` (the pod name; else
    /// [`REPORTING_CONTROLLER`]) of [`REPORTING_CONTROLLER`]. It ends, after creating what is
    /// queued, once every `Publisher` is dropped; the handle says when.
    pub fn start(client: Client, instance: Option<String>) -> (Publisher, JoinHandle<()>) {
        let instance = instance.unwrap_or_else(|| REPORTING_CONTROLLER.to_owned());
        let (queue, mut receiver) = mpsc::channel::<Pending>(QUEUE);
        let reporter = Arc::new(Reporter {
            client,
            instance,
            sequence: AtomicU64::new(0),
        });
        let task = tokio::spawn(async move {
            futures::stream::poll_fn(|cx| receiver.poll_recv(cx))
                .for_each_concurrent(IN_FLIGHT, |pending| {
                    let reporter = reporter.clone();
                    async move { reporter.create(pending).await }
                })
                .await;
        });
        (Publisher { queue }, task)
    }

    /// Queues an event about `regarding` (`Warning` when the reason is a warning). Never waits.
    pub fn publish(&self, regarding: ObjectReference, reason: EventReason, note: String) {
        let pending = Pending {
            regarding,
            reason,
            note,
            at: jiff::Timestamp::now(),
        };
        let (pending, why) = match self.queue.try_send(pending) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(p)) => (p, "the event queue is full"),
            Err(mpsc::error::TrySendError::Closed(p)) => (p, "the controller is stopping"),
        };
        warn!(
            reason = pending.reason.as_str(),
            regarding = pending.regarding.name.as_deref().unwrap_or_default(),
            "event dropped: {why}"
        );
    }
}

/// Creates the events.
struct Reporter {
    client: Client,
    instance: String,
    /// Makes event names unique within this process.
    sequence: AtomicU64,
}

impl Reporter {
    async fn create(&self, pending: Pending) {
        let namespace = pending
            .regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let event = event_object(&self.instance, sequence, &pending);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(source) = api.create(&PostParams::default(), &event).await {
            let error = Error::Publish {
                regarding: format!(
                    "{} {namespace}/{}",
                    pending.regarding.kind.as_deref().unwrap_or_default(),
                    pending.regarding.name.as_deref().unwrap_or_default()
                ),
                reason: pending.reason.as_str().to_owned(),
                source,
            };
            warn!(%error, "event not published");
        }
    }
}

/// The Event object of `pending`, reported by `instance`; `sequence` makes its name unique within
/// this process.
fn event_object(instance: &str, sequence: u64, pending: &Pending) -> Event {
    let regarding = &pending.regarding;
    let name = format!(
        "{}.{:x}{sequence:x}",
        regarding.name.as_deref().unwrap_or("object"),
        pending.at.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(pending.at)),
        action: Some("Reconcile".to_owned()),
        reason: Some(pending.reason.as_str().to_owned()),
        note: Some(truncated(pending.note.clone(), NOTE_LIMIT)),
        type_: Some(
            if pending.reason.is_warning() {
                "Warning"
            } else {
                "Normal"
            }
            .to_owned(),
        ),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        ..Event::default()
    }
}

/// `note` cut to at most `limit` bytes (at a character boundary, ending in `…`).
fn truncated(mut note: String, limit: usize) -> String {
    if note.len() <= limit {
        return note;
    }
    let ellipsis = '…';
    let mut end = limit - ellipsis.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push(ellipsis);
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(reason: EventReason, note: &str) -> Pending {
        Pending {
            regarding: ObjectReference {
                kind: Some("VirtualMachineClone".into()),
                name: Some("c".into()),
                namespace: Some("ns".into()),
                ..ObjectReference::default()
            },
            reason,
            note: note.into(),
            at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    #[test]
    fn an_event_is_about_its_object_at_its_pass_time_with_a_unique_name() {
        let p = pending(
            EventReason::TargetVMCreated,
            "created target VM t for clone c",
        );
        let first = event_object("pod-a", 0, &p);
        let second = event_object("pod-a", 1, &p);
        assert_ne!(first.metadata.name, second.metadata.name);
        assert!(first.metadata.name.as_deref().unwrap().starts_with("c."));
        assert_eq!(first.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(first.event_time, Some(MicroTime(p.at)));
        assert_eq!(first.type_.as_deref(), Some("Normal"));
        assert_eq!(first.reason.as_deref(), Some("TargetVMCreated"));
        assert_eq!(
            first.reporting_controller.as_deref(),
            Some(REPORTING_CONTROLLER)
        );
        assert_eq!(first.reporting_instance.as_deref(), Some("pod-a"));
        let warning = event_object("pod-a", 2, &pending(EventReason::TargetExists, "x"));
        assert_eq!(warning.type_.as_deref(), Some("Warning"));
    }

    #[test]
    fn a_long_note_is_cut_at_a_character_boundary_within_the_limit() {
        assert_eq!(truncated("short".into(), 10), "short");
        let long = "é".repeat(600); // 1200 bytes
        let cut = truncated(long, NOTE_LIMIT);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
    }
}
