//! Who made which API request, read from kube-apiserver's audit log (`Metadata` level, one JSON
//! object per line). Every component of the real-backend testbed runs as a user of its own
//! (`testenv::IDENTITIES`), so attribution is exact: by `user.username`, never by resource.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The fields of an audit event the bench reads.
#[derive(Debug, Deserialize)]
struct Line {
    #[serde(rename = "auditID")]
    audit_id: String,
    #[serde(default)]
    verb: String,
    user: User,
    #[serde(rename = "objectRef")]
    object_ref: Option<ObjectRef>,
    #[serde(rename = "requestReceivedTimestamp")]
    received: String,
}

#[derive(Debug, Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default, rename = "apiGroup")]
    api_group: String,
    #[serde(default)]
    subresource: String,
}

/// Requests of one kind by one user in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub user: String,
    /// The audit verb: `create`, `update`, `patch` (server-side apply too), `delete`,
    /// `deletecollection`, `get`, `list`, `watch`.
    pub verb: String,
    /// `<resource>[/<subresource>][.<group>]`, or `non-resource` (discovery, `/healthz`, …).
    pub resource: String,
    pub count: u64,
}

/// The requests of a measurement window, from the audit log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRequests {
    pub window_start: String,
    pub window_end: String,
    /// Every request in the window (each audit ID once), by user, verb and resource; leases
    /// included (see [`is_lease`]).
    pub rows: Vec<AuditRow>,
    /// Lines of the log that were not audit events (a partial last line, say).
    pub unparsed_lines: usize,
}

/// Whether a verb changes state.
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// Leader-election and API-server identity leases: heartbeats that depend on time, not on work.
pub fn is_lease(row: &AuditRow) -> bool {
    row.resource == "leases.coordination.k8s.io"
}

fn resource_label(object: Option<&ObjectRef>) -> String {
    let Some(object) = object.filter(|o| !o.resource.is_empty()) else {
        return "non-resource".to_owned();
    };
    let mut label = object.resource.clone();
    if !object.subresource.is_empty() {
        label.push('/');
        label.push_str(&object.subresource);
    }
    if !object.api_group.is_empty() {
        label.push('.');
        label.push_str(&object.api_group);
    }
    label
}

/// The requests received in `[start, end]` in an audit log's text. A request appears once per
/// stage (a watch as `ResponseStarted` and later `ResponseComplete`); it is counted once, by its
/// audit ID.
pub fn tally(text: &str, start: jiff::Timestamp, end: jiff::Timestamp) -> AuditRequests {
    let mut seen: HashSet<String> = HashSet::new();
    let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut unparsed = 0;
    for raw in text.lines() {
        if raw.trim().is_empty() {
            continue;
        }
        let Ok(line) = serde_json::from_str::<Line>(raw) else {
            unparsed += 1;
            continue;
        };
        let Ok(received) = line.received.parse::<jiff::Timestamp>() else {
            unparsed += 1;
            continue;
        };
        if received < start || received > end {
            continue;
        }
        if !seen.insert(line.audit_id) {
            continue;
        }
        *counts
            .entry((
                line.user.username,
                line.verb,
                resource_label(line.object_ref.as_ref()),
            ))
            .or_default() += 1;
    }
    AuditRequests {
        window_start: start.to_string(),
        window_end: end.to_string(),
        rows: counts
            .into_iter()
            .map(|((user, verb, resource), count)| AuditRow {
                user,
                verb,
                resource,
                count,
            })
            .collect(),
        unparsed_lines: unparsed,
    }
}

/// [`tally`] of the audit log at `path`.
pub fn tally_file(
    path: &Path,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
) -> Result<AuditRequests> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the audit log {}", path.display()))?;
    Ok(tally(&text, start, end))
}

/// Requests per clone of one user (leases left out).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerClone {
    pub writes: f64,
    pub reads: f64,
}

impl PerClone {
    pub fn total(self) -> f64 {
        self.writes + self.reads
    }
}

/// Per user: writes and reads per clone (leases left out).
pub fn per_clone_by_user(requests: &AuditRequests, clones: usize) -> BTreeMap<String, PerClone> {
    let n = clones.max(1) as f64;
    let mut out: BTreeMap<String, PerClone> = BTreeMap::new();
    for row in requests.rows.iter().filter(|r| !is_lease(r)) {
        let entry = out.entry(row.user.clone()).or_default();
        if is_write(&row.verb) {
            entry.writes += row.count as f64 / n;
        } else {
            entry.reads += row.count as f64 / n;
        }
    }
    out
}

/// Lease requests in the window (all users).
pub fn lease_requests(requests: &AuditRequests) -> u64 {
    requests
        .rows
        .iter()
        .filter(|r| is_lease(r))
        .map(|r| r.count)
        .sum()
}

/// What a user name stands for on the testbed.
pub fn who(user: &str) -> String {
    match user {
        "clone-controller" => "vmclone controller (`clone-controller`)".to_owned(),
        "virt-controller" => "virt-controller (`virt-controller`)".to_owned(),
        "virt-api" => "virt-api (`virt-api`)".to_owned(),
        "kubevirt-sim" => "stand-in (`kubevirt-sim`)".to_owned(),
        "bench" => "the bench (`bench`)".to_owned(),
        "admin" => "kube-controller-manager (`admin`)".to_owned(),
        "system:apiserver" => "kube-apiserver itself (`system:apiserver`)".to_owned(),
        other => format!("`{other}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    const LOG: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/apis/clone.kubevirt.io/v1beta1/namespaces/n/virtualmachineclones/c/status","verb":"patch","user":{"username":"clone-controller","groups":["system:masters","system:authenticated"]},"sourceIPs":["127.0.0.1"],"objectRef":{"resource":"virtualmachineclones","namespace":"n","name":"c","apiGroup":"clone.kubevirt.io","apiVersion":"v1beta1","subresource":"status"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-30T01:00:01.000001Z","stageTimestamp":"2026-11-30T01:00:01.002000Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"w1","stage":"ResponseStarted","requestURI":"/apis/snapshot.kubevirt.io/v1beta1/virtualmachinerestores?watch=true","verb":"watch","user":{"username":"virt-controller"},"objectRef":{"resource":"virtualmachinerestores","apiGroup":"snapshot.kubevirt.io","apiVersion":"v1beta1"},"requestReceivedTimestamp":"2026-11-30T01:00:02Z","stageTimestamp":"2026-11-30T01:00:02Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"w1","stage":"ResponseComplete","requestURI":"/apis/snapshot.kubevirt.io/v1beta1/virtualmachinerestores?watch=true","verb":"watch","user":{"username":"virt-controller"},"objectRef":{"resource":"virtualmachinerestores","apiGroup":"snapshot.kubevirt.io","apiVersion":"v1beta1"},"requestReceivedTimestamp":"2026-11-30T01:00:02Z","stageTimestamp":"2026-11-30T01:09:02Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"p1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/n/pods","verb":"create","user":{"username":"virt-controller"},"objectRef":{"resource":"persistentvolumeclaims","namespace":"n","apiVersion":"v1"},"requestReceivedTimestamp":"2026-11-30T01:00:03Z","stageTimestamp":"2026-11-30T01:00:03Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"l1","stage":"ResponseComplete","requestURI":"/apis/coordination.k8s.io/v1/namespaces/kubevirt/leases/virt-controller","verb":"update","user":{"username":"virt-controller"},"objectRef":{"resource":"leases","apiGroup":"coordination.k8s.io"},"requestReceivedTimestamp":"2026-11-30T01:00:04Z","stageTimestamp":"2026-11-30T01:00:04Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"h1","stage":"ResponseComplete","requestURI":"/healthz","verb":"get","user":{"username":"bench"},"requestReceivedTimestamp":"2026-11-30T01:00:05Z","stageTimestamp":"2026-11-30T01:00:05Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"late","stage":"ResponseComplete","requestURI":"/api/v1/namespaces","verb":"list","user":{"username":"bench"},"objectRef":{"resource":"namespaces"},"requestReceivedTimestamp":"2026-11-30T02:00:00Z","stageTimestamp":"2026-11-30T02:00:00Z"}
{"kind":"Event","apiVersi"#;

    #[test]
    fn requests_are_counted_once_per_audit_id_within_the_window_by_user() {
        let requests = tally(LOG, ts("2026-11-30T01:00:00Z"), ts("2026-11-30T01:59:59Z"));
        assert_eq!(requests.unparsed_lines, 1);
        let rows: Vec<(&str, &str, &str, u64)> = requests
            .rows
            .iter()
            .map(|r| {
                (
                    r.user.as_str(),
                    r.verb.as_str(),
                    r.resource.as_str(),
                    r.count,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("bench", "get", "non-resource", 1),
                (
                    "clone-controller",
                    "patch",
                    "virtualmachineclones/status.clone.kubevirt.io",
                    1
                ),
                ("virt-controller", "create", "persistentvolumeclaims", 1),
                ("virt-controller", "update", "leases.coordination.k8s.io", 1),
                (
                    "virt-controller",
                    "watch",
                    "virtualmachinerestores.snapshot.kubevirt.io",
                    1
                ),
            ]
        );
        assert_eq!(lease_requests(&requests), 1);
        let per = per_clone_by_user(&requests, 2);
        assert_eq!(
            per.get("virt-controller").copied(),
            Some(PerClone {
                writes: 0.5,
                reads: 0.5
            })
        );
        assert_eq!(per["clone-controller"].writes, 0.5);
        assert_eq!(per["bench"].reads, 0.5);
        assert_eq!(per["bench"].total(), 0.5);
    }

    #[test]
    fn the_window_bounds_are_inclusive() {
        let requests = tally(LOG, ts("2026-11-30T01:00:03Z"), ts("2026-11-30T01:00:03Z"));
        assert_eq!(requests.rows.len(), 1);
        assert_eq!(requests.rows[0].resource, "persistentvolumeclaims");
    }

    #[test]
    fn writes_and_users() {
        assert!(is_write("patch") && is_write("deletecollection"));
        assert!(!is_write("get") && !is_write("watch"));
        assert_eq!(who("admin"), "kube-controller-manager (`admin`)");
        assert_eq!(who("someone"), "`someone`");
    }
}
