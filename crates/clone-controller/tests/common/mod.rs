//! The harness of the controller's integration tests: a real control plane (testenv), KubeVirt
//! (its own virt-controller and virt-api, or the stand-in kubevirt-sim; see [`Backend`]) and the
//! controller, all scoped to one fresh namespace per test.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clone_api::kubevirt::{VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use kubevirt_sim::{Sim, SimConfig, SimHandle};
use serde_json::{Value, json};
use testenv::{Supervised, TestEnv, wait_for};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a clone may take in these tests (generous: two cores shared with other tests).
pub const CLONE_TIMEOUT: Duration = Duration::from_secs(120);

/// Which KubeVirt a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// kubevirt-sim plays KubeVirt's VM, snapshot and restore controllers and its admission, and
    /// storage and CDI (its own control plane, [`TestEnv::shared`]).
    Sim,
    /// KubeVirt v1.7.0's own virt-controller and virt-api with its webhooks; kubevirt-sim plays
    /// only storage (CSI, PVC binding) and CDI ([`TestEnv::shared_kubevirt`]).
    KubeVirt,
}

impl Backend {
    /// The shared control plane of this backend.
    pub async fn env(self) -> Result<&'static TestEnv> {
        match self {
            Backend::Sim => TestEnv::shared().await,
            Backend::KubeVirt => TestEnv::shared_kubevirt().await,
        }
    }
}

/// Where a harness lives.
enum Scope<'a> {
    /// A fresh namespace `<prefix>-<n>`, with the stand-in acting there only.
    Fresh(&'a str),
    /// This namespace, with the stand-in acting everywhere.
    Exact(&'a str),
}

/// Creates the namespace `name` unless it exists.
pub async fn ensure_namespace(env: &TestEnv, name: &str) -> Result<()> {
    let manifest = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    env.kubectl_output(&["apply", "-f", "-"], Some(&manifest.to_string()))
        .await?
        .ok()?;
    Ok(())
}

/// One test's world.
pub struct Harness {
    pub env: &'static TestEnv,
    pub backend: Backend,
    pub client: Client,
    pub ns: String,
    sim: Option<SimHandle>,
    controller: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

/// A KubeVirt CR with these feature gates, cluster-wide (one per control plane).
pub async fn ensure_kubevirt(client: &Client, gates: &[&str]) -> Result<()> {
    kubevirt_sim::set_feature_gates(client.clone(), gates).await
}

impl Harness {
    /// A fresh namespace with the sim running and the Snapshot gate on; the controller is not
    /// started yet (see [`Harness::start_controller`]).
    pub async fn without_controller(prefix: &str) -> Result<Harness> {
        Self::with_kubevirt(prefix, Some(&["Snapshot"])).await
    }

    /// [`Harness::without_controller`] on `backend`.
    pub async fn without_controller_on(backend: Backend, prefix: &str) -> Result<Harness> {
        Self::build(prefix, backend, Some(&["Snapshot"]), SimConfig::default()).await
    }

    /// Like [`Harness::without_controller`], with the KubeVirt CR's feature gates given (`None`:
    /// no KubeVirt CR is created). The CR is cluster-wide: use this only in a test binary of its
    /// own (its own control plane).
    pub async fn with_kubevirt(prefix: &str, gates: Option<&[&str]>) -> Result<Harness> {
        Self::build(prefix, Backend::Sim, gates, SimConfig::default()).await
    }

    /// A harness whose sim waits `latency` before each step (to catch a clone midway).
    pub async fn slow(prefix: &str, latency: Duration) -> Result<Harness> {
        Self::slow_on(Backend::Sim, prefix, latency).await
    }

    /// [`Harness::slow`] on `backend`: on the real backend only storage is slow (VolumeSnapshots
    /// become ready and PVCs bind `latency` late), which holds KubeVirt's snapshots and restores.
    pub async fn slow_on(backend: Backend, prefix: &str, latency: Duration) -> Result<Harness> {
        Self::build(
            prefix,
            backend,
            Some(&["Snapshot"]),
            SimConfig::default().latency(latency),
        )
        .await
    }

    /// A harness in the namespace `namespace` itself (created if missing, not a generated name),
    /// with a stand-in that acts in every namespace: for flows across namespaces with fixed names.
    /// Use it in a test binary of its own, with one such test per backend.
    pub async fn cluster_wide_on(backend: Backend, namespace: &str) -> Result<Harness> {
        Self::build_in(
            Scope::Exact(namespace),
            backend,
            Some(&["Snapshot"]),
            SimConfig::default(),
        )
        .await
    }

    async fn build(
        prefix: &str,
        backend: Backend,
        gates: Option<&[&str]>,
        sim: SimConfig,
    ) -> Result<Harness> {
        Self::build_in(Scope::Fresh(prefix), backend, gates, sim).await
    }

    async fn build_in(
        scope: Scope<'_>,
        backend: Backend,
        gates: Option<&[&str]>,
        sim: SimConfig,
    ) -> Result<Harness> {
        // Logs of the controller and the sim, when RUST_LOG asks for them.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = backend.env().await?;
        let client = env.client().await?;
        let sim = match backend {
            Backend::Sim => {
                kubevirt_sim::install(client.clone()).await?;
                if let Some(gates) = gates {
                    ensure_kubevirt(&client, gates).await?;
                }
                sim
            }
            // testenv made the KubeVirt CR (Snapshot on) and runs KubeVirt's own admission.
            Backend::KubeVirt => {
                kubevirt_sim::install_storage(client.clone()).await?;
                sim.storage_only(true)
            }
        };
        let (ns, sim) = match scope {
            Scope::Fresh(prefix) => {
                let ns = env.namespace(prefix).await?;
                let sim = sim.namespace(ns.clone());
                (ns, sim)
            }
            Scope::Exact(name) => {
                ensure_namespace(env, name).await?;
                (name.to_owned(), sim)
            }
        };
        let sim = Sim::start(client.clone(), sim).await?;
        Ok(Harness {
            env,
            backend,
            client,
            ns,
            sim: Some(sim),
            controller: None,
        })
    }

    /// A fresh namespace with the sim and the controller (in-process) running.
    pub async fn start(prefix: &str) -> Result<Harness> {
        Self::start_on(Backend::Sim, prefix).await
    }

    /// [`Harness::start`] on `backend`.
    pub async fn start_on(backend: Backend, prefix: &str) -> Result<Harness> {
        let mut h = Self::without_controller_on(backend, prefix).await?;
        h.start_controller();
        Ok(h)
    }

    /// Starts the controller in this process, scoped to the test's namespace.
    pub fn start_controller(&mut self) {
        self.start_controller_with(|_| {});
    }

    /// [`Harness::start_controller`] with settings changed by `configure`; returns the
    /// controller's telemetry (its metrics).
    pub fn start_controller_with(
        &mut self,
        configure: impl FnOnce(&mut clone_controller::Config),
    ) -> clone_controller::telemetry::Telemetry {
        let (tx, rx) = oneshot::channel::<()>();
        let mut config = clone_controller::Config {
            namespace: Some(self.ns.clone()),
            ..Default::default()
        };
        configure(&mut config);
        let client = self.client.clone();
        let telemetry = clone_controller::telemetry::Telemetry::default();
        let task = tokio::spawn({
            let telemetry = telemetry.clone();
            async move {
                clone_controller::run_with(client, config, telemetry, async move {
                    let _ = rx.await;
                })
                .await
            }
        });
        self.controller = Some((tx, task));
        telemetry
    }

    /// Stops the in-process controller (graceful).
    pub async fn stop_controller(&mut self) {
        if let Some((tx, task)) = self.controller.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// The controller binary as a supervised child process, scoped to the test's namespace;
    /// killed when the handle is dropped (also when the test panics) or with `stop()` (`SIGKILL`).
    pub fn spawn_controller_process(&self) -> Result<Supervised> {
        let args = vec![
            "--namespace".into(),
            self.ns.clone().into(),
            "--kubeconfig".into(),
            self.env.kubeconfig_path().into(),
            "--metrics-addr=127.0.0.1:0".into(),
            "--health-addr=127.0.0.1:0".into(),
        ];
        let mut process = Supervised::new(
            "clone-controller",
            &self.controller_dir(),
            Path::new(env!("CARGO_BIN_EXE_clone-controller")),
            args,
        )
        .env("RUST_LOG", "info");
        process
            .start()
            .context("starting the clone-controller binary")?;
        Ok(process)
    }

    /// Where the controller binary of this test logs (`logs/`) and records its pid (`pids/`).
    fn controller_dir(&self) -> std::path::PathBuf {
        // The namespace names repeat across runs: the process id keeps the folders apart.
        std::env::temp_dir().join(format!(
            "vmclone-controller-{}-{}",
            std::process::id(),
            self.ns
        ))
    }

    /// The controller binary's log so far (for failure messages; appended to by every start).
    pub fn controller_log_text(&self) -> String {
        let log = self.controller_dir().join("logs/clone-controller.log");
        std::fs::read_to_string(log).unwrap_or_default()
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// `kubectl <args> -n <ns>`, failing on a non-zero exit.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut all: Vec<&str> = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        Ok(self.env.kubectl_output(&all, stdin).await?.ok()?.stdout)
    }

    /// Everything in the namespace a failing test should show: clones, snapshots, restores, VMs,
    /// PVCs (YAML) and events. Blocking (it runs kubectl synchronously): only for the message of a
    /// test that is about to fail, where nothing else needs the runtime any more.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for args in [
            vec![
                "get",
                "vmclone,vmsnapshot,vmsnapshotcontent,vmrestore,vm,vmi,pvc,volumesnapshot,pod",
                "-o",
                "yaml",
            ],
            vec!["get", "events", "--sort-by=.metadata.creationTimestamp"],
        ] {
            let mut all: Vec<&str> = vec!["-n", &self.ns];
            all.extend(args);
            match self.env.kubectl().args(&all).output() {
                Ok(o) => out.push_str(&format!(
                    "$ kubectl {}\n{}{}\n",
                    all.join(" "),
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )),
                Err(e) => out.push_str(&format!("kubectl failed: {e:#}\n")),
            }
        }
        out
    }

    /// `kubectl wait ... --for condition=Ready`, dumping the namespace on failure.
    pub async fn kubectl_wait_ready(&self, kind: &str, name: &str) -> Result<String> {
        self.kubectl(
            &[
                "wait",
                kind,
                name,
                "--for",
                "condition=Ready",
                "--timeout=120s",
            ],
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.dump()))
    }

    /// `kubectl create -f -` of a manifest into the test namespace, as a user would.
    pub async fn create(&self, manifest: &str) -> Result<String> {
        self.kubectl(&["create", "-f", "-"], Some(manifest)).await
    }

    /// Server-side applies YAML/JSON documents into the test namespace.
    pub async fn apply(&self, manifest: &str) -> Result<()> {
        self.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=vmclone-tests",
                "-f",
                "-",
            ],
            Some(manifest),
        )
        .await?;
        Ok(())
    }

    /// Annotates the test namespace (the sim's failure injection).
    pub async fn annotate_namespace(&self, key: &str, value: &str) -> Result<()> {
        self.env
            .kubectl_output(
                &[
                    "annotate",
                    "namespace",
                    &self.ns,
                    &format!("{key}={value}"),
                    "--overwrite",
                ],
                None,
            )
            .await?
            .ok()?;
        Ok(())
    }

    /// Removes an annotation from the test namespace.
    pub async fn unannotate_namespace(&self, key: &str) -> Result<()> {
        self.env
            .kubectl_output(
                &["annotate", "namespace", &self.ns, &format!("{key}-")],
                None,
            )
            .await?
            .ok()?;
        Ok(())
    }

    /// A PVC on the sim's storage and a halted VM using it, with identity to strip.
    pub async fn create_source_vm(&self, name: &str, storage_class: &str) -> Result<()> {
        self.apply(&source_vm_manifest(name, storage_class)).await
    }

    /// Waits until KubeVirt has reported whether the VM's volumes can be snapshotted.
    pub async fn wait_snapshot_support_known(&self, vm: &str) -> Result<()> {
        let api: Api<VirtualMachine> = self.api();
        wait_for(
            &format!("volumeSnapshotStatuses of VM {vm}"),
            CLONE_TIMEOUT,
            || async {
                let vm = api.get(vm).await?;
                let known = vm
                    .status
                    .and_then(|s| s.volume_snapshot_statuses)
                    .is_some_and(|s| !s.is_empty());
                ensure!(known, "not yet");
                Ok(())
            },
        )
        .await
    }

    /// Waits until the clone reaches `phase` and returns it.
    pub async fn wait_phase(&self, clone: &str, phase: ClonePhase) -> Result<VirtualMachineClone> {
        let api: Api<VirtualMachineClone> = self.api();
        wait_for(
            &format!("clone {clone} to reach phase {phase:?}"),
            CLONE_TIMEOUT,
            || async {
                let c = api.get(clone).await?;
                let status = c.status.clone().unwrap_or_default();
                ensure!(
                    status.phase == phase,
                    "status: {}",
                    serde_json::to_string(&status)?
                );
                Ok(c)
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.dump()))
    }

    /// Waits until the clone's Ready condition has `reason`.
    pub async fn wait_ready_reason(
        &self,
        clone: &str,
        reason: &str,
    ) -> Result<VirtualMachineClone> {
        let api: Api<VirtualMachineClone> = self.api();
        wait_for(
            &format!("clone {clone} Ready reason {reason}"),
            CLONE_TIMEOUT,
            || async {
                let c = api.get(clone).await?;
                let status = c.status.clone().unwrap_or_default();
                let ready = status.condition("Ready").and_then(|c| c.reason.clone());
                ensure!(
                    ready.as_deref() == Some(reason),
                    "status: {}",
                    serde_json::to_string(&status)?
                );
                Ok(c)
            },
        )
        .await
    }

    /// Events about `clone` in the test's namespace (see [`events_in`]).
    pub async fn events(&self, clone: &str) -> Result<Vec<(String, String, String)>> {
        events_in(&self.client, &self.ns, clone).await
    }

    /// Waits until an event with `reason` about `clone` exists, then returns all events.
    pub async fn wait_event(
        &self,
        clone: &str,
        reason: &str,
    ) -> Result<Vec<(String, String, String)>> {
        wait_for(
            &format!("event {reason} for clone {clone}"),
            CLONE_TIMEOUT,
            || async {
                let events = self.events(clone).await?;
                ensure!(events.iter().any(|e| e.1 == reason), "events: {events:?}");
                Ok(events)
            },
        )
        .await
    }

    /// Waits until an event's note about `clone` contains `text`: a transition, whichever event
    /// of its pass carries it (a pass publishes one event naming all its transitions).
    pub async fn wait_transition(
        &self,
        clone: &str,
        text: &str,
    ) -> Result<Vec<(String, String, String)>> {
        wait_for(
            &format!("an event of clone {clone} saying {text:?}"),
            CLONE_TIMEOUT,
            || async {
                let events = self.events(clone).await?;
                ensure!(
                    events.iter().any(|e| e.2.contains(text)),
                    "events: {events:?}"
                );
                Ok(events)
            },
        )
        .await
    }

    /// Names of the snapshots, restores and VMs in the namespace.
    pub async fn inventory(&self) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
        let snaps: Api<VirtualMachineSnapshot> = self.api();
        let restores: Api<VirtualMachineRestore> = self.api();
        let vms: Api<VirtualMachine> = self.api();
        let lp = ListParams::default();
        Ok((
            snaps
                .list_metadata(&lp)
                .await?
                .items
                .iter()
                .map(|o| o.name_any())
                .collect(),
            restores
                .list_metadata(&lp)
                .await?
                .items
                .iter()
                .map(|o| o.name_any())
                .collect(),
            vms.list_metadata(&lp)
                .await?
                .items
                .iter()
                .map(|o| o.name_any())
                .collect(),
        ))
    }

    /// Stops the controller and the sim.
    pub async fn stop(mut self) {
        self.stop_controller().await;
        if let Some(sim) = self.sim.take() {
            sim.stop().await;
        }
    }
}

/// Counts events with `reason` in a list from [`Harness::events`].
pub fn count(events: &[(String, String, String)], reason: &str) -> usize {
    events.iter().filter(|e| e.1 == reason).count()
}

/// The seed's clone manifest with a full MAC, and lowercase filter keys (Kubernetes requires
/// lowercase label/annotation key prefixes, so the seed's `someKey/*` can match no real key).
pub fn seed_clone_manifest() -> String {
    include_str!("../../../clone-api/testdata/seed-clone.yaml")
        .replace("\"00-11-22\"", "\"00-11-22-33-44-55\"")
        .replace("someKey", "somekey")
        .replace("anotherKey", "anotherkey")
}

/// A source VM with a PVC-backed disk and identity everywhere: fixed MACs, a firmware serial and
/// UUID, labels and annotations on the VM and on its template.
pub fn source_vm_manifest(name: &str, storage_class: &str) -> String {
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("{name}-root")},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                 "resources": {"requests": {"storage": "1Gi"}}},
    });
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "labels": {"app": "cirros", "somekey/owner": "team-a", "kubevirt.io/vm": name},
            "annotations": {"anotherkey/keep": "yes", "description": "the source VM"},
        },
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {
                    "labels": {"kubevirt.io/vm": name, "somekey/template": "x", "app": "cirros"},
                    "annotations": {"anotherkey/template": "yes", "ovn.kubernetes.io/ip_address": "10.16.0.15"},
                },
                "spec": {
                    "domain": {
                        "devices": {
                            "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                            "interfaces": [
                                {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"},
                                {"name": "interfaceName", "bridge": {}, "macAddress": "02:00:00:00:00:02"},
                            ],
                        },
                        "firmware": {"serial": "source-serial", "uuid": "0f9f4e33-1a3b-4b3b-9d36-000000000001"},
                        "resources": {"requests": {"memory": "128Mi"}},
                    },
                    "networks": [
                        {"name": "default", "pod": {}},
                        {"name": "interfaceName", "multus": {"networkName": "bridge-net"}},
                    ],
                    "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": format!("{name}-root")}}],
                },
            },
        },
    });
    list(&[pvc.to_string(), vm.to_string()])
}

/// Several JSON objects as one `v1/List` (kubectl reads a stream starting with `{` as JSON, where
/// YAML's `---` separator does not exist).
pub fn list(objects: &[String]) -> String {
    let items: Vec<Value> = objects
        .iter()
        .filter_map(|o| serde_json::from_str(o).ok())
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// A clone manifest (v1beta1) of `source` with optional extra spec fields.
pub fn clone_manifest(
    name: &str,
    source_kind: &str,
    source: &str,
    target: Option<&str>,
    extra: Value,
) -> String {
    let group = if source_kind == "VirtualMachine" {
        "kubevirt.io"
    } else {
        "snapshot.kubevirt.io"
    };
    let mut spec = json!({"source": {"apiGroup": group, "kind": source_kind, "name": source}});
    if let Some(t) = target {
        spec["target"] = json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": t});
    }
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

/// A free local address for a server the test starts (bound and released at once).
pub fn free_addr() -> Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Events about `clone` in `ns`: (type, reason, note), oldest first, one entry per occurrence (an
/// Event object whose series counts `n` occurrences gives `n` entries).
pub async fn events_in(
    client: &Client,
    ns: &str,
    clone: &str,
) -> Result<Vec<(String, String, String)>> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut events: Vec<Event> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(clone))
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    Ok(events
        .into_iter()
        .flat_map(|e| {
            let occurrences = e.series.as_ref().map_or(1, |s| s.count.max(1)) as usize;
            let entry = (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            );
            std::iter::repeat_n(entry, occurrences)
        })
        .collect())
}
