//! Child processes that die with the test process, and folders that are removed after it.
//!
//! Rust runs no destructors for statics at exit and the workspace forbids `unsafe` (so no
//! `prctl(PR_SET_PDEATHSIG)`), yet the shared control plane lives in a static. The trick used
//! here needs neither: every server is started by a small `sh` supervisor whose standard input
//! is a pipe from this process. The kernel closes that pipe when this process ends, however it
//! ends (normal exit, panic, `kill -9`); the supervisor then reads end-of-file and kills the
//! server. A [`FolderReaper`] uses the same pipe
//! to remove the control plane's temporary folder once its servers are gone.
//!
//! [`sweep_stale_folders`] removes folders whose owner died without its reaper getting to run,
//! and [`free_ports`] picks loopback ports, so a killed run never blocks the next one.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Runs `"$@"` until stdin reaches end-of-file (the parent is gone or asks for a stop), then
/// kills it with `SIGKILL`; exits with the server's status when the server exits on its own.
/// `$1` is a file that receives the server's pid.
///
/// `SIGKILL` rather than a graceful `SIGTERM`: kube-apiserver and etcd take 7–10 s to shut down
/// gracefully, a throwaway control plane gains nothing from it, and a killed etcd keeps every
/// acknowledged write (they are in the page cache even with `--unsafe-no-fsync`).
///
/// The server gets `/dev/null` as stdin; the pipe is kept on fd 3 only for the watcher, which
/// must be started with an explicit redirection (an asynchronous list gets `/dev/null` as stdin
/// otherwise). Ctrl-C in a terminal reaches the whole process group: the supervisor ignores it
/// so that it still reaps its server.
const SUPERVISOR: &str = r#"pidfile=$1; shift
trap '' INT
exec 3<&0 </dev/null
"$@" 3<&- &
server=$!
echo "$server" > "$pidfile"
{ cat >/dev/null; kill -KILL "$server" 2>/dev/null; } <&3 &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// Waits for end-of-file on stdin, then for the servers whose pid files are in `$1/pids` to be
/// gone (at most about 5 s each), then removes `$1`.
const REAPER: &str = r#"dir=$1
trap '' INT
cat >/dev/null
for f in "$dir"/pids/*; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  i=0
  while [ "$i" -lt 50 ] && kill -0 "$p" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
done
rm -rf "$dir"
"#;

/// A server process started through the supervisor: it dies with this process however this
/// process ends, can be stopped (`SIGKILL`) or terminated gracefully (`SIGTERM`), and started
/// again with the same command line. The one process type of the testbed, the tests, the fault
/// suite and the bench.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// Environment changes: a value to set, or `None` to remove the variable.
    env: Vec<(OsString, Option<OsString>)>,
    log: PathBuf,
    pid_file: PathBuf,
    running: Option<Child>,
}

impl Supervised {
    /// Describes a server; `dir` gets its log (`logs/<name>.log`, unless [`Self::log_to`] says
    /// otherwise) and pid file (`pids/<name>`).
    pub fn new(name: impl Into<String>, dir: &Path, program: &Path, args: Vec<OsString>) -> Self {
        let name = name.into();
        Self {
            program: program.to_owned(),
            args,
            env: Vec::new(),
            log: dir.join("logs").join(format!("{name}.log")),
            pid_file: dir.join("pids").join(&name),
            running: None,
            name,
        }
    }

    /// Appends the server's output to `log` instead.
    pub fn log_to(mut self, log: impl Into<PathBuf>) -> Self {
        self.log = log.into();
        self
    }

    /// Sets an environment variable of the server.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable this process has from the server's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Replaces the command-line arguments of the next [`start`](Self::start).
    pub fn set_args(&mut self, args: Vec<OsString>) {
        self.args = args;
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the server's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts the server, appending its output to its log.
    pub fn start(&mut self) -> Result<()> {
        self.stop();
        for dir in [self.log.parent(), self.pid_file.parent()]
            .into_iter()
            .flatten()
        {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        // A pid file left from an earlier run of this server names a process that is gone.
        let _ = fs::remove_file(&self.pid_file);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(&self.pid_file)
            .arg(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.running = Some(child);
        Ok(())
    }

    /// The server's pid, once the supervisor has started it (`None` before, or when stopped).
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref()?;
        let text = fs::read_to_string(&self.pid_file).ok()?;
        // Complete only with its newline.
        text.strip_suffix('\n')?.trim().parse().ok()
    }

    /// Waits (at most `within`) until the server runs and returns its pid; an error with the end
    /// of its log if it exits first.
    pub async fn started(&mut self, within: Duration) -> Result<u32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(pid) = self.pid() {
                return Ok(pid);
            }
            if let Some(err) = self.exited_error() {
                return Err(err);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not start within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `Some(status)` when the server has exited by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.running.as_mut()?.try_wait().ok().flatten()
    }

    /// An error saying the server is not running, with the end of its log.
    pub fn exited_error(&mut self) -> Option<anyhow::Error> {
        let status = self.exited()?;
        Some(anyhow::anyhow!(
            "{} exited ({status}); end of {}:\n{}",
            self.name,
            self.log.display(),
            self.log_tail(40)
        ))
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Tells the supervisor to kill the server, without waiting (closes its stdin).
    pub fn request_stop(&mut self) {
        if let Some(child) = self.running.as_mut() {
            drop(child.stdin.take());
        }
    }

    /// Kills the server (`SIGKILL`, as in a crash) and waits until it is gone.
    pub fn stop(&mut self) {
        self.request_stop();
        let Some(mut child) = self.running.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // The supervisor should have killed it by now; make sure.
        if let Ok(pid) = fs::read_to_string(&self.pid_file) {
            signal("-KILL", pid.trim());
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends the server `SIGTERM` (as the kubelet does) and waits up to `grace` for it to exit:
    /// its exit status, or `None` when it had to be killed (or was not running).
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            self.running = None;
            return Some(status);
        }
        let pid = self.pid()?;
        signal("-TERM", &pid.to_string());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                self.running = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop();
        None
    }
}

/// `kill <signal> <pid>`, ignoring a process that is already gone.
fn signal(signal: &str, pid: &str) {
    let _ = Command::new("kill")
        .args([signal, pid])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes a folder after this process is gone and the servers recorded in it have stopped.
#[derive(Debug)]
pub(crate) struct FolderReaper {
    child: Child,
}

impl FolderReaper {
    pub(crate) fn watch(dir: &Path) -> Result<Self> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(REAPER)
            .arg("sh")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the temp-folder reaper (sh)")?;
        Ok(Self { child })
    }
}

impl Drop for FolderReaper {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The prefix of every control plane's temporary folder: `vmclone-testenv-<owner pid>-…`.
pub(crate) const FOLDER_PREFIX: &str = "vmclone-testenv-";

/// Removes `vmclone-testenv-<pid>-*` folders in `parent` whose owner process no longer exists.
///
/// Only where `/proc` shows which processes are alive; elsewhere nothing is removed.
pub(crate) fn sweep_stale_folders(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FOLDER_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::debug!(folder = %entry.path().display(), pid, "removing a stale control-plane folder");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// `count` distinct free TCP ports on 127.0.0.1.
///
/// The ports are free when this returns; another process may take one before the server binds
/// it, which the caller handles by starting over with new ports.
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>> {
    // Hold every listener until all are chosen, so the kernel cannot hand out one port twice.
    let listeners = (0..count)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding a free port on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The last `lines` lines of a file (at most its last 64 KiB).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("({} cannot be read)", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(pid: &str) -> bool {
        Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn a_stopped_server_is_gone_and_can_start_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Supervised::new(
            "sleeper",
            dir.path(),
            Path::new("sh"),
            vec!["-c".into(), "echo started; exec sleep 300".into()],
        );
        for round in 1..=2 {
            server.start().unwrap();
            wait_until("the pid file is written", || {
                fs::read_to_string(dir.path().join("pids/sleeper")).is_ok_and(|p| p.ends_with('\n'))
            });
            let pid = fs::read_to_string(dir.path().join("pids/sleeper")).unwrap();
            let pid = pid.trim().to_owned();
            assert!(alive(&pid), "round {round}: server {pid} is not running");
            assert!(server.exited().is_none());
            // The pid file is written at spawn, before the shell has run its echo: wait for it,
            // or a busy machine stops the server first.
            wait_until("the server's first line", || {
                server.log_tail(10).matches("started").count() == round
            });
            server.stop();
            assert!(!alive(&pid), "round {round}: server {pid} survived stop()");
        }
        let log = server.log_tail(10);
        assert_eq!(log.matches("started").count(), 2, "{log}");
    }

    #[tokio::test]
    async fn terminate_lets_the_server_exit_gracefully_with_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("custom.log");
        let script =
            "trap 'echo bye $GREETING; exit 0' TERM; echo up; while :; do sleep 0.05; done";
        let mut server = Supervised::new(
            "graceful",
            dir.path(),
            Path::new("sh"),
            vec!["-c".into(), script.into()],
        )
        .log_to(&log)
        .env("GREETING", "world");
        server.start().unwrap();
        let pid = server.started(Duration::from_secs(20)).await.unwrap();
        assert!(alive(&pid.to_string()));
        wait_until("the trap is set", || server.log_tail(5).contains("up"));
        let status = server.terminate(Duration::from_secs(20)).await;
        assert_eq!(status.map(|s| s.success()), Some(true), "{status:?}");
        assert!(!alive(&pid.to_string()));
        assert!(fs::read_to_string(&log).unwrap().contains("bye world"));
    }

    #[tokio::test]
    async fn a_server_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let script = "trap '' TERM; echo up; while :; do sleep 0.05; done";
        let mut server = Supervised::new(
            "stubborn",
            dir.path(),
            Path::new("sh"),
            vec!["-c".into(), script.into()],
        );
        server.start().unwrap();
        let pid = server.started(Duration::from_secs(20)).await.unwrap();
        wait_until("the trap is set", || server.log_tail(5).contains("up"));
        assert_eq!(server.terminate(Duration::from_millis(300)).await, None);
        assert!(!alive(&pid.to_string()));
    }

    #[test]
    fn a_server_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Supervised::new(
            "crasher",
            dir.path(),
            Path::new("sh"),
            vec![
                "-c".into(),
                "echo bind: address already in use; exit 3".into(),
            ],
        );
        server.start().unwrap();
        wait_until("the server exits", || server.exited().is_some());
        let err = server.exited_error().unwrap().to_string();
        assert!(err.contains("crasher exited"), "{err}");
        assert!(err.contains("address already in use"), "{err}");
    }

    #[test]
    fn the_reaper_removes_the_folder_when_its_pipe_closes() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("env");
        fs::create_dir_all(dir.join("pids")).unwrap();
        let reaper = FolderReaper::watch(&dir).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(dir.exists(), "removed before the pipe closed");
        drop(reaper);
        assert!(!dir.exists());
    }

    #[test]
    fn stale_folders_of_dead_owners_are_swept_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let live = parent
            .path()
            .join(format!("{FOLDER_PREFIX}{}-abc", std::process::id()));
        // Pids are below 2^22 on Linux.
        let dead = parent.path().join(format!("{FOLDER_PREFIX}4999999-abc"));
        let unrelated = parent.path().join("something-else");
        for d in [&live, &dead, &unrelated] {
            fs::create_dir_all(d).unwrap();
        }
        sweep_stale_folders(parent.path());
        assert!(live.exists());
        assert!(unrelated.exists());
        assert_eq!(dead.exists(), !Path::new("/proc/self").exists());
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(4).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 4, "{ports:?}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&path, 2), "3\n4");
        assert!(tail(&dir.path().join("missing"), 2).contains("cannot be read"));
    }
}
