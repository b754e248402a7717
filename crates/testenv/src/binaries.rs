//! Finding or building `etcd`, `kube-apiserver` and `kube-controller-manager`.
//!
//! The binaries come, in this order of preference, from:
//! 1. `KUBEBUILDER_ASSETS`, when it names a folder holding all three (the envtest convention);
//! 2. the cache (`$XDG_CACHE_HOME/vmclone/` or `$HOME/.cache/vmclone/`), one folder per pinned
//!    version (`k8s-v1.36.3/`, `etcd-v3.6.16/`);
//! 3. a build with the local Go toolchain from the pinned Go modules, into that cache.
//!
//! A build happens once per machine and version, in a work folder of the cache (never in the
//! repository), through `gobuild`: the wrapper module from `crates/testenv/go/` is copied there,
//! its `go.mod` completed with the release's published staging modules, and `go build` writes the
//! binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::gobuild::{GoToolchain, build_once, cache_root, replace_directives, write};
use crate::progress::say;

/// The Kubernetes release kube-apiserver and kube-controller-manager are built from.
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The etcd release (`go.etcd.io/etcd/server/v3`).
pub const ETCD_VERSION: &str = "v3.6.16";

const KUBERNETES_MODULE: &str = "k8s.io/kubernetes";
const ETCD_MODULE: &str = "go.etcd.io/etcd/server/v3";
const K8S_GO_MOD_HEADER: &str = include_str!("../go/k8s/go.mod.in");
const K8S_DOC_GO: &str = include_str!("../go/k8s/doc.go");
const ETCD_GO_MOD_HEADER: &str = include_str!("../go/etcd/go.mod.in");
const ETCD_DOC_GO: &str = include_str!("../go/etcd/doc.go");

/// Where the three control-plane binaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The `etcd` server.
    pub etcd: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager`.
    pub kube_controller_manager: PathBuf,
}

impl Binaries {
    fn in_folders(k8s: &Path, etcd: &Path) -> Self {
        Self {
            etcd: etcd.join("etcd"),
            kube_apiserver: k8s.join("kube-apiserver"),
            kube_controller_manager: k8s.join("kube-controller-manager"),
        }
    }

    fn missing(&self) -> Vec<&Path> {
        [
            &self.etcd,
            &self.kube_apiserver,
            &self.kube_controller_manager,
        ]
        .into_iter()
        .map(PathBuf::as_path)
        .filter(|path| !path.is_file())
        .collect()
    }
}

/// Returns the control-plane binaries, building them first if this machine has none yet.
///
/// Blocking: a build on a fresh machine takes several minutes and prints its progress to stderr.
pub fn ensure_binaries() -> Result<Binaries> {
    if let Some(binaries) = from_kubebuilder_assets() {
        return Ok(binaries);
    }
    let cache = cache_root()?;
    let k8s_dir = cache.join(format!("k8s-{KUBERNETES_VERSION}"));
    let etcd_dir = cache.join(format!("etcd-{ETCD_VERSION}"));
    let binaries = Binaries::in_folders(&k8s_dir, &etcd_dir);
    if binaries.missing().is_empty() {
        return Ok(binaries);
    }

    let go = GoToolchain::find()?;
    build_once(
        &cache,
        &k8s_dir,
        &["kube-apiserver", "kube-controller-manager"],
        |work, out| build_kubernetes(&go, work, out),
    )?;
    build_once(&cache, &etcd_dir, &["etcd"], |work, out| {
        build_etcd(&go, work, out)
    })?;

    let missing = binaries.missing();
    if !missing.is_empty() {
        bail!("the control-plane build finished but {missing:?} are missing");
    }
    Ok(binaries)
}

/// The binaries from `KUBEBUILDER_ASSETS`, if it names a folder that has all three.
fn from_kubebuilder_assets() -> Option<Binaries> {
    let dir = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?);
    let binaries = Binaries::in_folders(&dir, &dir);
    let missing = binaries.missing();
    if missing.is_empty() {
        return Some(binaries);
    }
    // envtest's own asset folders have no kube-controller-manager: say why they are not used.
    say(&format!(
        "KUBEBUILDER_ASSETS={} lacks {missing:?}; using the cache or building with Go instead",
        dir.display()
    ));
    None
}

/// `kube-apiserver` and `kube-controller-manager` from `k8s.io/kubernetes`.
fn build_kubernetes(go: &GoToolchain, work: &Path, out: &Path) -> Result<()> {
    let upstream = go.module_go_mod(work, KUBERNETES_MODULE, KUBERNETES_VERSION)?;
    let replaces = published_staging_replaces(&upstream, &staging_version(KUBERNETES_VERSION)?)?;
    say(&format!(
        "{} staging modules of {KUBERNETES_MODULE} {KUBERNETES_VERSION} replaced by their published versions",
        replaces.len()
    ));

    let mut go_mod = String::from(K8S_GO_MOD_HEADER);
    go_mod.push_str(&format!(
        "\nrequire {KUBERNETES_MODULE} {KUBERNETES_VERSION}\n\n"
    ));
    for line in &replaces {
        go_mod.push_str(line);
        go_mod.push('\n');
    }
    write(&work.join("go.mod"), &go_mod)?;
    write(&work.join("doc.go"), K8S_DOC_GO)?;

    let commands = [
        format!("{KUBERNETES_MODULE}/cmd/kube-apiserver"),
        format!("{KUBERNETES_MODULE}/cmd/kube-controller-manager"),
    ];
    let mut get = vec!["get".to_owned()];
    get.extend(commands.iter().map(|c| format!("{c}@{KUBERNETES_VERSION}")));
    go.run("go get (downloads the modules)", work, &get)?;

    let ldflags = kubernetes_ldflags(KUBERNETES_VERSION)?;
    let mut build = vec![
        "build".to_owned(),
        "-o".to_owned(),
        format!("{}/", out.display()),
        "-ldflags".to_owned(),
        ldflags,
    ];
    build.extend(commands);
    go.run(
        "go build kube-apiserver kube-controller-manager (the long step)",
        work,
        &build,
    )?;

    let version = Command::new(out.join("kube-apiserver"))
        .arg("--version")
        .output()
        .context("running the new kube-apiserver --version")?;
    let reported = String::from_utf8_lossy(&version.stdout);
    if !reported.contains(KUBERNETES_VERSION) {
        bail!("the new kube-apiserver reports {reported:?}, not {KUBERNETES_VERSION}");
    }
    Ok(())
}

/// `etcd` from `go.etcd.io/etcd/server/v3`, whose root package is the server's `main`.
fn build_etcd(go: &GoToolchain, work: &Path, out: &Path) -> Result<()> {
    let mut go_mod = String::from(ETCD_GO_MOD_HEADER);
    go_mod.push_str(&format!("\nrequire {ETCD_MODULE} {ETCD_VERSION}\n"));
    write(&work.join("go.mod"), &go_mod)?;
    write(&work.join("doc.go"), ETCD_DOC_GO)?;
    go.run(
        "go get etcd",
        work,
        &["get", &format!("{ETCD_MODULE}@{ETCD_VERSION}")],
    )?;
    let target = out.join("etcd");
    go.run(
        "go build etcd",
        work,
        &[
            "build",
            "-o",
            &target.display().to_string(),
            "-ldflags",
            "-s -w",
            ETCD_MODULE,
        ],
    )?;
    let version = Command::new(&target)
        .arg("--version")
        .output()
        .context("running the new etcd --version")?;
    let reported = String::from_utf8_lossy(&version.stdout);
    if !reported.contains(ETCD_VERSION.trim_start_matches('v')) {
        bail!("the new etcd reports {reported:?}, not {ETCD_VERSION}");
    }
    Ok(())
}

/// `v1.36.3` → `v0.36.3`: the version under which a release's staging modules are published.
fn staging_version(kubernetes_version: &str) -> Result<String> {
    match kubernetes_version.strip_prefix("v1.") {
        Some(rest) => Ok(format!("v0.{rest}")),
        None => bail!("unexpected Kubernetes version {kubernetes_version}"),
    }
}

/// The linker flags that stamp the release into the binaries: without them kube-apiserver
/// reports `v0.0.0-master+$Format:%H$`, which kubectl cannot parse.
fn kubernetes_ldflags(kubernetes_version: &str) -> Result<String> {
    let mut parts = kubernetes_version.trim_start_matches('v').split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        bail!("unexpected Kubernetes version {kubernetes_version}");
    };
    let pkg = "k8s.io/component-base/version";
    Ok(format!(
        "-s -w -X {pkg}.gitVersion={kubernetes_version} -X {pkg}.gitMajor={major} \
         -X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"
    ))
}

/// One `replace k8s.io/X => k8s.io/X <staging version>` line for every
/// `k8s.io/X => ./staging/...` replacement in k8s.io/kubernetes' own go.mod.
///
/// Those local-path replacements only work inside the kubernetes repository; in a module that
/// depends on k8s.io/kubernetes they are ignored, and the `v0.0.0` requirements they stood for
/// must be pointed at the published modules instead.
fn published_staging_replaces(upstream_go_mod: &str, staging_version: &str) -> Result<Vec<String>> {
    let lines: Vec<String> = replace_directives(upstream_go_mod)
        .into_iter()
        .filter(|(_, target)| target.starts_with("./staging/"))
        .filter_map(|(old, _)| old.split_whitespace().next().map(str::to_owned))
        .map(|module| format!("replace {module} => {module} {staging_version}"))
        .collect();
    if lines.is_empty() {
        bail!("found no `=> ./staging/` replacements in k8s.io/kubernetes' go.mod");
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tgithub.com/spf13/cobra v1.10.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apimachinery => ./staging/src/k8s.io/apimachinery // a comment
\tgithub.com/example/fork => github.com/example/fork v1.2.3
)

replace k8s.io/kubectl => ./staging/src/k8s.io/kubectl
";

    #[test]
    fn every_staging_replacement_points_at_the_published_module() {
        let replaces = published_staging_replaces(UPSTREAM, "v0.36.3").unwrap();
        assert_eq!(
            replaces,
            [
                "replace k8s.io/api => k8s.io/api v0.36.3",
                "replace k8s.io/apimachinery => k8s.io/apimachinery v0.36.3",
                "replace k8s.io/kubectl => k8s.io/kubectl v0.36.3",
            ]
        );
    }

    #[test]
    fn a_go_mod_without_staging_replacements_is_an_error() {
        let err = published_staging_replaces("module x\n\ngo 1.26\n", "v0.36.3").unwrap_err();
        assert!(err.to_string().contains("./staging/"), "{err}");
    }

    #[test]
    fn staging_modules_are_published_as_v0_minor_patch() {
        assert_eq!(staging_version("v1.36.3").unwrap(), "v0.36.3");
        assert!(staging_version("1.36.3").is_err());
    }

    #[test]
    fn ldflags_stamp_the_full_version_and_its_parts() {
        let flags = kubernetes_ldflags("v1.36.3").unwrap();
        assert!(flags.contains("version.gitVersion=v1.36.3"), "{flags}");
        assert!(flags.contains("version.gitMajor=1 "), "{flags}");
        assert!(flags.contains("version.gitMinor=36 "), "{flags}");
    }

    #[test]
    fn the_wrapper_module_headers_are_modules_without_requirements() {
        for header in [K8S_GO_MOD_HEADER, ETCD_GO_MOD_HEADER] {
            assert!(
                header.contains("\nmodule vmclone.local/testenv/"),
                "{header}"
            );
            assert!(
                !header
                    .lines()
                    .any(|l| l.trim_start().starts_with("require")),
                "{header}"
            );
        }
    }
}
