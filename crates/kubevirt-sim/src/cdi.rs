//! CDI's DataVolume controller (`cdi.kubevirt.io/v1beta1`), as far as VM cloning needs it.
//!
//! A PVC clone (`spec.source.pvc`) waits in `CloneScheduled` with `CloneSourceInUse` while a
//! running VM mounts the source, checks volume mode and size (strict: the seed's messages and
//! phase `Failed`; lenient: today's CDI), creates the target PVC (named like the DataVolume,
//! owned by it), waits for it to bind (`WaitForFirstConsumer` on such classes until a consumer
//! starts), goes through `CloneInProgress` to `Succeeded` with progress `100.0%`. Other sources
//! (blank, http, registry, upload, ...) create and bind the PVC and succeed. A DataVolume marked
//! `prePopulated` (KubeVirt's restore), or allowed to adopt its claim, takes over an existing
//! PVC of its name.
//!
//! A slow clone: annotate the source PVC with
//! [`sim.vmclone.dev/clone-seconds: "N"`](names::CLONE_SECONDS_ANNOTATION) (a whole number of
//! seconds; anything else is logged and ignored) and each clone of it, once its target PVC is
//! bound, stays in `CloneInProgress` for about N seconds, its `status.progress` moving once a
//! second from `0.00%` in CDI's format (`"25.00%"`, `"50.00%"`, ...) before `Succeeded` with
//! `100.0%`. Progress counts from the copy's start, which the sim records on the DataVolume
//! ([`sim.vmclone.dev/clone-started`](names::CLONE_STARTED_ANNOTATION)), so a restarted sim
//! carries on where the clone was; the DataVolume is requeued for each step, nothing sleeps.
//! Without the annotation a clone passes through `CloneInProgress` at once.
//!
//! A sim scoped to one namespace (`SimConfig::namespace`) clones
//! from a source in another namespace too, reading it directly (no VMI there counts as using it).
//!
//! Simplified: no data moves and no pods run (host-assisted copy, CSI clone and smart clone
//! are one path); a PVC without a storage class in `spec.storage` gets none (the API server's
//! default class, if any, applies); access mode defaults to `ReadWriteOnce` and, for clones,
//! volume mode and size to the source's (no StorageProfiles); no clone tokens; the in-use event
//! names the VirtualMachineInstance that mounts the source rather than its virt-launcher pod.

use std::sync::Arc;
use std::time::Duration;

use clone_api::kubevirt::DataVolume;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt};
use serde_json::{Map, Value, json};
use tracing::warn;

use crate::conditions;
use crate::ctx::{Component, Ctx};
use crate::error::{Error, KubeContext};
use crate::meta::{self, annotation, controller_of, controller_ref};
use crate::names;
use crate::runtime::{ObjKey, Requeue};
use crate::snapshot::normalized;
use crate::storage::{consumed, waits_for_consumer};
use crate::units::parse_quantity;

/// How often a clone whose source is in use looks again (CDI: every 5 s).
const IN_USE_RETRY: Duration = Duration::from_secs(5);
/// How often a clone looks again for a missing source outside a scoped sim's namespace.
const OUTSIDE_SOURCE_RETRY: Duration = Duration::from_secs(2);
/// How often a slow clone's progress moves ([`names::CLONE_SECONDS_ANNOTATION`]).
const PROGRESS_TICK: Duration = Duration::from_secs(1);
/// The shortest wait for a slow clone's next step (no busy loop right at a tick).
const MIN_REQUEUE: Duration = Duration::from_millis(10);

/// The `Running` condition to write: status, message, reason.
struct Running<'a>(&'a str, &'a str, &'a str);

/// One pass over a DataVolume.
struct Pass<'a> {
    ctx: &'a Ctx,
    dv: &'a DataVolume,
    namespace: String,
    name: String,
}

impl Pass<'_> {
    async fn write(
        &self,
        phase: &str,
        progress: &str,
        pvc: Option<&PersistentVolumeClaim>,
        running: Running<'_>,
    ) -> Result<(), Error> {
        let current = self
            .dv
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let mut conditions: Vec<Value> = current
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (bound, bound_message, bound_reason) = match pvc
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
        {
            None if pvc.is_none() => ("False", "No PVC found".to_owned(), "NotFound"),
            Some("Bound") => ("True", format!("PVC {} Bound", self.name), "Bound"),
            _ => ("False", format!("PVC {} Pending", self.name), "Pending"),
        };
        let succeeded = phase == "Succeeded";
        let Running(running_status, running_message, running_reason) = running;
        // CDI writes Bound, Running and Ready, in this order, on a new DataVolume.
        conditions::set_cdi(
            &mut conditions,
            "Bound",
            bound,
            &bound_message,
            bound_reason,
        );
        conditions::set_cdi(
            &mut conditions,
            "Running",
            running_status,
            running_message,
            running_reason,
        );
        let ready_reason = if running_status == "True" {
            "TransferRunning"
        } else {
            ""
        };
        conditions::set_cdi(
            &mut conditions,
            "Ready",
            if succeeded { "True" } else { "False" },
            "",
            if succeeded { "" } else { ready_reason },
        );
        let mut status = current.clone();
        status["phase"] = json!(phase);
        status["progress"] = json!(progress);
        status["claimName"] = json!(self.name);
        status["conditions"] = json!(conditions);
        if normalized(&current) == normalized(&status) {
            return Ok(());
        }
        let api: Api<DataVolume> = self.ctx.api(&self.namespace);
        meta::patch_status(&api, &self.name, &json!({ "status": status })).await
    }

    async fn event(&self, warning: bool, reason: &str, note: String) {
        self.ctx
            .event(Component::Cdi, self.dv, warning, reason, note)
            .await;
    }
}

/// Where the data comes from.
enum Source {
    /// A PVC clone.
    Clone { namespace: String, name: String },
    /// Anything else: an import (no data here).
    Import,
}

fn source_of(dv: &DataVolume, namespace: &str) -> Source {
    match dv.spec.source.as_ref().and_then(|s| s.pvc.as_ref()) {
        Some(pvc) => Source::Clone {
            namespace: if pvc.namespace.is_empty() {
                namespace.to_owned()
            } else {
                pvc.namespace.clone()
            },
            name: pvc.name.clone(),
        },
        None => Source::Import,
    }
}

fn requested_storage(spec: &Value) -> Option<&str> {
    spec.pointer("/resources/requests/storage")
        .and_then(Value::as_str)
}

/// The target PVC's spec from `spec.pvc` (as given) or `spec.storage` (defaults filled in).
fn claim_spec(dv: &DataVolume, source: Option<&PersistentVolumeClaim>) -> Result<Value, String> {
    if let Some(pvc) = &dv.spec.pvc {
        let mut spec = pvc.clone();
        if spec.get("volumeMode").is_none() {
            spec["volumeMode"] = json!("Filesystem");
        }
        if requested_storage(&spec).is_none() {
            return Err("PVC size is missing".into());
        }
        return Ok(spec);
    }
    let Some(storage) = &dv.spec.storage else {
        return Err("Missing Data volume PVC".into());
    };
    let mut spec: Map<String, Value> = storage.as_object().cloned().unwrap_or_default();
    let source_spec = source.and_then(|s| s.spec.as_ref());
    if !spec.contains_key("accessModes") {
        let modes = source_spec
            .and_then(|s| s.access_modes.clone())
            .map(|m| json!(m))
            .unwrap_or_else(|| json!(["ReadWriteOnce"]));
        spec.insert("accessModes".into(), modes);
    }
    if !spec.contains_key("volumeMode") {
        let mode = source_spec
            .and_then(|s| s.volume_mode.clone())
            .unwrap_or_else(|| "Filesystem".into());
        spec.insert("volumeMode".into(), json!(mode));
    }
    let mut spec = Value::Object(spec);
    if requested_storage(&spec).is_none() {
        let size = source_spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone());
        match size {
            Some(size) => spec["resources"] = json!({"requests": {"storage": size}}),
            None => return Err("PVC size is missing".into()),
        }
    }
    Ok(spec)
}

/// Reconciles one DataVolume.
pub async fn reconcile(ctx: Arc<Ctx>, key: ObjKey) -> Result<Requeue, Error> {
    let Some(dv) = ctx.dvs.get_key(&key) else {
        return Ok(None);
    };
    if dv.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let phase = dv.status.as_ref().and_then(|s| s.phase.clone());
    if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Ok(None);
    }
    let pass = Pass {
        ctx: &ctx,
        dv: &dv,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    };
    let pvc = ctx.pvcs.get(&key.namespace, &key.name);

    // An existing claim: ours, adoptable, or in the way.
    if let Some(pvc) = &pvc {
        let ours =
            controller_of(&pvc.metadata).is_some_and(|r| Some(&r.uid) == dv.metadata.uid.as_ref());
        if !ours {
            let adoptable = controller_of(&pvc.metadata).is_none()
                && (annotation(&dv.metadata, names::CDI_PRE_POPULATED).is_some()
                    || annotation(&dv.metadata, names::CDI_ALLOW_CLAIM_ADOPTION) == Some("true")
                    || annotation(&pvc.metadata, names::CDI_POPULATED_FOR)
                        == Some(key.name.as_str()));
            if !adoptable {
                pass.event(
                    true,
                    "ErrResourceExists",
                    format!(
                        "Resource {:?} already exists and is not managed by DataVolume",
                        key.name
                    ),
                )
                .await;
                return Ok(None);
            }
            ctx.pace().await;
            adopt(&ctx, &dv, pvc).await?;
            // An adopted claim holds its data already.
            pass.write(
                "Succeeded",
                "N/A",
                Some(pvc),
                Running("False", "", "Completed"),
            )
            .await?;
            return Ok(None);
        }
    } else if annotation(&dv.metadata, names::CDI_PRE_POPULATED).is_some() {
        pass.write("Pending", "N/A", None, Running("False", "", ""))
            .await?;
        return Ok(None);
    }

    match source_of(&dv, &key.namespace) {
        Source::Clone { namespace, name } => clone(pass, pvc.as_deref(), &namespace, &name).await,
        Source::Import => import(pass, pvc.as_deref()).await,
    }
}

async fn adopt(ctx: &Ctx, dv: &DataVolume, pvc: &PersistentVolumeClaim) -> Result<(), Error> {
    let mut references: Vec<Value> = pvc
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|r| json!(r))
        .collect();
    references.push(json!(controller_ref(
        names::CDI_API_VERSION,
        "DataVolume",
        &dv.metadata
    )));
    let api: Api<PersistentVolumeClaim> = ctx.api(&pvc.namespace().unwrap_or_default());
    meta::merge_patch(
        &api,
        &pvc.name_any(),
        &json!({"metadata": {"ownerReferences": references}}),
    )
    .await
}

async fn create_claim(
    pass: &Pass<'_>,
    spec: Value,
    annotations: Map<String, Value>,
) -> Result<(), Error> {
    let mut annotations = annotations;
    if let Some(value) = annotation(&pass.dv.metadata, names::CDI_BIND_IMMEDIATE) {
        annotations.insert(names::CDI_BIND_IMMEDIATE.into(), json!(value));
    }
    annotations.insert(names::CDI_CONTENT_TYPE.into(), json!("kubevirt"));
    let mut labels = meta::string_map(pass.dv.metadata.labels.as_ref());
    labels.insert("app".into(), json!("containerized-data-importer"));
    let claim = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": pass.name,
            "namespace": pass.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [controller_ref(names::CDI_API_VERSION, "DataVolume", &pass.dv.metadata)],
        },
        "spec": spec,
    });
    pass.ctx.pace().await;
    let api: Api<PersistentVolumeClaim> = pass.ctx.api(&pass.namespace);
    meta::create_json(&api, claim).await?;
    Ok(())
}

fn claim_phase(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

async fn fail(pass: &Pass<'_>, message: &str) -> Result<Requeue, Error> {
    pass.event(
        true,
        "CloneValidationFailed",
        format!("The clone doesn't meet the validation requirements: {message}"),
    )
    .await;
    pass.write(
        "Failed",
        "N/A",
        None,
        Running("False", message, "CloneValidationFailed"),
    )
    .await?;
    Ok(None)
}

async fn clone(
    pass: Pass<'_>,
    pvc: Option<&PersistentVolumeClaim>,
    source_namespace: &str,
    source_name: &str,
) -> Result<Requeue, Error> {
    let ctx = pass.ctx;
    let from = format!("{source_namespace}/{source_name}");
    let into = format!("{}/{}", pass.namespace, pass.name);
    let current_phase = pass
        .dv
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();

    // A sim scoped to one namespace watches no other: a source elsewhere is read directly, and
    // looked for again while it is missing (no watch brings it).
    let outside = ctx
        .config
        .namespace
        .as_deref()
        .is_some_and(|scope| scope != source_namespace);
    let source = match ctx.pvcs.get(source_namespace, source_name) {
        Some(source) => Some(source),
        None if outside => ctx
            .api::<PersistentVolumeClaim>(source_namespace)
            .get_opt(source_name)
            .await
            .kube(|| format!("reading clone source {from}"))?
            .map(Arc::new),
        None => None,
    };
    let Some(source) = source else {
        pass.event(
            true,
            "CloneWithoutSource",
            format!("The source pvc {source_name} doesn't exist"),
        )
        .await;
        pass.write(
            "Pending",
            "N/A",
            pvc,
            Running("False", "", "CloneWithoutSource"),
        )
        .await?;
        return Ok(outside.then_some(OUTSIDE_SOURCE_RETRY));
    };

    if current_phase != "CloneInProgress" {
        let user = ctx
            .vmis
            .in_namespace(source_namespace)
            .into_iter()
            .find(|vmi| {
                vmi.metadata.deletion_timestamp.is_none()
                    && !vmi.is_final()
                    && vmi.claims().any(|c| c == source_name)
            });
        if let Some(vmi) = user {
            let message = format!(
                "VirtualMachineInstance {source_namespace}/{} using PersistentVolumeClaim {source_name}",
                vmi.name_any()
            );
            pass.event(true, "CloneSourceInUse", message.clone()).await;
            pass.write(
                "CloneScheduled",
                "N/A",
                pvc,
                Running("False", &message, "CloneSourceInUse"),
            )
            .await?;
            return Ok(Some(IN_USE_RETRY));
        }
    }

    let spec = match claim_spec(pass.dv, Some(&source)) {
        Ok(spec) => spec,
        Err(message) => return fail(&pass, &message).await,
    };
    let mut annotations = Map::new();
    let source_mode = source
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.clone())
        .unwrap_or_else(|| "Filesystem".into());
    let target_mode = spec
        .get("volumeMode")
        .and_then(Value::as_str)
        .unwrap_or("Filesystem")
        .to_owned();
    if source_mode != target_mode {
        if ctx.config.strict_clone_checks {
            return fail(
                &pass,
                &names::volume_mode_mismatch(&source_mode, &target_mode),
            )
            .await;
        }
        annotations.insert(
            names::CDI_CLONE_FALLBACK_REASON.into(),
            json!("The volume modes of source and target are incompatible"),
        );
    }
    let source_size = source
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| parse_quantity(&q.0));
    let target_size = requested_storage(&spec).and_then(parse_quantity);
    if let (Some(source_size), Some(target_size)) = (source_size, target_size)
        && target_size < source_size
    {
        if ctx.config.strict_clone_checks {
            return fail(&pass, names::TARGET_TOO_SMALL).await;
        }
        let message = format!("{} {target_size} < {source_size}", names::TARGET_TOO_SMALL);
        pass.event(
            true,
            "CloneValidationFailed",
            format!("The clone doesn't meet the validation requirements: {message}"),
        )
        .await;
        pass.write(
            "CloneScheduled",
            "N/A",
            pvc,
            Running("False", &message, "CloneValidationFailed"),
        )
        .await?;
        return Ok(None);
    }

    let Some(pvc) = pvc else {
        annotations.insert(names::CDI_CLONE_TYPE.into(), json!("copy"));
        annotations.insert(names::CDI_CLONE_REQUEST.into(), json!(from));
        create_claim(&pass, spec, annotations).await?;
        pass.event(
            false,
            "CloneScheduled",
            format!("Cloning from {from} into {into} scheduled"),
        )
        .await;
        pass.write(
            "CloneScheduled",
            "N/A",
            None,
            Running("False", "", "Pending"),
        )
        .await?;
        return Ok(None);
    };
    if waiting_for_claim(&pass, pvc, "CloneScheduled").await? {
        return Ok(None);
    }
    if current_phase != "CloneInProgress" {
        ctx.pace().await;
        pass.event(
            false,
            "CloneInProgress",
            format!("Cloning from {from} into {into} in progress"),
        )
        .await;
        pass.write(
            "CloneInProgress",
            "0.00%",
            Some(pvc),
            Running("True", "", ""),
        )
        .await?;
        return Ok(None);
    }
    if let Some(seconds) = clone_seconds(&source)
        && let Some(again) = copying(&pass, pvc, seconds).await?
    {
        return Ok(Some(again));
    }
    ctx.pace().await;
    pass.event(
        false,
        "CloneSucceeded",
        format!("Successfully cloned from {from} into {into}"),
    )
    .await;
    pass.write(
        "Succeeded",
        "100.0%",
        Some(pvc),
        Running("False", "Clone Complete", "Completed"),
    )
    .await?;
    Ok(None)
}

/// The whole seconds a clone of `source` takes ([`names::CLONE_SECONDS_ANNOTATION`]); `None`
/// when it finishes at once (no annotation, `"0"`, or a value that is not a whole number).
fn clone_seconds(source: &PersistentVolumeClaim) -> Option<u64> {
    let value = annotation(&source.metadata, names::CLONE_SECONDS_ANNOTATION)?;
    match value.parse::<u64>() {
        Ok(0) => None,
        Ok(seconds) => Some(seconds),
        Err(err) => {
            warn!(
                pvc = %ObjKey::of(source),
                annotation = names::CLONE_SECONDS_ANNOTATION,
                value,
                %err,
                "ignoring a clone duration that is not a whole number of seconds"
            );
            None
        }
    }
}

/// Where a clone of `total` stands `elapsed` after it started: `None` once done, else its
/// progress in percent (counted in whole seconds, so it moves once a second) and how long until
/// it moves again.
fn progress_at(elapsed: Duration, total: Duration) -> Option<(f64, Duration)> {
    if elapsed >= total {
        return None;
    }
    let whole = Duration::from_secs(elapsed.as_secs());
    let percent = whole.as_secs_f64() / total.as_secs_f64() * 100.0;
    let next = whole.saturating_add(PROGRESS_TICK).min(total);
    Some((percent, next.saturating_sub(elapsed)))
}

/// CDI's progress text while a copy runs (`"45.50%"`); a finished one reads `"100.0%"`.
fn progress_text(percent: f64) -> String {
    format!("{percent:.2}%")
}

/// The percentage of a progress text (`"45.50%"`), if it is one.
fn parse_progress(text: &str) -> Option<f64> {
    text.strip_suffix('%')?.parse().ok()
}

/// The text of [`names::CLONE_STARTED_ANNOTATION`]: RFC 3339, UTC, milliseconds.
fn start_text(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A clone of a source marked with [`names::CLONE_SECONDS_ANNOTATION`], in `CloneInProgress`:
/// records when the copy started (once), writes its progress, and returns when to look again;
/// `None` once the copy is done.
async fn copying(
    pass: &Pass<'_>,
    pvc: &PersistentVolumeClaim,
    seconds: u64,
) -> Result<Option<Duration>, Error> {
    let started = annotation(&pass.dv.metadata, names::CLONE_STARTED_ANNOTATION);
    let Some(started) = started.and_then(|s| s.parse::<Timestamp>().ok()) else {
        if let Some(started) = started {
            warn!(dv = %ObjKey::of(pass.dv), started, "restarting a clone whose start time does not parse");
        }
        // Guarded by the version the cache saw: a concurrent writer of the start time wins.
        let now = start_text(Timestamp::now());
        let api: Api<DataVolume> = pass.ctx.api(&pass.namespace);
        meta::merge_patch(
            &api,
            &pass.name,
            &json!({"metadata": {
                "resourceVersion": pass.dv.metadata.resource_version,
                "annotations": {names::CLONE_STARTED_ANNOTATION: now},
            }}),
        )
        .await?;
        return Ok(Some(PROGRESS_TICK));
    };
    // A start ahead of this clock (another host's) counts as now.
    let elapsed = Duration::try_from(Timestamp::now().duration_since(started)).unwrap_or_default();
    let Some((percent, again)) = progress_at(elapsed, Duration::from_secs(seconds)) else {
        return Ok(None);
    };
    // Never backwards, even if the clock is.
    let written = pass
        .dv
        .status
        .as_ref()
        .and_then(|s| s.progress.as_deref())
        .and_then(parse_progress)
        .filter(|p| *p < 100.0)
        .unwrap_or(0.0);
    pass.write(
        "CloneInProgress",
        &progress_text(percent.max(written)),
        Some(pvc),
        Running("True", "", ""),
    )
    .await?;
    Ok(Some(again.max(MIN_REQUEUE)))
}

/// While the DataVolume's claim is not bound, records why (`WaitForFirstConsumer`, or
/// `scheduled` while binding is under way) and returns true.
async fn waiting_for_claim(
    pass: &Pass<'_>,
    pvc: &PersistentVolumeClaim,
    scheduled: &str,
) -> Result<bool, Error> {
    if claim_phase(pvc) == "Bound" {
        return Ok(false);
    }
    let ctx = pass.ctx;
    let waiting = waits_for_consumer(ctx, pvc) && !consumed(ctx, pvc, &pass.namespace, &pass.name);
    let phase = if waiting {
        "WaitForFirstConsumer"
    } else {
        scheduled
    };
    pass.write(phase, "N/A", Some(pvc), Running("False", "", "Pending"))
        .await?;
    Ok(true)
}

async fn import(pass: Pass<'_>, pvc: Option<&PersistentVolumeClaim>) -> Result<Requeue, Error> {
    let ctx = pass.ctx;
    let Some(pvc) = pvc else {
        let spec = match claim_spec(pass.dv, None) {
            Ok(spec) => spec,
            Err(message) => {
                pass.write("Failed", "N/A", None, Running("False", &message, "Error"))
                    .await?;
                return Ok(None);
            }
        };
        create_claim(&pass, spec, Map::new()).await?;
        pass.write(
            "ImportScheduled",
            "N/A",
            None,
            Running("False", "", "Pending"),
        )
        .await?;
        return Ok(None);
    };
    if waiting_for_claim(&pass, pvc, "ImportScheduled").await? {
        return Ok(None);
    }
    ctx.pace().await;
    pass.write(
        "Succeeded",
        "100.0%",
        Some(pvc),
        Running("False", "Import Complete", "Completed"),
    )
    .await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clone_api::kubevirt::DataVolumeSpec;

    fn dv(spec: Value) -> DataVolume {
        DataVolume::new(
            "dv",
            serde_json::from_value::<DataVolumeSpec>(spec).unwrap(),
        )
    }

    fn source(mode: &str, size: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "src"},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": mode, "resources": {"requests": {"storage": size}}},
        }))
        .unwrap()
    }

    #[test]
    fn the_storage_api_inherits_mode_size_and_access_from_the_source() {
        let spec = claim_spec(&dv(json!({"source": {"pvc": {"namespace": "a", "name": "src"}}, "storage": {"storageClassName": "x"}})), Some(&source("Block", "2Gi"))).unwrap();
        assert_eq!(spec["volumeMode"], "Block");
        assert_eq!(spec["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(spec["resources"]["requests"]["storage"], "2Gi");
        assert_eq!(spec["storageClassName"], "x");
    }

    #[test]
    fn progress_moves_once_a_second_and_ends_at_the_duration() {
        let total = Duration::from_secs(4);
        let at = |ms| progress_at(Duration::from_millis(ms), total);
        assert_eq!(at(0), Some((0.0, Duration::from_secs(1))));
        assert_eq!(at(999), Some((0.0, Duration::from_millis(1))));
        assert_eq!(at(1000), Some((25.0, Duration::from_secs(1))));
        assert_eq!(at(2500), Some((50.0, Duration::from_millis(500))));
        assert_eq!(at(3999), Some((75.0, Duration::from_millis(1))));
        assert_eq!(at(4000), None);
        assert_eq!(at(60_000), None);
        // The last step never overshoots a duration that is not whole ticks away.
        let odd = progress_at(Duration::from_millis(200), Duration::from_millis(500));
        assert_eq!(odd, Some((0.0, Duration::from_millis(300))));
        let (third, _) = progress_at(Duration::from_secs(1), Duration::from_secs(3)).unwrap();
        assert_eq!(progress_text(third), "33.33%");
    }

    #[test]
    fn progress_reads_and_writes_cdis_format() {
        assert_eq!(progress_text(0.0), "0.00%");
        assert_eq!(progress_text(45.5), "45.50%");
        assert_eq!(parse_progress("45.50%"), Some(45.5));
        assert_eq!(parse_progress("100.0%"), Some(100.0));
        assert_eq!(parse_progress("N/A"), None);
    }

    #[test]
    fn the_start_time_reads_back_to_the_millisecond() {
        let at: Timestamp = "2030-01-02T03:04:05.678912Z".parse().unwrap();
        let text = start_text(at);
        assert_eq!(text, "2030-01-02T03:04:05.678Z");
        let back: Timestamp = text.parse().unwrap();
        assert_eq!(back.as_millisecond(), at.as_millisecond());
    }

    #[test]
    fn only_a_whole_positive_number_of_seconds_slows_a_clone() {
        let with = |value: Option<&str>| {
            let mut pvc = source("Filesystem", "1Gi");
            if let Some(value) = value {
                pvc.metadata.annotations =
                    Some([(names::CLONE_SECONDS_ANNOTATION.to_owned(), value.to_owned())].into());
            }
            clone_seconds(&pvc)
        };
        assert_eq!(with(Some("4")), Some(4));
        assert_eq!(with(Some("3600")), Some(3600));
        assert_eq!(with(None), None);
        for ignored in ["0", "", "-1", "1.5", "4s", "four"] {
            assert_eq!(with(Some(ignored)), None, "{ignored:?}");
        }
    }

    #[test]
    fn the_pvc_api_defaults_to_filesystem_and_needs_a_size() {
        let spec = claim_spec(&dv(json!({"pvc": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})), Some(&source("Block", "2Gi"))).unwrap();
        assert_eq!(spec["volumeMode"], "Filesystem");
        let err = claim_spec(
            &dv(json!({"pvc": {"accessModes": ["ReadWriteOnce"]}})),
            None,
        )
        .unwrap_err();
        assert_eq!(err, "PVC size is missing");
        assert_eq!(
            claim_spec(&dv(json!({})), None).unwrap_err(),
            "Missing Data volume PVC"
        );
    }
}
