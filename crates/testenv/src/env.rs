//! [`TestEnv`]: etcd, kube-apiserver and kube-controller-manager on loopback, with a
//! kubeconfig, the project's CRDs installed, and helpers for tests.
//!
//! Start-up order: etcd (healthy) → kube-apiserver (`/readyz` ok) → kubeconfig written →
//! kube-controller-manager → CRDs applied and `Established` → the `default` ServiceAccount exists
//! (proof that the controller manager runs its controllers) → with [`Options::kubevirt`],
//! KubeVirt's virt-api and virt-controller (see the `kubevirt` module).
//!
//! Every component has its own user (a bearer token in the API server's token file, group
//! `system:masters`) and kubeconfig, so the API server's records tell their requests apart.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use crate::binaries::{Binaries, ensure_binaries};
use crate::certs::TestCa;
use crate::kubevirt::{self as kubevirt_servers, KubeVirtOptions, KubeVirtServers};
use crate::kubevirt_binaries::{KubeVirtBinaries, ensure_kubevirt_binaries};
use crate::manifests;
use crate::process::{FOLDER_PREFIX, FolderReaper, Supervised, free_ports, sweep_stale_folders};
use crate::progress::{human, say};
use crate::wait::wait_for;

/// The workspace root, for the CRD folders installed at start.
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// Folders (relative to the workspace) whose CRDs every control plane gets.
const CRD_FOLDERS: [&str; 2] = ["manifests/crds", "crates/kubevirt-sim/crds"];
/// Upstream KubeVirt's own clone CRD (v1.7.0, as virt-operator installs it), for
/// [`CloneCrd::Upstream`].
const UPSTREAM_CLONE_CRD: &str =
    "crates/testenv/upstream/virtualmachineclones.clone.kubevirt.io.yaml";
/// The users besides `admin`, one per component that talks to the API server (each a
/// `system:masters` member with a kubeconfig of its own, [`TestEnv::identity_kubeconfig`]), so
/// that the audit log attributes every request exactly.
pub const IDENTITIES: [&str; 5] = [
    "virt-controller",
    "virt-api",
    "kubevirt-sim",
    "clone-controller",
    "bench",
];

/// The audit policy of [`Options::audit_log`]: every request at `Metadata` level (who, verb,
/// resource, response code; no bodies).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";

const ETCD_READY: Duration = Duration::from_secs(60);
/// Generous: on a 2-core machine the API server may start while other crates compile.
const APISERVER_READY: Duration = Duration::from_secs(120);
const CONTROLLERS_READY: Duration = Duration::from_secs(90);
/// What kube-controller-manager runs: owner-reference GC, namespace deletion, ServiceAccounts and
/// their tokens, the `kube-root-ca.crt` ConfigMap, and the aggregated `admin`/`edit`/`view` roles
/// (RBAC tests bind them).
const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller,\
serviceaccount-controller,serviceaccount-token-controller,\
root-ca-certificate-publisher-controller,clusterrole-aggregation-controller";

const AUDIT_LOG: &str = "audit.log";
/// Where kube-apiserver writes its self-signed serving certificate (which is its own CA),
/// relative to the control plane's folder.
const APISERVER_CERT_DIR: &str = "apiserver-certs";
const APISERVER_CA: &str = "apiserver.crt";
/// How long a token of [`TestEnv::write_service_account_kubeconfig`] lasts.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 3600;

static SHARED: OnceCell<std::result::Result<TestEnv, String>> = OnceCell::const_new();
static SHARED_KUBEVIRT: OnceCell<std::result::Result<TestEnv, String>> = OnceCell::const_new();

/// What a control plane runs besides etcd, kube-apiserver and kube-controller-manager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// KubeVirt's own virt-api and virt-controller ([`KubeVirtOptions`]); `None`: no KubeVirt
    /// process runs (tests then use the stand-in, kubevirt-sim).
    pub kubevirt: Option<KubeVirtOptions>,
    /// Which clone CRD is installed.
    pub clone_crd: CloneCrd,
    /// Have kube-apiserver write an audit log ([`TestEnv::audit_log_path`]): one JSON line per
    /// request, `Metadata` level. For benchmarks that attribute requests to their senders.
    pub audit_log: bool,
}

impl Options {
    /// KubeVirt v1.7.0's virt-api and virt-controller, with upstream's clone controller off.
    pub fn kubevirt() -> Self {
        Self {
            kubevirt: Some(KubeVirtOptions::default()),
            ..Self::default()
        }
    }
}

/// The `virtualmachineclones.clone.kubevirt.io` CRD a control plane gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CloneCrd {
    /// vmclone's generated CRD (`manifests/crds/`).
    #[default]
    Vmclone,
    /// Upstream KubeVirt's own, as virt-operator installs it (no validation rules; unknown fields
    /// pruned).
    Upstream,
}
static NAMESPACE_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A running control plane: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1.
///
/// Its servers stop when it is dropped or, for the [shared](TestEnv::shared) one, when the test
/// process exits (also on panic or `kill -9`); its temporary folder is removed then too.
#[derive(Debug)]
pub struct TestEnv {
    // Dropped first: KubeVirt talks to the API server until it stops.
    kubevirt: Option<KubeVirtServers>,
    etcd: Supervised,
    apiserver: Supervised,
    controller_manager: Supervised,
    etcd_client_port: u16,
    apiserver_url: String,
    admin_token: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
    ca: TestCa,
    options: Options,
    // Dropped after the servers (fields drop in order): the folder first, then its reaper.
    _folder: tempfile::TempDir,
    _reaper: FolderReaper,
}

/// What a `kubectl` run printed and how it exited.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl KubectlOutput {
    /// Whether kubectl exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The output if kubectl succeeded, else an error with its stderr.
    pub fn ok(self) -> Result<Self> {
        if !self.success() {
            bail!(
                "kubectl failed ({}): {}{}",
                self.status,
                self.stderr.trim(),
                if self.stdout.trim().is_empty() {
                    String::new()
                } else {
                    format!("\nstdout: {}", self.stdout.trim())
                }
            );
        }
        Ok(self)
    }
}

impl TestEnv {
    /// One control plane per test process, started on first use, shared by all tests in it.
    ///
    /// Builds the binaries first if the machine has none (minutes, once). If the start fails,
    /// every caller in the process gets the same error without trying again.
    pub async fn shared() -> Result<&'static TestEnv> {
        Self::shared_in(&SHARED, Options::default()).await
    }

    /// Like [`TestEnv::shared`], with KubeVirt's own virt-api and virt-controller running
    /// ([`Options::kubevirt`]): a second control plane of the process, apart from the first.
    pub async fn shared_kubevirt() -> Result<&'static TestEnv> {
        Self::shared_in(&SHARED_KUBEVIRT, Options::kubevirt()).await
    }

    async fn shared_in(
        cell: &'static OnceCell<std::result::Result<TestEnv, String>>,
        options: Options,
    ) -> Result<&'static TestEnv> {
        let started = cell
            .get_or_init(|| async {
                TestEnv::start_with_options(options)
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await;
        match started {
            Ok(env) => Ok(env),
            Err(message) => bail!("the shared control plane did not start: {message}"),
        }
    }

    /// A private control plane (for tests that restart kube-apiserver or etcd); stopped on drop.
    pub async fn start() -> Result<TestEnv> {
        Self::start_with_options(Options::default()).await
    }

    /// A private control plane with `options`; stopped on drop.
    pub async fn start_with_options(options: Options) -> Result<TestEnv> {
        let binaries = tokio::task::spawn_blocking(ensure_binaries)
            .await
            .context("the binaries build panicked")??;
        let kubevirt = match options.kubevirt {
            Some(_) => Some(
                tokio::task::spawn_blocking(ensure_kubevirt_binaries)
                    .await
                    .context("the KubeVirt build panicked")??,
            ),
            None => None,
        };
        let mut attempt = 1;
        loop {
            match Self::start_with(&binaries, kubevirt.as_ref(), &options).await {
                Ok(env) => return Ok(env),
                // Free ports are picked before the servers bind them; another process may win.
                Err(err)
                    if attempt < 3 && format!("{err:#}").contains("address already in use") =>
                {
                    say(&format!(
                        "a port was taken meanwhile (attempt {attempt}); starting over"
                    ));
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn start_with(
        binaries: &Binaries,
        kubevirt: Option<&KubeVirtBinaries>,
        options: &Options,
    ) -> Result<TestEnv> {
        let started = Instant::now();
        let temp = std::env::temp_dir();
        sweep_stale_folders(&temp);
        let folder = tempfile::Builder::new()
            .prefix(&format!("{FOLDER_PREFIX}{}-", std::process::id()))
            .tempdir_in(&temp)
            .context("creating the control plane's temporary folder")?;
        let reaper = FolderReaper::watch(folder.path())?;
        let dir = folder.path().to_owned();

        let admin_token = random_hex();
        let identity_tokens: Vec<(&str, String)> = IDENTITIES
            .iter()
            .map(|name| (*name, random_hex()))
            .collect();
        let tokens = dir.join("tokens.csv");
        let mut token_file = format!("{admin_token},admin,admin,\"system:masters\"\n");
        for (name, token) in &identity_tokens {
            let _ = writeln!(token_file, "{token},{name},{name},\"system:masters\"");
        }
        std::fs::write(&tokens, token_file).context("writing the token file")?;
        let test_ca = TestCa::new("testenv-ca")?;
        let ca_file = dir.join("testenv-ca.crt");
        test_ca.write(&ca_file)?;
        let (sa_key, sa_pub) = service_account_keys(&dir)?;

        let [etcd_port, peer_port, apiserver_port, kcm_port] = free_ports(4)?[..] else {
            bail!("free_ports returned the wrong number of ports");
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<OsString> = vec![
            "--name=testenv".into(),
            arg("--data-dir=", dir.join("etcd")),
            format!("--listen-client-urls={etcd_url}").into(),
            format!("--advertise-client-urls={etcd_url}").into(),
            format!("--listen-peer-urls={peer_url}").into(),
            format!("--initial-advertise-peer-urls={peer_url}").into(),
            format!("--initial-cluster=testenv={peer_url}").into(),
            // Tests need no durability across a machine crash; fsync dominates write latency.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        let mut etcd = Supervised::new("etcd", &dir, &binaries.etcd, etcd_args);

        let cert_dir = dir.join(APISERVER_CERT_DIR);
        let apiserver_args: Vec<OsString> = vec![
            format!("--etcd-servers={etcd_url}").into(),
            format!("--secure-port={apiserver_port}").into(),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            arg("--cert-dir=", &cert_dir),
            arg("--token-auth-file=", &tokens),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            arg("--service-account-key-file=", &sa_pub),
            arg("--service-account-signing-key-file=", &sa_key),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            // The default reconciler loops trying to publish a loopback endpoint.
            "--endpoint-reconciler-type=none".into(),
            // Published in kube-system/extension-apiserver-authentication, which virt-api reads
            // at start (it trusts no proxied requests here; nothing proxies to it).
            arg("--requestheader-client-ca-file=", &ca_file),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        ];
        let mut apiserver_args = apiserver_args;
        if options.audit_log {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY).context("writing the audit policy")?;
            apiserver_args.push(arg("--audit-policy-file=", &policy));
            apiserver_args.push(arg("--audit-log-path=", dir.join(AUDIT_LOG)));
            // Written as requests finish, never rotated away during a run.
            apiserver_args.push("--audit-log-mode=blocking".into());
            apiserver_args.push("--audit-log-maxbackup=0".into());
        }
        let mut apiserver = Supervised::new(
            "kube-apiserver",
            &dir,
            &binaries.kube_apiserver,
            apiserver_args,
        );

        let kubeconfig = dir.join("kubeconfig");
        // kube-apiserver writes its self-signed certificate (with its CA) here on first start.
        let ca = cert_dir.join(APISERVER_CA);
        let controller_manager_args: Vec<OsString> = vec![
            arg("--kubeconfig=", &kubeconfig),
            format!("--controllers={CONTROLLERS}").into(),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={kcm_port}").into(),
            arg("--cert-dir=", dir.join("controller-manager-certs")),
            arg("--service-account-private-key-file=", &sa_key),
            arg("--root-ca-file=", &ca),
            "--use-service-account-credentials=false".into(),
            // The default 20 requests/s makes garbage collection lag behind busy tests.
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
        ];
        let controller_manager = Supervised::new(
            "kube-controller-manager",
            &dir,
            &binaries.kube_controller_manager,
            controller_manager_args,
        );

        let apiserver_url = format!("https://127.0.0.1:{apiserver_port}");
        write_kubeconfig(&kubeconfig, &apiserver_url, &ca, &admin_token)?;
        for (name, token) in &identity_tokens {
            write_kubeconfig(
                &dir.join(format!("kubeconfig-{name}")),
                &apiserver_url,
                &ca,
                token,
            )?;
        }

        etcd.start()?;
        wait_for_etcd(&mut etcd, etcd_port).await?;
        let etcd_ready = started.elapsed();
        apiserver.start()?;

        let mut env = TestEnv {
            kubevirt: None,
            etcd,
            apiserver,
            controller_manager,
            etcd_client_port: etcd_port,
            apiserver_url,
            admin_token,
            kubeconfig,
            dir,
            ca: test_ca,
            options: options.clone(),
            _folder: folder,
            _reaper: reaper,
        };
        env.wait_for_apiserver().await?;
        let apiserver_ready = started.elapsed();
        env.controller_manager.start()?;

        let mut crd_paths: Vec<PathBuf> = CRD_FOLDERS
            .iter()
            .map(|folder| Path::new(WORKSPACE).join(folder))
            .collect();
        if options.clone_crd == CloneCrd::Upstream {
            crd_paths[0] = Path::new(WORKSPACE).join(UPSTREAM_CLONE_CRD);
        }
        env.install_crds_from(&crd_paths).await?;
        let crds_ready = started.elapsed();
        env.wait_for_controllers().await?;

        let mut kubevirt_note = String::new();
        if let (Some(kubevirt_options), Some(kubevirt_binaries)) = (&options.kubevirt, kubevirt) {
            let before = started.elapsed();
            let servers = kubevirt_servers::start(
                kubevirt_servers::Inputs {
                    dir: &env.dir,
                    client: env.client().await?,
                    ca: &env.ca,
                    virt_api_kubeconfig: env.identity_kubeconfig("virt-api"),
                    virt_controller_kubeconfig: env.identity_kubeconfig("virt-controller"),
                    binaries: kubevirt_binaries,
                },
                kubevirt_options,
            )
            .await?;
            env.kubevirt = Some(servers);
            kubevirt_note = format!(
                ", KubeVirt {} virt-api and virt-controller {}",
                crate::KUBEVIRT_VERSION,
                human(started.elapsed() - before)
            );
        }

        say(&format!(
            "control plane ready in {} (etcd {}, kube-apiserver {}, CRDs {}{kubevirt_note}) at {} (kubeconfig {})",
            human(started.elapsed()),
            human(etcd_ready),
            human(apiserver_ready),
            human(crds_ready),
            env.apiserver_url,
            env.kubeconfig.display()
        ));
        Ok(env)
    }

    /// A fresh [`kube::Client`] for the admin user.
    ///
    /// Create one per test (or per call): each `#[tokio::test]` has its own runtime, and a client's
    /// connection pool is tied to the runtime it was first used in.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig).await
    }

    /// The kubeconfig file of the admin user (`kubectl --kubeconfig`, `KUBECONFIG`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig of one of the [`IDENTITIES`] (a `system:masters` user of its own).
    pub fn identity_kubeconfig(&self, identity: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{identity}"))
    }

    /// A [`kube::Client`] acting as one of the [`IDENTITIES`].
    pub async fn identity_client(&self, identity: &str) -> Result<Client> {
        client_for(&self.identity_kubeconfig(identity)).await
    }

    /// Writes a kubeconfig for the ServiceAccount `namespace/name`, as a pod running under it sees
    /// the cluster: this API server, its CA (embedded, so the file is all a container needs), a
    /// token from the TokenRequest API (valid for an hour) and `namespace` as the default
    /// namespace.
    pub async fn write_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> Result<()> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            // No audiences: the API server's own.
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token of ServiceAccount {namespace}/{name}"))?
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .with_context(|| format!("the TokenRequest of {namespace}/{name} returned no token"))?;
        let ca_file = self.dir.join(APISERVER_CERT_DIR).join(APISERVER_CA);
        let ca = std::fs::read(&ca_file)
            .with_context(|| format!("reading the API server's CA {}", ca_file.display()))?;
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "testenv",
                "cluster": {"server": self.apiserver_url, "certificate-authority-data": ByteString(ca)},
            }],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{
                "name": "testenv",
                "context": {"cluster": "testenv", "user": user, "namespace": namespace},
            }],
            "current-context": "testenv",
        });
        let yaml = serde_saphyr::to_string(&config).context("writing the kubeconfig as YAML")?;
        std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
    }

    /// The audit log of kube-apiserver, with [`Options::audit_log`].
    pub fn audit_log_path(&self) -> Option<PathBuf> {
        self.options.audit_log.then(|| self.dir.join(AUDIT_LOG))
    }

    /// What this control plane runs besides the three Kubernetes servers.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Whether KubeVirt's own virt-api and virt-controller run here.
    pub fn runs_kubevirt(&self) -> bool {
        self.kubevirt.is_some()
    }

    /// Restarts virt-controller with `options` (e.g. upstream's clone controller on or off) and
    /// waits until it reconciles VMs again. Meant for a private control plane.
    pub async fn restart_virt_controller(&mut self, options: KubeVirtOptions) -> Result<()> {
        let client = self.client().await?;
        let servers = self
            .kubevirt
            .as_mut()
            .context("this control plane does not run KubeVirt")?;
        servers.start_controller(&client, &options).await?;
        self.options.kubevirt = Some(servers.options().clone());
        Ok(())
    }

    /// `https://127.0.0.1:<port>` of kube-apiserver.
    pub fn apiserver_url(&self) -> &str {
        &self.apiserver_url
    }

    /// The bearer token of the admin user (group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A fresh namespace named `<prefix>-<n>`, unique within the process and across runs
    /// against the same control plane.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        loop {
            let n = NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{prefix}-{n}");
            if name.len() > 63 {
                bail!("namespace name {name} is longer than 63 characters: use a shorter prefix");
            }
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([("testenv/prefix".to_owned(), prefix.to_owned())].into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &namespace).await {
                Ok(_) => return Ok(name),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(err) => return Err(err).with_context(|| format!("creating namespace {name}")),
            }
        }
    }

    /// `kubectl` with `--kubeconfig` (and a discovery cache of this control plane's own) set.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg(arg("--kubeconfig=", &self.kubeconfig))
            // kubectl's default cache is keyed by host:port, which a later run may reuse with
            // other CRDs installed.
            .arg(arg("--cache-dir=", self.dir.join("kubectl-cache")))
            .env("KUBECONFIG", &self.kubeconfig);
        command
    }

    /// Runs `kubectl <args>`, feeding `stdin` if given, and returns what it printed.
    ///
    /// Does not fail on a non-zero exit status: check [`KubectlOutput::success`] or call
    /// [`KubectlOutput::ok`].
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Result<KubectlOutput> {
        let mut command = self.kubectl();
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("running kubectl {args:?} (is kubectl installed?)"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .context("writing kubectl's stdin")?;
        }
        let output = child
            .wait_with_output()
            .with_context(|| format!("waiting for kubectl {args:?}"))?;
        Ok(KubectlOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Installs CRD manifests (files of one or many YAML documents, or folders of them) with
    /// server-side apply and waits until every CRD is `Established`; other documents in them
    /// are applied afterwards.
    pub async fn install_crds_from(&self, paths: &[PathBuf]) -> Result<()> {
        let documents = manifests::read_documents(paths)?;
        if documents.is_empty() {
            return Ok(());
        }
        manifests::apply(&self.client().await?, &documents).await
    }

    /// Applies a YAML text of one or many documents with server-side apply (CRDs first, waiting
    /// until they are `Established`). Namespaced objects without a namespace go to `default`.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<()> {
        let documents = manifests::parse_documents(yaml, "YAML text")?;
        manifests::apply(&self.client().await?, &documents).await
    }

    /// Kills kube-apiserver (`SIGKILL`, as in a crash) and starts it again; returns once it is
    /// ready. Meant for a private control plane ([`TestEnv::start`]).
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.stop();
        self.apiserver.start()?;
        self.wait_for_apiserver().await
    }

    /// Kills etcd (`SIGKILL`, as in a crash) and starts it again on the same data; returns once
    /// kube-apiserver is ready again. Meant for a private control plane ([`TestEnv::start`]).
    pub async fn restart_etcd(&mut self) -> Result<()> {
        self.etcd.stop();
        self.etcd.start()?;
        wait_for_etcd(&mut self.etcd, self.etcd_client_port).await?;
        self.wait_for_apiserver().await
    }

    /// The last `lines` lines of each server's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let kubevirt = self.kubevirt.iter().flat_map(KubeVirtServers::servers);
        for server in [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .chain(kubevirt)
        {
            let _ = writeln!(out, "--- {} ---\n{}", server.name(), server.log_tail(lines));
        }
        out
    }

    async fn wait_for_apiserver(&mut self) -> Result<()> {
        let kubeconfig = self.kubeconfig.clone();
        let apiserver = &mut self.apiserver;
        let etcd = &mut self.etcd;
        let result = wait_for("kube-apiserver /readyz to be ok", APISERVER_READY, || {
            let exited = apiserver.exited_error().or_else(|| etcd.exited_error());
            let kubeconfig = kubeconfig.clone();
            async move {
                if let Some(err) = exited {
                    return Ok(Err(err));
                }
                match readyz(&kubeconfig).await {
                    Ok(()) => Ok(Ok(())),
                    Err(err) => Err(err),
                }
            }
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(exited)) => Err(exited),
            Err(timeout) => Err(with_log(timeout, &self.apiserver)),
        }
    }

    async fn wait_for_controllers(&mut self) -> Result<()> {
        let client = self.client().await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        let controller_manager = &mut self.controller_manager;
        let result = wait_for(
            "kube-controller-manager to create ServiceAccount default/default",
            CONTROLLERS_READY,
            || {
                let exited = controller_manager.exited_error();
                let accounts = accounts.clone();
                async move {
                    if let Some(err) = exited {
                        return Ok(Err(err));
                    }
                    match accounts.get_opt("default").await {
                        Ok(Some(_)) => Ok(Ok(())),
                        Ok(None) => Err(anyhow::anyhow!("no ServiceAccount default/default yet")),
                        Err(err) => Err(err.into()),
                    }
                }
            },
        )
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(exited)) => Err(exited),
            Err(timeout) => Err(with_log(timeout, &self.controller_manager)),
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Ask all at once, then wait for each; the folder is removed after (field order).
        if let Some(kubevirt) = self.kubevirt.as_mut() {
            kubevirt.request_stop();
        }
        self.kubevirt = None;
        self.controller_manager.request_stop();
        self.apiserver.request_stop();
        self.etcd.request_stop();
        self.controller_manager.stop();
        self.apiserver.stop();
        self.etcd.stop();
    }
}

/// A timeout error followed by the end of the server's log.
fn with_log(timeout: anyhow::Error, server: &Supervised) -> anyhow::Error {
    anyhow::anyhow!(
        "{timeout:#}\nend of the {} log:\n{}",
        server.name(),
        server.log_tail(30)
    )
}

/// `--flag=<path>` as one argument, keeping non-UTF-8 paths intact.
fn arg(flag: &str, path: impl AsRef<Path>) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path.as_ref());
    arg
}

async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let parsed = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    Client::try_from(config).context("creating a kube client")
}

async fn readyz(kubeconfig: &Path) -> Result<()> {
    let client = client_for(kubeconfig).await?;
    // kube builds the GET request (`/readyz?`) without a direct dependency on `http`.
    let request = kube::core::Request::new("/readyz").list(&Default::default())?;
    let body = client.request_text(request).await?;
    anyhow::ensure!(body.trim() == "ok", "/readyz answered {body:?}");
    Ok(())
}

async fn wait_for_etcd(etcd: &mut Supervised, port: u16) -> Result<()> {
    let result = wait_for("etcd /health to be true", ETCD_READY, || {
        let exited = etcd.exited_error();
        async move {
            if let Some(err) = exited {
                return Ok(Err(err));
            }
            match etcd_health(port).await {
                Ok(()) => Ok(Ok(())),
                Err(err) => Err(err),
            }
        }
    })
    .await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(exited)) => Err(exited),
        Err(timeout) => Err(with_log(timeout, etcd)),
    }
}

/// `GET /health` over plain HTTP/1.0 (etcd serves clients without TLS here).
async fn etcd_health(port: u16) -> Result<()> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5s")??;
    anyhow::ensure!(
        response.contains("\"health\":\"true\""),
        "etcd answered {response:?}"
    );
    Ok(())
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "testenv",
            "cluster": { "server": server, "certificate-authority": ca },
        }],
        "users": [{ "name": "admin", "user": { "token": token } }],
        "contexts": [{
            "name": "testenv",
            "context": { "cluster": "testenv", "user": "admin", "namespace": "default" },
        }],
        "current-context": "testenv",
    });
    let yaml = serde_saphyr::to_string(&config).context("writing the kubeconfig as YAML")?;
    std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
}

/// An RSA key pair for signing and verifying ServiceAccount tokens, made with `openssl`.
fn service_account_keys(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join("service-account.key");
    let public = dir.join("service-account.pub");
    let run = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let output = Command::new("openssl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running openssl (it makes the ServiceAccount signing key; install it)")?;
        if !output.status.success() {
            bail!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    };
    run(&[
        "genrsa".as_ref(),
        "-out".as_ref(),
        key.as_os_str(),
        "2048".as_ref(),
    ])?;
    run(&[
        "rsa".as_ref(),
        "-in".as_ref(),
        key.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ])?;
    Ok((key, public))
}

/// 128 random bits as hex, from the standard library's per-process random hash keys.
fn random_hex() -> String {
    let mut out = String::new();
    for _ in 0..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let _ = write!(out, "{:016x}", hasher.finish());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_digits_and_differ() {
        let (a, b) = (random_hex(), random_hex());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn the_kubeconfig_loads_into_a_kube_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let ca = dir.path().join("ca.crt");
        write_kubeconfig(&path, "https://127.0.0.1:6443", &ca, "secret").unwrap();
        let parsed = Kubeconfig::read_from(&path).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("testenv"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some(ca.to_str().unwrap())
        );
    }
}
