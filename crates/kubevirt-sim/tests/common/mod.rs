//! Helpers shared by the contract tests: a namespace with its own sim, manifests of VMs and
//! PVCs, JSON access to any object, waiting on JSON, events.

#![allow(dead_code)] // every test file uses a different subset

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client, Resource};
use kubevirt_sim::{Sim, SimConfig, SimHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testenv::{TestEnv, wait_for};

/// How long any expectation may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// One test's world: the shared control plane, a client, a fresh namespace, a sim scoped to it.
pub struct World {
    pub env: &'static TestEnv,
    pub client: Client,
    pub ns: String,
    pub sim: Option<SimHandle>,
}

impl World {
    /// A namespace `<prefix>-<n>` with a sim of `config` scoped to it.
    pub async fn new(prefix: &str, config: SimConfig) -> World {
        let mut world = Self::without_sim(prefix).await;
        let sim = Sim::start(world.client.clone(), config.namespace(world.ns.clone()))
            .await
            .expect("the sim starts");
        world.sim = Some(sim);
        world
    }

    /// A namespace without a sim (the test starts its own).
    pub async fn without_sim(prefix: &str) -> World {
        // `RUST_LOG=kubevirt_sim=debug cargo test ... -- --nocapture` shows what the sim does.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = TestEnv::shared().await.expect("the control plane starts");
        let client = env.client().await.expect("a client");
        kubevirt_sim::install(client.clone())
            .await
            .expect("the sim installs");
        kubevirt_sim::set_feature_gates(client.clone(), &["Snapshot"])
            .await
            .expect("the KubeVirt CR with the Snapshot gate");
        let ns = env.namespace(prefix).await.expect("a namespace");
        World {
            env,
            client,
            ns,
            sim: None,
        }
    }

    /// A dynamic API for `apiVersion`/`kind` (plural given) in this namespace.
    pub fn api(&self, api_version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        self.api_in(&self.ns, api_version, kind, plural)
    }

    /// The same in another namespace.
    pub fn api_in(
        &self,
        ns: &str,
        api_version: &str,
        kind: &str,
        plural: &str,
    ) -> Api<DynamicObject> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        };
        Api::namespaced_with(self.client.clone(), ns, &resource)
    }

    pub fn vms(&self) -> Api<DynamicObject> {
        self.api("kubevirt.io/v1", "VirtualMachine", "virtualmachines")
    }
    pub fn vmis(&self) -> Api<DynamicObject> {
        self.api(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "virtualmachineinstances",
        )
    }
    pub fn snapshots(&self) -> Api<DynamicObject> {
        self.api(
            "snapshot.kubevirt.io/v1beta1",
            "VirtualMachineSnapshot",
            "virtualmachinesnapshots",
        )
    }
    pub fn contents(&self) -> Api<DynamicObject> {
        self.api(
            "snapshot.kubevirt.io/v1beta1",
            "VirtualMachineSnapshotContent",
            "virtualmachinesnapshotcontents",
        )
    }
    pub fn restores(&self) -> Api<DynamicObject> {
        self.api(
            "snapshot.kubevirt.io/v1beta1",
            "VirtualMachineRestore",
            "virtualmachinerestores",
        )
    }
    pub fn dvs(&self) -> Api<DynamicObject> {
        self.dvs_in(&self.ns)
    }
    pub fn dvs_in(&self, ns: &str) -> Api<DynamicObject> {
        self.api_in(ns, "cdi.kubevirt.io/v1beta1", "DataVolume", "datavolumes")
    }
    pub fn pvcs(&self) -> Api<DynamicObject> {
        self.pvcs_in(&self.ns)
    }
    pub fn pvcs_in(&self, ns: &str) -> Api<DynamicObject> {
        self.api_in(ns, "v1", "PersistentVolumeClaim", "persistentvolumeclaims")
    }

    /// Creates `object` (JSON) with `api`; returns it as stored.
    pub async fn create(&self, api: &Api<DynamicObject>, object: Value) -> Value {
        let typed: DynamicObject = serde_json::from_value(object).expect("a valid object");
        let created = api
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_or_else(|e| panic!("creating {:?}: {e}", typed.metadata.name));
        serde_json::to_value(created).expect("JSON")
    }

    /// Merge-patches `name`.
    pub async fn merge(&self, api: &Api<DynamicObject>, name: &str, patch: Value) {
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("patching {name}: {e}"));
    }

    /// Waits until `name` exists and `check` accepts its JSON; returns that JSON.
    pub async fn wait(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_json(api, name, what, check).await
    }

    /// The reasons of the events about `name` in this namespace.
    pub async fn event_reasons(&self, name: &str) -> Vec<(String, String)> {
        events_about(&self.client, &self.ns, name).await
    }

    /// Waits for an event with `reason` about `name`; returns its message.
    pub async fn wait_event(&self, name: &str, reason: &str) -> String {
        let client = self.client.clone();
        let ns = self.ns.clone();
        wait_for(&format!("an event {reason} about {name}"), TIMEOUT, || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let events = events_about(&client, &ns, name).await;
                events
                    .iter()
                    .find(|(r, _)| r == reason)
                    .map(|(_, m)| m.clone())
                    .ok_or(events)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// `(reason, message)` of the events about `name` in `ns`.
pub async fn events_about(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Waits until `name` exists and `check` accepts its JSON.
pub async fn wait_json<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    wait_for(&format!("{name}: {what}"), TIMEOUT, || async {
        let object = api.get_opt(name).await.map_err(|e| e.to_string())?;
        let Some(object) = object else {
            return Err("does not exist".to_owned());
        };
        let json = serde_json::to_value(&object).map_err(|e| e.to_string())?;
        if check(&json) {
            Ok(json)
        } else {
            Err(serde_json::to_string_pretty(&json).unwrap_or_default())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A PVC of `class` and `size`.
pub fn pvc(name: &str, class: &str, size: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"disk": name}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "resources": {"requests": {"storage": size}},
        },
    })
}

/// A VM with `runStrategy` and the given volumes (name, source) — each gets a disk.
pub fn vm(name: &str, run_strategy: &str, volumes: Vec<Value>, templates: Vec<Value>) -> Value {
    let disks: Vec<Value> = volumes
        .iter()
        .map(|v| json!({"name": v["name"], "disk": {"bus": "virtio"}}))
        .collect();
    let mut spec = json!({
        "runStrategy": run_strategy,
        "template": {
            "metadata": {"labels": {"kubevirt.io/domain": name}},
            "spec": {
                "domain": {
                    "devices": {
                        "disks": disks,
                        "interfaces": [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"}],
                    },
                    "resources": {"requests": {"memory": "64Mi"}},
                },
                "networks": [{"name": "default", "pod": {}}],
                "volumes": volumes,
            },
        },
    });
    if !templates.is_empty() {
        spec["dataVolumeTemplates"] = json!(templates);
    }
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "demo", "remove-me": "yes"}, "annotations": {"note": "kept"}},
        "spec": spec,
    })
}

/// A snapshot of VM `vm`.
pub fn snapshot(name: &str, vm: &str) -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}},
    })
}

/// A restore of `snapshot` into `target`.
pub fn restore(
    name: &str,
    snapshot: &str,
    target: &str,
    policy: Option<&str>,
    patches: &[&str],
) -> Value {
    let mut spec = json!({
        "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
        "virtualMachineSnapshotName": snapshot,
    });
    if let Some(policy) = policy {
        spec["volumeRestorePolicy"] = json!(policy);
    }
    if !patches.is_empty() {
        spec["patches"] = json!(patches);
    }
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineRestore",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The condition `type_` of `object`'s status.
pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Whether condition `type_` has `status`.
pub fn condition_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_).is_some_and(|c| c["status"] == status)
}

/// `status.phase`.
pub fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}
