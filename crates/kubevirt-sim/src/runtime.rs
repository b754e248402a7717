//! The sim's small controller runtime: one watch per kind feeding a shared [`Cache`] (with
//! secondary indexes), and one [`WorkQueue`] per controller with de-duplication, bounded
//! concurrency, delayed requeues and per-key error backoff.
//!
//! Why not one `kube::runtime::Controller` per controller: five controllers look at the same
//! eight kinds; sharing one watch and one cache per kind keeps the sim's API traffic (which the
//! benchmarks count) and memory at one copy, and lets a change of any kind reach every
//! controller that cares through the indexes.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::Error;

/// Namespace and name of an object (namespace empty for cluster-scoped kinds).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    /// The namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjKey {
    /// The key of `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object.
    pub fn of<K: Resource>(object: &K) -> Self {
        let meta = object.meta();
        Self::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Computes the index values of an object (e.g. `ns/vm` for a snapshot of `vm`).
pub type IndexFn<K> = fn(&K) -> Vec<String>;

/// The objects of one kind as last seen by its watch, with secondary indexes.
#[derive(Debug)]
pub struct Cache<K> {
    kind: &'static str,
    indexes: Vec<(&'static str, IndexFn<K>)>,
    state: RwLock<CacheState<K>>,
    ready: watch::Sender<bool>,
}

#[derive(Debug)]
struct CacheState<K> {
    objects: HashMap<ObjKey, Arc<K>>,
    relist: Option<HashMap<ObjKey, Arc<K>>>,
    index: HashMap<(&'static str, String), BTreeSet<ObjKey>>,
    reverse: HashMap<ObjKey, Vec<(&'static str, String)>>,
}

impl<K> Cache<K> {
    /// An empty cache of `kind` maintaining `indexes` (name, function).
    pub fn new(kind: &'static str, indexes: Vec<(&'static str, IndexFn<K>)>) -> Self {
        Self {
            kind,
            indexes,
            state: RwLock::new(CacheState {
                objects: HashMap::new(),
                relist: None,
                index: HashMap::new(),
                reverse: HashMap::new(),
            }),
            ready: watch::channel(false).0,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, CacheState<K>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map is still whole.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, CacheState<K>> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The object `namespace/name`, if the watch has seen it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read()
            .objects
            .get(&ObjKey::new(namespace, name))
            .cloned()
    }

    /// The object with `key`.
    pub fn get_key(&self, key: &ObjKey) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// Every object.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// Every object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read()
            .objects
            .iter()
            .filter(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The keys of the objects whose index `index` contains `value`.
    pub fn lookup(&self, index: &'static str, value: &str) -> Vec<ObjKey> {
        self.read()
            .index
            .get(&(index, value.to_owned()))
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until the first full list arrived.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = ready.wait_for(|r| *r).await;
    }

    fn unindex(state: &mut CacheState<K>, key: &ObjKey) {
        if let Some(entries) = state.reverse.remove(key) {
            for entry in entries {
                if let Some(keys) = state.index.get_mut(&entry) {
                    keys.remove(key);
                    if keys.is_empty() {
                        state.index.remove(&entry);
                    }
                }
            }
        }
    }

    fn reindex(&self, state: &mut CacheState<K>, key: &ObjKey, object: &K) {
        Self::unindex(state, key);
        let mut entries = Vec::new();
        for (name, function) in &self.indexes {
            for value in function(object) {
                state
                    .index
                    .entry((name, value.clone()))
                    .or_default()
                    .insert(key.clone());
                entries.push((*name, value));
            }
        }
        if !entries.is_empty() {
            state.reverse.insert(key.clone(), entries);
        }
    }

    fn upsert(&self, key: ObjKey, object: Arc<K>) {
        let mut state = self.write();
        if let Some(relist) = state.relist.as_mut() {
            relist.insert(key.clone(), object.clone());
        }
        self.reindex(&mut state, &key, &object);
        state.objects.insert(key, object);
    }

    fn remove(&self, key: &ObjKey) {
        let mut state = self.write();
        if let Some(relist) = state.relist.as_mut() {
            relist.remove(key);
        }
        Self::unindex(&mut state, key);
        state.objects.remove(key);
    }

    fn begin_relist(&self) {
        self.write().relist = Some(HashMap::new());
    }

    fn finish_relist(&self) {
        let mut state = self.write();
        if let Some(objects) = state.relist.take() {
            state.index.clear();
            state.reverse.clear();
            for (key, object) in &objects {
                self.reindex(&mut state, key, object);
            }
            state.objects = objects;
        }
        drop(state);
        self.ready.send_replace(true);
    }
}

/// Runs the watch of one kind for ever: keeps `cache` current and calls `on_change` with every
/// added, changed, deleted (and, after each re-list, every listed) object. Objects that do not
/// deserialise are logged and skipped.
pub async fn run_watch<K, F>(
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    cache: Arc<Cache<K>>,
    on_change: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    F: Fn(&K) + Send + Sync,
{
    let mut stream = pin!(watcher::watcher(api, config).default_backoff());
    while let Some(event) = stream.next().await {
        match event {
            Err(err) => warn!(kind = cache.kind, %err, "watch failed; retrying"),
            Ok(Event::Init) => cache.begin_relist(),
            Ok(Event::InitDone) => cache.finish_relist(),
            Ok(Event::Apply(guard) | Event::InitApply(guard)) => {
                let key = ObjKey::of(&guard);
                match guard.0 {
                    Ok(object) => {
                        let object = Arc::new(object);
                        cache.upsert(key, object.clone());
                        on_change(&object);
                    }
                    Err(invalid) => {
                        warn!(kind = cache.kind, %key, error = %invalid.error, "skipping an object that does not deserialise");
                        cache.remove(&key);
                    }
                }
            }
            Ok(Event::Delete(guard)) => {
                let key = ObjKey::of(&guard);
                cache.remove(&key);
                if let Ok(object) = guard.0 {
                    on_change(&object);
                }
            }
        }
    }
}

/// The sending side of a controller's queue: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct WorkQueue {
    tx: mpsc::UnboundedSender<ObjKey>,
}

/// The receiving side, consumed by [`run_queue`].
#[derive(Debug)]
pub struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<ObjKey>,
}

/// A new queue.
pub fn queue() -> (WorkQueue, QueueReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (WorkQueue { tx }, QueueReceiver { rx })
}

impl WorkQueue {
    /// Asks for `key` to be reconciled (soon; once even if asked many times meanwhile).
    pub fn enqueue(&self, key: ObjKey) {
        // Fails only once the sim is stopped.
        let _ = self.tx.send(key);
    }

    /// Asks for every key of `keys`.
    pub fn enqueue_all(&self, keys: impl IntoIterator<Item = ObjKey>) {
        for key in keys {
            self.enqueue(key);
        }
    }
}

/// What a reconcile asks for: nothing more (`None`), or another look after a delay.
pub type Requeue = Option<Duration>;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs a controller for ever: takes keys from the queue, runs `reconcile` for up to `workers`
/// keys at a time (never twice at once for one key; a key asked for while running runs again
/// after), schedules requested requeues, and retries failures with exponential backoff.
pub async fn run_queue<F, Fut>(
    controller: &'static str,
    mut receiver: QueueReceiver,
    workers: usize,
    reconcile: F,
) where
    F: Fn(ObjKey) -> Fut,
    Fut: Future<Output = Result<Requeue, Error>> + Send + 'static,
{
    let workers = workers.max(1);
    let mut pending: VecDeque<ObjKey> = VecDeque::new();
    let mut pending_set: HashSet<ObjKey> = HashSet::new();
    let mut running: HashMap<tokio::task::Id, ObjKey> = HashMap::new();
    let mut running_keys: HashSet<ObjKey> = HashSet::new();
    let mut dirty: HashSet<ObjKey> = HashSet::new();
    let mut failures: HashMap<ObjKey, u32> = HashMap::new();
    let mut timers: BinaryHeap<Reverse<(Instant, ObjKey)>> = BinaryHeap::new();
    let mut scheduled: HashMap<ObjKey, Instant> = HashMap::new();
    let mut tasks: JoinSet<Result<Requeue, Error>> = JoinSet::new();

    let push = |key: ObjKey,
                pending: &mut VecDeque<ObjKey>,
                pending_set: &mut HashSet<ObjKey>,
                running_keys: &HashSet<ObjKey>,
                dirty: &mut HashSet<ObjKey>| {
        if running_keys.contains(&key) {
            dirty.insert(key);
        } else if pending_set.insert(key.clone()) {
            pending.push_back(key);
        }
    };
    let schedule = |key: ObjKey,
                    after: Duration,
                    timers: &mut BinaryHeap<Reverse<(Instant, ObjKey)>>,
                    scheduled: &mut HashMap<ObjKey, Instant>| {
        let at = Instant::now() + after;
        let earlier = scheduled.get(&key).is_none_or(|existing| at < *existing);
        if earlier {
            scheduled.insert(key.clone(), at);
            timers.push(Reverse((at, key)));
        }
    };

    loop {
        while running.len() < workers {
            let Some(key) = pending.pop_front() else {
                break;
            };
            pending_set.remove(&key);
            running_keys.insert(key.clone());
            let handle = tasks.spawn(reconcile(key.clone()));
            running.insert(handle.id(), key);
        }
        let next_timer = timers.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            message = receiver.rx.recv() => match message {
                Some(key) => push(key, &mut pending, &mut pending_set, &running_keys, &mut dirty),
                None => return,
            },
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, outcome) = match joined {
                    Ok((id, outcome)) => (id, Some(outcome)),
                    Err(err) => (err.id(), None),
                };
                let Some(key) = running.remove(&id) else { continue };
                running_keys.remove(&key);
                match outcome {
                    Some(Ok(requeue)) => {
                        failures.remove(&key);
                        if let Some(after) = requeue {
                            schedule(key.clone(), after, &mut timers, &mut scheduled);
                        }
                    }
                    Some(Err(err)) => {
                        let count = failures.entry(key.clone()).or_insert(0);
                        *count = count.saturating_add(1);
                        let delay = BACKOFF_START
                            .saturating_mul(2u32.saturating_pow(count.saturating_sub(1).min(16)))
                            .min(BACKOFF_MAX);
                        if err.is_transient() {
                            debug!(controller, %key, error = %err, retry_in = ?delay, "reconcile failed");
                        } else {
                            warn!(controller, %key, error = %err, retry_in = ?delay, "reconcile failed");
                        }
                        schedule(key.clone(), delay, &mut timers, &mut scheduled);
                    }
                    None => {
                        warn!(controller, %key, "reconcile panicked; retrying later");
                        schedule(key.clone(), BACKOFF_MAX, &mut timers, &mut scheduled);
                    }
                }
                if dirty.remove(&key) {
                    push(key, &mut pending, &mut pending_set, &running_keys, &mut dirty);
                }
            }
            () = sleep_until_or_forever(next_timer) => {
                let now = Instant::now();
                while let Some(Reverse((at, _))) = timers.peek() {
                    if *at > now {
                        break;
                    }
                    let Some(Reverse((at, key))) = timers.pop() else { break };
                    // Skip entries superseded by an earlier schedule of the same key.
                    if scheduled.get(&key) == Some(&at) {
                        scheduled.remove(&key);
                        push(key, &mut pending, &mut pending_set, &running_keys, &mut dirty);
                    }
                }
            }
        }
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[allow(clippy::ptr_arg)] // an `IndexFn<String>` takes `&String`
    fn by_first_letter(text: &String) -> Vec<String> {
        text.chars()
            .next()
            .map(|c| c.to_string())
            .into_iter()
            .collect()
    }

    #[test]
    fn the_cache_indexes_and_unindexes() {
        let cache: Cache<String> = Cache::new("text", vec![("first", by_first_letter)]);
        cache.upsert(ObjKey::new("ns", "a"), Arc::new("apple".to_owned()));
        cache.upsert(ObjKey::new("ns", "b"), Arc::new("avocado".to_owned()));
        assert_eq!(cache.lookup("first", "a").len(), 2);
        cache.upsert(ObjKey::new("ns", "b"), Arc::new("banana".to_owned()));
        assert_eq!(cache.lookup("first", "a"), vec![ObjKey::new("ns", "a")]);
        assert_eq!(cache.lookup("first", "b"), vec![ObjKey::new("ns", "b")]);
        cache.remove(&ObjKey::new("ns", "a"));
        assert!(cache.lookup("first", "a").is_empty());
        assert_eq!(cache.in_namespace("ns").len(), 1);
        assert!(cache.get("ns", "b").is_some());
    }

    #[test]
    fn a_relist_replaces_the_contents() {
        let cache: Cache<String> = Cache::new("text", vec![("first", by_first_letter)]);
        cache.upsert(ObjKey::new("ns", "gone"), Arc::new("gone".to_owned()));
        cache.begin_relist();
        cache.upsert(ObjKey::new("ns", "kept"), Arc::new("kept".to_owned()));
        cache.finish_relist();
        assert!(cache.get("ns", "gone").is_none());
        assert!(cache.lookup("first", "g").is_empty());
        assert_eq!(cache.lookup("first", "k").len(), 1);
    }

    #[tokio::test]
    async fn the_queue_deduplicates_requeues_and_retries() {
        let (queue, receiver) = super::queue();
        let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let overlap = Arc::new(AtomicUsize::new(0));
        let (calls2, in_flight2, overlap2) = (calls.clone(), in_flight.clone(), overlap.clone());
        let runner = tokio::spawn(run_queue("test", receiver, 4, move |key: ObjKey| {
            let n = {
                let mut calls = calls2.lock().unwrap();
                let n = calls.entry(key.name.clone()).or_default();
                *n += 1;
                *n
            };
            let (in_flight, overlap) = (in_flight2.clone(), overlap2.clone());
            async move {
                if key.name == "slow" {
                    if in_flight.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlap.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                match key.name.as_str() {
                    "retry" if n == 1 => Err(Error::Invalid("once".into())),
                    "later" if n < 3 => Ok(Some(Duration::from_millis(20))),
                    _ => Ok(None),
                }
            }
        }));
        queue.enqueue(ObjKey::new("ns", "retry"));
        queue.enqueue(ObjKey::new("ns", "later"));
        // All at once: before its first run or during it, so they coalesce into at most one
        // more run, however slow the machine.
        for _ in 0..50 {
            queue.enqueue(ObjKey::new("ns", "slow"));
        }
        let settled = || {
            let calls = calls.lock().unwrap();
            calls.get("retry") == Some(&2)
                && calls.get("later") == Some(&3)
                && calls.contains_key("slow")
                && in_flight.load(Ordering::SeqCst) == 0
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !settled() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.get("retry"), Some(&2), "{calls:?}");
        assert_eq!(calls.get("later"), Some(&3), "{calls:?}");
        let slow = calls.get("slow").copied().unwrap_or_default();
        assert!((1..=2).contains(&slow), "{calls:?}");
        assert_eq!(
            overlap.load(Ordering::SeqCst),
            0,
            "one key never runs twice at once"
        );
        runner.abort();
    }
}
