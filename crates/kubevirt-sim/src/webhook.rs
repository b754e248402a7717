//! KubeVirt v1.7.0's restore admission, as virt-api serves it: a validating admission webhook
//! (`virtualmachinerestore-validator.snapshot.kubevirt.io`, path
//! `/virtualmachinerestores-validate`, CREATE and UPDATE of `virtualmachinerestores`,
//! `failurePolicy: Fail`, 10 s timeout) that the sim serves itself over HTTPS on `127.0.0.1` with
//! a certificate of its own CA, registered with the API server by URL and `caBundle`. The API
//! server then answers exactly as with virt-api: `422 Invalid` with
//! `admission webhook "virtualmachinerestore-validator.snapshot.kubevirt.io" denied the request:
//! <causes joined by ", ">` and the causes in `details`, or `400` with the message of an error.
//!
//! What it checks, in upstream's order (`pkg/storage/admitters/vmrestore.go`):
//!
//! - CREATE while the `Snapshot` gate is off → 400 `Snapshot/Restore feature gate not enabled`.
//!   The gate is read from the `KubeVirt` CR in virt-api's namespace (default `kubevirt`; one
//!   with a `status.phase`, as virt-api's config reader wants; Beta gates are on only when
//!   listed in `developerConfiguration.featureGates`).
//! - CREATE: `spec.target.apiGroup` absent → `missing apiGroup`; not `kubevirt.io` → `invalid
//!   apiGroup`; kind not `VirtualMachine` → `invalid kind`. For a VM target: the naive patch check
//!   (`patch format is not valid - one ":" expected ...`, `patching is valid only for elements
//!   under /spec/ only: ...`); then the snapshot is read — **a missing snapshot admits the
//!   restore and drops the patch causes**, as upstream's early return does; another error is a
//!   400. The target VM is read (errors other than not-found: 400). If the target is missing or
//!   is not the snapshot's source: a snapshot status without a content name is a 400 (`snapshot
//!   content name is nil in vmSnapshot status` — what a snapshot that is not ready yet, or failed
//!   before its content, gets), the content is read (not found, e.g. deleted with its failed
//!   snapshot: a 400 with the API server's `... not found`), a content without a VM is a 400
//!   (`unexpected snapshot source`), and a VM with persistent TPM or EFI is refused (`Restore to
//!   a different VM is not supported when snapshotted VM has backend storage (persistent TPM or
//!   EFI)`). Then volume overrides (`must provide a volume name`, `must provide at least one
//!   overriden field`) and policies (`volume restore policy "<p>" doesn't exist` for anything
//!   but `InPlace`/`RandomizeNames`, so also for v1.8's `PrefixTargetName`; `volume ownership
//!   policy "<p>" doesn't exist`). Last, for every target: each restore of the namespace with the
//!   same `spec.target` that is not `complete` (failed ones included, and the restore itself
//!   when a create is repeated) adds `VirtualMachineRestore "<name>" in progress` — read, like
//!   upstream, from a watch cache.
//! - A snapshot without any status (before its controller's first write) makes upstream's
//!   admitter dereference nil and its HTTP server drop the connection; the sim drops it too, so
//!   the API server answers `500` (`failed calling webhook`).
//! - UPDATE: a changed spec → `spec in immutable after creation`.
//! - The sim's knob: CREATE of a restore annotated [`ADMISSION_ERROR_ANNOTATION`], or of any
//!   restore in a namespace so annotated, is answered as an internal error, 400 with the
//!   annotation's value.
//!
//! A webhook is scoped like a sim: to one namespace (a `namespaceSelector` on its name; the
//! namespace gets the label [`RESTORE_WEBHOOK_LABEL`] so that the restore admission *policy* of
//! [`install`](crate::install()) leaves KubeVirt's rules to the webhook there), or to the whole
//! cluster (the policy then still answers first for the rules it has).
//!
//! Simplified: the `KubeVirt` CR is re-read on every request, and without one the gate is off
//! (virt-api keeps its last valid configuration); volume override checks use the JSON as stored.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clone_api::kubevirt::VirtualMachineRestore;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::names::{
    ADMISSION_ERROR_ANNOTATION, ADMISSION_INTERNAL_ERROR, FIELD_MANAGER, GATE_NOT_ENABLED,
    KUBEVIRT_GROUP, KUBEVIRT_INSTALL_NAMESPACE, RESTORE_BACKEND_STORAGE, RESTORE_WEBHOOK,
    RESTORE_WEBHOOK_CONFIGURATION, RESTORE_WEBHOOK_LABEL, RESTORE_WEBHOOK_PATH,
    SNAPSHOT_CONTENT_NAME_NIL, SNAPSHOT_GATE, UNEXPECTED_SNAPSHOT_SOURCE,
};

/// How long [`RestoreWebhook::start`] waits for its caches and for the API server to call it.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The value of [`RESTORE_WEBHOOK_LABEL`] on namespaces a webhook serves.
const LABEL_VALUE: &str = "webhook";

/// Where a [`RestoreWebhook`] validates and where it reads KubeVirt's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Only restores in this namespace; every namespace without one.
    pub namespace: Option<String>,
    /// The namespace of the `KubeVirt` CR whose feature gates apply (virt-api's own namespace).
    pub kubevirt_namespace: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            kubevirt_namespace: KUBEVIRT_INSTALL_NAMESPACE.to_owned(),
        }
    }
}

impl WebhookConfig {
    /// Validates only restores in `namespace`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Reads the `KubeVirt` CR in `namespace` instead of `kubevirt`.
    #[must_use]
    pub fn kubevirt_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.kubevirt_namespace = namespace.into();
        self
    }

    fn configuration_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{RESTORE_WEBHOOK_CONFIGURATION}-{ns}"),
            None => RESTORE_WEBHOOK_CONFIGURATION.to_owned(),
        }
    }
}

/// A running restore admission webhook; stop it with [`stop`](Self::stop) (dropping it only
/// stops serving, and the API server then refuses restores it would have validated).
pub struct RestoreWebhook {
    client: Client,
    config: WebhookConfig,
    url: String,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RestoreWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreWebhook")
            .field("config", &self.config)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for RestoreWebhook {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn kubevirt_resource() -> ApiResource {
    resource(KUBEVIRT_GROUP, "v1", "KubeVirt", "kubevirts")
}

impl RestoreWebhook {
    /// Serves the webhook, registers it, and returns once the API server calls it.
    pub async fn start(client: Client, config: WebhookConfig) -> Result<Self> {
        let (ca_pem, tls) = tls_config()?;
        let mut tasks = Vec::new();

        let restores_api: Api<VirtualMachineRestore> = match &config.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (restores, writer) = reflector::store();
        tasks.push(tokio::spawn(drain(
            watcher(restores_api, watcher::Config::default())
                .default_backoff()
                .reflect(writer),
        )));
        let kubevirt = kubevirt_resource();
        let kubevirts_api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &config.kubevirt_namespace, &kubevirt);
        let writer = reflector::store::Writer::new(kubevirt);
        let kubevirts = writer.as_reader();
        tasks.push(tokio::spawn(drain(
            watcher(kubevirts_api, watcher::Config::default())
                .default_backoff()
                .reflect(writer),
        )));
        let ready = async {
            let _ = restores.wait_until_ready().await;
            let _ = kubevirts.wait_until_ready().await;
        };
        tokio::time::timeout(START_TIMEOUT, ready)
            .await
            .context("the restore webhook's caches did not fill within a minute")?;

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the restore webhook")?;
        let port = listener.local_addr()?.port();
        let url = format!("https://127.0.0.1:{port}{RESTORE_WEBHOOK_PATH}");
        let state = Arc::new(State {
            world: ApiWorld {
                client: client.clone(),
                restores,
                kubevirts,
                kubevirt_namespace: config.kubevirt_namespace.clone(),
            },
        });
        tasks.push(tokio::spawn(serve(
            listener,
            TlsAcceptor::from(Arc::new(tls)),
            state,
        )));
        let webhook = Self {
            client,
            config,
            url,
            tasks,
        };
        webhook.register(&ca_pem).await?;
        webhook.wait_until_called().await?;
        tracing::info!(url = %webhook.url, namespace = ?webhook.config.namespace, "restore webhook serving");
        Ok(webhook)
    }

    /// The URL the API server calls.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The name of its ValidatingWebhookConfiguration.
    pub fn configuration_name(&self) -> String {
        self.config.configuration_name()
    }

    async fn register(&self, ca_pem: &str) -> Result<()> {
        if let Some(ns) = &self.config.namespace {
            Api::<Namespace>::all(self.client.clone())
                .patch(
                    ns,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"labels": {RESTORE_WEBHOOK_LABEL: LABEL_VALUE}}}),
                    ),
                )
                .await
                .with_context(|| format!("labelling namespace {ns}"))?;
        }
        let namespace_selector = match &self.config.namespace {
            Some(ns) => json!({"matchLabels": {"kubernetes.io/metadata.name": ns}}),
            None => json!({}),
        };
        let name = self.configuration_name();
        let configuration = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kubevirt-sim"}},
            "webhooks": [{
                "name": RESTORE_WEBHOOK,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "namespaceSelector": namespace_selector,
                "rules": [{
                    "operations": ["CREATE", "UPDATE"],
                    "apiGroups": ["snapshot.kubevirt.io"],
                    "apiVersions": ["v1beta1"],
                    "resources": ["virtualmachinerestores"],
                }],
                "clientConfig": {"url": self.url, "caBundle": base64(ca_pem.as_bytes())},
            }],
        });
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&configuration),
            )
            .await
            .with_context(|| format!("applying ValidatingWebhookConfiguration {name}"))?;
        Ok(())
    }

    /// Dry-run creates a restore without `apiGroup` until the webhook (not the policy) answers.
    async fn wait_until_called(&self) -> Result<()> {
        let namespace = self.config.namespace.as_deref().unwrap_or("default");
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource(
                "snapshot.kubevirt.io",
                "v1beta1",
                "VirtualMachineRestore",
                "virtualmachinerestores",
            ),
        );
        let probe: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1",
            "kind": "VirtualMachineRestore",
            "metadata": {"generateName": "kubevirt-sim-webhook-probe-"},
            "spec": {
                "target": {"kind": "VirtualMachine", "name": "kubevirt-sim-probe"},
                "virtualMachineSnapshotName": "kubevirt-sim-probe",
            },
        }))
        .context("building the probe restore")?;
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let expected = format!("admission webhook \"{RESTORE_WEBHOOK}\"");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let last = match api.create(&params, &probe).await {
                Err(kube::Error::Api(status)) if status.message.contains(&expected) => {
                    return Ok(());
                }
                Err(err) => err.to_string(),
                Ok(_) => "admitted".to_owned(),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the API server did not call the restore webhook within a minute; last answer: {last}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Unregisters the webhook (and the namespace's label), then stops serving.
    pub async fn stop(mut self) {
        let name = self.configuration_name();
        if let Err(err) = Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .delete(&name, &DeleteParams::default())
            .await
        {
            tracing::warn!(%err, "deleting the restore webhook's configuration failed");
        }
        if let Some(ns) = &self.config.namespace
            && let Err(err) = Api::<Namespace>::all(self.client.clone())
                .patch(
                    ns,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {RESTORE_WEBHOOK_LABEL: null}}})),
                )
                .await
        {
            tracing::warn!(%err, "unlabelling the restore webhook's namespace failed");
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn drain<S: futures::Stream + Send>(stream: S) {
    let mut stream = std::pin::pin!(stream);
    while stream.next().await.is_some() {}
}

/// Standard base64 (the `caBundle` encoding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let index = usize::try_from((n >> shift) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A fresh CA (its PEM goes into the `caBundle`) and a server configuration presenting a
/// certificate it signed for `127.0.0.1`.
fn tls_config() -> Result<(String, rustls::ServerConfig)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kubevirt-sim restore webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kubevirt-sim restore webhook");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &ca)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(
            vec![
                certificate.der().clone(),
                CertificateDer::from(ca.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .context("the webhook's serving certificate")?;
    Ok((ca.pem(), config))
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

struct State {
    world: ApiWorld,
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(%err, "restore webhook: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        handle(state.clone(), request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Upstream's nil dereference: the connection is dropped without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("runtime error: invalid memory address or nil pointer dereference")
    }
}

impl std::error::Error for Dropped {}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    if request.uri().path() != RESTORE_WEBHOOK_PATH {
        return Ok(reply(StatusCode::NOT_FOUND, String::new()));
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, String::new())),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return Ok(reply(StatusCode::BAD_REQUEST, String::new()));
    };
    let admission = &review["request"];
    let verdict = admit(&state.world, admission).await;
    let mut response = json!({"uid": admission["uid"], "allowed": false});
    match verdict {
        Verdict::Allow => response["allowed"] = json!(true),
        Verdict::Invalid(causes) => response["status"] = invalid_status(&causes),
        Verdict::Error(message) => response["status"] = json!({"message": message, "code": 400}),
        Verdict::Crash => return Err(Dropped),
    }
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok(reply(StatusCode::OK, review.to_string()))
}

/// Upstream's `ToAdmissionResponse`: the first ten causes, their messages joined.
fn invalid_status(causes: &[Cause]) -> Value {
    let shown = &causes[..causes.len().min(10)];
    let mut message = shown
        .iter()
        .map(|c| c.message.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if causes.len() > 10 {
        message = format!(
            "{message}, and {} more validation errors",
            causes.len() - 10
        );
    }
    let details: Vec<Value> = shown
        .iter()
        // A `metav1.StatusCause` writes its type as `reason`.
        .map(|c| json!({"reason": c.type_, "message": c.message, "field": c.field}))
        .collect();
    json!({
        "message": message,
        "reason": "Invalid",
        "code": 422,
        "details": {"causes": details},
    })
}

// ---------------------------------------------------------------------------------------------
// What the admission reads
// ---------------------------------------------------------------------------------------------

/// An object kind the admission reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Snapshot,
    Vm,
    Content,
    /// The namespace itself (the namespace argument of [`World::read`] is ignored).
    Namespace,
}

/// Why a read failed: not found (with the API server's message) or anything else.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReadError {
    NotFound(String),
    Other(String),
}

impl ReadError {
    fn message(self) -> String {
        match self {
            Self::NotFound(m) | Self::Other(m) => m,
        }
    }
}

/// The reads of the admission (upstream: its client's GETs, and informers for restores and the
/// KubeVirt CR).
trait World {
    /// Whether the `Snapshot` gate is on.
    fn gate_enabled(&self) -> bool;
    /// The restores of `namespace`, as JSON.
    fn restores_in(&self, namespace: &str) -> Vec<Value>;
    /// Reads one object.
    async fn read(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ReadError>;
}

struct ApiWorld {
    client: Client,
    restores: Store<VirtualMachineRestore>,
    kubevirts: Store<DynamicObject>,
    kubevirt_namespace: String,
}

impl World for ApiWorld {
    fn gate_enabled(&self) -> bool {
        self.kubevirts
            .state()
            .iter()
            .filter(|kv| kv.metadata.namespace.as_deref() == Some(&self.kubevirt_namespace))
            .filter(|kv| kv.metadata.deletion_timestamp.is_none())
            .filter(|kv| {
                kv.data
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .is_some_and(|p| !p.is_empty())
            })
            .max_by_key(|kv| kv.metadata.name.clone())
            .is_some_and(|kv| {
                kv.data
                    .pointer("/spec/configuration/developerConfiguration/featureGates")
                    .and_then(Value::as_array)
                    .is_some_and(|gates| gates.iter().any(|g| g == SNAPSHOT_GATE))
            })
    }

    fn restores_in(&self, namespace: &str) -> Vec<Value> {
        self.restores
            .state()
            .iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|r| serde_json::to_value(r.as_ref()).ok())
            .collect()
    }

    async fn read(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ReadError> {
        let resource = match kind {
            Kind::Snapshot => resource(
                "snapshot.kubevirt.io",
                "v1beta1",
                "VirtualMachineSnapshot",
                "virtualmachinesnapshots",
            ),
            Kind::Content => resource(
                "snapshot.kubevirt.io",
                "v1beta1",
                "VirtualMachineSnapshotContent",
                "virtualmachinesnapshotcontents",
            ),
            Kind::Vm => resource(KUBEVIRT_GROUP, "v1", "VirtualMachine", "virtualmachines"),
            Kind::Namespace => resource("", "v1", "Namespace", "namespaces"),
        };
        let api: Api<DynamicObject> = match kind {
            Kind::Namespace => Api::all_with(self.client.clone(), &resource),
            _ => Api::namespaced_with(self.client.clone(), namespace, &resource),
        };
        match api.get(name).await {
            Ok(object) => serde_json::to_value(object).map_err(|e| ReadError::Other(e.to_string())),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(ReadError::NotFound(status.message))
            }
            Err(kube::Error::Api(status)) => Err(ReadError::Other(status.message)),
            Err(err) => Err(ReadError::Other(err.to_string())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The admission
// ---------------------------------------------------------------------------------------------

/// A `metav1.StatusCause`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cause {
    type_: &'static str,
    message: String,
    field: String,
}

impl Cause {
    fn invalid(message: impl Into<String>, field: impl Into<String>) -> Self {
        Self {
            type_: "FieldValueInvalid",
            message: message.into(),
            field: field.into(),
        }
    }
}

/// The webhook's answer.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    /// 422 with causes.
    Invalid(Vec<Cause>),
    /// 400 with a message.
    Error(String),
    /// No answer (upstream's nil dereference).
    Crash,
}

/// JSON with `null` members, empty arrays and empty objects dropped: Go's semantic equality of
/// the typed objects (absent and empty are equal, an empty string is not absent).
fn semantic(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), semantic(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(semantic).collect()),
        other => other.clone(),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

async fn admit(world: &impl World, request: &Value) -> Verdict {
    let group = request.pointer("/resource/group").and_then(Value::as_str);
    let plural = request
        .pointer("/resource/resource")
        .and_then(Value::as_str);
    if group != Some("snapshot.kubevirt.io") || plural != Some("virtualmachinerestores") {
        let text = |p: &str| request.pointer(p).and_then(Value::as_str).unwrap_or("");
        return Verdict::Error(format!(
            "unexpected resource {{Group:{} Version:{} Resource:{}}}",
            text("/resource/group"),
            text("/resource/version"),
            text("/resource/resource")
        ));
    }
    let operation = request["operation"].as_str().unwrap_or_default();
    if operation == "CREATE" && !world.gate_enabled() {
        return Verdict::Error(GATE_NOT_ENABLED.to_owned());
    }
    let restore = &request["object"];
    let causes = match operation {
        "CREATE" => {
            let namespace = request["namespace"].as_str().unwrap_or_default();
            let on_namespace = match world.read(Kind::Namespace, "", namespace).await {
                Ok(ns) => ns
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(ADMISSION_ERROR_ANNOTATION))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                Err(_) => None,
            };
            let on_restore = restore
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(ADMISSION_ERROR_ANNOTATION))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(message) = on_restore.or(on_namespace) {
                let message = if message.is_empty() {
                    ADMISSION_INTERNAL_ERROR.to_owned()
                } else {
                    message
                };
                return Verdict::Error(message);
            }
            match admit_create(world, request, restore).await {
                Ok(causes) => causes,
                Err(verdict) => return verdict,
            }
        }
        "UPDATE" => {
            let old = &request["oldObject"];
            if semantic(&old["spec"]) == semantic(&restore["spec"]) {
                Vec::new()
            } else {
                vec![Cause::invalid("spec in immutable after creation", "spec")]
            }
        }
        other => return Verdict::Error(format!("unexpected operation {other}")),
    };
    if causes.is_empty() {
        Verdict::Allow
    } else {
        Verdict::Invalid(causes)
    }
}

async fn admit_create(
    world: &impl World,
    request: &Value,
    restore: &Value,
) -> Result<Vec<Cause>, Verdict> {
    let spec = &restore["spec"];
    let target = &spec["target"];
    let mut causes = match present(target.get("apiGroup")) {
        None => vec![Cause {
            type_: "FieldValueNotFound",
            message: "missing apiGroup".into(),
            field: "spec.target.apiGroup".into(),
        }],
        Some(group) if group.as_str() == Some(KUBEVIRT_GROUP) => {
            if target["kind"].as_str() == Some("VirtualMachine") {
                let namespace = request["namespace"].as_str().unwrap_or_default();
                let mut causes = target_vm_causes(world, namespace, spec).await?;
                causes.extend(override_causes(spec));
                causes.extend(policy_causes(spec));
                causes
            } else {
                vec![Cause::invalid("invalid kind", "spec.target.kind")]
            }
        }
        Some(_) => vec![Cause::invalid("invalid apiGroup", "spec.target.apiGroup")],
    };
    let namespace = request["namespace"].as_str().unwrap_or_default();
    let mut others = world.restores_in(namespace);
    others.sort_by_key(|r| {
        r.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    for other in others {
        let complete = other.pointer("/status/complete").and_then(Value::as_bool) == Some(true);
        if !complete && semantic(&other["spec"]["target"]) == semantic(target) {
            let name = other
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            causes.push(Cause::invalid(
                format!("VirtualMachineRestore {name:?} in progress"),
                "spec.target",
            ));
        }
    }
    Ok(causes)
}

/// Upstream's naive patch check: braces trimmed, split on `,`, each piece split on `:`.
fn patch_causes(spec: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for patch in spec["patches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        for piece in patch.trim_matches(['{', '}']).split(',') {
            let parts: Vec<&str> = piece.split(':').collect();
            let [key, value] = parts.as_slice() else {
                causes.push(Cause::invalid(
                    format!(
                        "patch format is not valid - one \":\" expected in a single key-value json patch: {piece}"
                    ),
                    "spec.patches",
                ));
                continue;
            };
            if key.trim() != "\"path\"" {
                continue;
            }
            let value = value.trim();
            if value.starts_with("\"/metadata/labels/")
                || value.starts_with("\"/metadata/annotations/")
            {
                continue;
            }
            if !value.starts_with("\"/spec/") {
                causes.push(Cause::invalid(
                    format!("patching is valid only for elements under /spec/ only: {piece}"),
                    "spec.patches",
                ));
            }
        }
    }
    causes
}

/// Whether the VM needs backend storage (persistent TPM or EFI) — for a snapshot's VM upstream
/// ignores changed block tracking.
fn needs_backend_storage(vm: &Value) -> bool {
    let Some(instance) = vm.pointer("/spec/template/spec") else {
        return false;
    };
    let tpm = instance.pointer("/domain/devices/tpm");
    let tpm_persistent = tpm.is_some_and(|t| {
        t.is_object()
            && t.get("enabled").and_then(Value::as_bool) != Some(false)
            && t.get("persistent").and_then(Value::as_bool) == Some(true)
    });
    let efi_persistent = instance
        .pointer("/domain/firmware/bootloader/efi/persistent")
        .and_then(Value::as_bool)
        == Some(true);
    tpm_persistent || efi_persistent
}

/// Upstream's `validateTargetVM`.
async fn target_vm_causes(
    world: &impl World,
    namespace: &str,
    spec: &Value,
) -> Result<Vec<Cause>, Verdict> {
    let mut causes = patch_causes(spec);
    let snapshot_name = spec["virtualMachineSnapshotName"]
        .as_str()
        .unwrap_or_default();
    let snapshot = match world.read(Kind::Snapshot, namespace, snapshot_name).await {
        Ok(snapshot) => snapshot,
        // Upstream returns early: no causes at all, the patch causes included.
        Err(ReadError::NotFound(_)) => return Ok(Vec::new()),
        Err(ReadError::Other(message)) => return Err(Verdict::Error(message)),
    };
    let target_name = spec["target"]["name"].as_str().unwrap_or_default();
    let target = match world.read(Kind::Vm, namespace, target_name).await {
        Ok(vm) => Some(vm),
        Err(ReadError::NotFound(_)) => None,
        Err(ReadError::Other(message)) => return Err(Verdict::Error(message)),
    };
    let status = present(snapshot.get("status"));
    let different = match &target {
        None => true,
        Some(vm) => {
            let Some(status) = status else {
                return Err(Verdict::Crash);
            };
            match present(status.get("sourceUID")).and_then(Value::as_str) {
                Some(source) => vm.pointer("/metadata/uid").and_then(Value::as_str) != Some(source),
                None => false,
            }
        }
    };
    if different {
        let Some(status) = status else {
            return Err(Verdict::Crash);
        };
        let Some(content_name) =
            present(status.get("virtualMachineSnapshotContentName")).and_then(Value::as_str)
        else {
            return Err(Verdict::Error(SNAPSHOT_CONTENT_NAME_NIL.to_owned()));
        };
        let content = world
            .read(Kind::Content, namespace, content_name)
            .await
            .map_err(|e| Verdict::Error(e.message()))?;
        let Some(vm) = present(content.pointer("/spec/source/virtualMachine")) else {
            return Err(Verdict::Error(UNEXPECTED_SNAPSHOT_SOURCE.to_owned()));
        };
        if needs_backend_storage(vm) {
            causes.push(Cause::invalid(RESTORE_BACKEND_STORAGE, "spec"));
        }
    }
    Ok(causes)
}

/// Upstream's `validateVolumeOverrides`.
fn override_causes(spec: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (i, item) in spec["volumeRestoreOverrides"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
        if text("volumeName").is_empty() {
            causes.push(Cause {
                type_: "FieldValueRequired",
                message: "must provide a volume name".into(),
                field: format!("spec.volumeRestoreOverrides[{i}].volumeName"),
            });
        }
        if text("restoreName").is_empty()
            && present(item.get("annotations")).is_none()
            && present(item.get("labels")).is_none()
        {
            causes.push(Cause {
                type_: "FieldValueRequired",
                message: "must provide at least one overriden field".into(),
                field: format!("spec.volumeRestoreOverrides[{i}]"),
            });
        }
    }
    causes
}

/// Upstream's `validateVolumeRestorePolicy` and `validateVolumeOwnershipPolicy`.
fn policy_causes(spec: &Value) -> Vec<Cause> {
    let checks = [
        (
            "volumeRestorePolicy",
            "volume restore policy",
            ["InPlace", "RandomizeNames"],
        ),
        (
            "volumeOwnershipPolicy",
            "volume ownership policy",
            ["Vm", "None"],
        ),
    ];
    let mut causes = Vec::new();
    for (field, what, allowed) in checks {
        let Some(value) = present(spec.get(field)) else {
            continue;
        };
        let value = value.as_str().unwrap_or_default();
        if !allowed.contains(&value) {
            causes.push(Cause::invalid(
                format!("{what} \"{value}\" doesn't exist"),
                format!("spec.{field}"),
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        gate: bool,
        restores: Vec<Value>,
        objects: HashMap<(&'static str, String), Value>,
        failing: Option<String>,
    }

    impl World for Fake {
        fn gate_enabled(&self) -> bool {
            self.gate
        }
        fn restores_in(&self, _namespace: &str) -> Vec<Value> {
            self.restores.clone()
        }
        async fn read(&self, kind: Kind, _ns: &str, name: &str) -> Result<Value, ReadError> {
            if let Some(message) = &self.failing {
                return Err(ReadError::Other(message.clone()));
            }
            let key = match kind {
                Kind::Snapshot => "snapshot",
                Kind::Vm => "vm",
                Kind::Content => "content",
                Kind::Namespace => "namespace",
            };
            self.objects
                .get(&(key, name.to_owned()))
                .cloned()
                .ok_or_else(|| ReadError::NotFound(format!("{key} {name:?} not found")))
        }
    }

    fn world() -> Fake {
        let mut fake = Fake {
            gate: true,
            ..Fake::default()
        };
        fake.objects.insert(
            ("snapshot", "snap".into()),
            json!({"status": {"sourceUID": "src-uid", "virtualMachineSnapshotContentName": "content"}}),
        );
        fake.objects.insert(
            ("content", "content".into()),
            json!({"spec": {"source": {"virtualMachine": {"spec": {"template": {"spec": {"domain": {}}}}}}}}),
        );
        fake
    }

    fn create(spec: Value) -> Value {
        json!({
            "uid": "u",
            "namespace": "ns",
            "operation": "CREATE",
            "resource": {"group": "snapshot.kubevirt.io", "version": "v1beta1", "resource": "virtualmachinerestores"},
            "object": {"metadata": {"name": "r"}, "spec": spec},
        })
    }

    fn spec(patches: &[&str]) -> Value {
        json!({
            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "new"},
            "virtualMachineSnapshotName": "snap",
            "patches": patches,
        })
    }

    fn messages(verdict: Verdict) -> Vec<String> {
        match verdict {
            Verdict::Invalid(causes) => causes.into_iter().map(|c| c.message).collect(),
            other => panic!("expected causes, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_gate_and_the_knob_are_400s() {
        let mut fake = world();
        fake.gate = false;
        assert_eq!(
            admit(&fake, &create(spec(&[]))).await,
            Verdict::Error(GATE_NOT_ENABLED.into())
        );
        let fake = world();
        let mut request = create(spec(&[]));
        request["object"]["metadata"]["annotations"] = json!({ADMISSION_ERROR_ANNOTATION: ""});
        assert_eq!(
            admit(&fake, &request).await,
            Verdict::Error(ADMISSION_INTERNAL_ERROR.into())
        );
        let mut fake = world();
        fake.failing = Some("connection refused".into());
        assert_eq!(
            admit(&fake, &create(spec(&[]))).await,
            Verdict::Error("connection refused".into())
        );
    }

    #[tokio::test]
    async fn patches_targets_and_policies_are_causes() {
        let fake = world();
        assert_eq!(admit(&fake, &create(spec(&[]))).await, Verdict::Allow);
        let bad = messages(
            admit(
                &fake,
                &create(spec(&[
                    r#"{"op": "replace", "path": "/status/x", "value": "a:b"}"#,
                ])),
            )
            .await,
        );
        assert_eq!(
            bad,
            [
                r#"patching is valid only for elements under /spec/ only:  "path": "/status/x""#,
                r#"patch format is not valid - one ":" expected in a single key-value json patch:  "value": "a:b""#,
            ]
        );
        let mut s = spec(&[]);
        s["target"] = json!({"kind": "VirtualMachine", "name": "x"});
        assert_eq!(
            messages(admit(&fake, &create(s)).await),
            ["missing apiGroup"]
        );
        let mut s = spec(&[]);
        s["volumeRestorePolicy"] = json!("PrefixTargetName");
        s["volumeOwnershipPolicy"] = json!("Nobody");
        s["volumeRestoreOverrides"] =
            json!([{"volumeName": ""}, {"volumeName": "a", "labels": {}}]);
        assert_eq!(
            messages(admit(&fake, &create(s)).await),
            [
                "must provide a volume name",
                "must provide at least one overriden field",
                "volume restore policy \"PrefixTargetName\" doesn't exist",
                "volume ownership policy \"Nobody\" doesn't exist",
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_snapshot_admits_and_drops_the_patch_causes() {
        let mut s = spec(&[r#"{"op": "add", "path": "/metadata/name", "value": "x"}"#]);
        s["virtualMachineSnapshotName"] = json!("missing");
        assert_eq!(admit(&world(), &create(s)).await, Verdict::Allow);
    }

    #[tokio::test]
    async fn snapshots_without_content_or_status_and_backend_storage() {
        let mut fake = world();
        fake.objects.insert(
            ("snapshot", "snap".into()),
            json!({"status": {"readyToUse": false}}),
        );
        assert_eq!(
            admit(&fake, &create(spec(&[]))).await,
            Verdict::Error(SNAPSHOT_CONTENT_NAME_NIL.into())
        );
        fake.objects.insert(("snapshot", "snap".into()), json!({}));
        assert_eq!(admit(&fake, &create(spec(&[]))).await, Verdict::Crash);

        let mut fake = world();
        fake.objects.remove(&("content", "content".into()));
        assert_eq!(
            admit(&fake, &create(spec(&[]))).await,
            Verdict::Error("content \"content\" not found".into())
        );

        let mut fake = world();
        fake.objects.insert(
            ("content", "content".into()),
            json!({"spec": {"source": {"virtualMachine": {"spec": {"template": {"spec": {
                "domain": {"devices": {"tpm": {"persistent": true}}},
            }}}}}}}),
        );
        assert_eq!(
            messages(admit(&fake, &create(spec(&[]))).await),
            [RESTORE_BACKEND_STORAGE]
        );
        // Restoring into the snapshot's own source VM does not look at backend storage.
        fake.objects.insert(
            ("vm", "new".into()),
            json!({"metadata": {"uid": "src-uid"}}),
        );
        assert_eq!(admit(&fake, &create(spec(&[]))).await, Verdict::Allow);
    }

    #[tokio::test]
    async fn incomplete_restores_of_the_same_target_are_in_progress() {
        let mut fake = world();
        let target = json!({"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "new"});
        fake.restores = vec![
            json!({"metadata": {"name": "done"}, "spec": {"target": target}, "status": {"complete": true}}),
            json!({"metadata": {"name": "failed"}, "spec": {"target": target}, "status": {"complete": false}}),
            json!({"metadata": {"name": "fresh"}, "spec": {"target": target}}),
            json!({"metadata": {"name": "other"}, "spec": {"target": {"kind": "VirtualMachine", "name": "new"}}}),
        ];
        assert_eq!(
            messages(admit(&fake, &create(spec(&[]))).await),
            [
                "VirtualMachineRestore \"failed\" in progress",
                "VirtualMachineRestore \"fresh\" in progress",
            ]
        );
    }

    #[tokio::test]
    async fn updates_keep_the_spec() {
        let fake = world();
        let mut request = create(spec(&[]));
        request["operation"] = json!("UPDATE");
        request["oldObject"] = request["object"].clone();
        request["object"]["metadata"]["finalizers"] = json!(["f"]);
        request["oldObject"]["spec"]["patches"] = json!([]);
        assert_eq!(admit(&fake, &request).await, Verdict::Allow, "[] is absent");
        request["object"]["spec"]["virtualMachineSnapshotName"] = json!("other");
        assert_eq!(
            messages(admit(&fake, &request).await),
            ["spec in immutable after creation"]
        );
    }

    #[test]
    fn more_than_ten_causes_are_summarised() {
        let causes: Vec<Cause> = (0..12)
            .map(|i| Cause::invalid(format!("c{i}"), "f"))
            .collect();
        let status = invalid_status(&causes);
        assert_eq!(
            status["message"],
            "c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, and 2 more validation errors"
        );
        assert_eq!(
            status["details"]["causes"].as_array().map(Vec::len),
            Some(10)
        );
        assert_eq!(status["code"], 422);
    }

    #[test]
    fn base64_is_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn the_serving_certificate_is_made() {
        let (pem, _config) = tls_config().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    }
}
