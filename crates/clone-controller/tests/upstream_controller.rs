//! One clone controller at a time, and migration between upstream's and vmclone's, on KubeVirt
//! v1.7.0's own virt-controller and virt-api. kubevirt-sim plays storage only; its namespace
//! annotation
//! `sim.vmclone.dev/hold-volume-snapshots` holds KubeVirt's snapshot (and so the clone) in
//! `SnapshotInProgress` for as long as a test needs, so the switch happens mid-snapshot.
//!
//! Each test has a private control plane (the `KubeVirt` CR is cluster-wide and virt-controller
//! is restarted); a lock runs them one after the other, so two KubeVirts never compete for the
//! CPU. vmclone runs as its binary, with the flags an operator would give it, so its `/readyz`,
//! `/metrics` and log are the real ones. It runs as a user of its own, and kube-apiserver's audit
//! log shows every request it made: "acts on no clone" is checked there, request by request
//! (a clone's status and managed fields cannot show it: upstream's next status update erases what
//! vmclone wrote).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use clone_api::kubevirt::{VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use common::{clone_manifest, free_addr, source_vm_manifest};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use kubevirt_sim::names::HOLD_VOLUME_SNAPSHOTS_ANNOTATION;
use kubevirt_sim::{Sim, SimConfig, SimHandle};
use serde_json::json;
use testenv::{
    CloneCrd, KUBEVIRT_NAME, KUBEVIRT_NAMESPACE, KubeVirtOptions, Options, Supervised, TestEnv,
    http_get, wait_for,
};

/// Generous: upstream's clone controller requeues with exponential backoff, and two cores are
/// shared with other work.
const TIMEOUT: Duration = Duration::from_secs(240);
/// How often a clone left to upstream's controller is woken (an annotation: an update event), so
/// its backoff does not decide how long the test takes (as in `differential.rs`).
const POKE_EVERY: Duration = Duration::from_secs(5);
/// vmclone's events say this `reportingController`.
const VMCLONE: &str = "vmclone-controller";
/// The exact command vmclone's log, `/readyz` and event give to turn upstream's clone controller
/// off for the testbed's CR.
const FIX: &str = r#"kubectl patch kubevirt kubevirt -n kubevirt --type merge -p '{"spec":{"customizeComponents":{"flags":{"controller":{"clone-controller-threads":"0"}}}}}'"#;
const ACTIVE_METRIC: &str = "vmclone_upstream_clone_controller_active";
/// vmclone's user in the audit log (one of `testenv::IDENTITIES`).
const IDENTITY: &str = "clone-controller";

/// The clone CRD of these tests: upstream's, as virt-operator installs it (every status value
/// either controller writes must be accepted there).
const CLONE_CRD: CloneCrd = CloneCrd::Upstream;

/// One private KubeVirt control plane at a time in this binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The controller binary, killed when dropped.
struct Vmclone {
    process: Supervised,
    health: SocketAddr,
    metrics: SocketAddr,
}

impl Vmclone {
    fn spawn(env: &TestEnv, ns: &str, extra: &[&str]) -> Result<Vmclone> {
        let (health, metrics) = (free_addr()?, free_addr()?);
        let mut args: Vec<std::ffi::OsString> = vec![
            format!("--namespace={ns}").into(),
            "--kubeconfig".into(),
            env.identity_kubeconfig(IDENTITY).into(),
            format!("--metrics-addr={metrics}").into(),
            format!("--health-addr={health}").into(),
        ];
        args.extend(extra.iter().map(Into::into));
        let dir = std::env::temp_dir().join(format!(
            "vmclone-upstream-{}-{ns}-{}",
            std::process::id(),
            extra.join("").replace(['-', '='], "")
        ));
        let mut process = Supervised::new(
            "clone-controller",
            &dir,
            std::path::Path::new(env!("CARGO_BIN_EXE_clone-controller")),
            args,
        )
        .env("RUST_LOG", "info")
        .env_remove("VMCLONE_UPSTREAM_CLONE_CONTROLLER");
        process
            .start()
            .context("starting the clone-controller binary")?;
        Ok(Vmclone {
            process,
            health,
            metrics,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// `/readyz`: (status code, body).
    async fn readyz(&self) -> Result<(u16, String)> {
        http_get(self.health, "/readyz").await
    }

    /// The value of the metric line starting with `name ` (0 when absent).
    async fn metric(&self, name: &str) -> Result<f64> {
        let (code, text) = http_get(self.metrics, "/metrics").await?;
        ensure!(code == 200, "/metrics answered {code}");
        let Some(value) = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
        else {
            return Ok(0.0);
        };
        value.trim().parse().context("not a number")
    }

    /// The value of the gauge `vmclone_upstream_clone_controller_active`.
    async fn active_gauge(&self) -> Result<i64> {
        let (code, text) = http_get(self.metrics, "/metrics").await?;
        ensure!(code == 200, "/metrics answered {code}");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{ACTIVE_METRIC} ")))
            .context("no such metric")?
            .trim()
            .parse()
            .context("not a number")
    }

    /// Passes that ended without an error (idle ones too).
    async fn passes(&self) -> Result<f64> {
        self.metric(r#"vmclone_reconciles_total{result="ok"}"#)
            .await
    }

    /// Waits until vmclone says upstream's clone controller is active: `/readyz` 503 with the
    /// reason and the fix, the gauge at 1, the fix in the log.
    async fn wait_idle(&self) -> Result<()> {
        wait_for(
            "vmclone to report upstream's clone controller",
            TIMEOUT,
            || async {
                let (code, body) = self.readyz().await?;
                ensure!(code == 503, "/readyz {code}: {body}");
                ensure!(
                    body.contains("upstream KubeVirt's clone controller is active")
                        && body.contains("KubeVirt kubevirt/kubevirt")
                        && body.contains(FIX),
                    "/readyz body: {body}"
                );
                let gauge = self.active_gauge().await?;
                ensure!(gauge == 1, "{ACTIVE_METRIC} is {gauge}");
                let log = self.log_text();
                ensure!(
                    log.lines().any(|l| l.contains("WARN") && l.contains(FIX)),
                    "no warning with the fix in the log:\n{log}"
                );
                Ok(())
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nvmclone log:\n{}", self.log_text()))
    }

    /// Waits until vmclone acts: `/readyz` 200 and the gauge at 0.
    async fn wait_acting(&self) -> Result<()> {
        wait_for("vmclone to be ready and acting", TIMEOUT, || async {
            let (code, body) = self.readyz().await?;
            ensure!(code == 200 && body == "ok", "/readyz {code}: {body}");
            let gauge = self.active_gauge().await?;
            ensure!(gauge == 0, "{ACTIVE_METRIC} is {gauge}");
            Ok(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nvmclone log:\n{}", self.log_text()))
    }
}

/// A private control plane with KubeVirt and [`CLONE_CRD`], one namespace with the sim's storage,
/// and VolumeSnapshots held in it.
struct World {
    env: TestEnv,
    client: Client,
    ns: String,
    sim: Option<SimHandle>,
}

impl World {
    async fn start(upstream_clone_controller: bool) -> Result<World> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = TestEnv::start_with_options(Options {
            kubevirt: Some(KubeVirtOptions {
                upstream_clone_controller,
            }),
            clone_crd: CLONE_CRD,
            audit_log: true,
        })
        .await?;
        let client = env.client().await?;
        kubevirt_sim::install_storage(client.clone()).await?;
        let ns = env.namespace("handover").await?;
        let sim = Sim::start(
            client.clone(),
            SimConfig::default()
                .storage_only(true)
                .namespace(ns.clone()),
        )
        .await?;
        let world = World {
            env,
            client,
            ns,
            sim: Some(sim),
        };
        world.hold_volume_snapshots(true).await?;
        Ok(world)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        Ok(self.env.kubectl_output(&all, stdin).await?.ok()?.stdout)
    }

    async fn hold_volume_snapshots(&self, hold: bool) -> Result<()> {
        let value = if hold { json!("true") } else { json!(null) };
        Api::<Namespace>::all(self.client.clone())
            .patch(
                &self.ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    HOLD_VOLUME_SNAPSHOTS_ANNOTATION: value}}})),
            )
            .await?;
        Ok(())
    }

    /// A source VM on snapshot-capable storage, known to KubeVirt as snapshottable, and a clone
    /// of it created with `kubectl create`; returns the clone's UID.
    async fn create_clone(&self) -> Result<String> {
        self.kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&source_vm_manifest("vm", "sim-snapshot")),
        )
        .await?;
        let vms: Api<VirtualMachine> = self.api();
        wait_for(
            "KubeVirt to report the source's volumes",
            TIMEOUT,
            || async {
                let vm = vms.get("vm").await?;
                let statuses = vm
                    .status
                    .and_then(|s| s.volume_snapshot_statuses)
                    .unwrap_or_default();
                ensure!(!statuses.is_empty(), "not yet");
                Ok(())
            },
        )
        .await?;
        self.kubectl(
            &["create", "-f", "-"],
            Some(&clone_manifest(
                "c",
                "VirtualMachine",
                "vm",
                Some("target"),
                json!({}),
            )),
        )
        .await?;
        let clone = self.api::<VirtualMachineClone>().get("c").await?;
        clone.metadata.uid.context("a clone without a UID")
    }

    /// Waits until the clone is `SnapshotInProgress` on the temporary snapshot, which exists, and
    /// `written_by` has written its status.
    async fn wait_mid_snapshot(&self, uid: &str, written_by: &str) -> Result<VirtualMachineClone> {
        let snapshot = format!("tmp-snapshot-{uid}");
        wait_for(
            &format!("clone c in SnapshotInProgress, status written by {written_by}"),
            TIMEOUT,
            || async {
                let c = self.api::<VirtualMachineClone>().get("c").await?;
                let status = c.status.clone().unwrap_or_default();
                ensure!(
                    status.phase == ClonePhase::SnapshotInProgress
                        && status.snapshot_name.as_deref() == Some(snapshot.as_str()),
                    "status: {}",
                    serde_json::to_string(&status)?
                );
                ensure!(
                    status_writers(&c).iter().any(|m| m == written_by),
                    "status writers: {:?}",
                    status_writers(&c)
                );
                let snapshots: Api<VirtualMachineSnapshot> = self.api();
                ensure!(
                    snapshots.get_opt(&snapshot).await?.is_some(),
                    "no {snapshot}"
                );
                Ok(c)
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.dump()))
    }

    /// Waits until the clone succeeded with its target and no temporary object is left; pokes
    /// the clone while waiting when upstream's controller is the one to finish it.
    async fn wait_finished(&self, uid: &str, poke: bool) -> Result<VirtualMachineClone> {
        let clones = self.api::<VirtualMachineClone>();
        let poked = std::cell::Cell::new(Instant::now());
        wait_for(
            "clone c Succeeded, its target present, no temporary object left",
            TIMEOUT,
            || async {
                if poke && poked.get().elapsed() >= POKE_EVERY {
                    poked.set(Instant::now());
                    let note = json!({"metadata": {"annotations": {
                        "vmclone.dev/test-poke": format!("{:?}", poked.get())}}});
                    clones
                        .patch("c", &PatchParams::default(), &Patch::Merge(&note))
                        .await?;
                }
                let c = clones.get("c").await?;
                let status = c.status.clone().unwrap_or_default();
                ensure!(
                    status.phase == ClonePhase::Succeeded,
                    "status: {}",
                    serde_json::to_string(&status)?
                );
                let target = self.api::<VirtualMachine>().get_opt("target").await?;
                ensure!(target.is_some(), "no target VM");
                let snapshots: Vec<String> = self
                    .api::<VirtualMachineSnapshot>()
                    .list_metadata(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .map(ResourceExt::name_any)
                    .collect();
                let restores: Vec<String> = self
                    .api::<VirtualMachineRestore>()
                    .list_metadata(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .map(ResourceExt::name_any)
                    .collect();
                ensure!(
                    snapshots.is_empty() && restores.is_empty(),
                    "left: snapshots {snapshots:?}, restores {restores:?} (clone UID {uid})"
                );
                Ok(c)
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.dump()))
    }

    /// Events about `name` in `ns`: (reportingController, type, reason, count).
    async fn events(&self, ns: &str, name: &str) -> Result<Vec<(String, String, String, i32)>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                let count = e.series.as_ref().map_or(1, |s| s.count.max(1));
                (
                    e.reporting_controller.unwrap_or_default(),
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    count,
                )
            })
            .collect())
    }

    /// vmclone's events about the clone (reasons).
    async fn vmclone_clone_events(&self) -> Result<Vec<String>> {
        Ok(self
            .events(&self.ns, "c")
            .await?
            .into_iter()
            .filter(|e| e.0 == VMCLONE)
            .map(|e| e.2)
            .collect())
    }

    /// How many `UpstreamCloneControllerActive` Warnings vmclone published about the KubeVirt CR.
    async fn warnings_on_kubevirt(&self) -> Result<i32> {
        Ok(self
            .events(KUBEVIRT_NAMESPACE, KUBEVIRT_NAME)
            .await?
            .into_iter()
            .filter(|e| e.0 == VMCLONE && e.2 == "UpstreamCloneControllerActive")
            .map(|e| {
                assert_eq!(e.1, "Warning", "{e:?}");
                e.3
            })
            .sum())
    }

    /// Blocking: for the message of a failing test only.
    fn dump(&self) -> String {
        let mut out = String::new();
        for args in [
            vec![
                "get",
                "vmclone,vmsnapshot,vmrestore,vm,pvc,volumesnapshot",
                "-o",
                "yaml",
            ],
            vec!["get", "events", "--sort-by=.metadata.creationTimestamp"],
        ] {
            // For failure messages only: blocking is fine then.
            let mut all = vec!["-n", self.ns.as_str()];
            all.extend_from_slice(&args);
            match self.env.kubectl().args(&all).output() {
                Ok(o) => out.push_str(&String::from_utf8_lossy(&[o.stdout, o.stderr].concat())),
                Err(e) => out.push_str(&format!("kubectl {args:?}: {e:#}\n")),
            }
        }
        out.push_str(&self.env.log_tails(20));
        out
    }

    async fn stop(mut self) {
        if let Some(sim) = self.sim.take() {
            sim.stop().await;
        }
    }
}

/// The requests kube-apiserver has logged so far: one JSON object per line, each request once
/// (at `ResponseComplete`; the audit backend writes before it answers).
fn audit(env: &TestEnv) -> Vec<serde_json::Value> {
    let path = env.audit_log_path().expect("an audit log");
    std::fs::read_to_string(path)
        .expect("the audit log")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .collect()
}

/// vmclone's writes among `requests`: `<verb> <resource>[/<subresource>] <namespace>/<name>`.
fn vmclone_writes(requests: &[serde_json::Value]) -> Vec<String> {
    requests
        .iter()
        .filter(|e| e["user"]["username"] == IDENTITY)
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .map(|e| {
            let o = &e["objectRef"];
            let sub = o["subresource"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            format!(
                "{} {}{sub} {}/{}",
                e["verb"].as_str().unwrap_or_default(),
                o["resource"].as_str().unwrap_or_default(),
                o["namespace"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// The only write of an idle vmclone: its Warning event about the KubeVirt CR (events.k8s.io
/// names the event, not the CR, so only the namespace is compared).
fn only_the_kubevirt_event(writes: &[String]) -> bool {
    writes
        .iter()
        .all(|w| w.starts_with(&format!("create events {KUBEVIRT_NAMESPACE}/")))
}

/// The field managers that wrote the clone's status.
fn status_writers(clone: &VirtualMachineClone) -> Vec<String> {
    clone
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// Upstream's clone controller runs: vmclone stays idle and says so (readyz, metric, one event,
/// the fix in its log) and touches no clone, while upstream's controller starts one. When
/// virt-controller is restarted without its clone controller and the CR says so, vmclone resumes
/// by itself and finishes that clone from the middle of its snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmclone_idles_while_upstream_runs_and_finishes_upstreams_clone_after_the_switch() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut w = World::start(true).await.unwrap();

    // `ignore`: the CR is not read, vmclone would act (checked before any clone exists).
    let ignoring = Vmclone::spawn(&w.env, &w.ns, &["--upstream-clone-controller=ignore"]).unwrap();
    ignoring.wait_acting().await.unwrap();
    drop(ignoring);

    let vmclone = Vmclone::spawn(&w.env, &w.ns, &[]).unwrap();
    vmclone.wait_idle().await.unwrap();
    let uid = w.create_clone().await.unwrap();

    // Upstream's clone controller starts the clone; vmclone writes nothing and says nothing.
    w.wait_mid_snapshot(&uid, "virt-controller").await.unwrap();
    // A change of the clone's source wakes a pass of vmclone over the clone as upstream left it.
    let passes = vmclone.passes().await.unwrap();
    w.kubectl(&["label", "vm", "vm", "woken=yes"], None)
        .await
        .unwrap();
    wait_for(
        "a pass of vmclone after the source changed",
        TIMEOUT,
        || async {
            let now = vmclone.passes().await?;
            ensure!(now > passes, "{now} passes, {passes} before");
            Ok(())
        },
    )
    .await
    .unwrap();
    vmclone.wait_idle().await.unwrap();
    assert_eq!(
        w.vmclone_clone_events().await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        w.warnings_on_kubevirt().await.unwrap(),
        1,
        "one Warning event per activation, not one per pass"
    );
    let writes = vmclone_writes(&audit(&w.env));
    assert!(
        writes.len() == 1 && only_the_kubevirt_event(&writes),
        "vmclone wrote more than its one event while upstream's clone controller runs: {writes:?}"
    );
    let idle_at = started.elapsed();

    // The switch: virt-controller without its clone controller, then the CR flag "0".
    w.env
        .restart_virt_controller(KubeVirtOptions {
            upstream_clone_controller: false,
        })
        .await
        .unwrap();
    vmclone.wait_acting().await.unwrap();
    assert!(
        vmclone
            .log_text()
            .contains("upstream KubeVirt's clone controller is off: reconciling every clone"),
        "{}",
        vmclone.log_text()
    );
    // vmclone takes the clone over mid-snapshot, adopting upstream's temporary snapshot.
    w.wait_mid_snapshot(&uid, VMCLONE).await.unwrap();
    let snapshots = w
        .api::<VirtualMachineSnapshot>()
        .list_metadata(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<String> = snapshots.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, [format!("tmp-snapshot-{uid}")]);

    w.hold_volume_snapshots(false).await.unwrap();
    let done = w.wait_finished(&uid, false).await.unwrap();
    assert_eq!(done.status.unwrap().target_name.as_deref(), Some("target"));
    // vmclone created the restore (upstream's controller was gone before the snapshot was ready;
    // the snapshot's readiness is in the note of the restore's event).
    let events = w.vmclone_clone_events().await.unwrap();
    for reason in ["RestoreCreated", "TargetVMCreated"] {
        assert!(
            events.iter().any(|e| e == reason),
            "vmclone published no {reason}: {events:?}"
        );
    }
    assert_eq!(w.warnings_on_kubevirt().await.unwrap(), 1);
    eprintln!(
        "upstream → vmclone: idle confirmed after {:.1}s, finished after {:.1}s",
        idle_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(vmclone);
    w.stop().await;
}

/// The reverse: vmclone starts a clone; turning upstream's clone controller on (the CR first, so
/// vmclone goes idle, then virt-controller with its clone controller) mid-snapshot hands the
/// clone to upstream's controller, which finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_finishes_a_clone_vmclone_started_after_the_switch() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut w = World::start(false).await.unwrap();
    let vmclone = Vmclone::spawn(&w.env, &w.ns, &[]).unwrap();
    vmclone.wait_acting().await.unwrap();
    let uid = w.create_clone().await.unwrap();
    w.wait_mid_snapshot(&uid, VMCLONE).await.unwrap();
    let before = w.vmclone_clone_events().await.unwrap();
    assert!(before.iter().any(|e| e == "SnapshotCreated"), "{before:?}");

    w.env
        .restart_virt_controller(KubeVirtOptions {
            upstream_clone_controller: true,
        })
        .await
        .unwrap();
    vmclone.wait_idle().await.unwrap();
    assert_eq!(w.warnings_on_kubevirt().await.unwrap(), 1);
    let idle_from = audit(&w.env).len();

    w.hold_volume_snapshots(false).await.unwrap();
    let done = w.wait_finished(&uid, true).await.unwrap();
    assert!(
        status_writers(&done).iter().any(|m| m == "virt-controller"),
        "upstream's controller never wrote the status: {:?}",
        status_writers(&done)
    );
    assert_eq!(done.status.unwrap().target_name.as_deref(), Some("target"));
    // vmclone published nothing about the clone after the switch, and wrote nothing but its event.
    assert_eq!(w.vmclone_clone_events().await.unwrap(), before);
    assert_eq!(w.warnings_on_kubevirt().await.unwrap(), 1);
    let writes = vmclone_writes(&audit(&w.env)[idle_from..]);
    assert!(
        only_the_kubevirt_event(&writes),
        "vmclone wrote while upstream's clone controller ran: {writes:?}"
    );
    eprintln!(
        "vmclone → upstream: finished after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    drop(vmclone);
    w.stop().await;
}

/// Sets the stand-in's `KubeVirt` CR's `clone-controller-threads` flag.
async fn set_clone_threads(client: &Client, threads: &str) {
    Api::<clone_api::kubevirt::KubeVirt>::namespaced(client.clone(), KUBEVIRT_NAMESPACE)
        .patch(
            KUBEVIRT_NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"customizeComponents": {"flags": {"controller": {
                "clone-controller-threads": threads}}}}}),
            ),
        )
        .await
        .unwrap();
}

/// Resuming reconciles every clone, finished ones too: a clone whose target VM was deleted
/// while vmclone was idle is deleted once the CR turns upstream's clone controller off. Only the
/// CR matters to vmclone, so the stand-in's CR (no clone controller runs there) is edited to
/// claim one, and the controller runs in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_reconciles_every_clone_including_finished_ones() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut h = common::Harness::without_controller("resume").await.unwrap();
    let telemetry = h.start_controller_with(|_| {});
    let metrics = telemetry.metrics.clone();
    h.create_source_vm("vm", "sim-snapshot").await.unwrap();
    h.create(&clone_manifest(
        "c",
        "VirtualMachine",
        "vm",
        Some("t"),
        json!({}),
    ))
    .await
    .unwrap();
    h.wait_phase("c", ClonePhase::Succeeded).await.unwrap();
    let clones: Api<VirtualMachineClone> = h.api();
    wait_for("clone c cleaned up", TIMEOUT, || async {
        let status = clones.get("c").await?.status.unwrap_or_default();
        ensure!(
            status.snapshot_name.is_none() && status.restore_name.is_none(),
            "{}",
            serde_json::to_string(&status)?
        );
        Ok(())
    })
    .await
    .unwrap();

    set_clone_threads(&h.client, "3").await;
    wait_for("vmclone idle", TIMEOUT, || async {
        ensure!(
            metrics.upstream_clone_controller_active.get() == 1,
            "not yet"
        );
        let readiness = telemetry.readiness();
        ensure!(
            readiness
                .as_ref()
                .is_err_and(|r| r.contains("(it is \"3\")")),
            "{readiness:?}"
        );
        Ok(())
    })
    .await
    .unwrap();
    let ok = || {
        metrics
            .reconciles
            .get_or_create(&clone_controller::telemetry::ResultLabel {
                result: "ok".into(),
            })
            .get()
    };
    let passes = ok();
    h.kubectl(&["delete", "vm", "t", "--wait=true"], None)
        .await
        .unwrap();
    // The deletion wakes the clone (its target); the pass acts on nothing.
    wait_for("an idle pass after the target went", TIMEOUT, || async {
        ensure!(ok() > passes, "{} passes, {passes} before", ok());
        Ok(())
    })
    .await
    .unwrap();
    assert!(clones.get_opt("c").await.unwrap().is_some());

    set_clone_threads(&h.client, "0").await;
    wait_for("clone c deleted after vmclone resumed", TIMEOUT, || async {
        ensure!(
            metrics.upstream_clone_controller_active.get() == 0,
            "gauge still 1"
        );
        ensure!(clones.get_opt("c").await?.is_none(), "clone c still exists");
        Ok(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", h.dump()))
    .unwrap();
    assert_eq!(telemetry.readiness(), Ok(()));
    h.stop().await;
}
