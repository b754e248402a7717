//! A watch on one kind of object in a namespace that records, per object, when the bench first
//! saw it in each state of interest (a clone `Succeeded`, a restore complete, a snapshot ready),
//! with the bench's own monotonic clock. Optionally tells a channel at each first sighting.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

/// The states an object is in now, and attributes worth keeping (its owner, a failure reason).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Observation {
    pub states: Vec<&'static str>,
    pub attributes: Vec<(&'static str, String)>,
}

pub type Classify = fn(&DynamicObject) -> Observation;

/// What the watch has seen of one object.
#[derive(Debug, Default, Clone)]
pub struct Sighting {
    /// State → when the bench first saw the object in it.
    pub first: BTreeMap<&'static str, Instant>,
    /// The attributes of the latest version seen.
    pub attributes: BTreeMap<&'static str, String>,
}

#[derive(Debug, Default)]
struct Shared {
    objects: HashMap<String, Sighting>,
    errors: usize,
}

/// A running watch; stops when dropped.
#[derive(Debug)]
pub struct ObjectWatch {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// A clone: `Succeeded` or `Failed` (with the `Ready` condition's reason).
pub fn clone_states(object: &DynamicObject) -> Observation {
    let phase = object
        .data
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut observation = Observation::default();
    match phase {
        "Succeeded" => observation.states.push("Succeeded"),
        "Failed" => {
            observation.states.push("Failed");
            observation.attributes.push((
                "reason",
                ready_reason(&object.data).unwrap_or("Failed").to_owned(),
            ));
        }
        _ => {}
    }
    observation
}

/// A restore: `complete` (`status.complete`), or `failed` (a `Failure` condition that is true);
/// its owning clone as `owner`.
pub fn restore_states(object: &DynamicObject) -> Observation {
    let mut observation = Observation::default();
    if object
        .data
        .pointer("/status/complete")
        .and_then(Value::as_bool)
        == Some(true)
    {
        observation.states.push("complete");
    }
    if condition_true(&object.data, "Failure") {
        observation.states.push("failed");
    }
    if let Some(owner) = object
        .owner_references()
        .iter()
        .find(|o| o.kind == "VirtualMachineClone")
    {
        observation.attributes.push(("owner", owner.name.clone()));
    }
    observation
}

/// A snapshot: `ready` (`status.readyToUse`) or `failed` (phase `Failed`).
pub fn snapshot_states(object: &DynamicObject) -> Observation {
    let mut observation = Observation::default();
    if object
        .data
        .pointer("/status/readyToUse")
        .and_then(Value::as_bool)
        == Some(true)
    {
        observation.states.push("ready");
    }
    if object.data.pointer("/status/phase").and_then(Value::as_str) == Some("Failed") {
        observation.states.push("failed");
    }
    observation
}

fn conditions(data: &Value) -> impl Iterator<Item = &Value> {
    data.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn condition_true(data: &Value, kind: &str) -> bool {
    conditions(data).any(|c| c["type"] == kind && c["status"] == "True")
}

fn ready_reason(data: &Value) -> Option<&str> {
    conditions(data)
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["reason"].as_str())
        .filter(|r| !r.is_empty())
}

fn record(
    shared: &Mutex<Shared>,
    object: &DynamicObject,
    classify: Classify,
    tell: Option<&UnboundedSender<(String, &'static str)>>,
) {
    let observation = classify(object);
    let now = Instant::now();
    let name = object.name_any();
    let Ok(mut shared) = shared.lock() else {
        return;
    };
    let sighting = shared.objects.entry(name.clone()).or_default();
    for (key, value) in observation.attributes {
        sighting.attributes.insert(key, value);
    }
    for state in observation.states {
        if !sighting.first.contains_key(state) {
            sighting.first.insert(state, now);
            if let Some(tell) = tell {
                let _ = tell.send((name.clone(), state));
            }
        }
    }
}

fn note_error(shared: &Mutex<Shared>) {
    if let Ok(mut shared) = shared.lock() {
        shared.errors += 1;
    }
}

impl ObjectWatch {
    /// Lists the objects (so nothing created afterwards is missed), then watches from there.
    pub async fn start(
        client: Client,
        namespace: &str,
        resource: &ApiResource,
        classify: Classify,
        tell: Option<UnboundedSender<(String, &'static str)>>,
    ) -> Result<Self> {
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, resource);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut version = list_into(&api, &shared, classify, tell.as_ref())
            .await
            .with_context(|| format!("listing {}", resource.plural))?;
        let task = {
            let (shared, stop) = (shared.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let params = WatchParams::default().timeout(290);
                    let stream = match api.watch(&params, &version).await {
                        Ok(stream) => stream,
                        Err(_) => {
                            note_error(&shared);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    };
                    let mut stream = std::pin::pin!(stream);
                    let mut relist = false;
                    while let Some(event) = stream.next().await {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        match event {
                            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                                version = o.resource_version().unwrap_or(version);
                                record(&shared, &o, classify, tell.as_ref());
                            }
                            Ok(WatchEvent::Deleted(o)) => {
                                version = o.resource_version().unwrap_or(version);
                                record(&shared, &o, classify, tell.as_ref());
                            }
                            Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                            Ok(WatchEvent::Error(status)) => {
                                note_error(&shared);
                                relist = status.code == 410;
                                break;
                            }
                            Err(_) => note_error(&shared),
                        }
                    }
                    if relist {
                        loop {
                            match list_into(&api, &shared, classify, tell.as_ref()).await {
                                Ok(v) => {
                                    version = v;
                                    break;
                                }
                                Err(_) => {
                                    note_error(&shared);
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                }
                            }
                        }
                    }
                }
            })
        };
        Ok(Self { shared, stop, task })
    }

    /// How many objects have been seen in `state`.
    pub fn count(&self, state: &str) -> usize {
        self.shared
            .lock()
            .map(|s| {
                s.objects
                    .values()
                    .filter(|o| o.first.contains_key(state))
                    .count()
            })
            .unwrap_or_default()
    }

    /// Everything seen so far, and the number of watch errors.
    pub fn seen(&self) -> (HashMap<String, Sighting>, usize) {
        self.shared
            .lock()
            .map(|s| (s.objects.clone(), s.errors))
            .unwrap_or_default()
    }
}

impl Drop for ObjectWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// Lists every object (pages of 500) into `shared`; returns the list's resource version.
async fn list_into(
    api: &Api<DynamicObject>,
    shared: &Mutex<Shared>,
    classify: Classify,
    tell: Option<&UnboundedSender<(String, &'static str)>>,
) -> Result<String> {
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for object in &page.items {
            record(shared, object, classify, tell);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(page.metadata.resource_version.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn states_of_clones_restores_and_snapshots() {
        let clone = object(json!({
            "apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
            "metadata": {"name": "c"},
            "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False", "reason": "SnapshotFailed"}]},
        }));
        assert_eq!(
            clone_states(&clone),
            Observation {
                states: vec!["Failed"],
                attributes: vec![("reason", "SnapshotFailed".to_owned())]
            }
        );
        let restore = object(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
            "metadata": {"name": "tmp-restore-u", "ownerReferences": [
                {"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone", "name": "clone-00001", "uid": "u"}]},
            "status": {"complete": true, "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        assert_eq!(
            restore_states(&restore),
            Observation {
                states: vec!["complete"],
                attributes: vec![("owner", "clone-00001".to_owned())]
            }
        );
        let pending = object(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s"}, "status": {"readyToUse": false, "phase": "InProgress"},
        }));
        assert_eq!(snapshot_states(&pending), Observation::default());
        let ready = object(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s"}, "status": {"readyToUse": true, "phase": "Succeeded"},
        }));
        assert_eq!(snapshot_states(&ready).states, ["ready"]);
    }

    #[test]
    fn a_state_is_recorded_and_told_once() {
        let shared = Mutex::new(Shared::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ready = object(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s"}, "status": {"readyToUse": true},
        }));
        record(&shared, &ready, snapshot_states, Some(&tx));
        let first = shared.lock().unwrap().objects["s"].first["ready"];
        record(&shared, &ready, snapshot_states, Some(&tx));
        assert_eq!(shared.lock().unwrap().objects["s"].first["ready"], first);
        assert_eq!(rx.try_recv().ok(), Some(("s".to_owned(), "ready")));
        assert!(rx.try_recv().is_err());
    }
}
