//! A real Kubernetes control plane for vmclone's tests, benchmarks and sandbox.
//!
//! [`TestEnv`] runs etcd, kube-apiserver and kube-controller-manager (owner-reference garbage
//! collection, namespaces, ServiceAccounts) on 127.0.0.1, writes a kubeconfig for `kubectl`,
//! and installs the project's CRDs and KubeVirt's and CDI's stand-in CRDs before it returns.
//! Tests share one control plane per test process ([`TestEnv::shared`]) and isolate themselves
//! with a fresh namespace each ([`TestEnv::namespace`]); fault tests start a private one
//! ([`TestEnv::start`]) that they can restart parts of.
//!
//! The binaries are built once per machine from pinned Go modules into a cache outside the
//! repository ([`ensure_binaries`], also `cargo xtask control-plane`), or taken from
//! `KUBEBUILDER_ASSETS`.
//!
//! Modules:
//! - `binaries`: finding or building the three binaries;
//! - `http`: the one HTTP probe (plain `GET` on loopback) of tests, the bench and chaos;
//! - `gobuild`: the cache, once-per-machine builds and the Go toolchain both binary modules use;
//! - `kubevirt_binaries`: finding or building KubeVirt's virt-controller, virt-api and virtctl;
//! - `env`: starting, using and stopping a control plane;
//! - `kubevirt`: running KubeVirt's virt-api (with its webhooks) and virt-controller in it;
//! - `certs`: the control plane's own CA and serving certificates;
//! - `manifests`: applying YAML (CRDs first, until `Established`);
//! - `process`: servers that die with the test process, temporary folders removed after it;
//! - `wait`: [`wait_for`], polling with a deadline and a readable failure;
//! - `progress`: timestamped progress lines on stderr.

mod binaries;
mod certs;
mod env;
mod gobuild;
mod http;
mod kubevirt;
mod kubevirt_binaries;
mod manifests;
mod process;
mod progress;
mod wait;

pub use binaries::{Binaries, ETCD_VERSION, KUBERNETES_VERSION, ensure_binaries};
pub use env::{CloneCrd, IDENTITIES, KubectlOutput, Options, TestEnv};
pub use http::http_get;
pub use kubevirt::{KUBEVIRT_NAME, KUBEVIRT_NAMESPACE, KubeVirtOptions};
pub use kubevirt_binaries::{
    KUBEVIRT_BINARIES_ENV, KUBEVIRT_VERSION, KubeVirtBinaries, ensure_kubevirt_binaries,
    ensure_virtctl,
};
pub use process::Supervised;
pub use wait::{Attempt, wait_for};

/// Generates, for each named `async fn(Backend)` of the calling test crate, one `#[tokio::test]`
/// per backend: `sim::<name>` and `kubevirt::<name>`. One test body, never a copy. The caller's
/// `common` module defines `Backend` with the variants `Sim` and `KubeVirt`.
#[macro_export]
// `crate` (not `$crate`) on purpose: the backends are the calling test crate's.
#[allow(clippy::crate_in_macro_def)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sim {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Sim).await
                }
            )*
        }
        mod kubevirt {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::KubeVirt).await
                }
            )*
        }
    };
}
