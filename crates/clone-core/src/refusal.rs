//! What the API server's refusal to create a child object means for the clone.
//!
//! KubeVirt's admission webhooks answer in two ways (virt-api v1.7.0,
//! `pkg/util/webhooks`): a list of causes is HTTP 422 with reason `Invalid` and the causes'
//! messages joined by `", "`; any other error is HTTP 400 with the error's text and no reason —
//! including their own internal errors (a failed GET inside the restore admission) and a feature
//! gate that is off. kube-apiserver passes a webhook's answer on as
//! `admission webhook "<name>" denied the request: <message>`. The status code alone therefore
//! cannot tell a spec the user must fix from a hiccup that passes; the exact upstream messages
//! below can (they are listed with their source in `docs/decisions.md`).

/// How a refusal affects the clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Only a spec edit can change the answer (a validation or admission refusal): the clone
    /// fails.
    Spec,
    /// KubeVirt's `Snapshot` feature gate is off: the clone waits with `FeatureGateDisabled`.
    FeatureGateOff,
    /// Another restore of the same target is still in progress: the clone retries.
    RestoreInProgress,
    /// The API server or a webhook failed, or refused for a reason that passes (403 while a
    /// namespace terminates, 409 conflicts, 429, 5xx): the clone retries.
    Transient,
}

/// virt-api's answer to creating a restore while the `Snapshot` gate is off
/// (`pkg/storage/admitters/vmrestore.go`).
pub const RESTORE_GATE_OFF: &str = "Snapshot/Restore feature gate not enabled";
/// virt-api's answer to creating a snapshot while the `Snapshot` gate is off
/// (`pkg/storage/admitters/vmsnapshot.go`).
pub const SNAPSHOT_GATE_OFF: &str = "snapshot feature gate not enabled";
/// How kube-apiserver introduces a webhook's message.
const WEBHOOK_DENIAL: &str = "denied the request: ";

/// Classifies a refusal from its HTTP status code, its status reason and its message.
pub fn classify(code: u16, reason: &str, message: &str) -> Refusal {
    let text = webhook_message(message);
    match (code, reason) {
        (400, "") if text == RESTORE_GATE_OFF || text == SNAPSHOT_GATE_OFF => {
            Refusal::FeatureGateOff
        }
        // A webhook's 400 carries no reason and is an error of its own (its causes would have
        // been a 422).
        (400, "") => Refusal::Transient,
        // kube-apiserver's own 400 (`BadRequest`): the object is at fault.
        (400, _) => Refusal::Spec,
        (422, _) if only_restores_in_progress(text) => Refusal::RestoreInProgress,
        (422, _) => Refusal::Spec,
        _ => Refusal::Transient,
    }
}

/// Classifies the refusal of the target VM's server-side dry run. The object judged is the VM the
/// user's spec produces, so a 400 is its fault too: KubeVirt's VM mutating webhook answers 400
/// when it cannot even decode the VM (`quantities must match the regular expression ...` for a
/// patched memory of `lots`). Other codes pass.
pub fn classify_dry_run(code: u16) -> Refusal {
    match code {
        400 | 422 => Refusal::Spec,
        _ => Refusal::Transient,
    }
}

/// The webhook's own message when kube-apiserver wrapped it, else the whole message.
fn webhook_message(message: &str) -> &str {
    message
        .split_once(WEBHOOK_DENIAL)
        .map_or(message, |(_, text)| text)
}

/// Whether every cause of a 422 is virt-api's `VirtualMachineRestore "<name>" in progress`
/// (`pkg/storage/admitters/vmrestore.go`): the refusal then passes once those restores complete.
/// One other cause makes it a spec refusal.
fn only_restores_in_progress(text: &str) -> bool {
    let mut rest = text;
    loop {
        let Some(after) = rest.strip_prefix("VirtualMachineRestore \"") else {
            return false;
        };
        let Some((name, tail)) = after.split_once('"') else {
            return false;
        };
        let Some(tail) = tail.strip_prefix(" in progress") else {
            return false;
        };
        if name.is_empty() {
            return false;
        }
        if tail.is_empty() {
            return true;
        }
        match tail.strip_prefix(", ") {
            Some(next) => rest = next,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: &str = "admission webhook \"virtualmachinerestore-validator.snapshot.kubevirt.io\" denied the request: ";

    #[test]
    fn gate_off_answers_wait_for_the_gate() {
        for text in [RESTORE_GATE_OFF, SNAPSHOT_GATE_OFF] {
            assert_eq!(
                classify(400, "", &format!("{HOOK}{text}")),
                Refusal::FeatureGateOff
            );
        }
        // The same words inside a longer message are not the gate.
        assert_eq!(
            classify(400, "", &format!("{HOOK}x: {SNAPSHOT_GATE_OFF}")),
            Refusal::Transient
        );
    }

    #[test]
    fn webhook_internal_errors_are_retried() {
        let text =
            format!("{HOOK}virtualmachinesnapshotcontents.snapshot.kubevirt.io \"c\" is forbidden");
        assert_eq!(classify(400, "", &text), Refusal::Transient);
        assert_eq!(
            classify(400, "", "snapshot content name is nil in vmSnapshot status"),
            Refusal::Transient
        );
    }

    #[test]
    fn restores_in_progress_are_retried_and_anything_else_fails() {
        let one = format!("{HOOK}VirtualMachineRestore \"tmp-restore-a\" in progress");
        assert_eq!(classify(422, "Invalid", &one), Refusal::RestoreInProgress);
        let two = format!(
            "{HOOK}VirtualMachineRestore \"a\" in progress, VirtualMachineRestore \"b\" in progress"
        );
        assert_eq!(classify(422, "Invalid", &two), Refusal::RestoreInProgress);
        let mixed = format!(
            "{HOOK}patching is valid only for elements under /spec/ only: \"path\": \"/x\", VirtualMachineRestore \"a\" in progress"
        );
        assert_eq!(classify(422, "Invalid", &mixed), Refusal::Spec);
        assert_eq!(
            classify(422, "Invalid", "VirtualMachineRestore \"\" in progress"),
            Refusal::Spec
        );
        assert_eq!(
            classify(422, "Invalid", "something in progress"),
            Refusal::Spec
        );
    }

    #[test]
    fn a_dry_run_refused_by_a_webhook_or_the_schema_is_the_specs_fault() {
        assert_eq!(classify_dry_run(400), Refusal::Spec);
        assert_eq!(classify_dry_run(422), Refusal::Spec);
        assert_eq!(classify_dry_run(409), Refusal::Transient);
        assert_eq!(classify_dry_run(403), Refusal::Transient);
    }

    #[test]
    fn api_server_answers() {
        assert_eq!(
            classify(
                422,
                "Invalid",
                "VirtualMachineRestore.snapshot.kubevirt.io \"r\" is invalid: spec.target: Required value"
            ),
            Refusal::Spec
        );
        assert_eq!(
            classify(
                400,
                "BadRequest",
                "the API version in the data does not match"
            ),
            Refusal::Spec
        );
        for code in [403, 409, 429, 500, 503] {
            assert_eq!(classify(code, "", "x"), Refusal::Transient, "{code}");
        }
        assert_eq!(classify(403, "Forbidden", "x"), Refusal::Transient);
    }
}
