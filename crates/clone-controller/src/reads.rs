//! Reads that spare the API server: whole objects the caches hold only the metadata of, reused
//! while their resourceVersion has not moved, and the children this controller created that its
//! caches have not shown yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clone_api::kubevirt::{
    VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot, VirtualMachineSnapshotContent,
};
use kube::Resource;
use kube::api::Api;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// How many whole objects a [`Versioned`] keeps. Each is needed only for the few passes between a
/// clone's start and its next step (the source VM until the snapshot is taken, the content until
/// the restore exists), so a small bound holds what is in use; beyond it an entry is dropped and
/// read again when needed.
const VERSIONED_CAPACITY: usize = 256;

/// How long a child this controller created stands in for the cache's view of it. The watch
/// delivers it within milliseconds; a child deleted by someone else before the cache saw it is
/// confirmed with a direct read again once this has passed.
const CREATED_GRACE: Duration = Duration::from_secs(30);

type Key = (String, String);

/// A direct read of `name`; `None` when it does not exist.
pub(crate) async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    api.get_opt(name).await.map_err(|source| Error::Read {
        what: format!("{} {name}", K::kind(&Default::default())),
        source,
    })
}

/// What every pass shares to read less.
#[derive(Debug, Default)]
pub struct Reads {
    /// Source VMs (the VM cache holds metadata only).
    pub source_vms: Versioned<VirtualMachine>,
    /// Snapshot contents (watched by metadata only: a content holds a whole VM).
    pub contents: Versioned<VirtualMachineSnapshotContent>,
    /// Temporary snapshots this controller created.
    pub snapshots: Created<VirtualMachineSnapshot>,
    /// Restores this controller created.
    pub restores: Created<VirtualMachineRestore>,
}

/// Whole objects by namespace and name, each with the resourceVersion it was read at. A pass asks
/// with the resourceVersion the metadata cache shows: the same version is answered from here, any
/// other is read from the API server. So a golden VM shared by a thousand clones is read once per
/// change, not once per pass.
#[derive(Debug)]
pub struct Versioned<K> {
    objects: Mutex<HashMap<Key, Arc<K>>>,
}

impl<K> Default for Versioned<K> {
    fn default() -> Self {
        Versioned {
            objects: Mutex::default(),
        }
    }
}

impl<K> Versioned<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    /// The object `ns/name`, whose metadata the cache shows at `version` (`None`: the cache does
    /// not show it). Reads it when it is not held at that version; `None` when it does not exist.
    pub async fn get(
        &self,
        api: &Api<K>,
        ns: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<Arc<K>>> {
        let key = (ns.to_owned(), name.to_owned());
        if let Some(version) = version
            && let Some(held) = self.held(&key, version)
        {
            return Ok(Some(held));
        }
        let read = get_opt(api, name).await?;
        let Ok(mut objects) = self.objects.lock() else {
            return Ok(read.map(Arc::new));
        };
        let Some(object) = read else {
            objects.remove(&key);
            return Ok(None);
        };
        let object = Arc::new(object);
        if objects.len() >= VERSIONED_CAPACITY
            && !objects.contains_key(&key)
            && let Some(evicted) = objects.keys().next().cloned()
        {
            objects.remove(&evicted);
        }
        objects.insert(key, object.clone());
        Ok(Some(object))
    }

    fn held(&self, key: &Key, version: &str) -> Option<Arc<K>> {
        let objects = self.objects.lock().ok()?;
        objects
            .get(key)
            .filter(|held| held.meta().resource_version.as_deref() == Some(version))
            .cloned()
    }
}

/// The children this controller created, by namespace and name, until their watch delivers them
/// (or [`CREATED_GRACE`] has passed). Without this, the pass that follows a create, woken before
/// the child's own watch event arrived, would confirm the child's absence with a direct read.
#[derive(Debug)]
pub struct Created<K> {
    objects: Mutex<HashMap<Key, (Instant, Arc<K>)>>,
}

impl<K> Default for Created<K> {
    fn default() -> Self {
        Created {
            objects: Mutex::default(),
        }
    }
}

impl<K: Resource> Created<K> {
    /// Remembers a child the API server just created.
    pub fn insert(&self, object: K) {
        let meta = object.meta();
        let (Some(ns), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
            return;
        };
        if let Ok(mut objects) = self.objects.lock() {
            let now = Instant::now();
            objects.retain(|_, (at, _)| now.duration_since(*at) < CREATED_GRACE);
            objects.insert((ns, name), (now, Arc::new(object)));
        }
    }

    /// The child `ns/name` as created, while the cache does not show it yet.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.objects.lock().ok()?;
        objects
            .get(&(ns.to_owned(), name.to_owned()))
            .filter(|(at, _)| at.elapsed() < CREATED_GRACE)
            .map(|(_, object)| object.clone())
    }

    /// Forgets `object`: its watch delivered it (or its deletion), so the cache is the truth.
    pub fn seen(&self, object: &K) {
        let meta = object.meta();
        let (Some(ns), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
            return;
        };
        if let Ok(mut objects) = self.objects.lock() {
            objects.remove(&(ns, name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clone_api::kubevirt::VirtualMachineSnapshot;

    fn snapshot(name: &str) -> VirtualMachineSnapshot {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}},
        }))
        .expect("snapshot")
    }

    #[test]
    fn a_created_child_stands_in_until_its_watch_delivers_it() {
        let created = Created::default();
        created.insert(snapshot("s"));
        assert!(created.get("ns", "s").is_some());
        assert!(created.get("ns", "other").is_none());
        created.seen(&snapshot("s"));
        assert!(created.get("ns", "s").is_none());
    }
}
