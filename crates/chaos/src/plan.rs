//! What a chaos run creates, decided up front from a seed: the sources, the VMs that exist before
//! any clone, the clones (when each is created and what it must end as) and the faults.
//!
//! Nothing here talks to Kubernetes, so the same seed always gives the same run plan.

use std::time::Duration;

use clone_api::v1beta1::ClonePhase;
use kubevirt_sim::names::{FAIL_RESTORE_ANNOTATION, FAIL_SNAPSHOT_ANNOTATION};
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
/// one that is deleted while its clones run.
pub const GOOD_SOURCES: [&str; 2] = ["src-a", "src-b"];
/// Its snapshots fail (the sim's annotation on the VM).
pub const FAILING_SNAPSHOT_SOURCE: &str = "src-failsnap";
/// Its restores fail (the annotation travels in the snapshot content).
pub const FAILING_RESTORE_SOURCE: &str = "src-failrestore";
/// Deleted mid-run.
pub const DOOMED_SOURCE: &str = "src-doomed";
/// A snapshot of `src-a` taken before the clones start: the golden image some clones use. It
/// must survive every clone.
pub const GOLDEN_SNAPSHOT: &str = "golden";
/// A VM no clone has anything to do with.
pub const BYSTANDER_VM: &str = "bystander";
/// A VM that exists before the clone that names it as its target.
pub const TAKEN_VM: &str = "taken";

/// Every VM that exists before the clones (sources and pre-existing VMs).
pub fn initial_vms() -> Vec<&'static str> {
    let mut vms = GOOD_SOURCES.to_vec();
    vms.extend([
        FAILING_SNAPSHOT_SOURCE,
        FAILING_RESTORE_SOURCE,
        DOOMED_SOURCE,
        BYSTANDER_VM,
        TAKEN_VM,
    ]);
    vms
}

/// How a clone must end (when the run does not delete it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `Succeeded`.
    Succeed,
    /// `Failed` with this Ready reason.
    Fail(&'static str),
    /// Its source is deleted mid-run: `Succeeded` when the snapshot was ready before (or the
    /// source went the moment it was), `Pending` with `SourceDoesNotExist` when the source went
    /// before the clone took its snapshot, waiting on a snapshot that KubeVirt reports without
    /// source (until KubeVirt's deadline fails it), or `Failed` with a reason if the snapshot
    /// itself failed because the VM vanished under it.
    SourceMayVanish,
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
}

/// The flavours every run contains at least once, in this order, before random ones.
const EVERY_FLAVOUR: [Flavour; 7] = [
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
    /// Delete [`DOOMED_SOURCE`].
    DeleteSource,
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
    /// Delete the doomed source mid-way.
    pub delete_source: bool,
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
                match rng.below(20) {
                    0..=7 => Flavour::Plain,
                    8..=10 => Flavour::Custom,
                    11..=13 => Flavour::FromSnapshot,
                    14 => Flavour::SnapshotFails,
                    15 => Flavour::RestoreFails,
                    16..=18 => Flavour::Doomed,
                    _ => Flavour::TargetTaken,
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
                Flavour::Plain | Flavour::Custom | Flavour::TargetTaken => {
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
/// run).
pub fn faults(rng: &mut Rng, counts: &FaultCounts, window: Duration) -> Vec<PlannedFault> {
    let mut planned = Vec::new();
    let start = window.mul_f64(0.1);
    let at = |rng: &mut Rng, fault: Fault| PlannedFault {
        fault,
        trigger: Trigger::At(rng.moment(start, window)),
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
        planned.push(at(rng, Fault::DeleteSource));
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
    for name in GOOD_SOURCES.iter().copied().chain([DOOMED_SOURCE]) {
        let (pvc, vm) = source_vm(name, &[]);
        objects.extend([pvc, vm]);
    }
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
        assert_eq!(faults.len(), 2 + 1 + 1 + 2 + 1 + KILL_PHASES.len());
        for f in &faults {
            if let Trigger::At(at) = f.trigger {
                assert!(at >= window.mul_f64(0.1) && at <= window, "{f:?}");
            }
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
