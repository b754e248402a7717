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
//!
//! This file starts, restarts and stops the servers; `access` holds the users, tokens,
//! kubeconfigs and clients, `install` what every control plane gets installed and the install
//! helpers for tests, `kubectl` the kubectl runner.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use tokio::sync::OnceCell;

use crate::binaries::{Binaries, ensure_binaries};
use crate::certs::TestCa;
use crate::http::http_get;
use crate::kubevirt::{self as kubevirt_servers, KubeVirtOptions, KubeVirtServers};
use crate::kubevirt_binaries::{KubeVirtBinaries, ensure_kubevirt_binaries};
use crate::process::{FOLDER_PREFIX, FolderReaper, Supervised, free_ports, sweep_stale_folders};
use crate::progress::{human, say};
use crate::wait::wait_for;

mod access;
mod install;
mod kubectl;

pub use access::IDENTITIES;
use access::{client_for, random_hex, service_account_keys, write_kubeconfig};
pub use kubectl::KubectlOutput;

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
    /// KubeVirt v1.7.0's virt-api and virt-controller, with upstream's clone controller off, and
    /// upstream's clone CRD (as on a KubeVirt cluster, where virt-operator owns it).
    pub fn kubevirt() -> Self {
        Self {
            kubevirt: Some(KubeVirtOptions::default()),
            clone_crd: CloneCrd::Upstream,
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
            // Written as requests finish. Never rotated during a run: the log is rotated at
            // --audit-log-maxsize megabytes, 100 by default, which one bench scenario of 5,000
            // clones exceeds (about 250,000 requests); a terabyte is never reached.
            apiserver_args.push("--audit-log-mode=blocking".into());
            apiserver_args.push("--audit-log-maxsize=1000000".into());
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

        env.install_defaults().await?;
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

/// etcd's `GET /health` (plain HTTP: etcd serves clients without TLS here) says it is healthy.
async fn etcd_health(port: u16) -> Result<()> {
    let (code, body) = http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/health").await?;
    anyhow::ensure!(
        code == 200 && body.contains("\"health\":\"true\""),
        "etcd /health answered {code} {body:?}"
    );
    Ok(())
}
