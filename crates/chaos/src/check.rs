//! The invariants a chaos run must keep, checked once every clone has settled:
//!
//! 1. every clone that was not deleted ends as its plan expects: `Succeeded`, or `Failed` with
//!    the expected reason (a stuck clone with `RestoreFailed` saying its restore `made no
//!    progress for` the stall timeout; any other `RestoreFailed` must not say so). A clone of the
//!    doomed source ends `Succeeded` — it must when its snapshot had taken its first step when
//!    the source was deleted — or, its source deleted before it took a snapshot, waits with
//!    `SourceDoesNotExist`, or on a snapshot taken as the source went, which KubeVirt reports
//!    without source (until its deadline fails it, long after the run); every deleted clone is
//!    gone;
//! 2. exactly one target VM per successful clone, made by that clone's restore, with the promised
//!    identity (firmware UUID from the clone UID, the requested or generated serial, new or no
//!    MAC addresses, the label and annotation filters applied);
//! 3. no VM the run cannot explain (every VM is a source, a pre-existing VM, or the target of one
//!    of its clones), and no `stuck-*` VM at all;
//! 4. no temporary snapshot or restore left (but those of a clone that still waits);
//! 5. no source or pre-existing VM changed (hash of labels, annotations and spec), and the golden
//!    snapshot still there;
//! 6. the controller never panicked and never exited on its own (logs and exit statuses);
//! 7. one event per hold: a clone has no more occurrences (an events.k8s.io Event counts its
//!    `series.count`) of a hold's reason — `RestoreCreationFailed`, `FeatureGateDisabled`,
//!    `RestoreError` — than times it was seen entering such a hold ([`History`]; at least one);
//!    and the holds the windows cause fall in them: every `FeatureGateDisabled` occurrence while
//!    the `Snapshot` gate was off, every `RestoreCreationFailed` occurrence with the injected
//!    internal error while the admission errors were on ([`WINDOW_SLACK`] after each included).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use clone_api::kubevirt::{VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot};
use clone_api::names::{LAST_RESTORE_UID_ANNOTATION, TEMP_RESTORE_PREFIX, TEMP_SNAPSHOT_PREFIX};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use clone_core::filter::FilterSet;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use kubevirt_sim::names::ADMISSION_INTERNAL_ERROR;
use serde_json::Value;
use sha2::{Digest, Sha256};
use testenv::wait_for;

use crate::history::History;
use crate::plan::{self, Expect};
use crate::replicas::Replicas;
use crate::{FaultState, Report, Tracked, Window};

/// KubeVirt's condition reason on a snapshot whose source VM is gone (it stays in progress until
/// its `failureDeadline`).
const SNAPSHOT_SOURCE_MISSING: &str = "Source does not exist";

/// The Warning events that start a hold, one per hold.
pub const HOLD_REASONS: [&str; 3] = [
    "RestoreCreationFailed",
    "FeatureGateDisabled",
    "RestoreError",
];

/// How long after a window closes the holds it caused may still begin: the controller reads the
/// `KubeVirt` CR through a watch, which an API server restart in the window can leave a few
/// seconds behind (its reconnect backs off); a refusal answered just before the window closed is
/// reported a moment after.
pub const WINDOW_SLACK: Duration = Duration::from_secs(10);

/// What the run knows besides the cluster.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The clones of the plan and what became of them.
    pub tracked: &'a [Tracked],
    /// The fingerprints taken before the clones.
    pub world: &'a World,
    /// The controller processes.
    pub replicas: &'a Replicas,
    /// The clones' states as seen during the run.
    pub history: &'a History,
    /// What the faults changed, and when.
    pub faults: &'a FaultState,
}

/// How long the garbage collector and the controller's cleanup may take after the clones settled.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Fingerprints of what exists before the clones.
#[derive(Debug, Clone)]
pub struct World {
    /// VM name → hash of its labels, annotations and spec.
    pub vm_hashes: BTreeMap<String, String>,
}

impl World {
    /// Fingerprints every VM in the namespace.
    pub async fn record(client: &Client, ns: &str) -> Result<World> {
        let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
        let vm_hashes = vms
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|vm| Ok((vm.name_any(), fingerprint(vm)?)))
            .collect::<Result<_>>()?;
        Ok(World { vm_hashes })
    }
}

/// What a controller may never change about a VM it did not create.
fn fingerprint(vm: &VirtualMachine) -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(&vm.metadata.labels)?);
    hash.update(serde_json::to_vec(&vm.metadata.annotations)?);
    hash.update(serde_json::to_vec(&vm.spec)?);
    Ok(format!("{:x}", hash.finalize()))
}

/// The reason of a clone's Ready condition.
pub fn ready_reason(c: &VirtualMachineClone) -> Option<String> {
    c.status
        .as_ref()
        .and_then(|s| s.condition(clone_api::names::condition::READY))
        .and_then(|c| c.reason.clone())
        .filter(|r| !r.is_empty())
}

/// The message of a clone's Ready condition.
fn ready_message(c: &VirtualMachineClone) -> String {
    c.status
        .as_ref()
        .and_then(|s| s.condition(clone_api::names::condition::READY))
        .and_then(|c| c.message.clone())
        .unwrap_or_default()
}

/// Snapshots KubeVirt reports without source: it keeps them in progress until their deadline.
pub async fn orphaned_snapshots(client: &Client, ns: &str) -> Result<BTreeSet<String>> {
    Ok(
        Api::<VirtualMachineSnapshot>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.reason.as_deref() == Some(SNAPSHOT_SOURCE_MISSING))
                })
            })
            .map(ResourceExt::name_any)
            .collect(),
    )
}

/// Checks every invariant, adding each violation to `report.problems`, each clone's outcome to
/// `report.outcomes`, the holds to `report.holds` and what was left behind to `report.leaks`.
pub async fn run(
    client: &Client,
    ns: &str,
    observed: &Observed<'_>,
    report: &mut Report,
) -> Result<()> {
    let Observed {
        tracked,
        world,
        replicas,
        history,
        faults,
    } = *observed;
    let problems = &mut report.problems;
    let clones: Api<VirtualMachineClone> = Api::namespaced(client.clone(), ns);
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);

    // 4 first: it may take the garbage collector a moment. A clone still waiting (its source
    // deleted before its snapshot was ready) keeps its objects; no one else may.
    let temp_left = wait_for(
        "no temporary snapshot or restore left",
        CLEANUP_TIMEOUT,
        || async {
            let left = unexplained_temporaries(client, ns, &clones).await?;
            anyhow::ensure!(left.is_empty(), "left: {left:?}");
            Ok::<_, anyhow::Error>(())
        },
    )
    .await;
    if let Err(e) = temp_left {
        problems.push(format!("{e:#}"));
        report
            .leaks
            .extend(unexplained_temporaries(client, ns, &clones).await?);
    }

    let present: BTreeMap<String, VirtualMachineClone> = clones
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    let all_vms: BTreeMap<String, VirtualMachine> = vms
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|vm| (vm.name_any(), vm))
        .collect();

    let orphaned = orphaned_snapshots(client, ns).await?;

    // 1 and 2.
    let mut explained: BTreeSet<String> = BTreeSet::new();
    for t in tracked {
        let name = &t.plan.name;
        let Some(clone) = present.get(name) else {
            if t.deleted {
                report.outcomes.insert(name.clone(), "deleted".into());
            } else {
                problems.push(format!("clone {name} disappeared without being deleted"));
                report.outcomes.insert(name.clone(), "missing".into());
            }
            // A deleted clone's target may exist (deletion never removes a created VM).
            if let Some(uid) = &t.uid {
                explained.extend(made_by(&all_vms, uid));
            }
            continue;
        };
        if t.deleted {
            problems.push(format!("clone {name} was deleted but still exists"));
        }
        let status = clone.status.clone().unwrap_or_default();
        let reason = ready_reason(clone);
        let message = ready_message(clone);
        let stalled = message.contains(plan::STALL_MESSAGE);
        let outcome = match status.phase {
            ClonePhase::Succeeded => "Succeeded".to_owned(),
            p => format!(
                "{}/{}{}",
                p.as_str(),
                reason.as_deref().unwrap_or("-"),
                if stalled { " (stalled)" } else { "" }
            ),
        };
        report.outcomes.insert(name.clone(), outcome.clone());
        let uid = clone.uid().unwrap_or_default();
        match (t.plan.expect, status.phase, reason.as_deref()) {
            (Expect::Succeed | Expect::SourceMayVanish, ClonePhase::Succeeded, _) => {}
            (Expect::Fail(want), ClonePhase::Failed, Some(got)) if want == got && !stalled => {}
            (Expect::Stall, ClonePhase::Failed, Some("RestoreFailed")) if stalled => {}
            (Expect::SourceMayVanish, p, Some("SourceDoesNotExist"))
                if !p.is_terminal() && !t.snapshot_held => {}
            (Expect::SourceMayVanish, ClonePhase::SnapshotInProgress, _)
                if !t.snapshot_held
                    && status
                        .snapshot_name
                        .as_ref()
                        .is_some_and(|n| orphaned.contains(n)) => {}
            (expect, _, _) => problems.push(format!(
                "clone {name} ({:?}{}) ended {outcome} ({message:?}), expected {expect:?}",
                t.plan.flavour,
                if t.snapshot_held {
                    ", snapshot held at its first step when its source was deleted"
                } else {
                    ""
                }
            )),
        }
        let made = made_by(&all_vms, &uid);
        explained.extend(made.iter().cloned());
        if status.phase == ClonePhase::Succeeded {
            let target = status.target_name.clone().unwrap_or_default();
            if made != [target.clone()] {
                problems.push(format!(
                    "clone {name} succeeded with target {target:?} but its restore made {made:?}"
                ));
            }
            match all_vms.get(&target) {
                Some(vm) => identity(ns, clone, t, vm, problems)?,
                None => problems.push(format!("clone {name}: target VM {target} does not exist")),
            }
        } else if t.plan.expect == Expect::Fail("TargetExists") && !made.is_empty() {
            problems.push(format!(
                "clone {name} failed on TargetExists yet made {made:?}"
            ));
        }
    }

    // 3 and 5.
    for name in all_vms.keys().filter(|n| n.starts_with(plan::STUCK_PREFIX)) {
        problems.push(format!(
            "VM {name} exists, which the stall policy should have refused"
        ));
        report.leaks.push(format!("VirtualMachine {name}"));
    }
    for (name, vm) in &all_vms {
        match world.vm_hashes.get(name) {
            Some(before) => {
                if fingerprint(vm)? != *before {
                    problems.push(format!("VM {name}, which no clone created, was changed"));
                }
            }
            None if explained.contains(name) => {}
            None => problems.push(format!("VM {name} exists but no clone of the run made it")),
        }
    }
    for name in world.vm_hashes.keys() {
        if !all_vms.contains_key(name) && name != plan::DOOMED_SOURCE {
            problems.push(format!("VM {name}, which no clone created, is gone"));
        }
    }
    let snapshots: Api<VirtualMachineSnapshot> = Api::namespaced(client.clone(), ns);
    if snapshots.get_opt(plan::GOLDEN_SNAPSHOT).await?.is_none() {
        problems.push(format!(
            "the source snapshot {} is gone",
            plan::GOLDEN_SNAPSHOT
        ));
    }

    // 6.
    for (replica, status) in &replicas.unexpected_exits {
        problems.push(format!("controller {replica} exited on its own: {status}"));
    }
    for (replica, log) in replicas.logs()? {
        if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
            problems.push(format!("controller {replica} panicked: {line}"));
        }
    }

    // 7.
    let events = hold_events(client, ns).await?;
    for reason in HOLD_REASONS {
        let held = tracked
            .iter()
            .filter_map(|t| t.uid.as_deref())
            .filter(|uid| events.iter().any(|e| e.uid == *uid && e.reason == reason))
            .count();
        if held > 0 {
            report.holds.insert(reason.to_owned(), held);
        }
    }
    for t in tracked {
        let Some(uid) = t.uid.as_deref() else {
            continue;
        };
        for reason in HOLD_REASONS {
            let of_clone: Vec<&HoldEvent> = events
                .iter()
                .filter(|e| e.uid == uid && e.reason == reason)
                .collect();
            let occurrences: u64 = of_clone.iter().map(|e| e.count).sum();
            let entries = history.entries(uid, reason).max(1) as u64;
            if occurrences > entries {
                problems.push(format!(
                    "clone {} has {occurrences} {reason} events for {entries} holds seen: events {:?}, states seen {:?}",
                    t.plan.name,
                    of_clone,
                    history.states(uid)
                ));
            }
        }
    }
    for e in &events {
        let (window, what) = match e.reason.as_str() {
            "FeatureGateDisabled" => (faults.gate_off, "the Snapshot gate was off"),
            "RestoreCreationFailed" if e.note.contains(ADMISSION_INTERNAL_ERROR) => {
                (faults.admission_errors, "the admission errors were on")
            }
            _ => continue,
        };
        let clone = tracked
            .iter()
            .find(|t| t.uid.as_deref() == Some(e.uid.as_str()))
            .map_or(e.uid.as_str(), |t| t.plan.name.as_str());
        for at in [e.first, e.last].into_iter().flatten() {
            if !within(window, at) {
                problems.push(format!(
                    "clone {clone} got {} at {at}, outside the time {what} ({window:?}, {}s slack): {:?}",
                    e.reason,
                    WINDOW_SLACK.as_secs(),
                    e.note
                ));
            }
        }
    }
    Ok(())
}

/// Whether `at` falls in `window` (its end extended by [`WINDOW_SLACK`]; an open window has no
/// end).
fn within(window: Option<Window>, at: Timestamp) -> bool {
    let Some(window) = window else {
        return false;
    };
    let slack = SignedDuration::try_from(WINDOW_SLACK).unwrap_or(SignedDuration::MAX);
    at >= window.from
        && window
            .to
            .is_none_or(|to| to.checked_add(slack).is_ok_and(|end| at <= end))
}

/// A clone's event of one of the [`HOLD_REASONS`].
#[derive(Debug, Clone)]
struct HoldEvent {
    /// The clone's UID.
    uid: String,
    reason: String,
    note: String,
    /// Occurrences (the series' count, 1 without series).
    count: u64,
    /// The first occurrence.
    first: Option<Timestamp>,
    /// The last one, when the Event is a series.
    last: Option<Timestamp>,
}

/// Every hold event about a clone in `ns`.
async fn hold_events(client: &Client, ns: &str) -> Result<Vec<HoldEvent>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("VirtualMachineClone"))
                && e.reason
                    .as_deref()
                    .is_some_and(|r| HOLD_REASONS.contains(&r))
        })
        .map(|e| HoldEvent {
            uid: e
                .regarding
                .as_ref()
                .and_then(|r| r.uid.clone())
                .unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            note: e.note.clone().unwrap_or_default(),
            count: e
                .series
                .as_ref()
                .map_or(1, |s| u64::try_from(s.count.max(1)).unwrap_or(1)),
            first: e.event_time.as_ref().map(|t| t.0),
            last: e.series.as_ref().map(|s| s.last_observed_time.0),
        })
        .collect())
}

/// Names of the VMs a clone's restore made (`lastRestoreUID` names its temporary restore).
fn made_by(vms: &BTreeMap<String, VirtualMachine>, clone_uid: &str) -> Vec<String> {
    let restore = format!("{TEMP_RESTORE_PREFIX}{clone_uid}");
    vms.iter()
        .filter(|(_, vm)| {
            vm.annotations()
                .get(LAST_RESTORE_UID_ANNOTATION)
                .is_some_and(|v| v.starts_with(&restore))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The temporary snapshots and restores that no clone still waiting explains.
async fn unexplained_temporaries(
    client: &Client,
    ns: &str,
    clones: &Api<VirtualMachineClone>,
) -> Result<Vec<String>> {
    let waiting: Vec<String> = clones
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|c| !c.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
        .filter_map(|c| c.uid())
        .collect();
    Ok(temporary_objects(client, ns)
        .await?
        .into_iter()
        .filter(|name| !waiting.iter().any(|uid| name.ends_with(uid.as_str())))
        .collect())
}

async fn temporary_objects(client: &Client, ns: &str) -> Result<Vec<String>> {
    let snapshots: Api<VirtualMachineSnapshot> = Api::namespaced(client.clone(), ns);
    let restores: Api<VirtualMachineRestore> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default();
    let mut left: Vec<String> = snapshots
        .list_metadata(&lp)
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| n.starts_with(TEMP_SNAPSHOT_PREFIX))
        .collect();
    left.extend(
        restores
            .list_metadata(&lp)
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .filter(|n| n.starts_with(TEMP_RESTORE_PREFIX)),
    );
    Ok(left)
}

/// The identity the clone promised its target.
fn identity(
    ns: &str,
    clone: &VirtualMachineClone,
    t: &Tracked,
    vm: &VirtualMachine,
    problems: &mut Vec<String>,
) -> Result<()> {
    let name = clone.name_any();
    let uid = clone.uid().unwrap_or_default();
    let target = vm.name_any();
    let json = serde_json::to_value(vm)?;
    let domain = json
        .pointer("/spec/template/spec/domain")
        .cloned()
        .unwrap_or(Value::Null);
    let mut expect = |what: &str, got: Option<&str>, want: Option<&str>| {
        if got != want {
            problems.push(format!(
                "clone {name}: target {target} has {what} {got:?}, expected {want:?}"
            ));
        }
    };
    let uuid = clone_core::names::firmware_uuid(&uid);
    expect(
        "firmware UUID",
        domain.pointer("/firmware/uuid").and_then(Value::as_str),
        Some(&uuid),
    );
    let spec = &t.plan.manifest["spec"];
    let serial = spec["newSMBiosSerial"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| clone_core::names::generated_serial(ns, &target));
    expect(
        "serial",
        domain.pointer("/firmware/serial").and_then(Value::as_str),
        Some(&serial),
    );
    let mac = spec["newMacAddresses"]["default"]
        .as_str()
        .map(clone_core::names::normalize_mac);
    expect(
        "MAC address",
        domain
            .pointer("/devices/interfaces/0/macAddress")
            .and_then(Value::as_str),
        mac.as_deref(),
    );
    // The filters: what the source had, filtered, is what the target has.
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
    };
    let (source_labels, source_annotations) = source_metadata(t.plan.source_vm);
    for (field, filters, source, got) in [
        (
            "labels",
            strings(&spec["labelFilters"]),
            source_labels,
            vm.labels(),
        ),
        (
            "annotations",
            strings(&spec["annotationFilters"]),
            source_annotations,
            vm.annotations(),
        ),
    ] {
        let filter = FilterSet::parse_lossy(field, filters.as_deref());
        for key in source {
            let kept = got.contains_key(&key);
            if kept != filter.keeps(&key) {
                problems.push(format!(
                    "clone {name}: target {target} {} {field} key {key}",
                    if kept { "kept" } else { "lost" }
                ));
            }
        }
    }
    Ok(())
}

/// The label and annotation keys of a source VM, as the plan created it.
fn source_metadata(source_vm: &str) -> (Vec<String>, Vec<String>) {
    let vm = plan::initial_objects()
        .into_iter()
        .find(|o| o["kind"] == "VirtualMachine" && o["metadata"]["name"] == source_vm)
        .unwrap_or(Value::Null);
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    (
        keys(&vm["metadata"]["labels"]),
        keys(&vm["metadata"]["annotations"]),
    )
}
