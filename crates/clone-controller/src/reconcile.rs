//! One pass over one clone: observe → `clone_core::decide` → apply the action → write the
//! status → publish the events.
//!
//! The order matters: the status and the events describe what was done, so they are written only
//! after the action succeeded. If the action fails the pass ends with an error and is retried with
//! backoff; if the API server refuses a creation for a reason only a spec edit could change, the
//! refusal is fed back into `decide`, which turns it into a status.

use std::sync::Arc;

use clone_api::kubevirt::{VirtualMachine, VirtualMachineRestore, VirtualMachineSnapshot};
use clone_api::names::FIELD_MANAGER;
use clone_api::v1beta1::{ClonePhase, VirtualMachineClone};
use clone_core::decide::{Access, AccessReview, Child, CreateRejection, Observed, project};
use clone_core::status::status_changed;
use clone_core::{Action, Decision, decide};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::observe::{World, observe};
use crate::reads::Created;

fn observed<'a>(
    ctx: &Context,
    clone: &'a VirtualMachineClone,
    world: &'a World,
    now: Time,
) -> Observed<'a> {
    Observed {
        clone,
        now,
        feature_gate: world.gate,
        source_vm: world.source_vm.as_deref(),
        source_snapshot: world.source_snapshot.as_deref(),
        temp_snapshot: world.temp_snapshot.as_deref(),
        content: world.content.as_deref(),
        restore: world.restore.as_deref(),
        target: world.target.as_ref(),
        claim_phases: world.claims.clone(),
        rivals: world.rivals.clone(),
        rejection: None,
        restore_stall_timeout: ctx.config.restore_stall_timeout,
        source_claims: world.source_claims.clone(),
        target_full: world.target_full.as_ref(),
        data_volumes: world.data_volumes.clone(),
        access: None,
        source_held_by: None,
    }
}

/// Reconciles one clone (on the leader; a standby replica does nothing).
pub async fn reconcile(clone: Arc<VirtualMachineClone>, ctx: Arc<Context>) -> Result<Requeue> {
    if !ctx.leadership.is_leader() {
        // Becoming leader reconciles every clone (see `leader::on_acquired`).
        return Ok(Requeue::await_change());
    }
    let started = std::time::Instant::now();
    let result = reconcile_clone(&clone, &ctx).await;
    let metrics = &ctx.telemetry.metrics;
    metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        metrics
            .reconciles
            .get_or_create(&crate::telemetry::ResultLabel {
                result: "ok".into(),
            })
            .inc();
    }
    result
}

async fn reconcile_clone(clone: &Arc<VirtualMachineClone>, ctx: &Arc<Context>) -> Result<Requeue> {
    ctx.caches.ready().await;
    if ctx.upstream().is_active() {
        // Upstream's clone controller owns every clone for now. When the KubeVirt CR turns it
        // off, every clone is reconciled again (`upstream::watch`).
        debug!(clone = %clone.name_any(), "upstream's clone controller is active: not acting");
        return Ok(Requeue::await_change());
    }
    let fresher = ctx.memory.freshest(clone);
    let clone = fresher.as_ref().unwrap_or(clone.as_ref());
    let ns = clone
        .namespace()
        .ok_or_else(|| Error::Incomplete(format!("clone {} has no namespace", clone.name_any())))?;
    let world = observe(ctx, clone).await?;
    let now = Time(jiff::Timestamp::now());
    let mut observation = observed(ctx, clone, &world, now);
    let mut decision = decide(&observation);
    // Clones of one VM take their snapshots one after the other (`Observed::source_held_by`).
    // Reserving the VM here, with no await since the decision, keeps two passes in flight from
    // both starting one.
    if let Action::CreateSnapshot(snapshot) = &decision.action
        && let Err(holder) = ctx.source_holds.reserve(snapshot)
    {
        observation.source_held_by = Some(holder);
        decision = decide(&observation);
    }
    debug!(clone = %clone.name_any(), ns, action = ?action_name(&decision.action), "decided");

    // What an action tells the decision goes back into it: an access review's answer, or a
    // refused creation. Each can come once per pass (a decision that knows the answer never asks
    // again, and never creates what was just refused), so this ends after at most two more.
    let mut refused = None;
    while let Some(feedback) = execute_holding(ctx, clone, &ns, &decision.action).await? {
        match feedback {
            Feedback::Access(access) if observation.access.is_none() => {
                observation.access = Some(access);
            }
            Feedback::Refused(rejection) if observation.rejection.is_none() => {
                observation.rejection = Some(rejection.clone());
                refused = Some(rejection);
            }
            Feedback::Access(_) | Feedback::Refused(_) => {
                return Err(Error::Incomplete(format!(
                    "clone {}: the decision repeated an action the same pass answered",
                    clone.name_any()
                )));
            }
        }
        decision = decide(&observation);
    }
    if decision.status.phase.is_terminal() {
        refused = None;
    }
    if decision.action == Action::DeleteClone {
        // The clone is gone; there is no status to write.
        publish(ctx, clone, &decision);
        ctx.memory.forget(&ObjectRef::from_obj(clone));
        return Ok(Requeue::await_change());
    }
    write_status(ctx, clone, &ns, &decision).await?;
    publish(ctx, clone, &decision);
    if let Some(rejection) = refused {
        // Nothing of ours will change when the obstacle clears: retry with backoff.
        return Err(Error::Refused {
            what: format!("{:?} for clone {}", rejection.child, clone.name_any()),
            message: rejection.message,
        });
    }
    ctx.memory.reset_backoff(&ObjectRef::from_obj(clone));
    record_success(ctx, clone, &decision);

    Ok(decision
        .requeue_after()
        .map_or_else(Requeue::await_change, Requeue::requeue))
}

/// Observes the clone's duration when this pass made it succeed.
fn record_success(ctx: &Context, clone: &VirtualMachineClone, decision: &Decision) {
    let was = clone.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if was == ClonePhase::Succeeded || decision.status.phase != ClonePhase::Succeeded {
        return;
    }
    if let Some(created) = &clone.metadata.creation_timestamp {
        let seconds = jiff::Timestamp::now()
            .duration_since(created.0)
            .as_secs_f64();
        ctx.telemetry
            .metrics
            .clone_duration
            .observe(seconds.max(0.0));
    }
}

/// What to do after a failed reconcile: retry this clone with its own exponential backoff.
pub fn error_policy(clone: Arc<VirtualMachineClone>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let metrics = &ctx.telemetry.metrics;
    metrics
        .reconciles
        .get_or_create(&crate::telemetry::ResultLabel {
            result: error.label().into(),
        })
        .inc();
    if let Some(verb) = error.verb() {
        metrics
            .api_errors
            .get_or_create(&crate::telemetry::VerbLabel { verb: verb.into() })
            .inc();
    }
    let key = ObjectRef::from_obj(clone.as_ref());
    // A clone deleted while this pass ran gets no backoff entry (nothing would remove it).
    let delay = if ctx.caches.clones.get(&key).is_some() {
        ctx.memory.next_backoff(key)
    } else {
        crate::context::backoff_delay(1)
    };
    warn!(clone = %clone.name_any(), ns = ?clone.namespace(), error = %error, kind = error.label(), retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Nothing => "nothing",
        Action::CreateSnapshot(_) => "create-snapshot",
        Action::CreateRestore(..) => "create-restore",
        Action::Cleanup { .. } => "cleanup",
        Action::DeleteClone => "delete-clone",
        Action::CreateTargetVM(_) => "create-target-vm",
        Action::ReviewAccess(_) => "review-access",
    }
}

/// What executing an action tells the next decision of the same pass.
enum Feedback {
    /// The API server refused a creation outright.
    Refused(CreateRejection),
    /// The answer of an access review.
    Access(Access),
}

/// [`execute`], giving the source VM back when a snapshot was not created.
async fn execute_holding(
    ctx: &Context,
    clone: &VirtualMachineClone,
    ns: &str,
    action: &Action,
) -> Result<Option<Feedback>> {
    let result = execute(ctx, clone, ns, action).await;
    if let Action::CreateSnapshot(snapshot) = action
        && matches!(result, Err(_) | Ok(Some(Feedback::Refused(_))))
    {
        ctx.source_holds.release(snapshot);
    }
    result
}

/// Executes an action. Returns what the next decision of this pass must know: a refusal when the
/// API server rejects a creation outright, or an access review's answer.
async fn execute(
    ctx: &Context,
    clone: &VirtualMachineClone,
    ns: &str,
    action: &Action,
) -> Result<Option<Feedback>> {
    let client = ctx.client.clone();
    match action {
        Action::Nothing => Ok(None),
        Action::CreateSnapshot(snapshot) => {
            let api = Api::<VirtualMachineSnapshot>::namespaced(client, ns);
            let (project, created) = (project::snapshot, &ctx.reads.snapshots);
            create_child(&api, snapshot, Child::Snapshot, project, created).await
        }
        Action::CreateRestore(restore, target) => {
            if let Some(target) = target
                && let Some(refusal) = dry_run_target(client.clone(), ns, target).await?
            {
                return Ok(Some(Feedback::Refused(refusal)));
            }
            let api = Api::<VirtualMachineRestore>::namespaced(client, ns);
            let (project, created) = (project::restore, &ctx.reads.restores);
            create_child(&api, restore, Child::Restore, project, created).await
        }
        Action::CreateTargetVM(vm) => {
            // `VirtualMachine` keeps every field it does not model, so the manifest goes out whole.
            let object: VirtualMachine = serde_json::from_value((**vm).clone())
                .map_err(|e| Error::Incomplete(e.to_string()))?;
            let api = Api::<VirtualMachine>::namespaced(client, ns);
            Ok(create(&api, &object, Child::TargetVM)
                .await?
                .err()
                .map(Feedback::Refused))
        }
        Action::ReviewAccess(review) => {
            Ok(Some(Feedback::Access(review_access(client, review).await?)))
        }
        Action::Cleanup { restore, snapshot } => {
            if let Some(name) = restore {
                delete(
                    &Api::<VirtualMachineRestore>::namespaced(client.clone(), ns),
                    name,
                )
                .await?;
            }
            if let Some(name) = snapshot {
                delete(&Api::<VirtualMachineSnapshot>::namespaced(client, ns), name).await?;
            }
            Ok(None)
        }
        Action::DeleteClone => {
            info!(clone = %clone.name_any(), ns, "target VM deleted after success: deleting the clone");
            delete(
                &Api::<VirtualMachineClone>::namespaced(client, ns),
                &clone.name_any(),
            )
            .await?;
            Ok(None)
        }
    }
}

/// Runs an access review as `SubjectAccessReview`s: allowed only when every check is.
async fn review_access(client: kube::Client, review: &AccessReview) -> Result<Access> {
    let api = Api::<SubjectAccessReview>::all(client);
    for check in &review.checks {
        let request = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(review.user.clone()),
                groups: Some(review.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(review.namespace.clone()),
                    verb: Some(check.verb.to_owned()),
                    group: Some(check.group.to_owned()),
                    resource: Some(check.resource.to_owned()),
                    subresource: (!check.subresource.is_empty())
                        .then(|| check.subresource.to_owned()),
                    name: Some(check.name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = api
            .create(&PostParams::default(), &request)
            .await
            .map_err(|source| Error::Create {
                what: format!("SubjectAccessReview for {}", review.user),
                source,
            })?;
        if !answer.status.is_some_and(|s| s.allowed) {
            info!(user = %review.user, namespace = %review.namespace, verb = check.verb, resource = check.resource, subresource = check.subresource, "access denied");
            return Ok(Access::Denied);
        }
    }
    Ok(Access::Allowed)
}

/// Submits the VM a restore will create with `dryRun=All`; returns the refusal, if any.
async fn dry_run_target(
    client: kube::Client,
    ns: &str,
    target: &serde_json::Value,
) -> Result<Option<CreateRejection>> {
    let resource = ApiResource::erase::<VirtualMachine>(&());
    let api = Api::<DynamicObject>::namespaced_with(client, ns, &resource);
    let object: DynamicObject =
        serde_json::from_value(target.clone()).map_err(|e| Error::Incomplete(e.to_string()))?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let what = format!("VirtualMachine {} (dry run)", object.name_any());
    match api.create(&params, &object).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if status.code < 500 => {
            warn!(%what, code = status.code, message = %status.message, "dry run refused");
            Ok(Some(rejection(Child::TargetDryRun, *status)))
        }
        Err(source) => Err(Error::Create { what, source }),
    }
}

fn rejection(child: Child, status: kube::core::Status) -> CreateRejection {
    CreateRejection {
        child,
        code: status.code,
        reason: status.reason,
        message: status.message,
    }
}

/// Creates a temporary child and remembers it, projected as its cache would hold it, until its
/// watch delivers it; a refusal goes back to the decision.
async fn create_child<K>(
    api: &Api<K>,
    object: &K,
    child: Child,
    project: fn(&mut K),
    created: &Created<K>,
) -> Result<Option<Feedback>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    Ok(match create(api, object, child).await? {
        Ok(Some(mut object)) => {
            project(&mut object);
            created.insert(object);
            None
        }
        Ok(None) => None,
        Err(refusal) => Some(Feedback::Refused(refusal)),
    })
}

/// Creates a child: `Ok(Some(created))`, or `Ok(None)` when it already exists; `Err` with the
/// refusal when the API server refuses it outright.
async fn create<K>(
    api: &Api<K>,
    object: &K,
    child: Child,
) -> Result<std::result::Result<Option<K>, CreateRejection>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let what = format!("{} {}", K::kind(&Default::default()), object.name_any());
    match api.create(&PostParams::default(), object).await {
        Ok(created) => {
            info!(%what, "created");
            Ok(Ok(Some(created)))
        }
        // The names are deterministic: an existing object is ours from an earlier pass.
        Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => {
            Ok(Ok(None))
        }
        Err(kube::Error::Api(status)) if status.code < 500 => {
            warn!(%what, code = status.code, message = %status.message, "creation refused");
            Ok(Err(rejection(child, *status)))
        }
        Err(source) => Err(Error::Create { what, source }),
    }
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            what: format!("{} {name}", K::kind(&Default::default())),
            source,
        }),
    }
}

/// Writes the status with server-side apply, only when it changed beyond timestamps.
async fn write_status(
    ctx: &Context,
    clone: &VirtualMachineClone,
    ns: &str,
    decision: &Decision,
) -> Result<()> {
    let old = clone.status.clone().unwrap_or_default();
    if clone.status.is_some() && !status_changed(&old, &decision.status) {
        return Ok(());
    }
    let api = Api::<VirtualMachineClone>::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": VirtualMachineClone::api_version(&()),
        "kind": VirtualMachineClone::kind(&()),
        "status": decision.status,
    });
    let written = api
        .patch_status(
            &clone.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(|source| Error::WriteStatus {
            clone: format!("{ns}/{}", clone.name_any()),
            source,
        })?;
    if let Some(version) = written.metadata.resource_version {
        ctx.memory
            .remember_status(clone, version, decision.status.clone());
    }
    Ok(())
}

/// Publishes the one event of this pass (see `Decision::event`), if it has one.
fn publish(ctx: &Context, clone: &VirtualMachineClone, decision: &Decision) {
    if let Some(event) = decision.event() {
        ctx.events
            .publish(clone.object_ref(&()), event.reason, event.message);
    }
}
