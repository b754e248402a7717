//! Finding or building KubeVirt's `virt-controller` and `virt-api`, the admission webhook
//! configurations virt-operator would install for virt-api, and KubeVirt's `virtctl` (the
//! reference `kubectl vmclone create` is compared with).
//!
//! Like the control plane (see `binaries`), they come from, in this order:
//! 1. `VMCLONE_KUBEVIRT_BINARIES`, when it names a folder holding `virt-controller`, `virt-api`
//!    and `webhooks.json` (for [`ensure_virtctl`]: when it holds `virtctl`);
//! 2. the cache (`<cache>/vmclone/kubevirt-<version>/`, and `virtctl-<version>/` for virtctl);
//! 3. a build with the local Go toolchain from `kubevirt.io/kubevirt` at [`KUBEVIRT_VERSION`].
//!
//! virtctl has a cache folder of its own so that adding it did not make the existing
//! `kubevirt-<version>/` folders incomplete (which would rebuild the servers under running
//! tests); both builds use the same wrapper module, go.mod and flags.
//!
//! The build's go.mod is derived from the downloaded module's own: kubevirt replaces
//! `kubevirt.io/api` and `kubevirt.io/client-go` with `./staging` folders, which a dependent
//! module cannot use, so those two are required at the same release instead, and every other
//! (non-local) `replace` line is copied. The wrapper's `webhooks` command (ours) prints KubeVirt's
//! own webhook configurations, from its generator at the same release, into `webhooks.json`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::gobuild::{GoToolchain, build_once, cache_root, replace_directives, write};
use crate::progress::say;

/// The KubeVirt release virt-controller and virt-api are built from.
pub const KUBEVIRT_VERSION: &str = "v1.7.0";

/// The environment variable naming a folder with prebuilt KubeVirt binaries.
pub const KUBEVIRT_BINARIES_ENV: &str = "VMCLONE_KUBEVIRT_BINARIES";

const KUBEVIRT_MODULE: &str = "kubevirt.io/kubevirt";
/// Modules kubevirt.io/kubevirt keeps in its `./staging` folder and publishes at its own version.
const STAGING_MODULES: [&str; 2] = ["kubevirt.io/api", "kubevirt.io/client-go"];
/// The servers, built together with the webhooks generator.
const SERVER_COMMANDS: [&str; 2] = ["virt-controller", "virt-api"];
/// The command-line client, built on its own into its own cache folder.
const VIRTCTL: &str = "virtctl";
/// Every KubeVirt command the wrapper module names as a `tool` (so one go.mod serves all builds).
const COMMANDS: [&str; 3] = [SERVER_COMMANDS[0], SERVER_COMMANDS[1], VIRTCTL];
const GO_MOD_HEADER: &str = include_str!("../go/kubevirt/go.mod.in");
const DOC_GO: &str = include_str!("../go/kubevirt/doc.go");
const WEBHOOKS_GO: &str = include_str!("../go/kubevirt/webhooks/main.go");
const WEBHOOKS_JSON: &str = "webhooks.json";

/// Where KubeVirt's binaries and webhook configurations are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVirtBinaries {
    /// `virt-controller`.
    pub virt_controller: PathBuf,
    /// `virt-api`.
    pub virt_api: PathBuf,
    /// The validating and mutating webhook configurations of virt-api (a JSON array of two).
    pub webhooks: PathBuf,
}

impl KubeVirtBinaries {
    fn in_folder(dir: &Path) -> Self {
        Self {
            virt_controller: dir.join(SERVER_COMMANDS[0]),
            virt_api: dir.join(SERVER_COMMANDS[1]),
            webhooks: dir.join(WEBHOOKS_JSON),
        }
    }

    fn missing(&self) -> Vec<&Path> {
        [&self.virt_controller, &self.virt_api, &self.webhooks]
            .into_iter()
            .map(PathBuf::as_path)
            .filter(|path| !path.is_file())
            .collect()
    }
}

/// Returns KubeVirt's binaries, building them first if this machine has none yet.
///
/// Blocking: a build on a fresh machine takes several minutes and prints its progress.
pub fn ensure_kubevirt_binaries() -> Result<KubeVirtBinaries> {
    if let Some(dir) = std::env::var_os(KUBEVIRT_BINARIES_ENV).filter(|v| !v.is_empty()) {
        let binaries = KubeVirtBinaries::in_folder(Path::new(&dir));
        let missing = binaries.missing();
        if !missing.is_empty() {
            bail!(
                "{KUBEVIRT_BINARIES_ENV}={} lacks {missing:?}: point it at a folder with \
                 virt-controller, virt-api and webhooks.json, or unset it to build them",
                Path::new(&dir).display()
            );
        }
        return Ok(binaries);
    }
    let cache = cache_root()?;
    let dir = cache.join(format!("kubevirt-{KUBEVIRT_VERSION}"));
    let binaries = KubeVirtBinaries::in_folder(&dir);
    if binaries.missing().is_empty() {
        return Ok(binaries);
    }
    let go = GoToolchain::find()?;
    build_once(
        &cache,
        &dir,
        &[SERVER_COMMANDS[0], SERVER_COMMANDS[1], WEBHOOKS_JSON],
        |work, out| build_kubevirt(&go, work, out),
    )?;
    let missing = binaries.missing();
    if !missing.is_empty() {
        bail!("the KubeVirt build finished but {missing:?} are missing");
    }
    Ok(binaries)
}

/// Returns KubeVirt's `virtctl` at [`KUBEVIRT_VERSION`], building it first if this machine has
/// none yet (from `VMCLONE_KUBEVIRT_BINARIES` when that folder holds one).
///
/// Blocking: a build on a fresh machine takes minutes and prints its progress.
pub fn ensure_virtctl() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(KUBEVIRT_BINARIES_ENV).filter(|v| !v.is_empty()) {
        let prebuilt = Path::new(&dir).join(VIRTCTL);
        if prebuilt.is_file() {
            return Ok(prebuilt);
        }
    }
    let cache = cache_root()?;
    let dir = cache.join(format!("{VIRTCTL}-{KUBEVIRT_VERSION}"));
    let virtctl = dir.join(VIRTCTL);
    if virtctl.is_file() {
        return Ok(virtctl);
    }
    let go = GoToolchain::find()?;
    build_once(&cache, &dir, &[VIRTCTL], |work, out| {
        prepare_wrapper(&go, work)?;
        go_build(
            &go,
            work,
            out,
            &[VIRTCTL],
            &[],
            "go build virtctl (the long step)",
        )?;
        say(&format!("KubeVirt {KUBEVIRT_VERSION}: virtctl"));
        Ok(())
    })?;
    if !virtctl.is_file() {
        bail!(
            "the virtctl build finished but {} is missing",
            virtctl.display()
        );
    }
    Ok(virtctl)
}

/// Fills `work` with the wrapper module (go.mod derived from kubevirt's, the `webhooks`
/// command) and lets `go mod tidy` download and pin what every KubeVirt command needs.
fn prepare_wrapper(go: &GoToolchain, work: &Path) -> Result<()> {
    let upstream = go.module_go_mod(work, KUBEVIRT_MODULE, KUBEVIRT_VERSION)?;
    let go_mod = wrapper_go_mod(&upstream, KUBEVIRT_VERSION)?;
    write(&work.join("go.mod"), &go_mod)?;
    write(&work.join("doc.go"), DOC_GO)?;
    fs::create_dir_all(work.join("webhooks")).context("creating the webhooks package")?;
    write(&work.join("webhooks").join("main.go"), WEBHOOKS_GO)?;
    go.run(
        "go mod tidy (downloads the modules)",
        work,
        &["mod", "tidy"],
    )?;
    Ok(())
}

/// `go build` of KubeVirt `commands` (and wrapper `packages`) into `out`, stamped with the
/// release (virtctl compares it with the server's; the servers report it).
fn go_build(
    go: &GoToolchain,
    work: &Path,
    out: &Path,
    commands: &[&str],
    packages: &[&str],
    step: &str,
) -> Result<()> {
    let version = format!("-s -w -X kubevirt.io/client-go/version.gitVersion={KUBEVIRT_VERSION}");
    let mut build = vec![
        "build".to_owned(),
        "-o".to_owned(),
        format!("{}/", out.display()),
        "-ldflags".to_owned(),
        version,
    ];
    build.extend(
        commands
            .iter()
            .map(|c| format!("{KUBEVIRT_MODULE}/cmd/{c}")),
    );
    build.extend(packages.iter().map(|p| (*p).to_owned()));
    go.run(step, work, &build)?;
    Ok(())
}

fn build_kubevirt(go: &GoToolchain, work: &Path, out: &Path) -> Result<()> {
    prepare_wrapper(go, work)?;
    go_build(
        go,
        work,
        out,
        &SERVER_COMMANDS,
        &["./webhooks"],
        "go build virt-controller virt-api (the long step)",
    )?;

    let generator = out.join("webhooks");
    let printed = std::process::Command::new(&generator)
        .output()
        .context("running the webhooks generator")?;
    if !printed.status.success() {
        bail!(
            "the webhooks generator failed: {}",
            String::from_utf8_lossy(&printed.stderr)
        );
    }
    let configurations: serde_json::Value = serde_json::from_slice(&printed.stdout)
        .context("the webhooks generator printed no JSON")?;
    if configurations.as_array().map(Vec::len) != Some(2) {
        bail!("the webhooks generator printed {configurations}, not two configurations");
    }
    fs::write(out.join(WEBHOOKS_JSON), &printed.stdout).context("writing webhooks.json")?;
    fs::remove_file(&generator).context("removing the webhooks generator")?;
    say(&format!(
        "KubeVirt {KUBEVIRT_VERSION}: virt-controller, virt-api and its webhook configurations"
    ));
    Ok(())
}

/// The wrapper module's go.mod: our header, the release and its staging modules required at the
/// same version, kubevirt's non-local `replace` lines, and a `tool` line per command (so that
/// `go mod tidy` keeps what they need).
fn wrapper_go_mod(upstream_go_mod: &str, version: &str) -> Result<String> {
    let replaces = published_replaces(upstream_go_mod);
    if replaces.is_empty() {
        bail!("found no `replace` lines in {KUBEVIRT_MODULE}'s go.mod");
    }
    let mut go_mod = String::from(GO_MOD_HEADER);
    go_mod.push_str("\nrequire (\n");
    for module in std::iter::once(KUBEVIRT_MODULE).chain(STAGING_MODULES) {
        go_mod.push_str(&format!("\t{module} {version}\n"));
    }
    go_mod.push_str(")\n\n");
    for line in &replaces {
        go_mod.push_str(line);
        go_mod.push('\n');
    }
    go_mod.push('\n');
    for command in COMMANDS {
        go_mod.push_str(&format!("tool {KUBEVIRT_MODULE}/cmd/{command}\n"));
    }
    Ok(go_mod)
}

/// `replace A => B v` for every replacement in `go_mod` whose target is a published module
/// (local paths such as `./staging/...` only work inside kubevirt's own repository).
fn published_replaces(go_mod: &str) -> Vec<String> {
    replace_directives(go_mod)
        .into_iter()
        .filter(|(_, target)| {
            !(target.starts_with("./") || target.starts_with("../") || target.starts_with('/'))
        })
        .map(|(old, target)| format!("replace {old} => {target}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "module kubevirt.io/kubevirt

go 1.24.0

require (
\tkubevirt.io/api v0.0.0-00010101000000-000000000000
\tk8s.io/api v0.33.5
)

replace (
\tgithub.com/openshift/api => github.com/openshift/api v0.0.0-20210105115604-44119421ec6b
\tk8s.io/api => k8s.io/api v0.33.5 // pinned

\tkubevirt.io/api => ./staging/src/kubevirt.io/api
\tkubevirt.io/client-go => ./staging/src/kubevirt.io/client-go
)

replace k8s.io/klog => k8s.io/klog v0.4.0
";

    #[test]
    fn local_replacements_are_dropped_and_published_ones_kept() {
        assert_eq!(
            published_replaces(UPSTREAM),
            [
                "replace github.com/openshift/api => github.com/openshift/api v0.0.0-20210105115604-44119421ec6b",
                "replace k8s.io/api => k8s.io/api v0.33.5",
                "replace k8s.io/klog => k8s.io/klog v0.4.0",
            ]
        );
    }

    #[test]
    fn the_wrapper_requires_the_staging_modules_at_the_release_and_names_the_tools() {
        let go_mod = wrapper_go_mod(UPSTREAM, "v1.7.0").unwrap();
        for line in [
            "\tkubevirt.io/kubevirt v1.7.0\n",
            "\tkubevirt.io/api v1.7.0\n",
            "\tkubevirt.io/client-go v1.7.0\n",
            "tool kubevirt.io/kubevirt/cmd/virt-controller\n",
            "tool kubevirt.io/kubevirt/cmd/virt-api\n",
            "tool kubevirt.io/kubevirt/cmd/virtctl\n",
            "replace k8s.io/klog => k8s.io/klog v0.4.0\n",
        ] {
            assert!(go_mod.contains(line), "{line:?} missing from\n{go_mod}");
        }
        assert!(
            go_mod
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .all(|l| !l.contains("./staging")),
            "{go_mod}"
        );
        assert!(go_mod.contains("\nmodule vmclone.local/testenv/kubevirt\n"));
    }

    #[test]
    fn a_go_mod_without_replacements_is_an_error() {
        let err = wrapper_go_mod("module x\n\ngo 1.24\n", "v1.7.0").unwrap_err();
        assert!(err.to_string().contains("replace"), "{err}");
    }

    #[test]
    fn a_prebuilt_folder_must_hold_all_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let binaries = KubeVirtBinaries::in_folder(dir.path());
        assert_eq!(binaries.missing().len(), 3);
        for name in ["virt-controller", "virt-api", "webhooks.json"] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        assert!(binaries.missing().is_empty());
    }
}
