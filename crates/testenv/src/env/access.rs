//! Who talks to the control plane: the admin and one user per component ([`IDENTITIES`]), their
//! tokens and kubeconfigs, clients, and ServiceAccount kubeconfigs from the TokenRequest API.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use rcgen::KeyPair;

use super::{APISERVER_CA, APISERVER_CERT_DIR, AUDIT_LOG, TestEnv};

/// The users besides `admin`, one per component that talks to the API server (each a
/// `system:masters` member with a kubeconfig of its own, [`TestEnv::identity_kubeconfig`]), so
/// that the audit log attributes every request exactly.
pub const IDENTITIES: [&str; 6] = [
    "virt-controller",
    "virt-api",
    "kubevirt-sim",
    "clone-controller",
    "bench",
    "kubectl-vmclone",
];

/// How long a token of [`TestEnv::write_service_account_kubeconfig`] lasts.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 3600;

impl TestEnv {
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

    /// `https://127.0.0.1:<port>` of kube-apiserver.
    pub fn apiserver_url(&self) -> &str {
        &self.apiserver_url
    }

    /// The bearer token of the admin user (group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }
}

pub(super) async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let parsed = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    Client::try_from(config).context("creating a kube client")
}

pub(super) fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) -> Result<()> {
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

/// An ECDSA P-256 key pair (PEM: PKCS#8 private, PKIX public) with which kube-apiserver signs
/// ServiceAccount tokens and verifies them, and kube-controller-manager signs its tokens.
pub(super) fn service_account_keys(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join("service-account.key");
    let public = dir.join("service-account.pub");
    let pair = KeyPair::generate().context("generating the ServiceAccount signing key")?;
    std::fs::write(&key, pair.serialize_pem())
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(&public, pair.public_key_pem())
        .with_context(|| format!("writing {}", public.display()))?;
    Ok((key, public))
}

/// 128 random bits as hex, from the standard library's per-process random hash keys.
pub(super) fn random_hex() -> String {
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
