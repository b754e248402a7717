//! `kubectl vmclone plan` against the testbed, on both backends: what `plan -o json` shows is the
//! target VM the controller then creates for the same flags (`run --wait`), for the Snapshot
//! strategy (from a VM and from a snapshot) and for the DataVolume strategy; the warnings appear
//! on stderr; bad flags exit 2; and `plan` creates nothing.
//!
//! How the two are compared: the target's `apiVersion`, `kind`, `metadata` (name, namespace,
//! labels, annotations) and `spec` must equal the plan's, field for field, except where the plan
//! shows a placeholder (`<...>`), which stands for a value that exists only once the clone or
//! KubeVirt's restore does. Those are checked too, not skipped:
//!
//! | placeholder | checked against |
//! |---|---|
//! | `<clone-uid>` | the clone's UID, wherever it appears |
//! | `<firmware-uuid>` | UUIDv5 of the clone's UID (`clone_core::names::firmware_uuid`) |
//! | `<suffix>` | any text (the generated target name); then `<serial>` must be the serial of the actual name |
//! | `<serial>` | `clone_core::names::generated_serial` of the actual target name |
//! | `<restore-uid>` | any text, the same wherever it appears |
//! | `<restored PVC of volume X>` | a PVC that exists in the namespace, the same name wherever it appears |
//!
//! Fields left out of the comparison, and why: `status` (the plan has none: it is the cluster's
//! report, not the clone's product), the server's bookkeeping in `metadata` (`uid`,
//! `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`, `finalizers`,
//! `ownerReferences`), which no clone chooses, and the fields of [`ADDED_BY_THE_CLUSTER`], each
//! only with the value listed there.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use common::{Backend, Bed};
use serde_json::{Value, json};
use testenv::wait_for;

const TIMEOUT: Duration = Duration::from_secs(240);

/// A PVC on `class` and a halted VM using it, with identity to strip (MACs, serial, UUID, labels
/// and annotations on the VM and its template), applied with `kubectl apply` (so the VM carries
/// kubectl's last-applied annotation, which a clone never copies).
fn source_manifest(name: &str, class: &str) -> String {
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("{name}-root")},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": "1Gi"}}},
    });
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "labels": {"app": "web", "somekey/owner": "team-a"},
            "annotations": {"anotherkey/keep": "yes", "description": "the source VM"},
        },
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {
                    "labels": {"app": "web", "somekey/template": "x"},
                    "annotations": {"anotherkey/template": "yes", "ovn.kubernetes.io/ip_address": "10.16.0.15"},
                },
                "spec": {
                    "domain": {
                        "devices": {
                            "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                            "interfaces": [
                                {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"},
                                {"name": "second", "bridge": {}, "macAddress": "02:00:00:00:00:02"},
                            ],
                        },
                        "firmware": {"serial": "source-serial", "uuid": "0f9f4e33-1a3b-4b3b-9d36-000000000001"},
                        "resources": {"requests": {"memory": "128Mi"}},
                    },
                    "networks": [
                        {"name": "default", "pod": {}},
                        {"name": "second", "multus": {"networkName": "bridge-net"}},
                    ],
                    "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": format!("{name}-root")}}],
                },
            },
        },
    });
    json!({"apiVersion": "v1", "kind": "List", "items": [pvc, vm]}).to_string()
}

/// The identity flags of the seed example, a user patch and a run strategy.
const IDENTITY_FLAGS: &[&str] = &[
    "--label-filter",
    "*",
    "--label-filter",
    "!somekey/*",
    "--annotation-filter",
    "anotherkey/*",
    "--template-label-filter",
    "*",
    "--template-label-filter",
    "!somekey/*",
    "--template-annotation-filter",
    "anotherkey/*",
    "--new-mac-address",
    "second:02:AA:BB:CC:DD:EE",
    "--new-smbios-serial",
    "new-serial",
    "--patch",
    r#"{"op":"add","path":"/spec/template/spec/domain/resources/requests/memory","value":"256Mi"}"#,
    "--target-run-strategy",
    "Manual",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the plugin and requires exit status `code`.
async fn plugin(bed: &Bed, args: &[&str], code: i32) -> Output {
    let out = bed.plugin(args).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "kubectl-vmclone {args:?}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn args<'a>(first: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    first.iter().chain(rest).copied().collect()
}

async fn get_json(bed: &Bed, kind: &str, name: &str) -> Value {
    serde_json::from_str(
        &bed.kubectl(&["get", kind, name, "-o", "json"], None)
            .await
            .unwrap(),
    )
    .unwrap()
}

/// Waits until KubeVirt (or the stand-in) has reconciled the VM: its status says which volumes
/// can be snapshotted. Its metadata is final from then on.
async fn reconciled(bed: &Bed, vm: &str) {
    wait_for(&format!("VM {vm} reconciled"), TIMEOUT, || async {
        let vm = get_json(bed, "vm", vm).await;
        let statuses = vm["status"]["volumeSnapshotStatuses"].as_array().cloned();
        anyhow::ensure!(
            statuses.is_some_and(|s| !s.is_empty()),
            "status: {}",
            vm["status"]
        );
        Ok(())
    })
    .await
    .unwrap();
}

/// `plan -o json` for the flags.
async fn plan_json(bed: &Bed, flags: &[&str]) -> Value {
    let out = plugin(bed, &args(&["plan", "-o", "json"], flags), 0).await;
    assert_eq!(text(&out.stderr), "", "no warnings expected");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `run --wait` for the flags (the clone named `name`); returns the clone.
async fn run(bed: &Bed, name: &str, flags: &[&str]) -> Value {
    plugin(
        bed,
        &args(&["run", "--wait", "--timeout", "4m", "--name", name], flags),
        0,
    )
    .await;
    get_json(bed, "vmclone", name).await
}

/// The parts of a VM a clone produces.
fn product(vm: &Value) -> Value {
    let meta = &vm["metadata"];
    let mut metadata = serde_json::Map::new();
    for field in ["name", "namespace", "labels", "annotations"] {
        if let Some(value) = meta.get(field) {
            metadata.insert(field.into(), value.clone());
        }
    }
    json!({"apiVersion": vm["apiVersion"], "kind": vm["kind"], "metadata": metadata, "spec": vm["spec"]})
}

/// Compares the plan with the created target: equal, except that each placeholder matches the
/// value it stands for. Returns the placeholders' values.
async fn compare(
    bed: &Bed,
    plan: &Value,
    clone: &Value,
    target: &Value,
) -> BTreeMap<String, String> {
    let uid = clone["metadata"]["uid"].as_str().unwrap();
    let mut bindings = BTreeMap::new();
    bindings.insert("<clone-uid>".to_owned(), uid.to_owned());
    bindings.insert(
        "<firmware-uuid>".to_owned(),
        clone_core::names::firmware_uuid(uid),
    );
    let actual = product(target);
    if let Some(name) = actual["metadata"]["name"].as_str() {
        let namespace = actual["metadata"]["namespace"].as_str().unwrap_or_default();
        bindings.insert(
            "<serial>".to_owned(),
            clone_core::names::generated_serial(namespace, name),
        );
    }
    let mut differences = Vec::new();
    matches(plan, &actual, "", &mut bindings, &mut differences);
    assert!(
        differences.is_empty(),
        "the target differs from the plan:\n{}\nplan: {plan:#}\ntarget: {actual:#}",
        differences.join("\n")
    );
    for (placeholder, value) in &bindings {
        if placeholder.starts_with("<restored PVC of volume ") {
            let pvc = get_json(bed, "pvc", value).await;
            assert_eq!(pvc["metadata"]["name"], value.as_str(), "{placeholder}");
        }
    }
    bindings
}

/// What the cluster adds to a created VM that no clone chooses: (JSON Pointer, `*` for any one
/// segment; the value, as JSON; why). A field the plan lacks passes only if it is listed here with
/// that very value.
const ADDED_BY_THE_CLUSTER: &[(&str, &str, &str)] = &[
    (
        "/metadata/annotations/kubevirt.io~1latest-observed-api-version",
        r#""v1""#,
        "virt-controller writes it on every VM it reconciles (the source has it too, unless an annotation filter removed it from the target)",
    ),
    (
        "/metadata/annotations/kubevirt.io~1storage-observed-api-version",
        r#""v1""#,
        "virt-controller writes it on every VM it reconciles (the source has it too, unless an annotation filter removed it from the target)",
    ),
    (
        "/spec/template/metadata/creationTimestamp",
        "null",
        "KubeVirt writes VMs as Go marshals them (its restore, virt-api's mutating webhook): an unset metav1.Time is null, which means unset",
    ),
    (
        "/spec/dataVolumeTemplates/*/metadata/creationTimestamp",
        "null",
        "KubeVirt writes VMs as Go marshals them (virt-api's mutating webhook): an unset metav1.Time is null, which means unset",
    ),
];

/// Why the cluster added `value` at `path`, if it is one of [`ADDED_BY_THE_CLUSTER`].
fn added_by_the_cluster(path: &str, value: &Value) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    ADDED_BY_THE_CLUSTER
        .iter()
        .find(|(pattern, listed, _)| {
            let pattern: Vec<&str> = pattern.split('/').collect();
            pattern.len() == segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| *p == "*" || p == s)
                && serde_json::from_str::<Value>(listed).ok().as_ref() == Some(value)
        })
        .map(|(_, _, why)| *why)
}

/// A map key as a JSON Pointer segment.
fn segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn matches(
    expected: &Value,
    actual: &Value,
    path: &str,
    bindings: &mut BTreeMap<String, String>,
    differences: &mut Vec<String>,
) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let at = format!("{path}/{}", segment(key));
                match a.get(key) {
                    Some(other) => matches(value, other, &at, bindings, differences),
                    None => differences.push(format!("{at}: planned {value}, absent")),
                }
            }
            for (key, value) in a {
                let at = format!("{path}/{}", segment(key));
                if !e.contains_key(key) && added_by_the_cluster(&at, value).is_none() {
                    differences.push(format!("{at}: not planned, created as {value}"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (index, (e, a)) in e.iter().zip(a).enumerate() {
                matches(e, a, &format!("{path}/{index}"), bindings, differences);
            }
        }
        (Value::String(e), Value::String(a)) if e.contains('<') => {
            if !pattern(&parts(e), a, bindings) {
                differences.push(format!(
                    "{path}: planned {e:?}, created {a:?} (placeholders so far: {bindings:?})"
                ));
            }
        }
        (e, a) if e == a => {}
        (e, a) => differences.push(format!("{path}: planned {e}, created {a}")),
    }
}

/// A planned string as literal text and `<placeholders>`.
#[derive(Debug)]
enum Part {
    Text(String),
    Placeholder(String),
}

fn parts(planned: &str) -> Vec<Part> {
    let mut out = Vec::new();
    let mut rest = planned;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        if open > 0 {
            out.push(Part::Text(rest[..open].to_owned()));
        }
        out.push(Part::Placeholder(rest[open..open + close + 1].to_owned()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        out.push(Part::Text(rest.to_owned()));
    }
    out
}

/// Whether `actual` is `parts` with every placeholder replaced by a non-empty value, the same one
/// wherever a placeholder repeats (new values are recorded in `bindings`).
fn pattern(parts: &[Part], actual: &str, bindings: &mut BTreeMap<String, String>) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return actual.is_empty();
    };
    match first {
        Part::Text(t) => actual
            .strip_prefix(t.as_str())
            .is_some_and(|tail| pattern(rest, tail, bindings)),
        Part::Placeholder(p) => {
            if let Some(bound) = bindings.get(p).cloned() {
                return actual
                    .strip_prefix(bound.as_str())
                    .is_some_and(|tail| pattern(rest, tail, bindings));
            }
            for end in (1..=actual.len()).filter(|i| actual.is_char_boundary(*i)) {
                let mut attempt = bindings.clone();
                attempt.insert(p.clone(), actual[..end].to_owned());
                if pattern(rest, &actual[end..], &mut attempt) {
                    *bindings = attempt;
                    return true;
                }
            }
            false
        }
    }
}

/// The Snapshot strategy from a VM: the plan is the target the restore creates.
async fn snapshot_strategy_plan_is_the_created_target(backend: Backend) {
    let bed = Bed::start(backend, "plan-snap").await.unwrap();
    bed.kubectl(
        &["apply", "-f", "-"],
        Some(&source_manifest("web", "sim-snapshot")),
    )
    .await
    .unwrap();
    reconciled(&bed, "web").await;
    let flags = args(
        &["--source-name", "web", "--target-name", "web-copy"],
        IDENTITY_FLAGS,
    );

    let plan = plan_json(&bed, &flags).await;
    let diff = plugin(&bed, &args(&["plan"], &flags), 0).await;
    let diff = text(&diff.stdout);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(
        lines[0],
        format!("--- VirtualMachine {}/web", bed.ns),
        "{diff}"
    );
    assert_eq!(
        lines[1],
        format!("+++ VirtualMachine {}/web-copy (Snapshot strategy)", bed.ns),
        "{diff}"
    );
    for line in [
        "-  name: web",
        "+  name: web-copy",
        "-          serial: source-serial",
        "+          serial: new-serial",
    ] {
        assert!(lines.contains(&line), "{line:?} not in\n{diff}");
    }

    let clone = run(&bed, "plan-snap", &flags).await;
    let target = get_json(&bed, "vm", "web-copy").await;
    let bindings = compare(&bed, &plan, &clone, &target).await;
    assert!(
        bindings.contains_key("<restored PVC of volume root>"),
        "{bindings:?}"
    );
    assert!(bindings.contains_key("<restore-uid>"), "{bindings:?}");
    bed.stop().await;
}

/// The Snapshot strategy from a snapshot: the plan reads the VM the snapshot's content holds.
async fn snapshot_source_plan_is_the_created_target(backend: Backend) {
    let bed = Bed::start(backend, "plan-golden").await.unwrap();
    bed.kubectl(
        &["apply", "-f", "-"],
        Some(&source_manifest("golden-vm", "sim-snapshot")),
    )
    .await
    .unwrap();
    reconciled(&bed, "golden-vm").await;
    let snapshot = json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "golden"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "golden-vm"}},
    });
    bed.kubectl(&["create", "-f", "-"], Some(&snapshot.to_string()))
        .await
        .unwrap();
    wait_for("snapshot golden ready", TIMEOUT, || async {
        let s = get_json(&bed, "vmsnapshot", "golden").await;
        anyhow::ensure!(s["status"]["readyToUse"] == true, "status: {}", s["status"]);
        Ok(())
    })
    .await
    .unwrap();
    // The VM may go: the snapshot keeps everything a clone needs.
    bed.kubectl(&["delete", "vm", "golden-vm", "--wait=true"], None)
        .await
        .unwrap();

    let flags = args(
        &[
            "--source-type",
            "snapshot",
            "--source-name",
            "golden",
            "--target-name",
            "web-1",
        ],
        IDENTITY_FLAGS,
    );
    let plan = plan_json(&bed, &flags).await;
    let diff = text(&plugin(&bed, &args(&["plan"], &flags), 0).await.stdout);
    assert!(
        diff.starts_with(&format!(
            "--- VirtualMachineSnapshot {}/golden (VirtualMachine golden-vm)\n",
            bed.ns
        )),
        "{diff}"
    );
    let clone = run(&bed, "plan-golden", &flags).await;
    let target = get_json(&bed, "vm", "web-1").await;
    compare(&bed, &plan, &clone, &target).await;
    bed.stop().await;
}

/// The DataVolume strategy (`--strategy DataVolume`, the source on storage without snapshots),
/// with no target name: the plan is the VM the controller creates.
async fn data_volume_strategy_plan_is_the_created_target(backend: Backend) {
    let bed = Bed::start(backend, "plan-dv").await.unwrap();
    bed.kubectl(
        &["apply", "-f", "-"],
        Some(&source_manifest("db", "sim-nosnapshot")),
    )
    .await
    .unwrap();
    reconciled(&bed, "db").await;
    let flags = args(
        &["--source-name", "db", "--strategy", "DataVolume"],
        IDENTITY_FLAGS,
    );

    let plan = plan_json(&bed, &flags).await;
    assert_eq!(plan["metadata"]["name"], "clone-db-<suffix>");
    let diff = text(&plugin(&bed, &args(&["plan"], &flags), 0).await.stdout);
    assert!(
        diff.contains(&format!(
            "+++ VirtualMachine {}/clone-db-<suffix> (DataVolume strategy)\n",
            bed.ns
        )),
        "{diff}"
    );

    let clone = run(&bed, "plan-dv", &flags).await;
    let name = clone["status"]["targetName"].as_str().unwrap().to_owned();
    let target = get_json(&bed, "vm", &name).await;
    let bindings = compare(&bed, &plan, &clone, &target).await;
    assert!(bindings.contains_key("<suffix>"), "{bindings:?}");
    let dv = format!("clone-{}-root", clone["metadata"]["uid"].as_str().unwrap());
    assert_eq!(
        target["spec"]["dataVolumeTemplates"][0]["metadata"]["name"],
        dv.as_str()
    );
    bed.stop().await;
}

/// Audit events of the plugin's user in the test namespace: (verb, resource) → count, for
/// requests that completed.
fn plugin_requests(bed: &Bed) -> BTreeMap<(String, String), usize> {
    let path = bed.env.audit_log_path().unwrap();
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if event["user"]["username"] == "kubectl-vmclone"
            && event["stage"] == "ResponseComplete"
            && event["objectRef"]["namespace"] == bed.ns.as_str()
        {
            let verb = event["verb"].as_str().unwrap_or_default().to_owned();
            let resource = event["objectRef"]["resource"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *out.entry((verb, resource)).or_default() += 1;
        }
    }
    out
}

/// The two warnings on stderr (with the plan on stdout), exit status 2 for bad flags (before any
/// request), 1 for a missing source, and nothing created by any of it; then a warning for a target
/// that exists.
async fn plan_warns_refuses_bad_flags_and_creates_nothing(backend: Backend) {
    let bed = Bed::start(backend, "plan-warn").await.unwrap();
    bed.kubectl(
        &["apply", "-f", "-"],
        Some(&source_manifest("web", "sim-snapshot")),
    )
    .await
    .unwrap();
    reconciled(&bed, "web").await;

    let out = plugin(
        &bed,
        &[
            "plan",
            "--source-name",
            "web",
            "--target-name",
            "t",
            "--label-filter",
            "!somekey/*",
            "--new-mac-address",
            "eth9:02:00:00:00:00:09",
        ],
        0,
    )
    .await;
    let stderr = text(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        warnings,
        [
            r#"warning: spec.labelFilters ["!somekey/*"] has only negative filters, so it keeps no key at all (a key is kept only if a positive filter matches it); to keep every key except these, write ["*","!somekey/*"]"#,
            "warning: newMacAddresses names interface eth9, which the VM of VirtualMachine web does not have",
        ],
        "{stderr}"
    );
    // As warned: `app` is not excluded, and is gone all the same.
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n-    app: web\n"), "{stdout}");

    let bad: &[&[&str]] = &[
        &["plan"],
        &["plan", "--source-name", "web", "--source-type", "disk"],
        &["plan", "--source-name", "web", "--strategy", "Fast"],
        &["plan", "--source-name", "web", "--label-filter", "a!b"],
        &["plan", "--source-name", "web", "--new-mac-address", "eth0"],
        &["plan", "--source-name", "web", "-o", "xml"],
    ];
    for args in bad {
        let out = plugin(&bed, args, 2).await;
        assert!(text(&out.stdout).is_empty(), "{args:?}");
        assert!(!text(&out.stderr).is_empty(), "{args:?}");
    }
    let out = plugin(&bed, &["plan", "--source-name", "absent"], 1).await;
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: VirtualMachine {}/absent not found: the clone would wait for it (SourceDoesNotExist)\n",
            bed.ns
        )
    );

    // Nothing was created, by the plugin or anyone acting on its behalf.
    for kind in ["vmclone", "vmsnapshot", "vmrestore", "datavolume"] {
        let names = bed
            .kubectl(&["get", kind, "-o", "name"], None)
            .await
            .unwrap();
        assert_eq!(names.trim(), "", "{kind}");
    }
    let vms = bed
        .kubectl(&["get", "vm", "-o", "name"], None)
        .await
        .unwrap();
    assert_eq!(vms.trim(), "virtualmachine.kubevirt.io/web");
    let requests = wait_for("the plugin's reads in the audit log", TIMEOUT, || async {
        let requests = plugin_requests(&bed);
        let reads = requests
            .get(&("get".to_owned(), "virtualmachines".to_owned()))
            .copied()
            .unwrap_or_default();
        anyhow::ensure!(reads >= 2, "{requests:?}");
        Ok(requests)
    })
    .await
    .unwrap();
    let writes: Vec<_> = requests
        .keys()
        .filter(|(verb, _)| verb != "get" && verb != "list" && verb != "watch")
        .collect();
    assert!(writes.is_empty(), "the plugin wrote: {writes:?}");

    // A target that exists already: the clone would fail, and the plan says so.
    bed.kubectl(
        &["apply", "-f", "-"],
        Some(&source_manifest("taken", "sim-snapshot")),
    )
    .await
    .unwrap();
    let out = plugin(
        &bed,
        &["plan", "--source-name", "web", "--target-name", "taken"],
        0,
    )
    .await;
    assert_eq!(
        text(&out.stderr),
        format!(
            "warning: the clone would fail (TargetExists): target VirtualMachine {}/taken already exists\n",
            bed.ns
        )
    );
    bed.stop().await;
}

testenv::on_both_backends!(
    snapshot_strategy_plan_is_the_created_target,
    snapshot_source_plan_is_the_created_target,
    data_volume_strategy_plan_is_the_created_target,
    plan_warns_refuses_bad_flags_and_creates_nothing,
);
