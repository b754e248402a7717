//! The testbed's own certificate authority: one CA per control plane, whose serving
//! certificates (for `127.0.0.1`) the webhook servers present, and whose PEM the API server
//! trusts as the request-header CA and as each webhook's `caBundle`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A self-signed CA (ECDSA P-256) that signs serving certificates for loopback servers.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A serving certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub(crate) struct ServingPair {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl TestCa {
    /// A new CA named `common_name`.
    pub(crate) fn new(common_name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating the CA key")?;
        let pem = params
            .self_signed(&key)
            .context("self-signing the CA")?
            .pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// The CA certificate as PEM.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA certificate to `path`.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, &self.pem).with_context(|| format!("writing {}", path.display()))
    }

    /// A serving certificate for `127.0.0.1`, signed by this CA, written as `<stem>.crt` and
    /// `<stem>.key` into `dir`.
    pub(crate) fn serving(&self, dir: &Path, stem: &str) -> Result<ServingPair> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        params.distinguished_name = name(stem);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating a serving key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the serving certificate of {stem}"))?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pair = ServingPair {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&pair.cert, cert.pem())
            .with_context(|| format!("writing {}", pair.cert.display()))?;
        std::fs::write(&pair.key, key.serialize_pem())
            .with_context(|| format!("writing {}", pair.key.display()))?;
        Ok(pair)
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_pairs_are_pem_files_signed_for_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("testenv-ca").unwrap();
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let pair = ca.serving(dir.path(), "virt-api").unwrap();
        let cert = std::fs::read_to_string(&pair.cert).unwrap();
        let key = std::fs::read_to_string(&pair.key).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.contains("PRIVATE KEY-----"), "{key}");
        assert_ne!(cert, ca.pem());
    }
}
