//! KubeVirt's own `virt-api` (with its admission webhooks) and `virt-controller` (its VM,
//! snapshot and restore controllers), run headless next to the testbed's kube-apiserver.
//!
//! Start-up order, each step waiting for the last:
//! 1. the `kubevirt` namespace and the `KubeVirt` CR `kubevirt/kubevirt` with the `Snapshot`
//!    feature gate, its status as virt-operator would leave it: `phase: Deployed` (virt-controller
//!    ignores a CR without a phase), the observed version, and the default architecture (the VM
//!    mutator copies it into VMs; a VMI without one is refused). The CR says what virt-controller
//!    runs with, as virt-operator's would: `spec.customizeComponents.flags.controller` holds
//!    `clone-controller-threads: "0"` exactly while upstream's clone controller is off;
//! 2. virt-api, serving TLS on loopback with a certificate of the testbed's CA; then KubeVirt's
//!    own validating and mutating webhook configurations (from `webhooks.json`, see
//!    `kubevirt_binaries`), each service reference replaced by a URL on loopback and the CA as
//!    `caBundle`; ready when a server-side dry-run create of a VM passes the webhooks;
//! 3. virt-controller (`--clone-controller-threads 0` unless upstream's clone controller is
//!    wanted); ready when it has made a probe VM `Stopped`.
//!
//! Both run under the testbed's supervisor (they die with the test process) and with their own
//! identities, so the API server's records tell their requests apart.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::certs::TestCa;
use crate::kubevirt_binaries::{KUBEVIRT_VERSION, KubeVirtBinaries};
use crate::manifests::FIELD_MANAGER;
use crate::process::{Supervised, free_ports};
use crate::wait::wait_for;

/// Where KubeVirt lives (virt-operator's default; virt-api and virt-controller assume it).
pub const KUBEVIRT_NAMESPACE: &str = "kubevirt";
/// The `KubeVirt` CR's name.
pub const KUBEVIRT_NAME: &str = "kubevirt";

const VIRT_API_READY: Duration = Duration::from_secs(120);
const VIRT_CONTROLLER_READY: Duration = Duration::from_secs(180);

/// How the testbed runs KubeVirt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeVirtOptions {
    /// Run upstream's own clone controller too (virt-controller's default). Off by default:
    /// `--clone-controller-threads 0`, so that vmclone is the only clone controller; the
    /// `KubeVirt` CR then carries the flag `clone-controller-threads: "0"` (and does not while
    /// upstream's runs), as virt-operator's CR would.
    pub upstream_clone_controller: bool,
}

/// The running virt-api and virt-controller.
#[derive(Debug)]
pub(crate) struct KubeVirtServers {
    virt_api: Supervised,
    virt_controller: Supervised,
    controller_port: u16,
    controller_kubeconfig: PathBuf,
    launched: KubeVirtOptions,
}

/// What [`start`] needs from the control plane.
pub(crate) struct Inputs<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) client: Client,
    pub(crate) ca: &'a TestCa,
    pub(crate) virt_api_kubeconfig: PathBuf,
    pub(crate) virt_controller_kubeconfig: PathBuf,
    pub(crate) binaries: &'a KubeVirtBinaries,
}

/// Starts KubeVirt against the control plane and returns once both servers work.
pub(crate) async fn start(
    inputs: Inputs<'_>,
    options: &KubeVirtOptions,
) -> Result<KubeVirtServers> {
    let Inputs {
        dir,
        client,
        ca,
        virt_api_kubeconfig,
        virt_controller_kubeconfig,
        binaries,
    } = inputs;
    configure(&client, options).await?;

    let [api_port, controller_port] = free_ports(2)?[..] else {
        bail!("free_ports returned the wrong number of ports");
    };
    let serving = ca.serving(&dir.join("virt-api-certs"), "virt-api")?;
    let api_args: Vec<OsString> = vec![
        arg("--kubeconfig=", &virt_api_kubeconfig),
        "--listen=127.0.0.1".into(),
        format!("--port={api_port}").into(),
        arg("--tls-cert-file=", &serving.cert),
        arg("--tls-key-file=", &serving.key),
        // Only used to call virt-handler, which does not run here.
        arg("--handler-cert-file=", &serving.cert),
        arg("--handler-key-file=", &serving.key),
    ];
    let mut virt_api = Supervised::new("virt-api", dir, &binaries.virt_api, api_args);
    virt_api.start()?;
    register_webhooks(&client, &binaries.webhooks, api_port, ca).await?;
    wait_for_webhooks(&client, &mut virt_api).await?;

    let mut servers = KubeVirtServers {
        virt_api,
        virt_controller: Supervised::new(
            "virt-controller",
            dir,
            &binaries.virt_controller,
            Vec::new(),
        ),
        controller_port,
        controller_kubeconfig: virt_controller_kubeconfig,
        launched: options.clone(),
    };
    servers.start_controller(&client, options).await?;
    Ok(servers)
}

impl KubeVirtServers {
    /// (Re)starts virt-controller with `options` and waits until it reconciles VMs. The
    /// `KubeVirt` CR follows, in the order a careful operator would use: it stops saying that
    /// upstream's clone controller is off before that controller starts, and says so only once
    /// the old virt-controller is gone.
    pub(crate) async fn start_controller(
        &mut self,
        client: &Client,
        options: &KubeVirtOptions,
    ) -> Result<()> {
        let threads = if options.upstream_clone_controller {
            apply_spec(client, options).await?;
            "3"
        } else {
            "0"
        };
        self.virt_controller.set_args(vec![
            arg("--kubeconfig=", &self.controller_kubeconfig),
            // Never pulled: no VM runs here.
            format!("--launcher-image=vmclone.invalid/virt-launcher:{KUBEVIRT_VERSION}").into(),
            "--listen=127.0.0.1".into(),
            format!("--port={}", self.controller_port).into(),
            "--clone-controller-threads".into(),
            threads.into(),
        ]);
        self.virt_controller.start()?;
        if !options.upstream_clone_controller {
            apply_spec(client, options).await?;
        }
        self.launched = options.clone();
        wait_for_vm_controller(client, &mut self.virt_controller).await
    }

    /// How virt-controller was last started.
    pub(crate) fn options(&self) -> &KubeVirtOptions {
        &self.launched
    }

    /// Asks both servers to stop without waiting.
    pub(crate) fn request_stop(&mut self) {
        self.virt_controller.request_stop();
        self.virt_api.request_stop();
    }

    /// Both servers' names and log tails.
    pub(crate) fn servers(&self) -> [&Supervised; 2] {
        [&self.virt_api, &self.virt_controller]
    }
}

impl Drop for KubeVirtServers {
    fn drop(&mut self) {
        self.request_stop();
        self.virt_controller.stop();
        self.virt_api.stop();
    }
}

fn arg(flag: &str, path: impl AsRef<Path>) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path.as_ref());
    arg
}

fn kubevirt_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"),
        "kubevirts",
    )
}

fn vm_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    )
}

/// The `KubeVirt` CR's spec: the Snapshot gate, and virt-controller's flags as virt-operator
/// would pass them (`clone-controller-threads: "0"` while upstream's clone controller is off).
fn kubevirt_spec(options: &KubeVirtOptions) -> Value {
    let mut spec = json!({
        "configuration": {"developerConfiguration": {"featureGates": ["Snapshot"]}},
    });
    if !options.upstream_clone_controller {
        spec["customizeComponents"] =
            json!({"flags": {"controller": {"clone-controller-threads": "0"}}});
    }
    spec
}

/// Applies the `KubeVirt` CR's spec for `options` (server-side apply: a flag no longer wanted is
/// removed).
async fn apply_spec(client: &Client, options: &KubeVirtOptions) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), KUBEVIRT_NAMESPACE, &kubevirt_resource());
    api.patch(
        KUBEVIRT_NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "metadata": {"name": KUBEVIRT_NAME, "namespace": KUBEVIRT_NAMESPACE},
            "spec": kubevirt_spec(options),
        })),
    )
    .await
    .context("applying the KubeVirt CR")?;
    Ok(())
}

/// The namespace and the `KubeVirt` CR, `Deployed`, with the Snapshot gate.
async fn configure(client: &Client, options: &KubeVirtOptions) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            KUBEVIRT_NAMESPACE,
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": KUBEVIRT_NAMESPACE}})),
        )
        .await
        .context("applying the kubevirt namespace")?;
    apply_spec(client, options).await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), KUBEVIRT_NAMESPACE, &kubevirt_resource());
    api.patch_status(
        KUBEVIRT_NAME,
        &params,
        &Patch::Apply(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "status": {
                "phase": "Deployed",
                // virt-operator records the nodes' architecture; the VM mutator copies it into
                // every VM (VMIs without one are refused: "unsupported architecture").
                "defaultArchitecture": go_arch(),
                "observedKubeVirtVersion": KUBEVIRT_VERSION,
                "targetKubeVirtVersion": KUBEVIRT_VERSION,
            },
        })),
    )
    .await
    .context("setting the KubeVirt CR's status.phase to Deployed")?;
    Ok(())
}

/// This machine's architecture as Go names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// KubeVirt's webhook configurations, pointed at virt-api on loopback.
fn loopback_webhooks(configurations: &str, port: u16, ca_pem: &str) -> Result<Vec<Value>> {
    let parsed: Vec<Value> =
        serde_json::from_str(configurations).context("parsing webhooks.json")?;
    let ca_bundle = serde_json::to_value(ByteString(ca_pem.as_bytes().to_vec()))?;
    let mut out = Vec::new();
    for (kind, mut configuration) in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ]
    .into_iter()
    .zip(parsed)
    {
        let name = configuration
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .context("a webhook configuration without a name")?
            .to_owned();
        configuration["apiVersion"] = json!("admissionregistration.k8s.io/v1");
        configuration["kind"] = json!(kind);
        configuration["metadata"] = json!({"name": name});
        let webhooks = configuration
            .get_mut("webhooks")
            .and_then(Value::as_array_mut)
            .with_context(|| format!("{name} has no webhooks"))?;
        for webhook in webhooks {
            let path = webhook
                .pointer("/clientConfig/service/path")
                .and_then(Value::as_str)
                .with_context(|| format!("a webhook of {name} has no service path: {webhook}"))?;
            webhook["clientConfig"] = json!({
                "url": format!("https://127.0.0.1:{port}{path}"),
                "caBundle": ca_bundle,
            });
        }
        out.push(configuration);
    }
    if out.len() != 2 {
        bail!("webhooks.json holds {} configurations, not 2", out.len());
    }
    Ok(out)
}

async fn register_webhooks(client: &Client, file: &Path, port: u16, ca: &TestCa) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for configuration in loopback_webhooks(&text, port, ca.pem())? {
        let kind = configuration["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = configuration["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", &kind),
            &format!("{}s", kind.to_lowercase()),
        );
        Api::<DynamicObject>::all_with(client.clone(), &resource)
            .patch(&name, &params, &Patch::Apply(&configuration))
            .await
            .with_context(|| format!("registering {kind} {name}"))?;
    }
    Ok(())
}

fn probe_vm(name: &str) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": KUBEVIRT_NAMESPACE},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {"domain": {
                "devices": {},
                "resources": {"requests": {"memory": "64Mi"}},
            }}},
        },
    }))?)
}

/// Until a dry-run VM create passes virt-api's mutating and validating webhooks.
async fn wait_for_webhooks(client: &Client, virt_api: &mut Supervised) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), KUBEVIRT_NAMESPACE, &vm_resource());
    let vm = probe_vm("testenv-webhook-probe")?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let result = wait_for(
        "virt-api's webhooks to admit a dry-run VM",
        VIRT_API_READY,
        || {
            let exited = virt_api.exited_error();
            let (api, vm, dry_run) = (api.clone(), vm.clone(), dry_run.clone());
            async move {
                if let Some(err) = exited {
                    return Ok(Err(err));
                }
                match api.create(&dry_run, &vm).await {
                    Ok(admitted) => {
                        // The VM mutator fills the firmware UUID: proof it ran.
                        anyhow::ensure!(
                            admitted
                                .data
                                .pointer("/spec/template/spec/domain/firmware/uuid")
                                .is_some(),
                            "admitted without the VM mutator: {:?}",
                            admitted.data
                        );
                        Ok(Ok(()))
                    }
                    Err(err) => Err(anyhow::Error::from(err)),
                }
            }
        },
    )
    .await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err),
        Err(timeout) => Err(anyhow::anyhow!(
            "{timeout:#}\nend of the virt-api log:\n{}",
            virt_api.log_tail(30)
        )),
    }
}

/// Until virt-controller's VM controller reports a probe VM `Stopped`; the probe is deleted.
async fn wait_for_vm_controller(client: &Client, controller: &mut Supervised) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), KUBEVIRT_NAMESPACE, &vm_resource());
    let name = "testenv-controller-probe";
    let _ = api.delete(name, &DeleteParams::default()).await;
    wait_for("the previous probe VM to be gone", VIRT_API_READY, || {
        let api = api.clone();
        async move {
            match api.get_opt(name).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err(anyhow::anyhow!("{name} still exists")),
                Err(err) => Err(err.into()),
            }
        }
    })
    .await?;
    api.create(&PostParams::default(), &probe_vm(name)?)
        .await
        .context("creating the virt-controller probe VM")?;
    let result = wait_for(
        "virt-controller to report the probe VM Stopped",
        VIRT_CONTROLLER_READY,
        || {
            let exited = controller.exited_error();
            let api = api.clone();
            async move {
                if let Some(err) = exited {
                    return Ok(Err(err));
                }
                let vm = api.get(name).await?;
                let printable = vm.data.pointer("/status/printableStatus").cloned();
                anyhow::ensure!(
                    printable == Some(json!("Stopped")),
                    "status: {:?}",
                    vm.data.get("status")
                );
                anyhow::Ok(Ok(()))
            }
        },
    )
    .await;
    let outcome = match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err),
        Err(timeout) => Err(anyhow::anyhow!(
            "{timeout:#}\nend of the virt-controller log:\n{}",
            controller.log_tail(30)
        )),
    };
    let _ = api.delete(name, &DeleteParams::default()).await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_webhook_points_at_virt_api_on_loopback_with_the_ca() {
        let file = json!([
            {"metadata": {"name": "virt-api-validator", "labels": {"x": "y"}},
             "webhooks": [{"name": "a", "clientConfig": {"service": {"namespace": "kubevirt", "name": "virt-api", "path": "/vm-validate"}}}]},
            {"metadata": {"name": "virt-api-mutator"},
             "webhooks": [{"name": "b", "clientConfig": {"service": {"namespace": "kubevirt", "name": "virt-api", "path": "/vm-mutate"}}}]},
        ])
        .to_string();
        let out = loopback_webhooks(&file, 8443, "PEM").unwrap();
        assert_eq!(out[0]["kind"], "ValidatingWebhookConfiguration");
        assert_eq!(out[1]["kind"], "MutatingWebhookConfiguration");
        assert_eq!(out[0]["metadata"], json!({"name": "virt-api-validator"}));
        assert_eq!(
            out[0]["webhooks"][0]["clientConfig"],
            json!({"url": "https://127.0.0.1:8443/vm-validate", "caBundle": "UEVN"})
        );
        assert_eq!(
            out[1]["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:8443/vm-mutate"
        );
    }

    #[test]
    fn the_cr_says_upstreams_clone_controller_is_off_exactly_when_it_is() {
        let off = kubevirt_spec(&KubeVirtOptions::default());
        assert_eq!(
            off.pointer("/customizeComponents/flags/controller/clone-controller-threads"),
            Some(&json!("0"))
        );
        assert_eq!(
            off.pointer("/configuration/developerConfiguration/featureGates"),
            Some(&json!(["Snapshot"]))
        );
        let on = kubevirt_spec(&KubeVirtOptions {
            upstream_clone_controller: true,
        });
        assert_eq!(on.get("customizeComponents"), None);
        assert_eq!(
            on.pointer("/configuration/developerConfiguration/featureGates"),
            Some(&json!(["Snapshot"]))
        );
    }

    #[test]
    fn a_webhook_without_a_service_path_is_an_error() {
        let file = json!([
            {"metadata": {"name": "v"}, "webhooks": [{"name": "a", "clientConfig": {"url": "https://x"}}]},
            {"metadata": {"name": "m"}, "webhooks": []},
        ])
        .to_string();
        let err = loopback_webhooks(&file, 1, "PEM").unwrap_err();
        assert!(err.to_string().contains("no service path"), "{err}");
    }
}
