//! A stand-in, against the real API server, for the parts of KubeVirt and CDI that VM cloning
//! relies on — faithful enough that a controller passing against it works against real
//! KubeVirt; where it simplifies, the module that does says so. Tests and sandbox only.
//!
//! - [`install()`]: storage classes, the VolumeSnapshotClass, and KubeVirt's snapshot/restore
//!   admission as `ValidatingAdmissionPolicy`s (the API server enforces them itself; module
//!   `admission`); [`install_storage()`]: only the storage part, for the real KubeVirt backend.
//! - [`Sim::start`]: the controllers, as tokio tasks, sharing one watch and cache per kind:
//!   VirtualMachine (module `vm`: VMIs, DataVolumes from templates with `SubjectAccessReview`s,
//!   status), VirtualMachineSnapshot (`snapshot`), VirtualMachineRestore (`restore`), the PVC
//!   binder (`storage`), the CSI snapshotter (`csi`) and CDI's DataVolume controller (`cdi`).
//!   With [`SimConfig::storage_only`] only the last three run: KubeVirt's own virt-controller
//!   plays the rest (see `testenv`'s real KubeVirt backend).
//! - [`SimConfig`]: latency, failure injection, scope; per-object failure injection through the
//!   annotations in [`names`].
//!
//! The CRDs (KubeVirt's and CDI's own) are in this crate's `crds/` folder; `testenv` installs
//! them.
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> anyhow::Result<()> {
//! use kubevirt_sim::{Sim, SimConfig};
//! kubevirt_sim::install(client.clone()).await?;
//! let sim = Sim::start(client, SimConfig::default().namespace("my-test")).await?;
//! // ... create VMs, snapshots, restores, DataVolumes ...
//! sim.stop().await;
//! # Ok(()) }
//! ```

mod admission;
mod cdi;
mod conditions;
mod config;
mod csi;
mod ctx;
mod error;
pub mod examples;
mod go_vm;
mod install;
mod jsonpatch;
mod meta;
pub mod names;
mod restore;
mod runtime;
mod snapshot;
mod storage;
mod types;
mod units;
mod vm;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clone_api::kubevirt::VirtualMachine;
use futures::future::BoxFuture;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

pub use config::SimConfig;
pub use error::Error;
pub use install::{
    allow_restores_in, install, install_storage, reject_restores_in, set_feature_gates,
};
pub use types::{VirtualMachineInstance, VirtualMachineInstanceSpec, VirtualMachineInstanceStatus};
pub use units::parse_go_duration;

use ctx::{Ctx, Queues};
use runtime::{Cache, ObjKey, QueueReceiver, Requeue, run_queue, run_watch};

/// How long [`Sim::start`] waits for the first list of every kind.
const CACHE_TIMEOUT: Duration = Duration::from_secs(60);

/// The KubeVirt and CDI stand-in.
#[derive(Debug)]
pub struct Sim;

/// The running sim: its controllers stop when this is dropped or [`stopped`](SimHandle::stop).
pub struct SimHandle {
    tasks: Vec<JoinHandle<()>>,
    client: Client,
    config: SimConfig,
    webhook: Option<webhook::RestoreWebhook>,
}

impl Sim {
    /// Starts the controllers and returns once their caches are filled.
    ///
    /// Needs the CRDs (fails fast when they are missing) and, for storage and admission,
    /// [`install()`]. A sim scoped to a namespace (and not [`SimConfig::storage_only`]) also
    /// serves KubeVirt's restore admission webhook there ([`webhook`]); it needs the `KubeVirt`
    /// CR ([`set_feature_gates`]) to admit restores. With [`SimConfig::reject_restores`], also
    /// makes the API server refuse restores (in the configured namespace, or everywhere) before
    /// returning.
    pub async fn start(client: Client, config: SimConfig) -> Result<SimHandle> {
        let scope = config.namespace.clone();
        let probe: Api<VirtualMachine> = match &scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        probe
            .list(&ListParams::default().limit(1))
            .await
            .context("listing VirtualMachines (are KubeVirt's CRDs installed?)")?;

        let (vm_queue, vm_rx) = runtime::queue();
        let (snapshot_queue, snapshot_rx) = runtime::queue();
        let (restore_queue, restore_rx) = runtime::queue();
        let (pvc_queue, pvc_rx) = runtime::queue();
        let (dv_queue, dv_rx) = runtime::queue();
        let (csi_queue, csi_rx) = runtime::queue();
        let queues = Queues {
            vm: vm_queue,
            snapshot: snapshot_queue,
            restore: restore_queue,
            pvc: pvc_queue,
            dv: dv_queue,
            csi: csi_queue,
        };
        let ctx = Arc::new(Ctx::new(client.clone(), config.clone(), queues));
        let mut handle = SimHandle {
            tasks: Vec::new(),
            client: client.clone(),
            config: config.clone(),
            webhook: None,
        };

        let scope_ref = scope.as_deref();
        handle.watch(&ctx, scope_ref, ctx.vms.clone(), ctx::on_vm);
        handle.watch(&ctx, scope_ref, ctx.vmis.clone(), ctx::on_vmi);
        handle.watch(&ctx, scope_ref, ctx.snapshots.clone(), ctx::on_snapshot);
        handle.watch(&ctx, scope_ref, ctx.contents.clone(), ctx::on_content);
        handle.watch(&ctx, scope_ref, ctx.restores.clone(), ctx::on_restore);
        handle.watch(&ctx, scope_ref, ctx.pvcs.clone(), ctx::on_pvc);
        handle.watch(&ctx, scope_ref, ctx.dvs.clone(), ctx::on_dv);
        handle.watch(
            &ctx,
            scope_ref,
            ctx.volume_snapshots.clone(),
            ctx::on_volume_snapshot,
        );
        handle.watch_cluster(
            &ctx,
            ctx.classes.clone(),
            watcher::Config::default(),
            ctx::on_class,
        );
        let namespace_filter = match &scope {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        handle.watch_cluster(
            &ctx,
            ctx.namespaces.clone(),
            namespace_filter,
            ctx::on_namespace,
        );

        let ready = async {
            ctx.vms.wait_ready().await;
            ctx.vmis.wait_ready().await;
            ctx.snapshots.wait_ready().await;
            ctx.contents.wait_ready().await;
            ctx.restores.wait_ready().await;
            ctx.pvcs.wait_ready().await;
            ctx.dvs.wait_ready().await;
            ctx.volume_snapshots.wait_ready().await;
            ctx.classes.wait_ready().await;
            ctx.namespaces.wait_ready().await;
        };
        tokio::time::timeout(CACHE_TIMEOUT, ready)
            .await
            .context("the sim's watches did not list everything within a minute")?;

        let workers = config.workers;
        if !config.storage_only {
            handle.controller(&ctx, "virtualmachine", vm_rx, workers, |c, k| {
                Box::pin(vm::reconcile(c, k))
            });
            handle.controller(&ctx, "snapshot", snapshot_rx, workers, |c, k| {
                Box::pin(snapshot::reconcile(c, k))
            });
            handle.controller(&ctx, "restore", restore_rx, workers, |c, k| {
                Box::pin(restore::reconcile(c, k))
            });
        }
        handle.controller(&ctx, "csi", csi_rx, workers, |c, k| {
            Box::pin(csi::reconcile(c, k))
        });
        handle.controller(&ctx, "pvc", pvc_rx, workers, |c, k| {
            Box::pin(storage::reconcile(c, k))
        });
        handle.controller(&ctx, "datavolume", dv_rx, workers, |c, k| {
            Box::pin(cdi::reconcile(c, k))
        });

        // KubeVirt's restore admission, served as virt-api serves it (status codes included).
        // Scoped sims only: cluster-wide, the admission policies of `install()` answer first.
        if !config.storage_only
            && let Some(ns) = &scope
        {
            let webhook_config = webhook::WebhookConfig::default().namespace(ns.clone());
            handle.webhook = Some(
                webhook::RestoreWebhook::start(client.clone(), webhook_config)
                    .await
                    .context("starting the sim's restore admission webhook")?,
            );
        }
        install::configure_rejection(&client, scope_ref, config.reject_restores.as_deref()).await?;
        tracing::info!(?config, "kubevirt-sim started");
        Ok(handle)
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("config", &self.config)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

type Reconciler = fn(Arc<Ctx>, ObjKey) -> BoxFuture<'static, Result<Requeue, Error>>;

impl SimHandle {
    /// The configuration the sim runs with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn watch<K>(
        &mut self,
        ctx: &Arc<Ctx>,
        scope: Option<&str>,
        cache: Arc<Cache<K>>,
        route: fn(&Ctx, &K),
    ) where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let api: Api<DeserializeGuard<K>> = match scope {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        let routed = ctx.clone();
        self.tasks.push(tokio::spawn(run_watch(
            api,
            watcher::Config::default(),
            cache,
            move |object: &K| route(&routed, object),
        )));
    }

    fn watch_cluster<K>(
        &mut self,
        ctx: &Arc<Ctx>,
        cache: Arc<Cache<K>>,
        config: watcher::Config,
        route: fn(&Ctx, &K),
    ) where
        K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let api: Api<DeserializeGuard<K>> = Api::all(ctx.client.clone());
        let routed = ctx.clone();
        self.tasks.push(tokio::spawn(run_watch(
            api,
            config,
            cache,
            move |object: &K| route(&routed, object),
        )));
    }

    fn controller(
        &mut self,
        ctx: &Arc<Ctx>,
        name: &'static str,
        receiver: QueueReceiver,
        workers: usize,
        reconcile: Reconciler,
    ) {
        let ctx = ctx.clone();
        self.tasks.push(tokio::spawn(run_queue(
            name,
            receiver,
            workers,
            move |key| reconcile(ctx.clone(), key),
        )));
    }

    /// Stops the controllers and lifts the restore rejection this sim configured.
    pub async fn stop(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(webhook) = self.webhook.take() {
            webhook.stop().await;
        }
        if self.config.reject_restores.is_some()
            && let Err(err) =
                install::configure_rejection(&self.client, self.config.namespace.as_deref(), None)
                    .await
        {
            tracing::warn!(%err, "lifting the sim's restore rejection failed");
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
