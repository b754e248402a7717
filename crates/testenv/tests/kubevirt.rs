//! KubeVirt's own virt-api and virt-controller in the testbed: objects are admitted by
//! KubeVirt's webhooks exactly as on a KubeVirt cluster, virt-controller reconciles them, and
//! both servers stop with their control plane.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;
use testenv::{KUBEVIRT_NAMESPACE, KubeVirtOptions, Options, TestEnv, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

fn vms(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    );
    Api::namespaced_with(client, ns, &resource)
}

fn vm(name: &str, disks: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Halted", "template": {"spec": {
            "domain": {"devices": {"disks": disks}, "resources": {"requests": {"memory": "64Mi"}}},
        }}},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubevirts_webhooks_admit_and_its_controller_reconciles() {
    let env = TestEnv::shared_kubevirt().await.unwrap();
    assert!(env.runs_kubevirt());
    let ns = env.namespace("kv-admission").await.unwrap();
    let api = vms(env.client().await.unwrap(), &ns);

    // A disk that names no volume: refused by KubeVirt's VM validator, as on a real cluster.
    let refused = api
        .create(
            &PostParams::default(),
            &vm("broken", json!([{"name": "nowhere", "disk": {}}])),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = refused else {
        panic!("not an API error: {refused}");
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    assert!(
        status.message.contains(
            "admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request"
        ),
        "{status:?}"
    );

    // A valid VM is mutated (firmware UUID, machine type) and reconciled (printable status).
    let created = api
        .create(&PostParams::default(), &vm("fine", json!([])))
        .await
        .unwrap();
    let template = &created.data["spec"]["template"]["spec"]["domain"];
    assert!(template["firmware"]["uuid"].is_string(), "{template}");
    assert!(template["machine"]["type"].is_string(), "{template}");
    wait_for(
        "virt-controller to mark the VM Stopped",
        TIMEOUT,
        || async {
            let vm = api.get("fine").await?;
            anyhow::ensure!(
                vm.data["status"]["printableStatus"] == "Stopped",
                "{:?}",
                vm.data.get("status")
            );
            Ok(())
        },
    )
    .await
    .unwrap();

    // The KubeVirt CR is Deployed with the Snapshot gate, as virt-operator would leave it.
    let kubevirt = env
        .kubectl_output(
            &[
                "get",
                "kubevirt",
                "kubevirt",
                "-n",
                KUBEVIRT_NAMESPACE,
                "-o",
                "json",
            ],
            None,
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    let kubevirt: serde_json::Value = serde_json::from_str(&kubevirt.stdout).unwrap();
    assert_eq!(kubevirt["status"]["phase"], "Deployed");
    assert_eq!(
        kubevirt["spec"]["configuration"]["developerConfiguration"]["featureGates"],
        json!(["Snapshot"])
    );
    // virt-controller runs without its clone controller, and the CR says so.
    assert_eq!(
        kubevirt["spec"]["customizeComponents"]["flags"]["controller"],
        json!({"clone-controller-threads": "0"})
    );
}

/// The `KubeVirt` CR's `clone-controller-threads` flag, read with kubectl (`None`: not set).
async fn clone_threads_flag(env: &TestEnv) -> Option<String> {
    let out = env
        .kubectl_output(
            &[
                "get",
                "kubevirt",
                "kubevirt",
                "-n",
                KUBEVIRT_NAMESPACE,
                "-o",
                "jsonpath={.spec.customizeComponents.flags.controller.clone-controller-threads}",
            ],
            None,
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    (!out.stdout.is_empty()).then_some(out.stdout)
}

/// The `--clone-controller-threads` value of the running virt-controller of `env`.
fn running_clone_threads(env: &TestEnv) -> Vec<String> {
    let folder = env.kubeconfig_path().parent().unwrap().to_owned();
    processes_mentioning(&folder)
        .iter()
        .filter_map(|p| {
            let mut words = p.split_whitespace();
            // The server itself, not its `sh` supervisor (whose command line holds the same words).
            if !words.next()?.ends_with("/virt-controller") {
                return None;
            }
            words.find(|w| *w == "--clone-controller-threads")?;
            words.next().map(str::to_owned)
        })
        .collect()
}

/// The CR tells the truth about upstream's clone controller, as virt-operator's would, through
/// restarts of virt-controller both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubevirt_cr_says_whether_upstreams_clone_controller_runs() {
    let mut env = TestEnv::start_with_options(Options::kubevirt())
        .await
        .unwrap();
    assert_eq!(clone_threads_flag(&env).await.as_deref(), Some("0"));
    assert_eq!(running_clone_threads(&env), ["0"]);

    env.restart_virt_controller(KubeVirtOptions {
        upstream_clone_controller: true,
    })
    .await
    .unwrap();
    assert_eq!(clone_threads_flag(&env).await, None);
    assert_eq!(running_clone_threads(&env), ["3"]);

    env.restart_virt_controller(KubeVirtOptions::default())
        .await
        .unwrap();
    assert_eq!(clone_threads_flag(&env).await.as_deref(), Some("0"));
    assert_eq!(running_clone_threads(&env), ["0"]);
    drop(env);

    let upstream = TestEnv::start_with_options(Options {
        kubevirt: Some(KubeVirtOptions {
            upstream_clone_controller: true,
        }),
        ..Options::default()
    })
    .await
    .unwrap();
    assert_eq!(clone_threads_flag(&upstream).await, None);
    assert_eq!(running_clone_threads(&upstream), ["3"]);
}

/// Whether any process's command line mentions `folder`.
fn processes_mentioning(folder: &std::path::Path) -> Vec<String> {
    let needle = folder.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(&needle) {
            found.push(text);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virt_api_and_virt_controller_stop_with_their_control_plane() {
    let env = TestEnv::start_with_options(Options::kubevirt())
        .await
        .unwrap();
    let folder: PathBuf = env.kubeconfig_path().parent().unwrap().to_owned();
    let running = processes_mentioning(&folder);
    for server in ["virt-api", "virt-controller"] {
        assert!(
            running.iter().any(|p| p.contains(server)),
            "{server} is not running: {running:#?}"
        );
    }
    drop(env);
    assert!(!folder.exists(), "{} was not removed", folder.display());
    let left = processes_mentioning(&folder);
    assert!(left.is_empty(), "still running: {left:#?}");
}
