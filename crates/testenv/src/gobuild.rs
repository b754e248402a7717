//! The Go side of building the testbed's binaries, shared by `binaries` (etcd, kube-apiserver,
//! kube-controller-manager) and `kubevirt_binaries` (virt-controller, virt-api, virtctl): the
//! cache folder, a build that happens once per machine and version (a lock file, a work folder,
//! one rename into place), the local Go toolchain and its progress output, and reading a go.mod's
//! `replace` directives.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::progress::{human, say};

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

    #[test]
    fn go_minor_reads_releases_candidates_and_dev_builds() {
        assert_eq!(go_minor("go1.26.8"), Some(26));
        assert_eq!(go_minor("go1.27rc1"), Some(27));
        assert_eq!(go_minor("devel go1.28-abcdef Tue"), Some(28));
        assert_eq!(go_minor("gccgo"), None);
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
