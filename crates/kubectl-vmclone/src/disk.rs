//! `disk`: clone one VM disk (a PVC) into a new DataVolume, in this or another namespace — the
//! OpenShift chapter's 7.13.2 (Filesystem) and 7.13.4 (Block) without writing the manifest.
//!
//! Nothing is created until the checks pass that the clone controller's DataVolume strategy makes,
//! all from `clone-core`: across namespaces, whether the current user may clone from the source
//! namespace (CDI's rule — `create` on `datavolumes/source`, else on `pods` — asked with
//! `SelfSubjectAccessReview`s); the requested claim against the source claim (volume mode and
//! size, in CDI's words); no running VM of the source namespace uses the claim. Then the
//! DataVolume is created and, with `--wait`, followed with **one** watch: a bar redrawn in place
//! on a terminal, a timestamped line per change otherwise.
//!
//! Exit statuses, as a kubectl user reads them:
//! - 0: created (with `--wait`: `Succeeded`, or waiting for its first consumer);
//! - 1: the cluster refuses or failed it — the user lacks the permission across namespaces
//!   (kubectl exits 1 on `Forbidden` too: the command is right, the RBAC is missing), a running
//!   VM uses the disk, the source is missing, the DataVolume exists, CDI failed it;
//! - 2: the flags are malformed or contradict the source (a smaller size, another volume mode):
//!   the same command can never work;
//! - 3: `--wait` timed out (the clone keeps going); 130: Ctrl-C.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clone_api::kubevirt::{DataVolume, DataVolumeStatus, VirtualMachine};
use clone_api::validation;
use clone_core::datavolume::{self, ClaimOverrides};
use clone_core::quantity;
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::cli::{DiskArgs, Global};
use crate::run::{VolumeView, bar};
use crate::{Exit, UsageError, client, create};

/// Checks, creates and with `--wait` follows the DataVolume.
pub async fn command(global: &Global, args: &DiskArgs) -> anyhow::Result<Exit> {
    let overrides = overrides(args)?;
    let (client, namespace) = client::connect(global).await?;
    let source_namespace = args
        .source_namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| namespace.clone());
    let claim = args.source_pvc.as_str();

    // First, so that a user who may not even read the source namespace hears why.
    if source_namespace != namespace
        && let Some(message) = refused_access(&client, &source_namespace, claim).await?
    {
        return Ok(refuse(
            &message,
            &format!(
                "the OpenShift chapter's RBAC allows it: a ClusterRole granting \"*\" on {}/datavolumes/source, bound to you by a RoleBinding in namespace {source_namespace}",
                clone_api::names::CDI_GROUP
            ),
        ));
    }

    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &source_namespace)
        .get_opt(claim)
        .await
        .with_context(|| format!("reading source PVC {source_namespace}/{claim}"))?;
    let Some(pvc) = pvc else {
        return Ok(refuse(
            &format!("source PVC {source_namespace}/{claim} not found"),
            "",
        ));
    };
    let manifest = datavolume::clone_data_volume(
        &args.name,
        &namespace,
        &source_namespace,
        claim,
        &pvc,
        &overrides,
    );
    let problems = datavolume::check_clone(&pvc, &manifest["spec"]);
    if !problems.is_empty() {
        return Err(UsageError(problems.join("; ")).into());
    }
    if manifest
        .pointer("/spec/pvc/resources/requests/storage")
        .is_none()
    {
        return Err(UsageError(format!(
            "source PVC {source_namespace}/{claim} requests no storage size: give the DataVolume's with --size"
        ))
        .into());
    }
    if let Some(message) = in_use(&client, &source_namespace, claim).await? {
        return Ok(refuse(&message, ""));
    }

    if args.dry_run {
        print!("{}", create::render(&manifest, args.output)?);
        return Ok(Exit::Success);
    }
    let data_volume: DataVolume =
        serde_json::from_value(manifest).context("building the DataVolume")?;
    let api = Api::<DataVolume>::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &data_volume).await {
        Ok(_) => {}
        // Malformed (e.g. the name): the same command can never work.
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 422) => {
            return Err(UsageError(status.message.clone()).into());
        }
        Err(kube::Error::Api(status)) if status.code < 500 => {
            return Ok(refuse(&status.message, ""));
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("creating DataVolume {namespace}/{}", args.name));
        }
    }
    println!("datavolume.cdi.kubevirt.io/{} created", args.name);
    if !args.wait {
        return Ok(Exit::Success);
    }
    let display = Display::new(std::io::stdout().is_terminal(), &args.name);
    follow(client, &namespace, &args.name, args.timeout, display).await
}

/// Prints `error: <message>` (and a hint) and returns exit status 1.
fn refuse(message: &str, hint: &str) -> Exit {
    eprintln!("error: {message}");
    if !hint.is_empty() {
        eprintln!("hint: {hint}");
    }
    Exit::Failed
}

/// What the flags change from the source claim, checked as far as they can be alone.
fn overrides(args: &DiskArgs) -> Result<ClaimOverrides, UsageError> {
    if args.source_pvc.is_empty() {
        return Err(UsageError("--source-pvc must not be empty".to_owned()));
    }
    if args.name.is_empty() {
        return Err(UsageError("--name must not be empty".to_owned()));
    }
    if let Some(size) = &args.size
        && quantity::bytes(size).is_none_or(|bytes| bytes <= 0.0)
    {
        return Err(UsageError(format!(
            "invalid argument {size:?} for \"--size\" flag: expected a storage size such as 2Gi"
        )));
    }
    if let Some(mode) = &args.volume_mode
        && !matches!(mode.as_str(), "Filesystem" | "Block")
    {
        return Err(UsageError(format!(
            "invalid argument {mode:?} for \"--volume-mode\" flag: must be Filesystem or Block"
        )));
    }
    if args.storage_class.as_deref() == Some("") {
        return Err(UsageError("--storage-class must not be empty".to_owned()));
    }
    Ok(ClaimOverrides {
        size: args.size.clone(),
        storage_class: args.storage_class.clone(),
        volume_mode: args.volume_mode.clone(),
    })
}

/// Whether the current user may clone `claim` out of `source_namespace`, as CDI decides it
/// ([`datavolume::clone_source_access`]); the chapter's message when not.
async fn refused_access(
    client: &Client,
    source_namespace: &str,
    claim: &str,
) -> anyhow::Result<Option<String>> {
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    for check in datavolume::clone_source_access(claim) {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(source_namespace.to_owned()),
                    verb: Some(check.verb.to_owned()),
                    group: Some(check.group.to_owned()),
                    resource: Some(check.resource.to_owned()),
                    subresource: (!check.subresource.is_empty())
                        .then(|| check.subresource.to_owned()),
                    name: (!check.name.is_empty()).then(|| check.name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .with_context(|| {
                format!("asking whether you may clone from namespace {source_namespace}")
            })?;
        if answer.status.is_some_and(|s| s.allowed) {
            return Ok(None);
        }
    }
    Ok(Some(match current_user(client).await {
        Some(user) => validation::insufficient_clone_permissions(&user, source_namespace),
        None => format!(
            "you have insufficient permissions in clone source namespace {source_namespace}"
        ),
    }))
}

/// The current user's name, as the API server knows it (a `SelfSubjectReview`); `None` when it
/// will not say.
async fn current_user(client: &Client) -> Option<String> {
    Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?
        .status?
        .user_info?
        .username
        .filter(|name| !name.is_empty())
}

/// Why the claim cannot be cloned now: a running VM of its namespace uses it
/// ([`datavolume::claim_in_use`]). A user who may not list the namespace's VMs is warned and
/// goes on (CDI itself waits while the disk is in use); a cluster without KubeVirt has no VMs.
async fn in_use(client: &Client, namespace: &str, claim: &str) -> anyhow::Result<Option<String>> {
    let api = Api::<VirtualMachine>::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(datavolume::claim_in_use(namespace, claim, &list.items)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            eprintln!(
                "warning: not checking that no running VM uses PVC {namespace}/{claim}: {} (CDI waits while one does)",
                status.message
            );
            Ok(None)
        }
        Err(error) => {
            Err(error).with_context(|| format!("listing the VirtualMachines of {namespace}"))
        }
    }
}

/// Where a DataVolume stands for `--wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Still on its way.
    Going,
    /// Done ([`datavolume::DONE_PHASES`]), with its phase.
    Done(String),
    /// Failed, with CDI's message.
    Failed(String),
}

fn outcome(status: &DataVolumeStatus) -> Outcome {
    match status.phase.as_deref() {
        Some(phase) if datavolume::DONE_PHASES.contains(&phase) => Outcome::Done(phase.to_owned()),
        Some("Failed") => Outcome::Failed(datavolume::failure_message(status)),
        _ => Outcome::Going,
    }
}

/// Follows the DataVolume with one watch (its name as field selector) until it is done, fails,
/// is deleted, the timeout passes, or Ctrl-C.
async fn follow(
    client: Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    mut display: Display,
) -> anyhow::Result<Exit> {
    let api = Api::<DataVolume>::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let deadline = Instant::now() + timeout;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let gone = || format!("DataVolume {namespace}/{name} was deleted");
    // Whether the current (re)list has shown the DataVolume.
    let mut listed = false;
    let mut status = DataVolumeStatus::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep(left) => {
                display.finish();
                eprintln!(
                    "timed out after {}s waiting for DataVolume {namespace}/{name} ({}); it keeps going (kubectl get datavolume {name} -n {namespace})",
                    timeout.as_secs(),
                    describe(&status)
                );
                return Ok(Exit::TimedOut);
            }
            _ = &mut ctrl_c => {
                display.finish();
                eprintln!(
                    "stopped watching; the clone keeps going (kubectl get datavolume {name} -n {namespace})"
                );
                return Ok(Exit::Interrupted);
            }
        };
        let data_volume = match event {
            None => anyhow::bail!("the watch of DataVolume {namespace}/{name} ended"),
            Some(Err(
                watcher::Error::InitialListFailed(kube::Error::Api(refused))
                | watcher::Error::WatchStartFailed(kube::Error::Api(refused)),
            )) if refused.code == 403 => {
                display.finish();
                anyhow::bail!(
                    "cannot watch DataVolume {namespace}/{name}: {}",
                    refused.message
                );
            }
            Some(Err(error)) => {
                display.note(&format!("watch error (retrying): {error}"));
                continue;
            }
            Some(Ok(watcher::Event::Init)) => {
                listed = false;
                continue;
            }
            Some(Ok(watcher::Event::InitDone)) if !listed => {
                display.finish();
                return Ok(refuse(&gone(), ""));
            }
            Some(Ok(watcher::Event::InitDone)) => continue,
            Some(Ok(watcher::Event::Delete(_))) => {
                display.finish();
                return Ok(refuse(&gone(), ""));
            }
            Some(Ok(watcher::Event::Apply(dv) | watcher::Event::InitApply(dv))) => {
                listed = true;
                dv
            }
        };
        status = data_volume.status.unwrap_or_default();
        display.show(&status);
        match outcome(&status) {
            Outcome::Going => {}
            Outcome::Done(phase) => {
                display.finish();
                let note = if phase == "Succeeded" {
                    ""
                } else {
                    " (its claim binds when the first VM that uses it starts)"
                };
                println!("datavolume.cdi.kubevirt.io/{name} {phase}{note}");
                return Ok(Exit::Success);
            }
            Outcome::Failed(message) => {
                display.finish();
                return Ok(refuse(
                    &format!("DataVolume {namespace}/{name} failed: {message}"),
                    "",
                ));
            }
        }
    }
}

/// `phase CloneInProgress, 45.00%`.
fn describe(status: &DataVolumeStatus) -> String {
    let phase = status.phase.as_deref().unwrap_or("Pending");
    match progress(status) {
        Some(progress) => format!("phase {phase}, {progress}"),
        None => format!("phase {phase}"),
    }
}

/// CDI's progress text, when it has one (`N/A` is none).
fn progress(status: &DataVolumeStatus) -> Option<&str> {
    status
        .progress
        .as_deref()
        .filter(|p| !p.is_empty() && *p != "N/A")
}

/// The `--wait` display: one bar redrawn in place on a terminal, a timestamped line per change
/// otherwise.
#[derive(Debug)]
struct Display {
    terminal: bool,
    name: String,
    /// The phase and progress shown last.
    last: Option<(String, Option<String>)>,
    /// Whether the terminal's cursor sits after a bar.
    drawn: bool,
}

impl Display {
    fn new(terminal: bool, name: &str) -> Self {
        Display {
            terminal,
            name: name.to_owned(),
            last: None,
            drawn: false,
        }
    }

    fn show(&mut self, status: &DataVolumeStatus) {
        let phase = status
            .phase
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "Pending".to_owned());
        let shown = (phase.clone(), progress(status).map(str::to_owned));
        if self.last.as_ref() == Some(&shown) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.terminal {
            let view = VolumeView {
                name: self.name.clone(),
                phase,
                percent: shown
                    .1
                    .as_deref()
                    .and_then(|p| p.trim_end_matches('%').parse().ok()),
            };
            let _ = write!(out, "\r\x1b[K{}", bar(&self.name, &view));
            self.drawn = true;
        } else {
            let _ = writeln!(out, "{}", self.line(&shown.0, shown.1.as_deref()));
        }
        let _ = out.flush();
        self.last = Some(shown);
    }

    /// `2026-01-01T00:00:01Z datavolume/db-copy CloneInProgress 45.00%`
    fn line(&self, phase: &str, progress: Option<&str>) -> String {
        let stamp = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default();
        match progress {
            Some(progress) => format!("{stamp} datavolume/{} {phase} {progress}", self.name),
            None => format!("{stamp} datavolume/{} {phase}", self.name),
        }
    }

    fn note(&mut self, text: &str) {
        self.finish();
        eprintln!("{text}");
    }

    /// Ends the bar's line, if one is drawn.
    fn finish(&mut self) {
        if self.drawn {
            println!();
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> DiskArgs {
        DiskArgs {
            source_pvc: "disk".into(),
            source_namespace: None,
            name: "copy".into(),
            size: None,
            storage_class: None,
            volume_mode: None,
            wait: false,
            timeout: Duration::from_secs(600),
            dry_run: false,
            output: crate::cli::Output::Yaml,
        }
    }

    fn status(value: serde_json::Value) -> DataVolumeStatus {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn malformed_flags_are_usage_errors() {
        let mut a = args();
        a.size = Some("2Xi".into());
        assert!(overrides(&a).unwrap_err().0.contains("\"--size\" flag"));
        let mut a = args();
        a.volume_mode = Some("block".into());
        assert!(
            overrides(&a)
                .unwrap_err()
                .0
                .contains("must be Filesystem or Block")
        );
        let mut a = args();
        a.size = Some("3Gi".into());
        a.volume_mode = Some("Block".into());
        let o = overrides(&a).unwrap();
        assert_eq!(o.size.as_deref(), Some("3Gi"));
        assert_eq!(o.volume_mode.as_deref(), Some("Block"));
        assert_eq!(o.storage_class, None);
    }

    #[test]
    fn the_outcome_follows_cdis_phases() {
        assert_eq!(
            outcome(&status(
                json!({"phase": "CloneInProgress", "progress": "45.00%"})
            )),
            Outcome::Going
        );
        assert_eq!(outcome(&DataVolumeStatus::default()), Outcome::Going);
        assert_eq!(
            outcome(&status(json!({"phase": "Succeeded"}))),
            Outcome::Done("Succeeded".into())
        );
        assert_eq!(
            outcome(&status(json!({"phase": "WaitForFirstConsumer"}))),
            Outcome::Done("WaitForFirstConsumer".into())
        );
        let failed = status(json!({"phase": "Failed", "conditions": [{
            "type": "Running", "status": "False",
            "message": "source volumeMode (Block) and target volumeMode (Filesystem) do not match"}]}));
        assert_eq!(
            outcome(&failed),
            Outcome::Failed(
                "source volumeMode (Block) and target volumeMode (Filesystem) do not match".into()
            )
        );
    }

    #[test]
    fn a_line_shows_the_phase_and_cdis_progress() {
        let display = Display::new(false, "copy");
        let line = display.line("CloneInProgress", Some("45.00%"));
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(stamp.parse::<jiff::Timestamp>().is_ok(), "{line}");
        assert_eq!(rest, "datavolume/copy CloneInProgress 45.00%");
        assert_eq!(
            describe(&status(
                json!({"phase": "CloneScheduled", "progress": "N/A"})
            )),
            "phase CloneScheduled"
        );
    }
}
