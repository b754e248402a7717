//! Finding or building `etcd`, `kube-apiserver` and `kube-controller-manager`.
//!
//! The binaries come, in this order of preference, from:
//! 1. `KUBEBUILDER_ASSETS`, when it names a folder holding all three (the envtest convention);
//! 2. the cache (`$XDG_CACHE_HOME/vmclone/` or `$HOME/.cache/vmclone/`), one folder per pinned
//!    version (`k8s-v1.36.3/`, `etcd-v3.6.16/`);
//! 3. a build with the local Go toolchain from the pinned Go modules, into that cache.
//!
//! A build happens once per machine and version. It runs in a work folder of the cache (never in
//! the repository): the wrapper module from `crates/testenv/go/` is copied there, its `go.mod`
//! completed, `go get` pins the release and `go build` writes the binaries, which are then renamed
//! into place in one step. A lock file per version keeps two test processes from building into
//! the same place at once; the second one waits and then finds the binaries ready.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::progress::{human, say};

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

/// `$XDG_CACHE_HOME/vmclone` or `$HOME/.cache/vmclone`.
pub(crate) fn cache_root() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(xdg) => PathBuf::from(xdg),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache"),
            None => bail!("neither XDG_CACHE_HOME nor HOME is set, so there is no cache folder"),
        },
    };
    Ok(base.join("vmclone"))
}

/// Builds into `final_dir` unless another process did already, holding a lock meanwhile.
///
/// `build` gets an empty work folder and an output folder inside it to fill; the output folder
/// is then renamed to `final_dir`, so `final_dir` either does not exist or is complete.
pub(crate) fn build_once(
    cache: &Path,
    final_dir: &Path,
    expected: &[&str],
    build: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<()> {
    let complete = |dir: &Path| expected.iter().all(|name| dir.join(name).is_file());
    if complete(final_dir) {
        return Ok(());
    }
    let name = final_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("cache folder without a name")?;
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let lock_path = cache.join(format!("{name}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        say(&format!(
            "waiting for another process that is building {name} (lock {})",
            lock_path.display()
        ));
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    if complete(final_dir) {
        return Ok(());
    }

    let started = Instant::now();
    say(&format!(
        "building {name} into {} (once per machine; several minutes on a fresh one)",
        final_dir.display()
    ));
    let work = cache.join("work").join(name);
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    let out = work.join("bin");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    build(&work, &out)?;
    if final_dir.exists() {
        // Left by an interrupted older layout or a hand edit; we hold the lock, so it is ours.
        fs::remove_dir_all(final_dir)
            .with_context(|| format!("removing incomplete {}", final_dir.display()))?;
    }
    fs::rename(&out, final_dir)
        .with_context(|| format!("moving {} to {}", out.display(), final_dir.display()))?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    say(&format!(
        "built {name} in {}: {}",
        human(started.elapsed()),
        final_dir.display()
    ));
    drop(lock);
    Ok(())
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

/// Every `replace` directive of a go.mod, single or in a block, as `(old, new)` with comments
/// and surrounding white space removed (`old` may carry a version, `new` a version or a path).
pub(crate) fn replace_directives(go_mod: &str) -> Vec<(String, String)> {
    let mut directives = Vec::new();
    let mut in_block = false;
    for raw in go_mod.lines() {
        let line = raw.split("//").next().unwrap_or_default().trim();
        let directive = if in_block {
            if line == ")" {
                in_block = false;
                continue;
            }
            line
        } else if let Some(rest) = line.strip_prefix("replace") {
            let rest = rest.trim();
            if rest == "(" {
                in_block = true;
                continue;
            }
            rest
        } else {
            continue;
        };
        if let Some((old, new)) = directive.split_once("=>") {
            let (old, new) = (old.trim(), new.trim());
            if !old.is_empty() && !new.is_empty() {
                directives.push((old.to_owned(), new.to_owned()));
            }
        }
    }
    directives
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// The local Go toolchain and the environment its builds need.
#[derive(Debug)]
pub(crate) struct GoToolchain {
    go: PathBuf,
    /// `GOEXPERIMENT` to set, if the toolchain needs one.
    experiment: Option<String>,
}

impl GoToolchain {
    /// The first `go` that answers `go env GOVERSION`: on `PATH`, under `$GOROOT`, or in the
    /// default install location.
    pub(crate) fn find() -> Result<Self> {
        let mut candidates = vec![PathBuf::from("go")];
        if let Some(root) = std::env::var_os("GOROOT") {
            candidates.push(PathBuf::from(root).join("bin").join("go"));
        }
        candidates.push(PathBuf::from("/usr/local/go/bin/go"));
        for go in candidates {
            let Ok(output) = Command::new(&go).args(["env", "GOVERSION"]).output() else {
                continue;
            };
            if !output.status.success() {
                continue;
            }
            let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let experiment = match go_minor(&version) {
                // Go 1.27 made encoding/json v2 the default, with which kube-apiserver serves
                // a broken OpenAPI document (kubectl: "failed to download openapi").
                Some(minor) if minor >= 27 => Some(match std::env::var("GOEXPERIMENT") {
                    Ok(existing) if !existing.is_empty() => format!("{existing},nojsonv2"),
                    _ => "nojsonv2".to_owned(),
                }),
                _ => None,
            };
            say(&format!(
                "using {version} at {}{}",
                go.display(),
                experiment
                    .as_ref()
                    .map(|e| format!(" with GOEXPERIMENT={e}"))
                    .unwrap_or_default()
            ));
            return Ok(Self { go, experiment });
        }
        bail!(
            "testenv needs etcd, kube-apiserver and kube-controller-manager: install Go \
             (1.26 or newer, https://go.dev/dl/) so it can build them once into the cache, \
             or set KUBEBUILDER_ASSETS to a folder that holds all three"
        )
    }

    /// The go.mod of `module` at `version`, downloaded into the module cache (from `work`).
    pub(crate) fn module_go_mod(&self, work: &Path, module: &str, version: &str) -> Result<String> {
        let at = format!("{module}@{version}");
        let download = self.run(
            &format!("go mod download {at}"),
            work,
            &["mod", "download", "-json", &at],
        )?;
        let info: serde_json::Value = serde_json::from_str(&download)
            .with_context(|| format!("parsing `go mod download -json` output: {download}"))?;
        let go_mod = info
            .get("GoMod")
            .and_then(|v| v.as_str())
            .with_context(|| format!("`go mod download -json` gave no GoMod: {download}"))?;
        fs::read_to_string(go_mod).with_context(|| format!("reading {go_mod}"))
    }

    /// Runs `go <args>` in `dir`, echoing its stderr as progress; returns its stdout.
    ///
    /// cgo is off: every binary built here is static, so a prebuilt one runs on any Linux.
    pub(crate) fn run<S: AsRef<str>>(&self, step: &str, dir: &Path, args: &[S]) -> Result<String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let mut command = Command::new(&self.go);
        command
            .args(&args)
            .env("CGO_ENABLED", "0")
            .current_dir(dir)
            // A go.work of the caller's must not pull other modules into this build.
            .env("GOWORK", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(experiment) = &self.experiment {
            command.env("GOEXPERIMENT", experiment);
        }
        run_with_progress(step, &mut command)
            .with_context(|| format!("`go {}` in {}", args.join(" "), dir.display()))
    }
}

/// `go1.26.8` → 26 (also `go1.27rc1`, `devel go1.28-abcdef`).
fn go_minor(goversion: &str) -> Option<u32> {
    let rest = &goversion[goversion.find("go1.")? + 4..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Runs `command`, printing each stderr line and a heartbeat while it is quiet; returns stdout.
fn run_with_progress(step: &str, command: &mut Command) -> Result<String> {
    let started = Instant::now();
    say(step);
    let mut child = command.spawn().context("starting the command")?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    let stderr_reader = {
        let tail = Arc::clone(&tail);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                say(&format!("  {line}"));
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == 40 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        })
    };

    let heartbeat = Duration::from_secs(60);
    let mut next_heartbeat = heartbeat;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the command")? {
            break status;
        }
        if started.elapsed() >= next_heartbeat {
            say(&format!("  still running ({})", human(started.elapsed())));
            next_heartbeat += heartbeat;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = stderr_reader.join();
    let stdout = match stdout_reader.join() {
        Ok(Ok(text)) => text,
        _ => String::new(),
    };
    if !status.success() {
        let tail = tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        bail!(
            "failed ({status}) after {}:\n{tail}",
            human(started.elapsed())
        );
    }
    say(&format!("  done in {}", human(started.elapsed())));
    Ok(stdout)
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
    fn go_minor_reads_releases_candidates_and_dev_builds() {
        assert_eq!(go_minor("go1.26.8"), Some(26));
        assert_eq!(go_minor("go1.27rc1"), Some(27));
        assert_eq!(go_minor("devel go1.28-abcdef Tue"), Some(28));
        assert_eq!(go_minor("gccgo"), None);
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

    #[test]
    fn build_once_renames_the_output_into_place_and_skips_when_complete() {
        let cache = tempfile::tempdir().unwrap();
        let final_dir = cache.path().join("thing-v1");
        build_once(cache.path(), &final_dir, &["bin-a"], |work, out| {
            assert!(work.ends_with("work/thing-v1"));
            fs::write(out.join("bin-a"), "a")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read_to_string(final_dir.join("bin-a")).unwrap(), "a");
        assert!(!cache.path().join("work/thing-v1").exists());

        build_once(cache.path(), &final_dir, &["bin-a"], |_, _| {
            bail!("must not build again")
        })
        .unwrap();
    }

    #[test]
    fn a_failed_build_leaves_no_final_folder() {
        let cache = tempfile::tempdir().unwrap();
        let final_dir = cache.path().join("thing-v1");
        let err = build_once(cache.path(), &final_dir, &["bin-a"], |_, out| {
            fs::write(out.join("half"), "")?;
            bail!("compiler exploded")
        })
        .unwrap_err();
        assert!(err.to_string().contains("compiler exploded"));
        assert!(!final_dir.exists());
    }
}
