//! What a chaos run creates, decided up front from a seed: the sources, the VMs that exist before
//! any clone, the clones (when each is created and what it must end as) and the faults.
//!
//! Nothing here talks to Kubernetes, so the same seed always gives the same run plan.

use std::time::Duration;

use clone_api::v1beta1::ClonePhase;
use kubevirt_sim::names::{
    FAIL_RESTORE_ANNOTATION, FAIL_SNAPSHOT_ANNOTATION, HOLD_SNAPSHOT_READY_ANNOTATION,
};
use serde_json::{Value, json};

/// A small, seedable generator (SplitMix64): enough randomness for a fault schedule, and
/// reproducible from the seed a failing run prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is zero).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A moment in `from..to`.
    pub fn moment(&mut self, from: Duration, to: Duration) -> Duration {
        let span = to.saturating_sub(from).as_millis() as u64;
        from + Duration::from_millis(self.below(span.max(1)))
    }
}

/// The source VMs: two well-behaved ones, one whose snapshots fail, one whose restores fail, and
/// one that is deleted while its clones run (its snapshots held at their first step meanwhile).
pub const GOOD_SOURCES: [&str; 2] = ["src-a", "src-b"];
/// Its snapshots fail (the sim's annotation on the VM).
pub const FAILING_SNAPSHOT_SOURCE: &str = "src-failsnap";
/// Its restores fail (the annotation travels in the snapshot content).
pub const FAILING_RESTORE_SOURCE: &str = "src-failrestore";
/// Deleted mid-run. It carries the sim's [`HOLD_SNAPSHOT_READY_ANNOTATION`], so every snapshot of
/// it stops at its first step (snapshot `Succeeded`, content not `readyToUse`, source unlocked)
/// until the run releases it after the deletion.
pub const DOOMED_SOURCE: &str = "src-doomed";
/// Prefix of the target VMs that the run's admission policy refuses to create unless the request
/// is a dry run: KubeVirt's restore of such a target retries for ever.
pub const STUCK_PREFIX: &str = "stuck-";
/// The VM name the run probes its admission policy with before the clones start.
pub const STUCK_PROBE: &str = "stuck-probe";
/// The text of the [`Expect::Stall`] failure (the controller's `RestoreFailed` message).
pub const STALL_MESSAGE: &str = "made no progress for";
/// A snapshot of `src-a` taken before the clones start: the golden image some clones use. It
/// must survive every clone.
pub const GOLDEN_SNAPSHOT: &str = "golden";
/// A VM no clone has anything to do with.
pub const BYSTANDER_VM: &str = "bystander";
/// A VM that exists before the clone that names it as its target.
pub const TAKEN_VM: &str = "taken";

/// How a clone must end (when the run does not delete it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `Succeeded`.
    Succeed,
    /// `Failed` with this Ready reason.
    Fail(&'static str),
    /// Its source is deleted mid-run, while the snapshots of it are held at their first step:
    /// `Succeeded` when its snapshot existed before the source went (the controller follows the
    /// snapshot; a clone whose snapshot had reached the first step when the run deleted the
    /// source must succeed, see [`Tracked::snapshot_held`](crate::Tracked::snapshot_held)), `Pending` with
    /// `SourceDoesNotExist` when the source went before the clone took its snapshot, or
    /// `SnapshotInProgress` on a snapshot that KubeVirt reports without source (taken as the
    /// source went; KubeVirt fails it at its deadline, long after the run).
    SourceMayVanish,
    /// Its target is refused by the API server except in dry runs, so KubeVirt retries its
    /// restore for ever: `Failed` with `RestoreFailed` and a message saying the restore
    /// [`STALL_MESSAGE`], after the controller's restore stall timeout.
    Stall,
}

/// Which clones the run makes, in which flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// A VM source with the default filters.
    Plain,
    /// A VM source with filters, new MAC addresses and a new serial.
    Custom,
    /// The golden snapshot as source.
    FromSnapshot,
    /// A source whose snapshot fails.
    SnapshotFails,
    /// A source whose restore fails.
    RestoreFails,
    /// The source that gets deleted.
    Doomed,
    /// Targets an existing VM.
    TargetTaken,
    /// Targets `stuck-<n>`, which the API server admits in a dry run only.
    Stuck,
}

/// The flavours every run contains at least once, in this order, before random ones (the stuck
/// clone first: it takes the stall timeout to end).
const EVERY_FLAVOUR: [Flavour; 8] = [
    Flavour::Stuck,
    Flavour::Plain,
    Flavour::Custom,
    Flavour::FromSnapshot,
    Flavour::SnapshotFails,
    Flavour::RestoreFails,
    Flavour::Doomed,
    Flavour::TargetTaken,
];

/// One clone of the run.
#[derive(Debug, Clone)]
pub struct PlannedClone {
    /// Its name.
    pub name: String,
    /// Its flavour.
    pub flavour: Flavour,
    /// When it is created, from the start of the run.
    pub at: Duration,
    /// The manifest (without namespace).
    pub manifest: Value,
    /// How it must end.
    pub expect: Expect,
    /// The VM it copies (for a snapshot source: the VM the snapshot was taken of).
    pub source_vm: &'static str,
}

/// A fault the run injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 the (leading) controller and start it again.
    KillController,
    /// Restart kube-apiserver (SIGKILL, then start on the same etcd).
    RestartApiserver,
    /// Restart etcd (SIGKILL, then start on the same data).
    RestartEtcd,
    /// Delete a clone that is still working.
    DeleteClone,
    /// Hold the first-step snapshots of [`DOOMED_SOURCE`] there (annotate them) and delete the
    /// VM; fired once one such snapshot exists. [`Fault::ReleaseSnapshots`] follows.
    DeleteSource,
    /// Lift the hold of the doomed source's snapshots.
    ReleaseSnapshots,
    /// Annotate the run's namespace so that the restore admission webhook answers every restore
    /// creation with an internal error (HTTP 400). [`Fault::AdmissionErrorsOff`] follows.
    AdmissionErrorsOn,
    /// Remove that annotation.
    AdmissionErrorsOff,
    /// Turn KubeVirt's `Snapshot` feature gate off. [`Fault::FeatureGateOn`] follows.
    FeatureGateOff,
    /// Turn it on again.
    FeatureGateOn,
}

impl Fault {
    /// The fault that ends the state this one starts, fired [`FaultCounts::window`] after it.
    pub fn follow_up(&self) -> Option<Fault> {
        match self {
            Fault::DeleteSource => Some(Fault::ReleaseSnapshots),
            Fault::AdmissionErrorsOn => Some(Fault::AdmissionErrorsOff),
            Fault::FeatureGateOff => Some(Fault::FeatureGateOn),
            _ => None,
        }
    }

    /// Whether the fault ends a state another one started: it is never skipped (the run fires it
    /// before checking, even when every clone has settled).
    pub fn ends_a_window(&self) -> bool {
        matches!(
            self,
            Fault::ReleaseSnapshots | Fault::AdmissionErrorsOff | Fault::FeatureGateOn
        )
    }

    /// For the fault that ends a window: the Ready reason of the holds the window causes.
    pub fn hold_reason(&self) -> Option<&'static str> {
        match self {
            Fault::AdmissionErrorsOff => Some("RestoreCreationFailed"),
            Fault::FeatureGateOn => Some("FeatureGateDisabled"),
            _ => None,
        }
    }

    /// A short name of the kind, for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillController => "kill -9 controller",
            Fault::RestartApiserver => "kube-apiserver restart",
            Fault::RestartEtcd => "etcd restart",
            Fault::DeleteClone => "clone deletion",
            Fault::DeleteSource => "source deletion (snapshots held)",
            Fault::ReleaseSnapshots => "held snapshots released",
            Fault::AdmissionErrorsOn => "restore admission errors on",
            Fault::AdmissionErrorsOff => "restore admission errors off",
            Fault::FeatureGateOff => "Snapshot feature gate off",
            Fault::FeatureGateOn => "Snapshot feature gate on",
        }
    }
}

/// When a fault fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// At this moment of the run.
    At(Duration),
    /// As soon as some clone is seen in this phase for the first time.
    Phase(ClonePhase),
}

/// A fault and its trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFault {
    /// What.
    pub fault: Fault,
    /// When.
    pub trigger: Trigger,
}

/// How much of each fault a run injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultCounts {
    /// Kill the controller the first time a clone is seen in each working phase and in
    /// `Succeeded`.
    pub kill_at_each_phase: bool,
    /// Kills at random moments.
    pub random_kills: usize,
    /// kube-apiserver restarts at random moments.
    pub apiserver_restarts: usize,
    /// etcd restarts at random moments.
    pub etcd_restarts: usize,
    /// Clones deleted mid-way.
    pub clone_deletions: usize,
    /// Delete the doomed source mid-way (while its snapshots are held at their first step).
    pub delete_source: bool,
    /// A window in which the restore admission webhook answers every restore creation with an
    /// internal error (HTTP 400).
    pub admission_errors: bool,
    /// A window in which KubeVirt's `Snapshot` feature gate is off.
    pub gate_off: bool,
    /// How long each window lasts (longer, up to three times as long, until a clone is seen
    /// held by it), and how long the doomed source's snapshots stay held after its deletion.
    pub window: Duration,
}

/// The phases at which the controller is killed.
pub const KILL_PHASES: [ClonePhase; 4] = [
    ClonePhase::SnapshotInProgress,
    ClonePhase::RestoreInProgress,
    ClonePhase::CreatingTargetVM,
    ClonePhase::Succeeded,
];

/// The clones of a run: `count` clones created evenly over `spread`.
pub fn clones(rng: &mut Rng, count: usize, spread: Duration) -> Vec<PlannedClone> {
    let mut taken_used = false;
    (0..count)
        .map(|i| {
            let mut flavour = EVERY_FLAVOUR.get(i).copied().unwrap_or_else(|| {
                // Mostly clones that should succeed, some of every failure.
                match rng.below(21) {
                    0..=7 => Flavour::Plain,
                    8..=10 => Flavour::Custom,
                    11..=13 => Flavour::FromSnapshot,
                    14 => Flavour::SnapshotFails,
                    15 => Flavour::RestoreFails,
                    16..=18 => Flavour::Doomed,
                    19 => Flavour::TargetTaken,
                    _ => Flavour::Stuck,
                }
            });
            // One clone may claim the existing VM; more would only race each other for it.
            if flavour == Flavour::TargetTaken {
                if taken_used {
                    flavour = Flavour::Plain;
                }
                taken_used = true;
            }
            let at = if count <= 1 {
                Duration::ZERO
            } else {
                spread.mul_f64(i as f64 / (count - 1) as f64)
            };
            let name = format!("c-{i:04}");
            let source_vm = match flavour {
                Flavour::Plain | Flavour::Custom | Flavour::TargetTaken | Flavour::Stuck => {
                    GOOD_SOURCES[rng.below(2) as usize]
                }
                Flavour::FromSnapshot => GOOD_SOURCES[0],
                Flavour::SnapshotFails => FAILING_SNAPSHOT_SOURCE,
                Flavour::RestoreFails => FAILING_RESTORE_SOURCE,
                Flavour::Doomed => DOOMED_SOURCE,
            };
            PlannedClone {
                manifest: manifest(&name, flavour, source_vm, i),
                source_vm,
                name,
                flavour,
                at,
                expect: match flavour {
                    Flavour::Plain | Flavour::Custom | Flavour::FromSnapshot => Expect::Succeed,
                    Flavour::SnapshotFails => Expect::Fail("SnapshotFailed"),
                    Flavour::RestoreFails => Expect::Fail("RestoreFailed"),
                    Flavour::Doomed => Expect::SourceMayVanish,
                    Flavour::TargetTaken => Expect::Fail("TargetExists"),
                    Flavour::Stuck => Expect::Stall,
                },
            }
        })
        .collect()
}

fn manifest(name: &str, flavour: Flavour, source_vm: &str, index: usize) -> Value {
    let source = if flavour == Flavour::FromSnapshot {
        json!({"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot",
               "name": GOLDEN_SNAPSHOT})
    } else {
        json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": source_vm})
    };
    let mut spec = json!({"source": source});
    // Half the clones name their target, half let the controller generate it.
    if flavour == Flavour::TargetTaken {
        spec["target"] =
            json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": TAKEN_VM});
    } else if flavour == Flavour::Stuck {
        spec["target"] = json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine",
            "name": format!("{STUCK_PREFIX}{index:04}")});
    } else if index.is_multiple_of(2) {
        spec["target"] = json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine",
            "name": format!("t-{index:04}")});
    }
    if flavour == Flavour::Custom {
        spec["labelFilters"] = json!(["*", "!somekey/*"]);
        spec["annotationFilters"] = json!(["anotherkey/*"]);
        spec["newMacAddresses"] = json!({"default": format!("02:aa:00:00:{:02x}:{:02x}", index / 256 % 256, index % 256)});
        spec["newSMBiosSerial"] = json!(format!("serial-{index}"));
    }
    json!({
        "apiVersion": "clone.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClone",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The fault schedule: random moments fall inside `window` (while clones are being created and
/// run). The admission-error and gate-off windows start in different parts of it (which first
/// follows the seed; the run also never opens one while the other is open, so that each hold has
/// one cause); the doomed source goes in its second half, once some of its clones have taken
/// their snapshot. The faults that end a window are not planned here: the run fires them
/// [`FaultCounts::window`] after the fault they follow.
pub fn faults(rng: &mut Rng, counts: &FaultCounts, window: Duration) -> Vec<PlannedFault> {
    let mut planned = Vec::new();
    let start = window.mul_f64(0.1);
    let at = |rng: &mut Rng, fault: Fault| PlannedFault {
        fault,
        trigger: Trigger::At(rng.moment(start, window)),
    };
    let between = |rng: &mut Rng, fault: Fault, from: f64, to: f64| PlannedFault {
        fault,
        trigger: Trigger::At(rng.moment(window.mul_f64(from), window.mul_f64(to))),
    };
    for _ in 0..counts.random_kills {
        planned.push(at(rng, Fault::KillController));
    }
    for _ in 0..counts.apiserver_restarts {
        planned.push(at(rng, Fault::RestartApiserver));
    }
    for _ in 0..counts.etcd_restarts {
        planned.push(at(rng, Fault::RestartEtcd));
    }
    for _ in 0..counts.clone_deletions {
        planned.push(at(rng, Fault::DeleteClone));
    }
    if counts.delete_source {
        planned.push(between(rng, Fault::DeleteSource, 0.4, 1.0));
    }
    let (mut early, mut late) = (Fault::AdmissionErrorsOn, Fault::FeatureGateOff);
    if rng.below(2) == 1 {
        std::mem::swap(&mut early, &mut late);
    }
    for (fault, from, to) in [(early, 0.15, 0.35), (late, 0.6, 0.8)] {
        let wanted = match fault {
            Fault::AdmissionErrorsOn => counts.admission_errors,
            _ => counts.gate_off,
        };
        if wanted {
            planned.push(between(rng, fault, from, to));
        }
    }
    if counts.kill_at_each_phase {
        planned.extend(KILL_PHASES.iter().map(|phase| PlannedFault {
            fault: Fault::KillController,
            trigger: Trigger::Phase(*phase),
        }));
    }
    planned
}

/// A PVC on snapshot-capable storage and a halted VM using it, carrying identity a clone must not
/// copy (MACs, serial, firmware UUID) and labels and annotations for the filters.
pub fn source_vm(name: &str, annotations: &[(&str, &str)]) -> (Value, Value) {
    let claim = format!("{name}-root");
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": kubevirt_sim::names::STORAGE_CLASS_SNAPSHOT,
                 "resources": {"requests": {"storage": "1Gi"}}},
    });
    let mut vm_annotations = json!({"anotherkey/keep": "yes", "description": "a chaos source"});
    for (key, value) in annotations {
        vm_annotations[*key] = json!(value);
    }
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "chaos", "somekey/owner": "team-a"},
                     "annotations": vm_annotations},
        "spec": {"runStrategy": "Halted", "template": {
            "metadata": {"labels": {"kubevirt.io/vm": name}},
            "spec": {
                "domain": {
                    "devices": {
                        "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                        "interfaces": [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"}],
                    },
                    "firmware": {"serial": format!("{name}-serial"), "uuid": "0f9f4e33-1a3b-4b3b-9d36-000000000001"},
                    "resources": {"requests": {"memory": "128Mi"}},
                },
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": claim}}],
            }}},
    });
    (pvc, vm)
}

/// The manifests of every VM (and PVC) that exists before the clones.
pub fn initial_objects() -> Vec<Value> {
    let mut objects = Vec::new();
    for name in GOOD_SOURCES {
        let (pvc, vm) = source_vm(name, &[]);
        objects.extend([pvc, vm]);
    }
    let (pvc, vm) = source_vm(DOOMED_SOURCE, &[(HOLD_SNAPSHOT_READY_ANNOTATION, "true")]);
    objects.extend([pvc, vm]);
    let (pvc, vm) = source_vm(
        FAILING_SNAPSHOT_SOURCE,
        &[(FAIL_SNAPSHOT_ANNOTATION, "true")],
    );
    objects.extend([pvc, vm]);
    let (pvc, vm) = source_vm(FAILING_RESTORE_SOURCE, &[(FAIL_RESTORE_ANNOTATION, "true")]);
    objects.extend([pvc, vm]);
    for name in [BYSTANDER_VM, TAKEN_VM] {
        objects.push(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "labels": {"app": "unrelated"}},
            "spec": {"runStrategy": "Halted", "template": {"spec": {
                "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}},
        }));
    }
    objects
}

/// The golden snapshot of the first good source.
pub fn golden_snapshot() -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": GOLDEN_SNAPSHOT},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": GOOD_SOURCES[0]}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let plan = |seed| {
            let mut rng = Rng::new(seed);
            let clones = clones(&mut rng, 30, Duration::from_secs(10));
            let names: Vec<(String, Flavour, Duration)> = clones
                .into_iter()
                .map(|c| (c.name, c.flavour, c.at))
                .collect();
            (names, faults(&mut rng, &counts(), Duration::from_secs(10)))
        };
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
    }

    fn counts() -> FaultCounts {
        FaultCounts {
            kill_at_each_phase: true,
            random_kills: 2,
            apiserver_restarts: 1,
            etcd_restarts: 1,
            clone_deletions: 2,
            delete_source: true,
            admission_errors: true,
            gate_off: true,
            window: Duration::from_secs(2),
        }
    }

    #[test]
    fn every_flavour_is_in_a_run_and_only_one_clone_claims_the_taken_vm() {
        let mut rng = Rng::new(1);
        let clones = clones(&mut rng, 200, Duration::from_secs(10));
        for flavour in EVERY_FLAVOUR {
            assert!(clones.iter().any(|c| c.flavour == flavour), "{flavour:?}");
        }
        let taken = clones
            .iter()
            .filter(|c| c.manifest["spec"]["target"]["name"] == TAKEN_VM)
            .count();
        assert_eq!(taken, 1);
        assert!(clones.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(clones.last().map(|c| c.at), Some(Duration::from_secs(10)));
    }

    #[test]
    fn random_faults_fall_inside_the_window() {
        let mut rng = Rng::new(3);
        let window = Duration::from_secs(20);
        let faults = faults(&mut rng, &counts(), window);
        assert_eq!(faults.len(), 2 + 1 + 1 + 2 + 1 + 2 + KILL_PHASES.len());
        for f in &faults {
            if let Trigger::At(at) = f.trigger {
                assert!(at >= window.mul_f64(0.1) && at <= window, "{f:?}");
            }
            assert!(!f.fault.ends_a_window(), "{f:?} is fired by the run");
        }
    }

    #[test]
    fn the_two_windows_never_overlap() {
        let window = Duration::from_secs(8);
        let mut counts = counts();
        counts.window = window.mul_f64(0.25);
        for seed in 0..50 {
            let mut rng = Rng::new(seed);
            let starts: Vec<Duration> = faults(&mut rng, &counts, window)
                .into_iter()
                .filter(|f| f.fault.follow_up().is_some() && f.fault != Fault::DeleteSource)
                .filter_map(|f| match f.trigger {
                    Trigger::At(at) => Some(at),
                    Trigger::Phase(_) => None,
                })
                .collect();
            assert_eq!(starts.len(), 2, "seed {seed}: {starts:?}");
            let (first, second) = (starts[0].min(starts[1]), starts[0].max(starts[1]));
            assert!(first + counts.window <= second, "seed {seed}: {starts:?}");
        }
    }

    #[test]
    fn stuck_clones_target_a_refused_name_and_expect_a_stall() {
        let mut rng = Rng::new(9);
        let clones = clones(&mut rng, 100, Duration::from_secs(10));
        let stuck: Vec<&PlannedClone> = clones
            .iter()
            .filter(|c| c.flavour == Flavour::Stuck)
            .collect();
        assert!(!stuck.is_empty());
        for c in stuck {
            let target = c.manifest["spec"]["target"]["name"]
                .as_str()
                .unwrap_or_default();
            assert!(target.starts_with(STUCK_PREFIX), "{target}");
            assert_ne!(target, STUCK_PROBE);
            assert_eq!(c.expect, Expect::Stall);
        }
    }

    #[test]
    fn source_vm_follows_the_manifest() {
        let mut rng = Rng::new(5);
        for c in clones(&mut rng, 50, Duration::from_secs(1)) {
            let named = c.manifest["spec"]["source"]["name"]
                .as_str()
                .unwrap_or_default();
            if c.flavour == Flavour::FromSnapshot {
                assert_eq!(named, GOLDEN_SNAPSHOT);
            } else {
                assert_eq!(named, c.source_vm);
            }
        }
    }
}
