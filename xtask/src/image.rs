//! `cargo xtask image [--check] [--smoke] [--archive <file>]`: the controller's container image,
//! built and proven on this machine.
//!
//! 1. Builds `clone-controller` as a static executable (`RUSTFLAGS='-C
//!    target-feature=+crt-static'`, `--target x86_64-unknown-linux-gnu`) and checks that it names
//!    no ELF interpreter: the image has no C library.
//! 2. Builds the image from `Containerfile` (`FROM scratch`) with `buildah`, tagged `latest` and
//!    with the crate's version.
//! 3. Checks the image with `podman image inspect`: entrypoint, numeric user, OCI labels (version,
//!    source and license from Cargo.toml), one layer; then runs it with `--version`, read-only and
//!    without capabilities.
//! 4. With `--smoke`: starts a testbed (testenv with the stand-in, kubevirt-sim), applies the
//!    manifests' namespace, ServiceAccount, RBAC and policies and the `KubeVirt` patch, writes a
//!    kubeconfig with a token of the ServiceAccount, runs the image with podman (host network, the
//!    kubeconfig mounted read-only, the Deployment's flags and environment, the pod's security
//!    settings), waits for `/readyz`, clones `manifests/examples/clone.yaml` until `Succeeded`,
//!    and stops the container with SIGTERM, which must end it with status 0. The container is
//!    removed in every case.
//!
//! `--check` skips the builds and checks (and smoke-tests) the image already in local storage.
//! `--archive <file>` writes the image as a docker archive (`docker load`, `podman load`,
//! `kind load image-archive`).
//!
//! podman runs containers with `--runtime runc` and explicit `nofile`/`nproc` limits: on these
//! machines its default runtime (crun) fails with "cgroups in hybrid mode not supported" and its
//! default `nofile` limit exceeds the hard limit.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use kube::api::Api;
use serde_json::{Value, json};
use testenv::{TestEnv, wait_for};

/// The image's name, as `manifests/deployment.yaml` names it.
pub(crate) const IMAGE: &str = "ghcr.io/vmclone/clone-controller";
/// The tag the manifests use.
const LATEST: &str = "latest";
/// The Rust target of the static executable.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Prefixes of the variables `cargo run` sets for the program it runs (see `build_binary`).
const CARGO_RUN_VARIABLES: [&str; 6] = [
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_RUSTC_CURRENT_DIR",
];
/// What makes the executable static.
const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static";
/// The executable inside the image, its entrypoint.
const ENTRYPOINT: &str = "/usr/local/bin/clone-controller";
/// The image's user: numeric, so that the kubelet can check `runAsNonRoot` without a passwd file.
const USER: &str = "65532:65532";
/// The OCI label of the title.
const TITLE: &str = "vmclone clone-controller";
/// What `podman run` needs on these machines (see the module documentation).
const PODMAN_RUN_FLAGS: [&str; 6] = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];
/// What the Deployment's securityContext asks of the container, in podman's words.
const PODMAN_HARDENING: [&str; 5] = [
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
];
/// The label of smoke-test containers; its value is the pid of the xtask that started it.
const OWNER_LABEL: &str = "dev.vmclone.image-smoke.owner";
/// Where the container finds its kubeconfig.
const KUBECONFIG_IN_CONTAINER: &str = "/etc/vmclone/kubeconfig";
/// The controller's namespace and ServiceAccount in `manifests/`.
const SYSTEM_NS: &str = "vmclone-system";
const SERVICE_ACCOUNT: &str = "vmclone-controller";
/// Kinds of `manifests/` that the smoke test applies: everything but what needs a kubelet
/// (the Deployment; its Service and PodDisruptionBudget select its pods).
const APPLIED_KINDS: [&str; 8] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const CLONE_TIMEOUT: Duration = Duration::from_secs(180);
/// As the Deployment's terminationGracePeriodSeconds.
const STOP_TIMEOUT_SECONDS: u32 = 30;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not build: check (and with --smoke, run) the image already in local storage.
    #[arg(long)]
    check: bool,
    /// Run the image on a local testbed as the manifests' ServiceAccount until it has cloned a VM.
    #[arg(long)]
    smoke: bool,
    /// Also write the image to this file as a docker archive (`docker load`, `podman load`, `kind
    /// load image-archive`).
    #[arg(long, value_name = "FILE")]
    archive: Option<PathBuf>,
}

/// Prints one progress line with the time since the command started.
#[derive(Debug, Clone, Copy)]
struct Progress(Instant);

impl Progress {
    fn say(&self, text: &str) {
        eprintln!("[image {:>6.1}s] {text}", self.0.elapsed().as_secs_f64());
    }
}

pub fn run(args: Args) -> Result<()> {
    let progress = Progress(Instant::now());
    let mut tools = vec!["podman"];
    if !args.check || args.archive.is_some() {
        tools.push("buildah");
    }
    require_tools(&tools)?;
    let image = format!("{IMAGE}:{LATEST}");
    if !args.check {
        let binary = build_binary(progress)?;
        build_image(progress, &binary)?;
    }
    progress.say(&format!("checking {image}"));
    check_image(&image)?;
    progress.say(&format!(
        "{image}: entrypoint {ENTRYPOINT}, user {USER}, labels and one layer as expected; \
         `--version` runs read-only without capabilities"
    ));
    if let Some(file) = &args.archive {
        write_archive(progress, &image, file)?;
    }
    if args.smoke {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(smoke(progress, &image))?;
    }
    progress.say("done");
    Ok(())
}

/// Fails with the install command when a tool is missing.
fn require_tools(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    ensure!(
        missing.is_empty(),
        "{} not installed: install them (Debian: `apt-get install -y buildah podman runc`; see \
         docs/operations.md#the-image)",
        missing.join(" and ")
    );
    Ok(())
}

/// Runs a command to completion with its output shown, failing with `what` when it fails.
fn run_shown(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

/// Runs a command to completion and returns its stdout, failing with its stderr.
fn output(command: &mut Command, what: &str) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn build_binary(progress: Progress) -> Result<PathBuf> {
    progress.say(&format!(
        "building clone-controller as a static executable ({TARGET}, release; minutes on first \
         use, cargo shows its progress)"
    ));
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} {STATIC_RUSTFLAGS}"),
        _ => STATIC_RUSTFLAGS.to_owned(),
    };
    let mut build = Command::new(cargo);
    build
        .current_dir(crate::repo())
        .env("RUSTFLAGS", &rustflags)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .args(["--package", "clone-controller", "--bin", "clone-controller"]);
    // `cargo run` gives xtask the variables of its own package (CARGO_MANIFEST_DIR, ...). Build
    // scripts that watch them (ring's does) would see a change against the same command typed
    // in a shell, and the two would rebuild each other's dependencies every time.
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if CARGO_RUN_VARIABLES
            .iter()
            .any(|prefix| name_text.starts_with(prefix))
        {
            build.env_remove(&name);
        }
    }
    run_shown(&mut build, "cargo build --release (clone-controller)")?;
    let binary = crate::target_dir()
        .join(TARGET)
        .join("release")
        .join("clone-controller");
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    if let Some(interpreter) = elf_interpreter(&bytes)? {
        bail!(
            "{} is dynamically linked (it needs the ELF interpreter {interpreter}), but the image \
             has no C library: build with RUSTFLAGS='{STATIC_RUSTFLAGS}' and --target {TARGET}",
            binary.display()
        );
    }
    progress.say(&format!(
        "built {} ({:.1} MB, static) in {:.0}s",
        binary.display(),
        bytes.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));
    Ok(binary)
}

/// The program interpreter (`PT_INTERP`) an ELF64 little-endian executable names, if any: a
/// dynamically linked executable names one (`/lib64/ld-linux-x86-64.so.2`), a static one none.
fn elf_interpreter(elf: &[u8]) -> Result<Option<String>> {
    const PT_INTERP: u32 = 3;
    ensure!(
        elf.len() >= 64 && elf[..4] == *b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "not an ELF64 little-endian executable"
    );
    let u16_at = |at: usize| -> Result<u16> {
        let bytes = elf.get(at..at + 2).context("truncated ELF header")?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    };
    let u32_at = |at: usize| -> Result<u32> {
        let bytes = elf.get(at..at + 4).context("truncated ELF header")?;
        Ok(u32::from_le_bytes(bytes.try_into()?))
    };
    let u64_at = |at: usize| -> Result<usize> {
        let bytes = elf.get(at..at + 8).context("truncated ELF header")?;
        Ok(usize::try_from(u64::from_le_bytes(bytes.try_into()?))?)
    };
    let (table, entry_size, entries) = (u64_at(0x20)?, usize::from(u16_at(0x36)?), u16_at(0x38)?);
    for i in 0..usize::from(entries) {
        let header = table + i * entry_size;
        if u32_at(header)? != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(header + 0x08)?, u64_at(header + 0x20)?);
        let name = elf
            .get(offset..offset + size)
            .context("PT_INTERP points outside the file")?;
        let name = String::from_utf8_lossy(name);
        return Ok(Some(name.trim_end_matches('\0').to_owned()));
    }
    Ok(None)
}

fn build_image(progress: Progress, binary: &Path) -> Result<()> {
    let repo = crate::repo();
    // The Containerfile copies target/<TARGET>/release/clone-controller from the build context,
    // and .dockerignore keeps the context to that file. With CARGO_TARGET_DIR elsewhere, a
    // context of the executable alone stands in for the repository.
    let relative = Path::new("target")
        .join(TARGET)
        .join("release")
        .join("clone-controller");
    let staged;
    let context = if binary == repo.join(&relative) {
        repo.clone()
    } else {
        staged = tempfile::tempdir().context("creating a build context")?;
        let at = staged.path().join(&relative);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(binary, &at).with_context(|| format!("copying {}", binary.display()))?;
        staged.path().to_owned()
    };
    let version = env!("CARGO_PKG_VERSION");
    progress.say(&format!(
        "buildah build -f Containerfile -t {IMAGE}:{LATEST} -t {IMAGE}:{version}"
    ));
    let started = Instant::now();
    run_shown(
        Command::new("buildah")
            .arg("build")
            .arg("--file")
            .arg(repo.join("Containerfile"))
            .args(["--tag", &format!("{IMAGE}:{LATEST}")])
            .args(["--tag", &format!("{IMAGE}:{version}")])
            .args(["--build-arg", &format!("REVISION={}", revision())])
            .arg(&context),
        "buildah build",
    )?;
    progress.say(&format!(
        "image built in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The commit of the working tree (`-dirty` with uncommitted changes), or `unknown`.
fn revision() -> String {
    let git = |args: &[&str]| {
        output(
            Command::new("git").current_dir(crate::repo()).args(args),
            "git",
        )
    };
    match git(&["rev-parse", "HEAD"]) {
        Ok(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_ok_and(|s| !s.trim().is_empty());
            format!("{}{}", commit.trim(), if dirty { "-dirty" } else { "" })
        }
        Err(_) => "unknown".to_owned(),
    }
}

/// What the image must be: (what, where it is in `podman image inspect`, expected value, the fix).
fn expectations() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    let label =
        |name: &'static str, value: &str, fix: &'static str| (name, name, json!(value), fix);
    vec![
        (
            "entrypoint",
            "/Config/Entrypoint",
            json!([ENTRYPOINT]),
            "ENTRYPOINT in Containerfile",
        ),
        (
            "command",
            "/Config/Cmd",
            Value::Null,
            "remove CMD from Containerfile",
        ),
        ("user", "/Config/User", json!(USER), "USER in Containerfile"),
        ("OS", "/Os", json!("linux"), "build on Linux"),
        (
            "architecture",
            "/Architecture",
            json!("amd64"),
            "build for x86_64",
        ),
        label(
            "org.opencontainers.image.title",
            TITLE,
            "the LABEL in Containerfile",
        ),
        label(
            "org.opencontainers.image.version",
            env!("CARGO_PKG_VERSION"),
            "ARG VERSION in Containerfile must be the workspace version of Cargo.toml",
        ),
        label(
            "org.opencontainers.image.source",
            env!("CARGO_PKG_REPOSITORY"),
            "the LABEL in Containerfile must be the workspace repository of Cargo.toml",
        ),
        label(
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE"),
            "the LABEL in Containerfile must be the workspace license of Cargo.toml",
        ),
    ]
}

/// Every way the image (one element of `podman image inspect`) differs from what it must be.
fn mismatches(inspected: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    for (what, at, expected, fix) in expectations() {
        let actual = if at.starts_with('/') {
            inspected.pointer(at).cloned().unwrap_or(Value::Null)
        } else {
            inspected
                .pointer("/Config/Labels")
                .and_then(|labels| labels.get(at))
                .cloned()
                .unwrap_or(Value::Null)
        };
        // podman shows an absent command as null or as an empty list.
        let absent = |v: &Value| v.is_null() || v.as_array().is_some_and(Vec::is_empty);
        if actual != expected && !(absent(&actual) && absent(&expected)) {
            wrong.push(format!("{what} is {actual}, expected {expected} ({fix})"));
        }
    }
    let revision = inspected
        .pointer("/Config/Labels/org.opencontainers.image.revision")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if revision.is_empty() {
        wrong.push(
            "the label org.opencontainers.image.revision is missing (ARG REVISION and its LABEL \
             in Containerfile)"
                .to_owned(),
        );
    }
    let layers = inspected
        .pointer("/RootFS/Layers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if layers != 1 {
        wrong.push(format!(
            "the image has {layers} layers, expected 1: the executable alone on `FROM scratch`"
        ));
    }
    wrong
}

fn check_image(image: &str) -> Result<()> {
    let inspected = output(
        Command::new("podman").args(["image", "inspect", image]),
        &format!("podman image inspect {image}"),
    )
    .with_context(|| {
        format!("no image {image} in local storage: run `cargo xtask image` without --check")
    })?;
    let inspected: Value = serde_json::from_str(&inspected).context("reading podman's JSON")?;
    let inspected = inspected
        .get(0)
        .context("podman image inspect printed no image")?;
    let wrong = mismatches(inspected);
    ensure!(
        wrong.is_empty(),
        "the image {image} is not as it must be:\n  - {}",
        wrong.join("\n  - ")
    );
    let version = output(
        Command::new("podman")
            .args(["run", "--rm"])
            .args(PODMAN_RUN_FLAGS)
            .args(PODMAN_HARDENING)
            .args(["--network", "none", image, "--version"]),
        &format!("podman run {image} --version"),
    )?;
    let expected = format!("clone-controller {}", env!("CARGO_PKG_VERSION"));
    ensure!(
        version.trim() == expected,
        "`podman run {image} --version` printed {:?}, expected {expected:?}",
        version.trim()
    );
    Ok(())
}

fn write_archive(progress: Progress, image: &str, file: &Path) -> Result<()> {
    progress.say(&format!("writing {image} to {}", file.display()));
    if file.exists() {
        std::fs::remove_file(file).with_context(|| format!("replacing {}", file.display()))?;
    }
    let destination = format!("docker-archive:{}:{image}", file.display());
    output(
        Command::new("buildah").args(["push", "--quiet", image, &destination]),
        &format!("buildah push {image} {destination}"),
    )?;
    progress.say(&format!(
        "wrote {} (load it with `docker load -i`, `podman load -i` or `kind load image-archive`)",
        file.display()
    ));
    Ok(())
}

/// A container started by the smoke test, removed when dropped.
#[derive(Debug)]
struct Container {
    name: String,
}

impl Container {
    fn podman(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new("podman");
        command.args(args);
        output(&mut command, &format!("podman {}", args.join(" ")))
    }

    /// `running`, `exited`, ...
    fn state(&self) -> Result<String> {
        Ok(self
            .podman(&[
                "container",
                "inspect",
                "--format",
                "{{.State.Status}}",
                &self.name,
            ])?
            .trim()
            .to_owned())
    }

    /// Fails when the container is not running (the caller shows its log).
    fn alive(&self) -> Result<()> {
        let state = self.state()?;
        ensure!(state == "running", "the container {} is {state}", self.name);
        Ok(())
    }

    fn log_tail(&self) -> String {
        let out = Command::new("podman")
            .args(["logs", "--tail", "40", &self.name])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(podman logs failed: {e})"),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let removed = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status();
        if !removed.is_ok_and(|s| s.success()) {
            eprintln!(
                "could not remove the container {}: run `podman rm -f {}`",
                self.name, self.name
            );
        }
    }
}

/// Removes smoke-test containers whose xtask is gone (killed before it could remove them).
fn remove_stale_containers() -> Result<()> {
    let listed = output(
        Command::new("podman").args([
            "ps",
            "--all",
            "--filter",
            &format!("label={OWNER_LABEL}"),
            "--format",
            &format!("{{{{.Names}}}} {{{{index .Labels \"{OWNER_LABEL}\"}}}}"),
        ]),
        "podman ps",
    )?;
    for line in listed.lines() {
        let Some((name, owner)) = line.split_once(' ') else {
            continue;
        };
        if !Path::new("/proc").join(owner.trim()).exists() {
            drop(Container {
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// A free port on 127.0.0.1 (the container shares the host's network).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// The container of the rendered Deployment: its args and its environment, with the downward
/// API's fields filled in as the kubelet would for a pod named `pod`.
fn deployment_args_and_env(deployment: &Value, pod: &str) -> Result<(Vec<String>, Vec<String>)> {
    let container = deployment
        .pointer("/spec/template/spec/containers/0")
        .context("the Deployment has no container")?;
    let image = container["image"].as_str().unwrap_or_default();
    ensure!(
        image == format!("{IMAGE}:{LATEST}"),
        "the Deployment runs {image:?}, but this command builds {IMAGE}:{LATEST}: change one of \
         them (manifests/deployment.yaml or IMAGE in xtask/src/image.rs)"
    );
    let args = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let mut env = Vec::new();
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap_or_default();
        let value = match (
            variable["value"].as_str(),
            variable
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str),
        ) {
            (Some(value), _) => value.to_owned(),
            (None, Some("metadata.name")) => pod.to_owned(),
            (None, Some("metadata.namespace")) => SYSTEM_NS.to_owned(),
            (None, other) => bail!(
                "the Deployment's variable {name} comes from {other:?}, which this smoke test \
                 cannot fill in: teach deployment_args_and_env in xtask/src/image.rs"
            ),
        };
        env.push(format!("{name}={value}"));
    }
    Ok((args, env))
}

async fn kubectl(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> Result<String> {
    Ok(env.kubectl_output(args, stdin).await?.ok()?.stdout)
}

async fn smoke(progress: Progress, image: &str) -> Result<()> {
    let repo = crate::repo();
    let manifests = repo.join("manifests");
    let path = |relative: &str| manifests.join(relative).display().to_string();
    remove_stale_containers()?;

    progress.say(
        "starting a testbed: etcd, kube-apiserver and kube-controller-manager with the KubeVirt \
         stand-in (building them on first use takes minutes)",
    );
    let env = TestEnv::start_with_options(testenv::Options::default())
        .await
        .context("starting the testbed")?;
    let client = env.client().await?;
    crate::demo::install_stand_in(&client).await?;
    let sim = kubevirt_sim::Sim::start(client.clone(), kubevirt_sim::SimConfig::default()).await?;
    progress.say(&format!("testbed up at {}", env.apiserver_url()));

    progress.say(
        "applying manifests/standalone/ (the CRD), the namespace, ServiceAccount, RBAC and \
         policies of manifests/, and manifests/kubevirt/ (upstream's clone controller off)",
    );
    kubectl(&env, &["apply", "-k", &path("standalone")], None).await?;
    let rendered = kubectl(&env, &["kustomize", &path("")], None).await?;
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&rendered).context("reading kubectl kustomize's output")?;
    let kind = |d: &Value| d["kind"].as_str().unwrap_or_default().to_owned();
    let applied: Vec<Value> = documents
        .iter()
        .filter(|d| APPLIED_KINDS.contains(&kind(d).as_str()))
        .cloned()
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": applied});
    kubectl(&env, &["apply", "-f", "-"], Some(&list.to_string())).await?;
    kubectl(
        &env,
        &[
            "patch",
            "kubevirt",
            testenv::KUBEVIRT_NAME,
            "-n",
            testenv::KUBEVIRT_NAMESPACE,
            "--type",
            "merge",
            "--patch-file",
            &path("kubevirt/clone-controller-off.yaml"),
        ],
        None,
    )
    .await?;
    let deployment = documents
        .iter()
        .find(|d| kind(d) == "Deployment")
        .context("manifests/ renders no Deployment")?;

    let dir = tempfile::tempdir().context("creating a folder for the kubeconfig")?;
    let kubeconfig = dir.path().join("kubeconfig");
    env.write_service_account_kubeconfig(SYSTEM_NS, SERVICE_ACCOUNT, &kubeconfig)
        .await?;
    progress.say(&format!(
        "wrote a kubeconfig with a token of {SYSTEM_NS}/{SERVICE_ACCOUNT} (TokenRequest)"
    ));

    let name = format!("vmclone-image-smoke-{}", std::process::id());
    let (deployed_args, variables) = deployment_args_and_env(deployment, &name)?;
    let (metrics, health) = (free_port()?, free_port()?);
    let mut args: Vec<String> = deployed_args
        .into_iter()
        .filter(|a| !a.starts_with("--metrics-addr") && !a.starts_with("--health-addr"))
        .collect();
    args.push(format!("--metrics-addr=127.0.0.1:{metrics}"));
    args.push(format!("--health-addr=127.0.0.1:{health}"));
    args.push(format!("--kubeconfig={KUBECONFIG_IN_CONTAINER}"));
    let mut run = Command::new("podman");
    run.args(["run", "--detach", "--name", &name])
        .args(["--label", &format!("{OWNER_LABEL}={}", std::process::id())])
        .args(PODMAN_RUN_FLAGS)
        .args(PODMAN_HARDENING)
        .args(["--network", "host"])
        .arg("--volume")
        .arg(format!(
            "{}:{KUBECONFIG_IN_CONTAINER}:ro",
            kubeconfig.display()
        ));
    for variable in &variables {
        run.args(["--env", variable]);
    }
    run.arg(image).args(&args);
    progress.say(&format!(
        "podman run {name}: {image} {} (host network, read-only, no capabilities)",
        args.join(" ")
    ));
    // From here on the container is removed however this function ends.
    let container = Container { name: name.clone() };
    output(&mut run, "podman run")?;

    let result = drive(progress, &env, &client, &container, metrics, health).await;
    let result = result.with_context(|| {
        format!(
            "the image's smoke test failed; the container's log ends:\n{}",
            container.log_tail()
        )
    });
    drop(container);
    sim.stop().await;
    drop(env);
    result
}

/// From a started container to a clone `Succeeded` and a clean stop.
async fn drive(
    progress: Progress,
    env: &TestEnv,
    client: &kube::Client,
    container: &Container,
    metrics: u16,
    health: u16,
) -> Result<()> {
    use bench::live::http_get;

    let started = Instant::now();
    wait_for(
        "the container's /readyz to answer 200",
        READY_TIMEOUT,
        || async {
            if let Err(e) = container.alive() {
                return Ok(Err(e));
            }
            let (code, body) = http_get(health, "/readyz").await?;
            ensure!(code == 200, "{code} {}", body.trim());
            Ok(Ok(()))
        },
    )
    .await??;
    progress.say(&format!(
        "the controller in the container is ready (caches synced) after {:.1}s",
        started.elapsed().as_secs_f64()
    ));

    progress.say("creating the source VM vm-cirros and manifests/examples/clone.yaml");
    kubectl(
        env,
        &["apply", "--server-side", "-f", "-"],
        Some(&kubevirt_sim::examples::source_vm()),
    )
    .await?;
    let clone_yaml = crate::repo().join("manifests/examples/clone.yaml");
    kubectl(
        env,
        &["create", "-f", &clone_yaml.display().to_string()],
        None,
    )
    .await?;
    let clones: Api<VirtualMachineClone> = Api::namespaced(client.clone(), "default");
    let seen = Mutex::new(Vec::<ClonePhase>::new());
    let clone_started = Instant::now();
    let done = wait_for(
        &format!(
            "testclone to be Succeeded (timeout {}s)",
            CLONE_TIMEOUT.as_secs()
        ),
        CLONE_TIMEOUT,
        || async {
            if let Err(e) = container.alive() {
                return Ok(Err(e));
            }
            let clone = clones.get("testclone").await?;
            let status = clone.status.clone().unwrap_or_default();
            {
                let mut seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                if seen.last() != Some(&status.phase) {
                    seen.push(status.phase);
                    progress.say(&format!("testclone: phase {:?}", status.phase.as_str()));
                }
            }
            match status.phase {
                ClonePhase::Succeeded => Ok(Ok(status)),
                ClonePhase::Failed => Ok(Err(anyhow::anyhow!(
                    "testclone failed: {}",
                    serde_json::to_string(&status).unwrap_or_default()
                ))),
                _ => Err(anyhow::anyhow!(
                    "phase {:?}; status {}",
                    status.phase.as_str(),
                    serde_json::to_string(&status).unwrap_or_default()
                )),
            }
        },
    )
    .await??;
    let target = done.target_name.unwrap_or_default();
    ensure!(
        target == "vm-clone-target",
        "testclone names the target {target:?}, expected vm-clone-target"
    );
    kubectl(env, &["get", "vm", "vm-clone-target", "-o", "name"], None)
        .await
        .context("the target VM vm-clone-target")?;
    progress.say(&format!(
        "testclone Succeeded in {:.1}s; vm-clone-target exists",
        clone_started.elapsed().as_secs_f64()
    ));

    let (code, body) = http_get(metrics, "/metrics").await?;
    ensure!(
        code == 200 && body.contains("vmclone_clones"),
        "/metrics answered {code}: {}",
        body.lines().take(5).collect::<Vec<_>>().join("\n")
    );

    progress.say(&format!(
        "podman stop --time {STOP_TIMEOUT_SECONDS} (SIGTERM, as the kubelet stops a pod)"
    ));
    let stop = STOP_TIMEOUT_SECONDS.to_string();
    container.podman(&["stop", "--time", &stop, &container.name])?;
    let code = container.podman(&[
        "container",
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &container.name,
    ])?;
    ensure!(
        code.trim() == "0",
        "the controller exited with status {} after SIGTERM, expected 0",
        code.trim()
    );
    progress.say(&format!(
        "the image ran as {SYSTEM_NS}/{SERVICE_ACCOUNT}, cloned vm-cirros into vm-clone-target \
         and stopped cleanly (smoke test {:.1}s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `podman image inspect` shows for an image built as the Containerfile says.
    fn good() -> Value {
        json!({
            "Os": "linux",
            "Architecture": "amd64",
            "Config": {
                "User": USER,
                "Entrypoint": [ENTRYPOINT],
                "Labels": {
                    "org.opencontainers.image.title": TITLE,
                    "org.opencontainers.image.version": env!("CARGO_PKG_VERSION"),
                    "org.opencontainers.image.source": env!("CARGO_PKG_REPOSITORY"),
                    "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
                    "org.opencontainers.image.revision": "abc",
                },
            },
            "RootFS": {"Layers": ["sha256:1"]},
        })
    }

    #[test]
    fn a_good_image_has_no_mismatches() {
        assert_eq!(mismatches(&good()), Vec::<String>::new());
        let mut empty_cmd = good();
        empty_cmd["Config"]["Cmd"] = json!([]);
        assert_eq!(mismatches(&empty_cmd), Vec::<String>::new());
    }

    #[test]
    fn every_mismatch_is_named_with_its_fix() {
        let mut bad = good();
        bad["Config"]["User"] = json!("0");
        bad["Config"]["Entrypoint"] = json!(["/bin/sh"]);
        bad["Config"]["Labels"]["org.opencontainers.image.version"] = json!("9.9.9");
        bad["Config"]["Labels"]
            .as_object_mut()
            .unwrap()
            .remove("org.opencontainers.image.licenses");
        bad["RootFS"]["Layers"] = json!(["a", "b"]);
        let wrong = mismatches(&bad);
        assert_eq!(wrong.len(), 5, "{wrong:#?}");
        assert!(
            wrong[0].starts_with("entrypoint is [\"/bin/sh\"]"),
            "{wrong:#?}"
        );
        assert!(
            wrong[1].contains("user is \"0\", expected \"65532:65532\" (USER in Containerfile)")
        );
        assert!(wrong[2].contains("version is \"9.9.9\"") && wrong[2].contains("ARG VERSION"));
        assert!(wrong[3].contains("licenses is null"));
        assert!(wrong[4].contains("2 layers"));
    }

    /// The Containerfile says what the checks expect, so a plain `buildah build` gives the same
    /// image as `cargo xtask image`.
    #[test]
    fn the_containerfile_matches_the_checks() {
        let text = std::fs::read_to_string(crate::repo().join("Containerfile")).unwrap();
        for line in [
            "FROM scratch".to_owned(),
            format!("ARG VERSION={}", env!("CARGO_PKG_VERSION")),
            format!("USER {USER}"),
            format!("ENTRYPOINT [\"{ENTRYPOINT}\"]"),
            format!("COPY target/{TARGET}/release/clone-controller {ENTRYPOINT}"),
        ] {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "Containerfile lacks the line {line:?}"
            );
        }
        for (label, value) in [
            ("org.opencontainers.image.title", TITLE),
            (
                "org.opencontainers.image.source",
                env!("CARGO_PKG_REPOSITORY"),
            ),
            (
                "org.opencontainers.image.licenses",
                env!("CARGO_PKG_LICENSE"),
            ),
        ] {
            assert!(
                text.contains(&format!("{label}=\"{value}\"")),
                "Containerfile lacks {label}=\"{value}\""
            );
        }
        let ignore = std::fs::read_to_string(crate::repo().join(".dockerignore")).unwrap();
        assert!(
            ignore
                .lines()
                .any(|l| l == format!("!target/{TARGET}/release/clone-controller")),
            ".dockerignore must let the executable into the build context"
        );
    }

    #[test]
    fn the_interpreter_of_a_dynamic_executable_is_found_and_a_static_one_has_none() {
        // This test binary is dynamically linked (the host target without crt-static).
        let this = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interpreter = elf_interpreter(&this).unwrap();
        assert!(
            interpreter
                .as_deref()
                .is_some_and(|i| i.contains("ld-linux")),
            "{interpreter:?}"
        );
        // Without the PT_INTERP entry: the same headers, its type changed to PT_NULL.
        let mut stripped = this.clone();
        let table =
            usize::try_from(u64::from_le_bytes(this[0x20..0x28].try_into().unwrap())).unwrap();
        let size = usize::from(u16::from_le_bytes([this[0x36], this[0x37]]));
        let count = usize::from(u16::from_le_bytes([this[0x38], this[0x39]]));
        for i in 0..count {
            let at = table + i * size;
            if stripped[at..at + 4] == 3u32.to_le_bytes() {
                stripped[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            }
        }
        assert_eq!(elf_interpreter(&stripped).unwrap(), None);
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn the_deployment_gives_its_flags_and_environment() {
        let deployment = json!({"spec": {"template": {"spec": {"containers": [{
            "image": format!("{IMAGE}:{LATEST}"),
            "args": ["--leader-elect", "--log-format=json"],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "RUST_LOG", "value": "info"},
            ],
        }]}}}});
        let (args, env) = deployment_args_and_env(&deployment, "pod-1").unwrap();
        assert_eq!(args, ["--leader-elect", "--log-format=json"]);
        assert_eq!(
            env,
            [
                "POD_NAME=pod-1",
                "POD_NAMESPACE=vmclone-system",
                "RUST_LOG=info"
            ]
        );
        let mut other = deployment.clone();
        other["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example.com/x:1");
        let err = deployment_args_and_env(&other, "p")
            .unwrap_err()
            .to_string();
        assert!(err.contains("example.com/x:1"), "{err}");
        let mut unknown = deployment;
        unknown["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] =
            json!("spec.nodeName");
        let err = deployment_args_and_env(&unknown, "p")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("POD_NAME") && err.contains("spec.nodeName"),
            "{err}"
        );
    }
}
