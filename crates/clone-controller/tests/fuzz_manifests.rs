//! Random `VirtualMachineClone` manifests against the real API server, the KubeVirt stand-in and
//! the controller.
//!
//! Each manifest mixes valid and invalid parts: both API versions; sources that exist, are
//! missing, have the wrong kind, group or an empty name; target names that are valid, shared
//! with another clone, too long, upper case, empty or the source's own; filters, MACs, serials,
//! patches, volume name policies, and the `vmclone.dev/*` annotations (strategies, run
//! strategies, source namespaces, unknown keys) that the API accepts or not; unknown fields. Every manifest goes through `kubectl create` as a user would send it. The
//! property: the API server refuses it with a message that names the field, or accepts it and
//! the clone ends `Succeeded` (with its own target VM) or `Failed` (with a reason and a message),
//! or, when its source does not exist, waits `Pending` with `SourceDoesNotExist`. Afterwards a
//! well-formed clone still succeeds: nothing the fuzzer sent broke the controller.
//!
//! The generator is a fixed-seed SplitMix64, so a run is reproducible; `VMCLONE_FUZZ_SEED`
//! (decimal or `0x` hex) explores other seeds and `VMCLONE_FUZZ_CASES` changes the count. A
//! failing case is reported with the seed, its index and its manifest.
//!
//! Patches that pass validation but cannot apply to the VM (a `remove` of a missing label, a
//! failing `test`) are generated too: KubeVirt's restore would retry them forever, so the
//! controller must fail such a clone with `InvalidSpec` before it creates the restore (this test
//! found that it waited in `RestoreInProgress` instead).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clone_api::extensions;
use clone_api::kubevirt::{VirtualMachine, VirtualMachineSnapshot};
use clone_api::names::LAST_RESTORE_UID_ANNOTATION;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone, VirtualMachineCloneStatus};
use common::{CLONE_TIMEOUT, Harness, clone_manifest};
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::{Value, json};
use testenv::wait_for;

/// The default seed (any value works; this one is fixed so runs repeat).
const SEED: u64 = 0x5eed_c10e_2026;
/// How many manifests one run sends.
const CASES: usize = 48;
/// How long the accepted clones may take, all together (they run concurrently; snapshots of
/// one VM queue behind each other).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(240);

/// The VMs and the snapshot that exist before the clones are created.
const SOURCE_VMS: [&str; 2] = ["src-a", "src-b"];
const GOLDEN: &str = "golden";

/// The fault suite's seeded generator, with the notion of a case that may hold odd parts.
struct Rng {
    inner: chaos::plan::Rng,
    /// Whether the case being generated may hold parts the API refuses (about half do, so
    /// about half the clones get past the API server).
    odd: bool,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Self {
            inner: chaos::plan::Rng::new(seed),
            odd: false,
        }
    }

    fn next(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with `percent` % probability.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// True with `percent` % probability in a case that may be odd, else never.
    fn odd_chance(&mut self, percent: u64) -> bool {
        self.odd && self.chance(percent)
    }

    /// The weight of an odd choice: `weight` in a case that may be odd, else 0.
    fn odd_weight(&self, weight: u64) -> u64 {
        if self.odd { weight } else { 0 }
    }

    /// An index into `weights`, each chosen in proportion to its weight.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut roll = self.next() % weights.iter().sum::<u64>().max(1);
        for (index, weight) in weights.iter().enumerate() {
            if roll < *weight {
                return index;
            }
            roll -= weight;
        }
        0
    }

    /// One of `items` (never empty here).
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        let index = self.below(items.len());
        items[index].clone()
    }
}

/// One generated manifest.
#[derive(Debug, Clone)]
struct Case {
    index: usize,
    name: String,
    manifest: Value,
    /// Whether the source the controller will look for exists.
    source_exists: bool,
}

impl Case {
    fn describe(&self) -> String {
        format!("case {} ({}): {}", self.index, self.name, self.manifest)
    }
}

const GOOD_FILTERS: [&str; 8] = [
    "*",
    "!kubevirt.io/*",
    "app",
    "!somekey/*",
    "anotherkey/*",
    "!*",
    "description",
    "!app.kubernetes.io/instance",
];
const ODD_FILTERS: [&str; 10] = [
    "", "!", "a!b", "*x", "so me", "k?", "[x]", "ünï", "!!", "a*b*",
];

fn filter_list(rng: &mut Rng) -> Option<Value> {
    if !rng.chance(40) {
        return None;
    }
    if rng.odd_chance(3) {
        // Not a list at all.
        return Some(json!("app"));
    }
    let filters: Vec<&str> = (0..rng.below(4))
        .map(|_| {
            if !rng.odd_chance(10) {
                rng.pick(&GOOD_FILTERS)
            } else {
                rng.pick(&ODD_FILTERS)
            }
        })
        .collect();
    Some(json!(filters))
}

fn source(rng: &mut Rng) -> Value {
    let vm =
        |name: &str| json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name});
    let snapshot = |name: &str| json!({"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot", "name": name});
    let o = rng.odd_weight(1);
    match rng.weighted(&[12, 6, 2, 2, o, o, o, o, o]) {
        0 => vm(rng.pick(&SOURCE_VMS)),
        1 => snapshot(GOLDEN),
        2 => vm("no-such-vm"),
        3 => snapshot("no-such-snapshot"),
        4 => json!({"apiGroup": "", "kind": "Pod", "name": "src-a"}),
        5 => json!({"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachine", "name": "src-a"}),
        6 => json!({"kind": "VirtualMachine", "name": "src-a"}),
        7 => vm(""),
        _ => json!({"apiGroup": "kubevirt.io", "kind": "virtualmachine", "name": "src-a"}),
    }
}

fn target(rng: &mut Rng, index: usize, source_name: &str) -> Option<Value> {
    let full =
        |name: &str| json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": name});
    let own = format!("t-{index}");
    let o = rng.odd_weight(1);
    match rng.weighted(&[10, 2, 2, 2, 3, o, o, 2, o, o]) {
        0 => Some(full(&own)),
        1 => None,
        2 => Some(json!({"name": own})),
        3 => Some(json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine"})),
        4 => Some(full("t-shared")),
        5 => Some(full(&rng.pick(&[
            "T-Upper".to_owned(),
            String::new(),
            "bad_name".to_owned(),
            "-lead".to_owned(),
            "x".repeat(64),
        ]))),
        6 => Some(full(source_name)),
        7 => Some(full(rng.pick(&SOURCE_VMS))),
        8 => {
            Some(json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachineInstance", "name": own}))
        }
        _ => Some(json!({"apiGroup": "apps", "kind": "VirtualMachine", "name": own})),
    }
}

fn macs(rng: &mut Rng) -> Option<Value> {
    if !rng.chance(35) {
        return None;
    }
    let mut map = serde_json::Map::new();
    for _ in 0..=rng.below(3) {
        let interface = rng.pick(&["default", "interfaceName", "eth9"]);
        let mac = if !rng.odd_chance(10) {
            json!(rng.pick(&["02:00:00:00:00:aa", "02-00-00-00-00-BB", ""]))
        } else {
            rng.pick(&[
                json!("zz"),
                json!("02:00:00:00:00"),
                json!("02:00-00:00:00:00"),
                json!(5),
            ])
        };
        map.insert(interface.to_owned(), mac);
    }
    Some(Value::Object(map))
}

/// Patches that apply to the source VMs (their parents exist), and patches the API refuses or
/// the controller fails as `InvalidSpec`: the first two apply nowhere on these VMs, the last two
/// pass the CRD's approximation of a JSON Patch operation.
const APPLICABLE_PATCHES: [&str; 4] = [
    r#"{"op":"add","path":"/spec/template/metadata/labels/fuzz","value":"yes"}"#,
    r#"{"op":"add","path":"/metadata/labels/fuzz","value":"yes"}"#,
    r#"{"op":"replace","path":"/spec/runStrategy","value":"Halted"}"#,
    r#"{"op": "add", "path": "/metadata/annotations/fuzz-note", "value": "hello"}"#,
];
const BAD_PATCHES: [&str; 8] = [
    r#"{"op":"remove","path":"/metadata/labels/no-such-label"}"#,
    r#"{"op":"test","path":"/spec/runStrategy","value":"Always"}"#,
    "not json",
    r#"{"op":"add","path":"/status/x","value":"y"}"#,
    r#"{"op":"add","path":"/spec/x","value":"a,b"}"#,
    r#"{"op":"bogus","path":"/spec/x"}"#,
    r#"{"op":"add","path":"/spec/x","value":"a"}}"#,
    r#"{"op":"add","path":"/spec/x"}"#,
];

fn patches(rng: &mut Rng) -> Option<Value> {
    if !rng.chance(35) {
        return None;
    }
    let list: Vec<&str> = (0..=rng.below(3))
        .map(|_| {
            if !rng.odd_chance(30) {
                rng.pick(&APPLICABLE_PATCHES)
            } else {
                rng.pick(&BAD_PATCHES)
            }
        })
        .collect();
    Some(json!(list))
}

fn generate(rng: &mut Rng, index: usize, namespace: &str) -> Case {
    rng.odd = rng.chance(55);
    let name = format!("fz-{index}");
    let api_version = rng.pick(&["clone.kubevirt.io/v1beta1", "clone.kubevirt.io/v1alpha1"]);
    let source = source(rng);
    let kind = source["kind"].as_str().unwrap_or_default().to_owned();
    let source_name = source["name"].as_str().unwrap_or_default().to_owned();
    // The controller looks a snapshot source up as a snapshot and anything else as a VM.
    let source_exists = if kind == "VirtualMachineSnapshot" {
        source_name == GOLDEN
    } else {
        SOURCE_VMS.contains(&source_name.as_str())
    };
    let o = rng.odd_weight(1);
    let mut spec = serde_json::Map::new();
    spec.insert("source".into(), source);
    let optional: [(&str, Option<Value>); 7] = [
        ("target", target(rng, index, &source_name)),
        ("labelFilters", filter_list(rng)),
        ("annotationFilters", filter_list(rng)),
        ("newMacAddresses", macs(rng)),
        (
            "newSMBiosSerial",
            rng.chance(30)
                .then(|| match rng.weighted(&[6, 2, o, o, o, o]) {
                    0 => json!(format!("serial-{index}")),
                    1 => json!(""),
                    2 => json!("a,b"),
                    3 => json!("a:b"),
                    4 => json!("s".repeat(300)),
                    _ => json!(42),
                }),
        ),
        ("patches", patches(rng)),
        (
            "volumeNamePolicy",
            rng.chance(25).then(|| match rng.weighted(&[1, 2, o]) {
                0 => json!("RandomizeNames"),
                1 => json!("PrefixTargetName"),
                _ => json!("Bogus"),
            }),
        ),
    ];
    let mut annotations = serde_json::Map::new();
    if rng.chance(20) {
        let run = match rng.weighted(&[1, 2, o]) {
            0 => "Halted",
            1 => "Manual",
            _ => "Bogus",
        };
        annotations.insert(extensions::TARGET_RUN_STRATEGY.into(), json!(run));
    }
    for (field, value) in optional {
        if let Some(value) = value {
            spec.insert(field.into(), value);
        }
    }
    if rng.chance(25) {
        let labels = filter_list(rng);
        let annotations = filter_list(rng);
        let mut template = serde_json::Map::new();
        if let Some(l) = labels {
            template.insert("labelFilters".into(), l);
        }
        if let Some(a) = annotations {
            template.insert("annotationFilters".into(), a);
        }
        spec.insert("template".into(), Value::Object(template));
    }
    if rng.chance(20) {
        let strategy = match rng.weighted(&[2, 1, 1, o]) {
            0 => "Snapshot",
            1 => "Auto",
            2 => "DataVolume",
            _ => "Bogus",
        };
        annotations.insert(extensions::STRATEGY.into(), json!(strategy));
    }
    if rng.chance(6) {
        // A cross-namespace source (needs a strategy other than Snapshot), or this namespace
        // named explicitly.
        let ns = rng.pick(&[namespace, "elsewhere"]);
        annotations.insert(extensions::SOURCE_NAMESPACE.into(), json!(ns));
        annotations.insert(extensions::STRATEGY.into(), json!("Auto"));
    }
    if rng.odd_chance(10) {
        annotations.insert("vmclone.dev/bogus".into(), json!("x"));
    }
    if rng.odd_chance(8) {
        spec.insert("bogusField".into(), json!(1));
    }
    if rng.odd_chance(5)
        && let Some(source) = spec.get_mut("source").and_then(Value::as_object_mut)
    {
        source.insert("extra".into(), json!("x"));
    }
    let mut manifest = json!({
        "apiVersion": api_version,
        "kind": "VirtualMachineClone",
        "metadata": {"name": name, "annotations": Value::Object(annotations)},
        "spec": Value::Object(spec),
    });
    if rng.odd_chance(3)
        && let Some(object) = manifest.as_object_mut()
    {
        object.remove("spec");
    }
    Case {
        index,
        name,
        manifest,
        source_exists,
    }
}

/// Whether an API server refusal names the field it is about: the schema's field paths
/// (`spec.…`), or the admission policy's messages, which name the field or annotation.
fn names_a_field(message: &str) -> bool {
    [
        "spec.",
        "spec:",
        "spec is immutable",
        "Source",
        "Target",
        "newSMBiosSerial",
        "volumeNamePolicy",
        "patch",
        "interface",
        "annotation",
        "vmclone.dev/",
    ]
    .iter()
    .any(|word| message.contains(word))
}

/// Where a clone has got to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed { reason: String },
    WaitingForSource,
    Working,
}

fn outcome(status: Option<&VirtualMachineCloneStatus>) -> Outcome {
    let Some(status) = status else {
        return Outcome::Working;
    };
    let ready = status.condition("Ready");
    let reason = ready.and_then(|c| c.reason.clone()).unwrap_or_default();
    let message = ready.and_then(|c| c.message.clone()).unwrap_or_default();
    let progressing = status
        .condition("Progressing")
        .and_then(|c| c.reason.clone());
    match status.phase {
        ClonePhase::Succeeded if ready.is_some_and(|c| c.status == "True") => Outcome::Succeeded,
        ClonePhase::Failed if !reason.is_empty() && !message.is_empty() => {
            Outcome::Failed { reason }
        }
        ClonePhase::Unset
            if reason == "SourceDoesNotExist" && progressing.as_deref() == Some("Pending") =>
        {
            Outcome::WaitingForSource
        }
        _ => Outcome::Working,
    }
}

/// Settled: terminal, or waiting for a source that indeed does not exist.
fn settled(case: &Case, outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Succeeded | Outcome::Failed { .. } => true,
        Outcome::WaitingForSource => !case.source_exists,
        Outcome::Working => false,
    }
}

fn env_number(name: &str) -> Result<Option<u64>> {
    let Ok(text) = std::env::var(name) else {
        return Ok(None);
    };
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Ok(Some(parsed.with_context(|| format!("{name}={text}"))?))
}

/// The sources: two VMs and a ready snapshot of the second.
async fn create_sources(h: &Harness) -> Result<()> {
    for vm in SOURCE_VMS {
        h.create_source_vm(vm, "sim-snapshot").await?;
    }
    h.apply(
        &json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                "metadata": {"name": GOLDEN},
                "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "src-b"}}})
        .to_string(),
    ).await?;
    let snapshots = h.api::<VirtualMachineSnapshot>();
    wait_for("the golden snapshot to be ready", CLONE_TIMEOUT, || async {
        let s = snapshots.get(GOLDEN).await?;
        ensure!(
            s.status.as_ref().is_some_and(|s| s.is_ready()),
            "{:?}",
            s.status
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_manifests_are_refused_with_their_field_or_reach_an_end() -> Result<()> {
    let seed = env_number("VMCLONE_FUZZ_SEED")?.unwrap_or(SEED);
    let count = env_number("VMCLONE_FUZZ_CASES")?.map_or(CASES, |n| n as usize);
    eprintln!("fuzzing {count} manifests with seed {seed:#x} (VMCLONE_FUZZ_SEED)");
    let h = Harness::start("fuzz").await?;
    create_sources(&h).await?;

    let mut rng = Rng::new(seed);
    let cases: Vec<Case> = (0..count).map(|i| generate(&mut rng, i, &h.ns)).collect();
    let mut broken = Vec::new();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for case in &cases {
        let output = h
            .env
            .kubectl_output(
                &["-n", &h.ns, "create", "-f", "-"],
                Some(&case.manifest.to_string()),
            )
            .await?;
        if output.success() {
            accepted.push(case.clone());
            continue;
        }
        refused += 1;
        let message = output.stderr.trim();
        if message.is_empty() || !names_a_field(message) {
            broken.push(format!(
                "{}\n  refused without naming a field: {message:?}",
                case.describe()
            ));
        }
    }
    eprintln!("{} accepted, {refused} refused", accepted.len());

    let api = h.api::<VirtualMachineClone>();
    let waited = wait_for("every accepted clone to settle", SETTLE_TIMEOUT, || async {
        let clones: BTreeMap<String, VirtualMachineClone> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|c| (c.name_any(), c))
            .collect();
        let unsettled: Vec<String> = accepted
            .iter()
            .filter_map(|case| {
                let status = clones.get(&case.name).and_then(|c| c.status.as_ref());
                let now = outcome(status);
                (!settled(case, &now)).then(|| {
                    format!(
                        "{}\n  status: {}",
                        case.describe(),
                        serde_json::to_string(&status).unwrap_or_default()
                    )
                })
            })
            .collect();
        ensure!(
            unsettled.is_empty(),
            "{} clones not settled (seed {seed:#x}):\n{}",
            unsettled.len(),
            unsettled.join("\n")
        );
        Ok(clones)
    })
    .await;
    let clones = match waited {
        Ok(clones) => clones,
        Err(e) => anyhow::bail!("{e:#}\n{}", h.dump()),
    };

    // Refused manifests left nothing behind; accepted ones ended where the property says.
    let accepted_names: BTreeSet<&str> = accepted.iter().map(|c| c.name.as_str()).collect();
    for name in clones.keys() {
        if !accepted_names.contains(name.as_str()) {
            broken.push(format!("clone {name} exists though kubectl create failed"));
        }
    }
    let vms: BTreeMap<String, VirtualMachine> = h
        .api::<VirtualMachine>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|vm| (vm.name_any(), vm))
        .collect();
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut targets = BTreeSet::new();
    for case in &accepted {
        let Some(clone) = clones.get(&case.name) else {
            broken.push(format!("{}\n  accepted but gone", case.describe()));
            continue;
        };
        let status = clone.status.clone().unwrap_or_default();
        let now = outcome(Some(&status));
        let label = match &now {
            Outcome::Failed { reason } => format!("Failed/{reason}"),
            other => format!("{other:?}"),
        };
        *outcomes.entry(label).or_default() += 1;
        if now == Outcome::Succeeded {
            if !case.source_exists {
                broken.push(format!("{}\n  succeeded without a source", case.describe()));
            }
            // Its own target: restored by this clone's restore, and no other clone's.
            let target = status.target_name.clone().unwrap_or_default();
            let uid = clone.uid().unwrap_or_default();
            let last = vms
                .get(&target)
                .and_then(|vm| vm.annotations().get(LAST_RESTORE_UID_ANNOTATION).cloned());
            if !last.is_some_and(|l| l.starts_with(&format!("tmp-restore-{uid}-"))) {
                broken.push(format!(
                    "{}\n  succeeded, but target VM {target:?} is missing or not its own",
                    case.describe()
                ));
            }
            if !targets.insert(target.clone()) {
                broken.push(format!(
                    "{}\n  a second clone succeeded with target {target}",
                    case.describe()
                ));
            }
        }
    }
    eprintln!("outcomes: {outcomes:?}");

    // The controller is still well: a well-formed clone succeeds.
    h.create(&clone_manifest(
        "after-fuzz",
        "VirtualMachine",
        "src-a",
        Some("after-fuzz-target"),
        json!({}),
    ))
    .await?;
    h.wait_phase("after-fuzz", ClonePhase::Succeeded).await?;

    ensure!(
        broken.is_empty(),
        "{} of {count} cases broke the property (seed {seed:#x}):\n{}",
        broken.len(),
        broken.join("\n")
    );
    // The run was not vacuous: some manifests were refused, some clones succeeded, some failed.
    ensure!(refused > 0, "no manifest was refused: {outcomes:?}");
    ensure!(
        outcomes.contains_key("Succeeded") && outcomes.keys().any(|k| k.starts_with("Failed/")),
        "the accepted clones did not both succeed and fail: {outcomes:?}"
    );
    h.stop().await;
    Ok(())
}
