//! The DataVolume strategy's pass: build and check the target from the source VM, review access
//! across namespaces, create the target, then follow its DataVolumes.

use clone_api::kubevirt::VirtualMachine;
use clone_api::names::{self, EventReason};
use clone_api::v1beta1::ClonePhase;
use clone_api::validation;

use super::{
    Access, AccessReview, Action, Child, Pass, ResourceCheck, data_volume_plan,
    data_volume_source_check,
};
use crate::datavolume::{self, Choice, PlanInput};
use crate::status::Situation;

impl Pass<'_, '_> {
    /// The DataVolume strategy: build the target from the source VM, check it, authorise a
    /// cross-namespace source, create the target, then follow its DataVolumes.
    pub(super) fn data_volume_flow(&mut self, choice: &Choice) -> Situation {
        if let Some(situation) = self.unreadable() {
            return situation;
        }
        if let Some(situation) = self.target_guard() {
            return situation;
        }
        let label = choice.label();
        match (self.o.target, self.o.target_full) {
            (Some(_), Some(vm)) => self.follow_data_volumes(vm, &label),
            (Some(_), None) => self.working(format!(
                "{label}: waiting to read target VM {}",
                self.names.target_name
            )),
            (None, _) => self.create_target(choice, &label),
        }
    }

    /// Everything the DataVolume strategy checks before it creates the target, then the create.
    fn create_target(&mut self, choice: &Choice, label: &str) -> Situation {
        let pending = |reason, message| Situation::Pending { reason, message };
        let source_ns = self.names.source_namespace.clone();
        let source = &self.o.clone.spec.source;
        let Some(vm) = self.o.source_vm else {
            return pending(
                EventReason::SourceDoesNotExist,
                format!(
                    "Source doesnt exist: {} {source_ns}/{}",
                    source.kind, source.name
                ),
            );
        };
        if let Some(hold) = data_volume_source_check(vm, &source_ns, &source.name) {
            return self.hold(hold);
        }
        let plan = match data_volume_plan(&PlanInput {
            clone: self.o.clone,
            source_vm: vm,
            source_namespace: &source_ns,
            target_name: &self.names.target_name,
            claims: &self.o.source_claims,
        }) {
            Ok(plan) => plan,
            Err(hold) => return self.hold(hold),
        };
        if source_ns != self.namespace() {
            match self.o.access {
                None => {
                    self.action = Action::ReviewAccess(self.access_review(&plan));
                    return self
                        .working(format!("{label}: checking access to namespace {source_ns}"));
                }
                Some(Access::Denied) => {
                    let user = self.service_account_user(&plan.service_account);
                    return self.fail(
                        EventReason::Unauthorized,
                        validation::insufficient_clone_permissions(&user, &source_ns),
                    );
                }
                Some(Access::Allowed) => {}
            }
        }
        if let Some(situation) = self.rejection(Child::TargetVM) {
            return situation;
        }
        self.warn_unknown_interfaces(&plan.unknown_interfaces);
        let count = plan.volumes.len();
        let message = format!(
            "created target VM {}/{} for clone {} with the DataVolume strategy: {count} volume(s) cloned by CDI{}",
            self.namespace(),
            self.names.target_name,
            self.clone_name(),
            choice.event_note()
        );
        self.event(EventReason::TargetVMCreated, message);
        let progress = datavolume::Progress {
            items: plan
                .volumes
                .iter()
                .map(|v| format!("{} Pending", v.volume))
                .collect(),
            ..Default::default()
        };
        self.action = Action::CreateTargetVM(Box::new(plan.vm));
        self.status.phase = ClonePhase::CreatingTargetVM;
        self.working(format!(
            "{label}: {}",
            datavolume::progress_message(&progress)
        ))
    }

    fn service_account_user(&self, account: &str) -> String {
        format!("system:serviceaccount:{}:{account}", self.namespace())
    }

    /// The checks of a cross-namespace clone: the target's service account may create
    /// `datavolumes/source` for every source claim (the OpenShift chapter's ClusterRole) and get
    /// the source VM (the target copies its spec, which can hold cloud-init secrets).
    fn access_review(&self, plan: &datavolume::Plan) -> AccessReview {
        let ns = self.namespace();
        let mut checks: Vec<ResourceCheck> = plan
            .volumes
            .iter()
            .map(|v| ResourceCheck {
                verb: "create",
                group: names::CDI_GROUP,
                resource: "datavolumes",
                subresource: "source",
                name: v.source_claim.clone(),
            })
            .collect();
        checks.push(ResourceCheck {
            verb: "get",
            group: names::KUBEVIRT_GROUP,
            resource: "virtualmachines",
            subresource: "",
            name: self.o.clone.spec.source.name.clone(),
        });
        AccessReview {
            user: self.service_account_user(&plan.service_account),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".to_owned(),
            ],
            namespace: self.names.source_namespace.clone(),
            checks,
        }
    }

    /// After the target exists: report each DataVolume's progress, fail with CDI's message when
    /// one fails, succeed when every one is done.
    fn follow_data_volumes(&mut self, vm: &VirtualMachine, label: &str) -> Situation {
        self.status.phase = ClonePhase::CreatingTargetVM;
        let progress = datavolume::progress(vm, &self.o.data_volumes);
        let old_message = self
            .o
            .clone
            .status
            .as_ref()
            .and_then(|s| s.condition(names::condition::PROGRESSING))
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        if let Some((volume, data_volume, why)) = progress.failed.clone() {
            return self.fail(
                EventReason::DataVolumeFailed,
                format!("DataVolume {data_volume} of volume {volume} failed: {why}"),
            );
        }
        for (volume, data_volume) in &progress.done {
            let item = progress
                .items
                .iter()
                .find(|i| i.starts_with(&format!("{volume} ")))
                .cloned()
                .unwrap_or_default();
            if !datavolume::lists(&old_message, &item) {
                let message = format!(
                    "volume {volume} of clone {} is cloned into DataVolume {data_volume}",
                    self.clone_name()
                );
                self.event(EventReason::VolumeCloned, message);
            }
        }
        if progress.complete {
            self.succeeded(vm);
            return self.after_success();
        }
        self.working(format!(
            "{label}: {}",
            datavolume::progress_message(&progress)
        ))
    }
}
