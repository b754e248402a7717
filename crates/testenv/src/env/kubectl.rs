//! `kubectl` against a control plane, with its own kubeconfig and discovery cache.

use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use super::{TestEnv, arg};

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

    /// Runs `kubectl <args>`, feeding `stdin` if given, and returns what it printed. Async, so
    /// a test's runtime (and an in-process controller on it) keeps running meanwhile.
    ///
    /// Does not fail on a non-zero exit status: check [`KubectlOutput::success`] or call
    /// [`KubectlOutput::ok`].
    pub async fn kubectl_output(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<KubectlOutput> {
        let mut command = tokio::process::Command::from(self.kubectl());
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("running kubectl {args:?} (is kubectl installed?)"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .context("writing kubectl's stdin")?;
        }
        let output = child
            .wait_with_output()
            .await
            .with_context(|| format!("waiting for kubectl {args:?}"))?;
        Ok(KubectlOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
