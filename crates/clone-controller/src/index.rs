//! An index from the objects a clone refers to (its source VM or snapshot, its target VM, its
//! UID) to the clones, kept up to date from the clone watch. Watches on VMs, snapshots, PVCs and
//! contents look clones up here instead of scanning every clone on every event; `ContentOwners`
//! leads a snapshot content (which has no owner) back to the snapshot that names it, and
//! `SourceHolds` says which of this controller's snapshots holds each source VM.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clone_api::extensions::CloneExtensions;
use clone_api::kubevirt::VirtualMachineSnapshot;
use clone_api::names;
use clone_api::v1beta1::VirtualMachineClone;
use clone_core::decide;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

/// What a clone is found by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The source VM `(namespace, name)`.
    SourceVm(String, String),
    /// The source snapshot `(namespace, name)`.
    SourceSnapshot(String, String),
    /// The target VM `(namespace, name)`.
    Target(String, String),
    /// The clone's UID (temporary object names carry it).
    Uid(String),
}

/// The keys of one clone.
pub fn keys(clone: &VirtualMachineClone) -> Vec<Key> {
    let ns = clone.namespace().unwrap_or_default();
    let source = &clone.spec.source;
    let source_ns = clone
        .source_namespace()
        .map_or_else(|| ns.clone(), str::to_owned);
    let mut keys = vec![Key::Target(ns.clone(), decide::target_name(clone))];
    if !decide::source_matters(clone) {
        // Found by its source only while the source can change its next step.
    } else if source.kind == names::VIRTUAL_MACHINE_SNAPSHOT_KIND {
        keys.push(Key::SourceSnapshot(source_ns, source.name.clone()));
    } else {
        keys.push(Key::SourceVm(source_ns, source.name.clone()));
    }
    if let Some(uid) = &clone.metadata.uid {
        keys.push(Key::Uid(uid.clone()));
    }
    keys
}

#[derive(Debug, Default)]
struct Inner {
    clones: HashMap<Key, HashSet<ObjectRef<VirtualMachineClone>>>,
    keys: HashMap<ObjectRef<VirtualMachineClone>, Vec<Key>>,
}

impl Inner {
    fn remove(&mut self, clone: &ObjectRef<VirtualMachineClone>) {
        for key in self.keys.remove(clone).unwrap_or_default() {
            if let Some(set) = self.clones.get_mut(&key) {
                set.remove(clone);
                if set.is_empty() {
                    self.clones.remove(&key);
                }
            }
        }
    }

    fn insert(&mut self, clone: &VirtualMachineClone) {
        let reference = ObjectRef::from_obj(clone);
        self.remove(&reference);
        let keys = keys(clone);
        for key in &keys {
            self.clones
                .entry(key.clone())
                .or_default()
                .insert(reference.clone());
        }
        self.keys.insert(reference, keys);
    }
}

/// The index, shared between the watch that feeds it and the watches that read it.
#[derive(Debug, Clone, Default)]
pub struct CloneIndex(Arc<RwLock<Inner>>);

impl CloneIndex {
    /// Applies one event of the clone watch.
    pub fn apply(&self, event: &watcher::Event<VirtualMachineClone>) {
        let Ok(mut inner) = self.0.write() else {
            return;
        };
        match event {
            // A re-list: start over (a missed trigger in between is caught by the resync).
            watcher::Event::Init => *inner = Inner::default(),
            watcher::Event::InitApply(clone) | watcher::Event::Apply(clone) => inner.insert(clone),
            watcher::Event::Delete(clone) => inner.remove(&ObjectRef::from_obj(clone)),
            watcher::Event::InitDone => {}
        }
    }

    /// The clones found by `key`.
    pub fn get(&self, key: &Key) -> Vec<ObjectRef<VirtualMachineClone>> {
        match self.0.read() {
            Ok(inner) => inner
                .clones
                .get(key)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// The snapshot that names each snapshot content, `(namespace, content)` → snapshot, kept by the
/// snapshot watch.
#[derive(Debug, Clone, Default)]
pub struct ContentOwners(Arc<RwLock<HashMap<(String, String), String>>>);

impl ContentOwners {
    /// Records where `snapshot`'s content leads (`present`), or forgets it (deleted).
    pub fn note(&self, snapshot: &VirtualMachineSnapshot, present: bool) {
        let key = (
            snapshot.namespace().unwrap_or_default(),
            decide::content_name(snapshot),
        );
        if let Ok(mut owners) = self.0.write() {
            if present {
                owners.insert(key, snapshot.name_any());
            } else {
                owners.remove(&key);
            }
        }
    }

    /// The snapshot that names `content` in `ns`.
    pub fn get(&self, ns: &str, content: &str) -> Option<String> {
        let owners = self.0.read().ok()?;
        owners.get(&(ns.to_owned(), content.to_owned())).cloned()
    }
}

/// This controller's temporary snapshots that hold their source VM, by `(namespace, VM)`: kept by
/// the snapshot watch, plus reservations made just before a create so that two passes in flight
/// cannot both start a snapshot of one VM (see [`decide::held_source`] and
/// [`decide::Observed::source_held_by`]).
#[derive(Debug, Clone, Default)]
pub struct SourceHolds(Arc<Mutex<HashMap<(String, String), Holders>>>);

/// The snapshots holding one VM, by name (one, unless they were created before this controller
/// started or by an earlier version).
type Holders = HashMap<String, Holding>;

/// How a snapshot holds its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    /// The watch showed it in progress.
    Seen,
    /// Reserved at this instant for a create the watch has not shown yet. A reservation whose
    /// create failed, or whose snapshot was gone before the watch showed it, stops counting after
    /// [`RESERVATION_GRACE`].
    Reserved(Instant),
}

/// `(namespace, VM)` of a snapshot's source: a snapshot lives beside its VM.
fn vm_key(snapshot: &VirtualMachineSnapshot, vm: &str) -> (String, String) {
    (snapshot.namespace().unwrap_or_default(), vm.to_owned())
}

/// How long a reservation counts without the watch showing its snapshot.
const RESERVATION_GRACE: Duration = Duration::from_secs(30);

impl SourceHolds {
    /// Records what the watch shows of one of the namespace's snapshots (`present`: not deleted).
    /// Returns the VM it freed, if no snapshot of ours holds that VM any more: the clones waiting
    /// for it can go.
    pub fn note(&self, snapshot: &VirtualMachineSnapshot, present: bool) -> Option<Key> {
        let name = snapshot.name_any();
        let Ok(mut holds) = self.0.lock() else {
            return None;
        };
        if present && let Some(vm) = decide::held_source(snapshot) {
            holds
                .entry(vm_key(snapshot, vm))
                .or_default()
                .insert(name, Holding::Seen);
            return None;
        }
        let key = vm_key(snapshot, &snapshot.spec.source.name);
        let holders = holds.get_mut(&key)?;
        holders.remove(&name)?;
        if !holders.is_empty() {
            return None;
        }
        holds.remove(&key);
        Some(Key::SourceVm(key.0, key.1))
    }

    /// Reserves `snapshot`'s source VM for it, unless another of our snapshots holds the VM:
    /// then that snapshot's name.
    pub fn reserve(&self, snapshot: &VirtualMachineSnapshot) -> Result<(), String> {
        let Some(vm) = decide::held_source(snapshot) else {
            return Ok(());
        };
        let key = vm_key(snapshot, vm);
        let name = snapshot.name_any();
        let Ok(mut holds) = self.0.lock() else {
            return Ok(());
        };
        let holders = holds.entry(key).or_default();
        holders.retain(|_, holding| match holding {
            Holding::Seen => true,
            Holding::Reserved(at) => at.elapsed() < RESERVATION_GRACE,
        });
        if let Some(other) = holders.keys().find(|other| **other != name) {
            return Err(other.clone());
        }
        holders
            .entry(name)
            .or_insert_with(|| Holding::Reserved(Instant::now()));
        Ok(())
    }

    /// Drops the reservation of a snapshot whose create failed.
    pub fn release(&self, snapshot: &VirtualMachineSnapshot) {
        let Some(vm) = decide::held_source(snapshot) else {
            return;
        };
        let key = vm_key(snapshot, vm);
        if let Ok(mut holds) = self.0.lock()
            && let Some(holders) = holds.get_mut(&key)
        {
            if matches!(
                holders.get(&snapshot.name_any()),
                Some(Holding::Reserved(_))
            ) {
                holders.remove(&snapshot.name_any());
            }
            if holders.is_empty() {
                holds.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clone(name: &str, uid: &str, spec: serde_json::Value) -> VirtualMachineClone {
        serde_json::from_value(json!({
            "apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": spec,
        }))
        .expect("clone")
    }

    #[test]
    fn finds_clones_by_source_target_and_uid_and_forgets_them() {
        let index = CloneIndex::default();
        let a = clone(
            "a",
            "uid-a",
            json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
                                          "target": {"kind": "VirtualMachine", "name": "t"}}),
        );
        let b = clone(
            "b",
            "uid-b",
            json!({"source": {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": "golden"}}),
        );
        index.apply(&watcher::Event::Apply(a.clone()));
        index.apply(&watcher::Event::Apply(b.clone()));
        let name = |refs: Vec<ObjectRef<VirtualMachineClone>>| {
            refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
        };
        assert_eq!(
            name(index.get(&Key::SourceVm("ns".into(), "vm".into()))),
            vec!["a"]
        );
        assert_eq!(
            name(index.get(&Key::Target("ns".into(), "t".into()))),
            vec!["a"]
        );
        assert_eq!(
            name(index.get(&Key::SourceSnapshot("ns".into(), "golden".into()))),
            vec!["b"]
        );
        assert_eq!(name(index.get(&Key::Uid("uid-b".into()))), vec!["b"]);
        assert!(
            index
                .get(&Key::SourceVm("other".into(), "vm".into()))
                .is_empty()
        );
        index.apply(&watcher::Event::Delete(a));
        assert!(
            index
                .get(&Key::SourceVm("ns".into(), "vm".into()))
                .is_empty()
        );
        index.apply(&watcher::Event::Init);
        assert!(index.get(&Key::Uid("uid-b".into())).is_empty());
    }

    #[test]
    fn clones_past_their_source_are_not_found_by_it() {
        let index = CloneIndex::default();
        let with_phase = |mut c: VirtualMachineClone, phase: &str| {
            c.status = serde_json::from_value(json!({"phase": phase})).expect("status");
            c
        };
        let vm_source =
            json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"}});
        let snapshot_source = json!({"source": {"apiGroup": "snapshot.kubevirt.io",
            "kind": "VirtualMachineSnapshot", "name": "golden"}});
        index.apply(&watcher::Event::Apply(with_phase(
            clone("a", "uid-a", vm_source.clone()),
            "SnapshotInProgress",
        )));
        index.apply(&watcher::Event::Apply(with_phase(
            clone("b", "uid-b", snapshot_source.clone()),
            "SnapshotInProgress",
        )));
        index.apply(&watcher::Event::Apply(with_phase(
            clone("c", "uid-c", snapshot_source),
            "RestoreInProgress",
        )));
        index.apply(&watcher::Event::Apply(clone("d", "uid-d", vm_source)));
        let names = |key: Key| {
            let mut n: Vec<String> = index.get(&key).into_iter().map(|r| r.name).collect();
            n.sort();
            n
        };
        assert_eq!(names(Key::SourceVm("ns".into(), "vm".into())), ["d"]);
        assert_eq!(
            names(Key::SourceSnapshot("ns".into(), "golden".into())),
            ["b"]
        );
        // Still found by UID (their temporary objects) whatever the phase.
        assert_eq!(names(Key::Uid("uid-a".into())), ["a"]);
    }

    fn temp_snapshot(name: &str, vm: &str, phase: Option<&str>) -> VirtualMachineSnapshot {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}},
            "status": phase.map(|p| json!({"phase": p})),
        }))
        .expect("snapshot")
    }

    #[test]
    fn one_snapshot_of_ours_holds_a_vm_until_the_watch_shows_it_done() {
        let holds = SourceHolds::default();
        let (a, b) = (
            temp_snapshot("tmp-snapshot-a", "vm", None),
            temp_snapshot("tmp-snapshot-b", "vm", None),
        );
        assert_eq!(holds.reserve(&a), Ok(()));
        // Reserving again for the same snapshot is fine; another snapshot of the VM waits.
        assert_eq!(holds.reserve(&a), Ok(()));
        assert_eq!(holds.reserve(&b), Err("tmp-snapshot-a".to_owned()));
        // Another VM is free.
        assert_eq!(
            holds.reserve(&temp_snapshot("tmp-snapshot-c", "other", None)),
            Ok(())
        );

        // The watch shows `a` in progress, then succeeded: the VM is freed once.
        assert_eq!(
            holds.note(
                &temp_snapshot("tmp-snapshot-a", "vm", Some("InProgress")),
                true
            ),
            None
        );
        assert_eq!(holds.reserve(&b), Err("tmp-snapshot-a".to_owned()));
        let done = temp_snapshot("tmp-snapshot-a", "vm", Some("Succeeded"));
        assert_eq!(
            holds.note(&done, true),
            Some(Key::SourceVm("ns".into(), "vm".into()))
        );
        assert_eq!(holds.note(&done, true), None);
        assert_eq!(holds.reserve(&b), Ok(()));

        // A failed create gives the VM back; so does a deletion the watch shows.
        holds.release(&b);
        let d = temp_snapshot("tmp-snapshot-d", "vm", None);
        assert_eq!(holds.reserve(&d), Ok(()));
        assert_eq!(holds.note(&d, true), None);
        holds.release(&d);
        assert_eq!(
            holds.reserve(&b),
            Err("tmp-snapshot-d".to_owned()),
            "seen, not reserved"
        );
        assert_eq!(
            holds.note(&d, false),
            Some(Key::SourceVm("ns".into(), "vm".into()))
        );
        assert_eq!(holds.reserve(&b), Ok(()));
    }
}
