//! Conditions as KubeVirt's snapshot API and CDI write them, kept as JSON so that what the sim
//! writes is byte-for-byte the shape upstream writes (`lastProbeTime: null` included).

use serde_json::{Value, json};

use crate::units::now_rfc3339;

/// A KubeVirt snapshot/restore condition: the text goes into `reason`, like upstream.
pub fn kubevirt(type_: &str, status: bool, reason: &str) -> Value {
    json!({
        "type": type_,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "lastProbeTime": null,
        "lastTransitionTime": now_rfc3339(),
    })
}

/// KubeVirt's update rule: a condition of the same type is replaced only when its status or
/// reason changes (so its timestamp stays put otherwise); new types are appended.
pub fn set_kubevirt(conditions: &mut Vec<Value>, condition: Value) {
    let type_ = condition.get("type").cloned();
    match conditions
        .iter_mut()
        .find(|c| c.get("type") == type_.as_ref())
    {
        Some(existing) => {
            let differs = ["status", "reason", "message"]
                .iter()
                .any(|k| existing.get(*k) != condition.get(*k));
            if differs {
                *existing = condition;
            }
        }
        None => conditions.push(condition),
    }
}

/// Whether `conditions` has `type_` with status `True`.
#[cfg(test)]
pub fn is_true(conditions: &[Value], type_: &str) -> bool {
    conditions.iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some(type_)
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// CDI's update rule for DataVolume conditions: the transition time moves when the status
/// flips, the heartbeat when the message or reason changes.
pub fn set_cdi(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: &str,
    message: &str,
    reason: &str,
) {
    let now = now_rfc3339();
    let position = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(type_));
    let Some(index) = position else {
        conditions.push(json!({
            "type": type_,
            "status": status,
            "message": message,
            "reason": reason,
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        }));
        return;
    };
    let Some(existing) = conditions.get_mut(index) else {
        return;
    };
    let old_status = existing.get("status").and_then(Value::as_str).unwrap_or("");
    let old_message = existing
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("");
    let old_reason = existing.get("reason").and_then(Value::as_str).unwrap_or("");
    if old_status != status {
        *existing = json!({
            "type": type_,
            "status": status,
            "message": message,
            "reason": reason,
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        });
    } else if old_message != message || old_reason != reason {
        existing["message"] = json!(message);
        existing["reason"] = json!(reason);
        existing["lastHeartbeatTime"] = json!(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubevirt_conditions_keep_their_timestamp_unless_they_change() {
        let mut conditions = vec![];
        set_kubevirt(&mut conditions, kubevirt("Progressing", true, "a"));
        set_kubevirt(&mut conditions, kubevirt("Ready", false, "a"));
        let mut stale = conditions.clone();
        stale[0]["lastTransitionTime"] = json!("2000-01-01T00:00:00Z");
        set_kubevirt(&mut stale, kubevirt("Progressing", true, "a"));
        assert_eq!(stale[0]["lastTransitionTime"], "2000-01-01T00:00:00Z");
        set_kubevirt(&mut stale, kubevirt("Progressing", false, "b"));
        assert_eq!(stale[0]["reason"], "b");
        assert_ne!(stale[0]["lastTransitionTime"], "2000-01-01T00:00:00Z");
        assert_eq!(stale.len(), 2);
        assert!(stale[0]["lastProbeTime"].is_null());
        assert!(!is_true(&stale, "Progressing"));
        set_kubevirt(&mut stale, kubevirt("Failure", true, "x"));
        assert!(is_true(&stale, "Failure"));
        assert_eq!(stale[2]["type"], "Failure");
    }

    #[test]
    fn cdi_conditions_move_the_heartbeat_on_a_new_message() {
        let mut conditions = vec![];
        set_cdi(
            &mut conditions,
            "Bound",
            "False",
            "No PVC found",
            "NotFound",
        );
        conditions[0]["lastTransitionTime"] = json!("old");
        conditions[0]["lastHeartbeatTime"] = json!("old");
        set_cdi(
            &mut conditions,
            "Bound",
            "False",
            "PVC x Pending",
            "Pending",
        );
        assert_eq!(conditions[0]["lastTransitionTime"], "old");
        assert_ne!(conditions[0]["lastHeartbeatTime"], "old");
        set_cdi(&mut conditions, "Bound", "True", "PVC x Bound", "Bound");
        assert_ne!(conditions[0]["lastTransitionTime"], "old");
        assert_eq!(conditions.len(), 1);
    }
}
