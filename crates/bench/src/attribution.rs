//! Who made which API request: kube-apiserver counts requests by verb and resource only, so
//! requests are attributed by resource, from what each component's code writes.
//!
//! - The controller (`crates/clone-controller/src/reconcile.rs`, `run.rs`) writes
//!   `virtualmachineclones/status` (server-side apply, counted as `APPLY`), creates and deletes
//!   `virtualmachinesnapshots` and `virtualmachinerestores`, deletes a `virtualmachineclone` whose
//!   target was deleted, and publishes `events.k8s.io` events (reporting controller
//!   `vmclone-controller`).
//! - The stand-in (`crates/kubevirt-sim`) writes everything else the clone needs: snapshot and
//!   restore status and finalizers, snapshot contents and their status, VMs (the target, the
//!   source's snapshot lock: finalizers and status), PVCs and their status, and it too publishes
//!   `events.k8s.io` events (reporting controllers `sim.vmclone.dev/virt-controller` and
//!   `sim.vmclone.dev/cdi-controller`). Events are therefore split by listing them: each event
//!   object is one POST by its reporting controller, and each repetition of its series one PATCH
//!   (kube's `Recorder`).
//! - kube-controller-manager's garbage collector deletes the snapshot content once its owner,
//!   the temporary snapshot, is gone.
//! - Reads: within a measurement window a `LIST` or `WATCH` is a watch being re-established
//!   (every watcher starts before the window), which any of the controller, the stand-in and
//!   kube-controller-manager does; they are counted as "any watcher". The stand-in reads from its
//!   caches only (its one direct `GET` is of CDI `datasources`), so `GET`s are the controller's.
//! - Leases (kube-apiserver's own heartbeat) and non-resource requests (`/metrics`, `/readyz`)
//!   are excluded; the bench's own requests are counted by the bench and subtracted first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::prom::{RequestCounts, RequestKey, is_write_verb};

/// The reporting controller of the controller's events.
pub const CONTROLLER_REPORTER: &str = "vmclone-controller";
/// Prefix of the stand-in's reporting controllers.
pub const STAND_IN_REPORTER_PREFIX: &str = "sim.vmclone.dev/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    Controller,
    StandIn,
    GarbageCollector,
    AnyWatcher,
    Unattributed,
    Excluded,
}

impl Actor {
    pub const ALL: [Actor; 6] = [
        Actor::Controller,
        Actor::StandIn,
        Actor::GarbageCollector,
        Actor::AnyWatcher,
        Actor::Unattributed,
        Actor::Excluded,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Actor::Controller => "controller",
            Actor::StandIn => "stand-in",
            Actor::GarbageCollector => "garbage collector",
            Actor::AnyWatcher => "any watcher",
            Actor::Unattributed => "unattributed",
            Actor::Excluded => "excluded",
        }
    }
}

/// Event objects and series repetitions published in a window, by who published them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventTally {
    pub controller_posts: f64,
    pub controller_patches: f64,
    pub stand_in_posts: f64,
    pub stand_in_patches: f64,
    pub other_posts: f64,
    pub other_patches: f64,
}

/// One event as the bench lists it: name, reporting controller, how many times it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSeen {
    pub name: String,
    pub reporter: String,
    pub count: u64,
}

/// The events published between two listings: a new event object is one POST, every further
/// occurrence one PATCH.
pub fn tally_events(before: &[EventSeen], after: &[EventSeen]) -> EventTally {
    let old: BTreeMap<&str, u64> = before.iter().map(|e| (e.name.as_str(), e.count)).collect();
    let mut tally = EventTally::default();
    for event in after {
        let (posts, patches) = match old.get(event.name.as_str()) {
            Some(&count) => (0.0, event.count.saturating_sub(count) as f64),
            None => (1.0, event.count.saturating_sub(1) as f64),
        };
        let (p, q) = if event.reporter == CONTROLLER_REPORTER {
            (&mut tally.controller_posts, &mut tally.controller_patches)
        } else if event.reporter.starts_with(STAND_IN_REPORTER_PREFIX) {
            (&mut tally.stand_in_posts, &mut tally.stand_in_patches)
        } else {
            (&mut tally.other_posts, &mut tally.other_patches)
        };
        *p += posts;
        *q += patches;
    }
    tally
}

/// Who made requests of this kind (events.k8s.io writes are split separately).
pub fn attribute(key: &RequestKey) -> Actor {
    let group = key.group.as_str();
    let resource = key.resource.as_str();
    let sub = key.subresource.as_str();
    let verb = key.verb.as_str();
    if resource.is_empty() || (group == "coordination.k8s.io" && resource == "leases") {
        return Actor::Excluded;
    }
    if !is_write_verb(verb) {
        return match verb {
            "GET" if resource == "datasources" => Actor::StandIn,
            "GET" => Actor::Controller,
            _ => Actor::AnyWatcher,
        };
    }
    match (group, resource, sub, verb) {
        // The bench creates the clones (its creates are subtracted before).
        ("clone.kubevirt.io", "virtualmachineclones", "", "POST") => Actor::Unattributed,
        ("clone.kubevirt.io", "virtualmachineclones", _, _) => Actor::Controller,
        (
            "snapshot.kubevirt.io",
            "virtualmachinesnapshots" | "virtualmachinerestores",
            "",
            "POST" | "DELETE",
        ) => Actor::Controller,
        ("snapshot.kubevirt.io", "virtualmachinesnapshotcontents", "", "DELETE") => {
            Actor::GarbageCollector
        }
        // Core events: nothing of the clone's path publishes them.
        ("", "events", _, _) => Actor::Unattributed,
        ("", "namespaces", _, _) => Actor::Unattributed,
        _ => Actor::StandIn,
    }
}

/// One line of the request table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub actor: Actor,
    pub count: f64,
}

impl Row {
    pub fn key(&self) -> RequestKey {
        RequestKey::new(&self.verb, &self.group, &self.resource, &self.subresource)
    }
}

/// Every request of `counts` with its actor; events.k8s.io writes split by `events`.
pub fn attribute_all(counts: &RequestCounts, events: &EventTally) -> Vec<Row> {
    let mut rows = Vec::new();
    let row = |key: &RequestKey, actor: Actor, count: f64| Row {
        verb: key.verb.clone(),
        group: key.group.clone(),
        resource: key.resource.clone(),
        subresource: key.subresource.clone(),
        actor,
        count,
    };
    for (key, &count) in counts {
        let event_write = key.group == "events.k8s.io" && key.resource == "events";
        let split = match (event_write, key.verb.as_str()) {
            (true, "POST") => Some((events.controller_posts, events.stand_in_posts)),
            (true, "PATCH") => Some((events.controller_patches, events.stand_in_patches)),
            _ => None,
        };
        match split {
            Some((controller, stand_in)) => {
                let controller = controller.min(count);
                let stand_in = stand_in.min(count - controller);
                let rest = count - controller - stand_in;
                for (actor, n) in [
                    (Actor::Controller, controller),
                    (Actor::StandIn, stand_in),
                    (Actor::Unattributed, rest),
                ] {
                    if n > 0.0 {
                        rows.push(row(key, actor, n));
                    }
                }
            }
            None => rows.push(row(key, attribute(key), count)),
        }
    }
    rows
}

/// Writes per clone, by actor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Writes {
    pub controller: f64,
    pub controller_events: f64,
    pub controller_without_events: f64,
    pub stand_in: f64,
    pub stand_in_events: f64,
    pub garbage_collector: f64,
    pub unattributed: f64,
    /// Controller + stand-in + garbage collector: every write a clone causes besides its own
    /// creation.
    pub needed: f64,
}

pub fn writes_per_clone(rows: &[Row], clones: usize) -> Writes {
    let n = clones.max(1) as f64;
    let mut w = Writes::default();
    for row in rows.iter().filter(|r| is_write_verb(&r.verb)) {
        let per = row.count / n;
        let event = row.group == "events.k8s.io" && row.resource == "events";
        match row.actor {
            Actor::Controller => {
                w.controller += per;
                if event {
                    w.controller_events += per;
                }
            }
            Actor::StandIn => {
                w.stand_in += per;
                if event {
                    w.stand_in_events += per;
                }
            }
            Actor::GarbageCollector => w.garbage_collector += per,
            Actor::Unattributed => w.unattributed += per,
            Actor::AnyWatcher | Actor::Excluded => {}
        }
    }
    w.controller_without_events = w.controller - w.controller_events;
    w.needed = w.controller + w.stand_in + w.garbage_collector;
    w
}

/// Requests per clone by actor label and verb.
pub fn per_clone_by_actor_and_verb(
    rows: &[Row],
    clones: usize,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let n = clones.max(1) as f64;
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.actor != Actor::Excluded) {
        *out.entry(row.actor.label().to_owned())
            .or_default()
            .entry(row.verb.clone())
            .or_default() += row.count / n;
    }
    out
}

/// Writes (all actors except excluded) in `rows`.
pub fn total_writes(rows: &[Row]) -> f64 {
    rows.iter()
        .filter(|r| r.actor != Actor::Excluded && is_write_verb(&r.verb))
        .map(|r| r.count)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(verb: &str, group: &str, resource: &str, sub: &str) -> RequestKey {
        RequestKey::new(verb, group, resource, sub)
    }

    #[test]
    fn resources_are_attributed_by_what_each_component_writes() {
        let cases = [
            (
                key(
                    "APPLY",
                    "clone.kubevirt.io",
                    "virtualmachineclones",
                    "status",
                ),
                Actor::Controller,
            ),
            (
                key(
                    "PATCH",
                    "clone.kubevirt.io",
                    "virtualmachineclones",
                    "status",
                ),
                Actor::Controller,
            ),
            (
                key("DELETE", "clone.kubevirt.io", "virtualmachineclones", ""),
                Actor::Controller,
            ),
            (
                key("POST", "clone.kubevirt.io", "virtualmachineclones", ""),
                Actor::Unattributed,
            ),
            (
                key(
                    "POST",
                    "snapshot.kubevirt.io",
                    "virtualmachinesnapshots",
                    "",
                ),
                Actor::Controller,
            ),
            (
                key(
                    "DELETE",
                    "snapshot.kubevirt.io",
                    "virtualmachinerestores",
                    "",
                ),
                Actor::Controller,
            ),
            (
                key(
                    "PATCH",
                    "snapshot.kubevirt.io",
                    "virtualmachinesnapshots",
                    "status",
                ),
                Actor::StandIn,
            ),
            (
                key(
                    "PATCH",
                    "snapshot.kubevirt.io",
                    "virtualmachinesnapshots",
                    "",
                ),
                Actor::StandIn,
            ),
            (
                key(
                    "POST",
                    "snapshot.kubevirt.io",
                    "virtualmachinesnapshotcontents",
                    "",
                ),
                Actor::StandIn,
            ),
            (
                key(
                    "DELETE",
                    "snapshot.kubevirt.io",
                    "virtualmachinesnapshotcontents",
                    "",
                ),
                Actor::GarbageCollector,
            ),
            (
                key("POST", "kubevirt.io", "virtualmachines", ""),
                Actor::StandIn,
            ),
            (
                key("PATCH", "kubevirt.io", "virtualmachines", "status"),
                Actor::StandIn,
            ),
            (
                key("POST", "", "persistentvolumeclaims", ""),
                Actor::StandIn,
            ),
            (
                key("GET", "kubevirt.io", "virtualmachines", ""),
                Actor::Controller,
            ),
            (
                key("GET", "cdi.kubevirt.io", "datasources", ""),
                Actor::StandIn,
            ),
            (
                key("WATCH", "kubevirt.io", "virtualmachines", ""),
                Actor::AnyWatcher,
            ),
            (
                key("LIST", "clone.kubevirt.io", "virtualmachineclones", ""),
                Actor::AnyWatcher,
            ),
            (
                key("PUT", "coordination.k8s.io", "leases", ""),
                Actor::Excluded,
            ),
            (key("GET", "", "", "/metrics"), Actor::Excluded),
            (key("POST", "", "events", ""), Actor::Unattributed),
        ];
        for (key, actor) in cases {
            assert_eq!(attribute(&key), actor, "{key:?}");
        }
    }

    fn seen(name: &str, reporter: &str, count: u64) -> EventSeen {
        EventSeen {
            name: name.into(),
            reporter: reporter.into(),
            count,
        }
    }

    #[test]
    fn events_are_tallied_by_reporter() {
        let before = [seen("old", CONTROLLER_REPORTER, 2)];
        let after = [
            seen("old", CONTROLLER_REPORTER, 3),
            seen("a", CONTROLLER_REPORTER, 1),
            seen("b", "sim.vmclone.dev/virt-controller", 2),
            seen("c", "kube-controller-manager", 1),
        ];
        let tally = tally_events(&before, &after);
        assert_eq!(
            tally,
            EventTally {
                controller_posts: 1.0,
                controller_patches: 1.0,
                stand_in_posts: 1.0,
                stand_in_patches: 1.0,
                other_posts: 1.0,
                other_patches: 0.0,
            }
        );
    }

    #[test]
    fn event_writes_are_split_and_writes_summed_per_clone() {
        let counts: RequestCounts = [
            (key("POST", "events.k8s.io", "events", ""), 7.0),
            (key("PATCH", "events.k8s.io", "events", ""), 1.0),
            (
                key(
                    "APPLY",
                    "clone.kubevirt.io",
                    "virtualmachineclones",
                    "status",
                ),
                6.0,
            ),
            (
                key(
                    "POST",
                    "snapshot.kubevirt.io",
                    "virtualmachinesnapshots",
                    "",
                ),
                2.0,
            ),
            (
                key("PATCH", "kubevirt.io", "virtualmachines", "status"),
                4.0,
            ),
            (
                key(
                    "DELETE",
                    "snapshot.kubevirt.io",
                    "virtualmachinesnapshotcontents",
                    "",
                ),
                2.0,
            ),
            (key("GET", "kubevirt.io", "virtualmachines", ""), 2.0),
            (key("PUT", "coordination.k8s.io", "leases", ""), 9.0),
        ]
        .into();
        let events = EventTally {
            controller_posts: 4.0,
            stand_in_posts: 2.0,
            controller_patches: 1.0,
            ..EventTally::default()
        };
        let rows = attribute_all(&counts, &events);
        let find = |verb: &str, actor: Actor| {
            rows.iter()
                .filter(|r| r.resource == "events" && r.verb == verb && r.actor == actor)
                .map(|r| r.count)
                .sum::<f64>()
        };
        assert_eq!(find("POST", Actor::Controller), 4.0);
        assert_eq!(find("POST", Actor::StandIn), 2.0);
        assert_eq!(find("POST", Actor::Unattributed), 1.0);
        assert_eq!(find("PATCH", Actor::Controller), 1.0);

        let w = writes_per_clone(&rows, 2);
        assert_eq!(w.controller, (4.0 + 1.0 + 6.0 + 2.0) / 2.0);
        assert_eq!(w.controller_events, 2.5);
        assert_eq!(w.controller_without_events, 4.0);
        assert_eq!(w.stand_in, (2.0 + 4.0) / 2.0);
        assert_eq!(w.stand_in_events, 1.0);
        assert_eq!(w.garbage_collector, 1.0);
        assert_eq!(w.unattributed, 0.5);
        assert_eq!(w.needed, 6.5 + 3.0 + 1.0);
        assert_eq!(total_writes(&rows), 7.0 + 1.0 + 6.0 + 2.0 + 4.0 + 2.0);

        let by = per_clone_by_actor_and_verb(&rows, 2);
        assert_eq!(by["controller"]["GET"], 1.0);
        assert_eq!(by["controller"]["APPLY"], 3.0);
        assert!(!by.contains_key("excluded"));
    }
}
