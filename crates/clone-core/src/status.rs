//! Conditions and status comparison, following Kubernetes conventions.
//!
//! A clone shows one of four situations (working, waiting on a precondition, failed, succeeded);
//! [`Situation::conditions`] turns it into the `Progressing` and `Ready` conditions of api.md,
//! moving `lastTransitionTime` only when a condition's `status` flips.

use clone_api::names::EventReason;
use clone_api::names::condition;
use clone_api::v1beta1::{CloneCondition, ClonePhase, VirtualMachineCloneStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the clone is doing, as the conditions report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Situation {
    /// Working towards the target: `message` says what it waits for.
    Working {
        /// The phase the clone is in.
        phase: ClonePhase,
        /// What the clone waits for.
        message: String,
    },
    /// Waiting on a precondition (phase stays where it is).
    Pending {
        /// The precondition's event reason.
        reason: EventReason,
        /// Its text.
        message: String,
    },
    /// Failed for good.
    Failed {
        /// The failure's event reason.
        reason: EventReason,
        /// Its text.
        message: String,
    },
    /// The target VM exists.
    Succeeded {
        /// What was created (and what cleanup still waits for).
        message: String,
    },
}

struct Wanted {
    status: &'static str,
    reason: String,
    message: String,
}

impl Situation {
    fn wanted(&self) -> (Wanted, Wanted) {
        let w = |status, reason: &str, message: &str| Wanted {
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        match self {
            Situation::Working { phase, message } => {
                let reason = phase_reason(*phase);
                (w("True", reason, message), w("False", reason, message))
            }
            Situation::Pending { reason, message } => (
                w("False", condition::REASON_PENDING, message),
                w("False", reason.as_str(), message),
            ),
            Situation::Failed { reason, message } => (
                w("False", condition::REASON_FAILED, message),
                w("False", reason.as_str(), message),
            ),
            Situation::Succeeded { message } => (
                w("False", condition::REASON_SUCCEEDED, message),
                w("True", condition::REASON_SUCCEEDED, message),
            ),
        }
    }

    /// The `Progressing` and `Ready` conditions for this situation, keeping the transition time
    /// of an old condition whose status did not change.
    pub fn conditions(&self, old: &[CloneCondition], now: &Time) -> Vec<CloneCondition> {
        let (progressing, ready) = self.wanted();
        [
            (condition::PROGRESSING, progressing),
            (condition::READY, ready),
        ]
        .into_iter()
        .map(|(type_, want)| {
            let previous = old.iter().find(|c| c.type_ == type_);
            let last_transition_time = match previous {
                Some(p) if p.status == want.status => {
                    p.last_transition_time.clone().or_else(|| Some(now.clone()))
                }
                _ => Some(now.clone()),
            };
            CloneCondition {
                type_: type_.to_owned(),
                status: want.status.to_owned(),
                reason: Some(want.reason),
                message: Some(want.message),
                last_transition_time,
                last_probe_time: None,
            }
        })
        .collect()
    }
}

/// The condition reason for a phase (a CamelCase word; `""` reads as `NotStarted`).
pub fn phase_reason(phase: ClonePhase) -> &'static str {
    match phase {
        ClonePhase::Unset => condition::REASON_NOT_STARTED,
        other => other.as_str(),
    }
}

/// Whether two statuses differ in anything but timestamps (so the controller writes only real
/// changes).
pub fn status_changed(old: &VirtualMachineCloneStatus, new: &VirtualMachineCloneStatus) -> bool {
    fn strip(s: &VirtualMachineCloneStatus) -> VirtualMachineCloneStatus {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = None;
            c.last_probe_time = None;
        }
        s
    }
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = Situation::Working {
            phase: ClonePhase::SnapshotInProgress,
            message: "a".into(),
        }
        .conditions(&[], &t("2026-01-01T00:00:00Z"));
        let second = Situation::Working {
            phase: ClonePhase::RestoreInProgress,
            message: "b".into(),
        }
        .conditions(&first, &t("2026-01-01T00:01:00Z"));
        assert_eq!(
            second[0].last_transition_time,
            Some(t("2026-01-01T00:00:00Z"))
        );
        assert_eq!(second[0].reason.as_deref(), Some("RestoreInProgress"));
        let done = Situation::Succeeded {
            message: "c".into(),
        }
        .conditions(&second, &t("2026-01-01T00:02:00Z"));
        assert_eq!(
            done[0].last_transition_time,
            Some(t("2026-01-01T00:02:00Z"))
        );
        assert_eq!(done[1].status, "True");
        assert_eq!(
            done[1].last_transition_time,
            Some(t("2026-01-01T00:02:00Z"))
        );
    }

    #[test]
    fn timestamps_alone_are_no_change() {
        let a = VirtualMachineCloneStatus {
            conditions: Situation::Succeeded {
                message: "x".into(),
            }
            .conditions(&[], &t("2026-01-01T00:00:00Z")),
            ..Default::default()
        };
        let mut b = a.clone();
        b.conditions[0].last_transition_time = Some(t("2027-01-01T00:00:00Z"));
        assert!(!status_changed(&a, &b));
        b.conditions[0].message = Some("y".into());
        assert!(status_changed(&a, &b));
    }
}
