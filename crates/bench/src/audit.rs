//! Who made which API request, read from kube-apiserver's audit log (`Metadata` level, one JSON
//! object per line). Every component of the testbed talks to the API server as a user of its own
//! (`testenv::IDENTITIES`: the controller as `clone-controller`, the stand-in as `kubevirt-sim`,
//! the bench as `bench`; kube-controller-manager as `admin`), so attribution is exact: by
//! `user.username`, never by resource.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The fields of an audit event the bench reads.
#[derive(Debug, Deserialize)]
struct Line {
    #[serde(rename = "auditID")]
    audit_id: String,
    #[serde(default)]
    verb: String,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
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
    /// Submitted with `dryRun`: admitted and validated, never stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub count: u64,
}

impl AuditRow {
    /// A request that changed what is stored: a write verb, not a dry run.
    pub fn is_write(&self) -> bool {
        is_write(&self.verb) && !self.dry_run
    }

    /// The verb as tables show it: `create (dry run)` for a dry run.
    pub fn verb_label(&self) -> String {
        if self.dry_run {
            format!("{} (dry run)", self.verb)
        } else {
            self.verb.clone()
        }
    }
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

/// Whether a verb changes state (unless it is a dry run, see [`AuditRow::is_write`]).
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

/// Events, `events.k8s.io` or core.
pub fn is_event(row: &AuditRow) -> bool {
    matches!(row.resource.as_str(), "events.events.k8s.io" | "events")
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

/// The requests received in `[start, end]` in the audit log lines of `log`. A request appears
/// once per stage (a watch as `ResponseStarted` and later `ResponseComplete`); it is counted
/// once, by its audit ID.
pub fn tally(log: impl BufRead, start: jiff::Timestamp, end: jiff::Timestamp) -> AuditRequests {
    let mut seen: HashSet<String> = HashSet::new();
    let mut counts: BTreeMap<(String, String, String, bool), u64> = BTreeMap::new();
    let mut unparsed = 0;
    for raw in log.lines() {
        let Ok(raw) = raw else {
            unparsed += 1;
            continue;
        };
        if raw.trim().is_empty() {
            continue;
        }
        let Ok(line) = serde_json::from_str::<Line>(&raw) else {
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
        let dry_run = line
            .request_uri
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|p| p.starts_with("dryRun=")));
        *counts
            .entry((
                line.user.username,
                line.verb,
                resource_label(line.object_ref.as_ref()),
                dry_run,
            ))
            .or_default() += 1;
    }
    AuditRequests {
        window_start: start.to_string(),
        window_end: end.to_string(),
        rows: counts
            .into_iter()
            .map(|((user, verb, resource, dry_run), count)| AuditRow {
                user,
                verb,
                resource,
                dry_run,
                count,
            })
            .collect(),
        unparsed_lines: unparsed,
    }
}

/// A moment of a measurement: how much of the audit log was written by then, and the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moment {
    /// The log's length in bytes.
    pub offset: u64,
    /// The log's inode (0 for a missing log): a rotated log is a new file, and the offset means
    /// nothing in it.
    pub inode: u64,
    pub wall: jiff::Timestamp,
}

impl Moment {
    /// Now. The log's length is taken before the clock, so every request received from now on is
    /// written past `offset` (a missing log has length 0).
    pub fn now(log: &Path) -> Self {
        let (offset, inode) = std::fs::metadata(log).map_or((0, 0), |m| (m.len(), m.ino()));
        Self {
            offset,
            inode,
            wall: jiff::Timestamp::now(),
        }
    }
}

/// [`tally`] of the audit log at `path` for the requests received from `start` to `end`,
/// reading only what was written after `start`. Fails if the log is no longer the file it was
/// at `start` (kube-apiserver rotated it): counting what is left would undercount silently.
pub fn tally_file(path: &Path, start: Moment, end: jiff::Timestamp) -> Result<AuditRequests> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("opening the audit log {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading the metadata of the audit log {}", path.display()))?;
    if start.inode != 0 && (meta.ino() != start.inode || meta.len() < start.offset) {
        bail!(
            "the audit log {} was rotated during the measurement (it was {} bytes at its start, \
             inode {}; now {} bytes, inode {}): kube-apiserver needs a larger \
             --audit-log-maxsize",
            path.display(),
            start.offset,
            start.inode,
            meta.len(),
            meta.ino()
        );
    }
    file.seek(SeekFrom::Start(start.offset))
        .with_context(|| format!("seeking in the audit log {}", path.display()))?;
    Ok(tally(BufReader::new(file), start.wall, end))
}

/// Requests per clone of one user (leases left out).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerClone {
    /// Writes that were stored (dry runs are not).
    pub writes: f64,
    /// Writes of events (part of `writes`).
    pub event_writes: f64,
    /// Writes submitted as dry runs.
    pub dry_runs: f64,
    /// `get`s of a resource (part of `reads`; non-resource requests are not).
    pub gets: f64,
    /// Everything else: `get`, `list`, `watch`, non-resource requests.
    pub reads: f64,
}

impl PerClone {
    pub fn total(self) -> f64 {
        self.writes + self.dry_runs + self.reads
    }

    /// Lists, watches and non-resource requests: reads that are not `get`s of a resource.
    pub fn other_reads(self) -> f64 {
        self.reads - self.gets
    }
}

impl std::ops::AddAssign for PerClone {
    fn add_assign(&mut self, other: Self) {
        self.writes += other.writes;
        self.event_writes += other.event_writes;
        self.dry_runs += other.dry_runs;
        self.gets += other.gets;
        self.reads += other.reads;
    }
}

/// Per user: requests per clone (leases left out).
pub fn per_clone_by_user(requests: &AuditRequests, clones: usize) -> BTreeMap<String, PerClone> {
    let n = clones.max(1) as f64;
    let mut out: BTreeMap<String, PerClone> = BTreeMap::new();
    for row in requests.rows.iter().filter(|r| !is_lease(r)) {
        let entry = out.entry(row.user.clone()).or_default();
        let per = row.count as f64 / n;
        if row.dry_run {
            entry.dry_runs += per;
        } else if is_write(&row.verb) {
            entry.writes += per;
            if is_event(row) {
                entry.event_writes += per;
            }
        } else {
            entry.reads += per;
            if row.verb == "get" && row.resource != "non-resource" {
                entry.gets += per;
            }
        }
    }
    out
}

/// The requests of every user but those in `except`, added up.
pub fn sum_except(by_user: &BTreeMap<String, PerClone>, except: &[&str]) -> PerClone {
    let mut sum = PerClone::default();
    for (_, per) in by_user
        .iter()
        .filter(|(u, _)| !except.contains(&u.as_str()))
    {
        sum += *per;
    }
    sum
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

/// The users tables show first, in this order: the clone controllers, KubeVirt or its stand-in,
/// kube-controller-manager, kube-apiserver itself, the bench.
const ORDER: [&str; 7] = [
    "clone-controller",
    "kubevirt-sim",
    "virt-controller",
    "virt-api",
    "admin",
    "system:apiserver",
    "bench",
];

/// The users of `requests`, in table order: [`ORDER`], then any other in name order.
pub fn users_in_order<'a>(requests: impl IntoIterator<Item = &'a AuditRequests>) -> Vec<String> {
    let seen: BTreeSet<&str> = requests
        .into_iter()
        .flat_map(|r| r.rows.iter().map(|row| row.user.as_str()))
        .collect();
    let mut out: Vec<String> = ORDER
        .iter()
        .filter(|u| seen.contains(**u))
        .map(|u| (*u).to_owned())
        .collect();
    out.extend(
        seen.into_iter()
            .filter(|u| !ORDER.contains(u))
            .map(str::to_owned),
    );
    out
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
        let requests = tally(
            LOG.as_bytes(),
            ts("2026-11-30T01:00:00Z"),
            ts("2026-11-30T01:59:59Z"),
        );
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
                reads: 0.5,
                ..PerClone::default()
            })
        );
        assert_eq!(per["clone-controller"].writes, 0.5);
        assert_eq!(per["bench"].reads, 0.5);
        assert_eq!(per["bench"].total(), 0.5);
    }

    #[test]
    fn the_window_bounds_are_inclusive() {
        let requests = tally(
            LOG.as_bytes(),
            ts("2026-11-30T01:00:03Z"),
            ts("2026-11-30T01:00:03Z"),
        );
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

    /// An audit line of `user` for `verb` on `resource` (`group`, `subresource`) or, without a
    /// resource, a non-resource request.
    fn line(
        id: &str,
        user: &str,
        verb: &str,
        object: Option<(&str, &str, &str)>,
        at: &str,
    ) -> String {
        let object_ref = object.map_or(String::new(), |(resource, group, sub)| {
            format!(
                r#","objectRef":{{"resource":"{resource}","apiGroup":"{group}","subresource":"{sub}"}}"#
            )
        });
        format!(
            r#"{{"kind":"Event","auditID":"{id}","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"{user}"}}{object_ref},"requestReceivedTimestamp":"{at}"}}"#
        )
    }

    #[test]
    fn a_log_rotated_during_the_window_is_an_error_not_an_undercount() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let old = line("o", "bench", "create", None, "2026-11-30T01:00:00Z");
        std::fs::write(&path, format!("{old}\n{old}\n")).unwrap();
        let start = Moment::now(&path);
        assert_ne!(start.inode, 0);
        // kube-apiserver renames the full log away and starts a new one, here longer than the
        // offset the window began at, so only the inode tells.
        std::fs::rename(&path, dir.path().join("audit-rotated.log")).unwrap();
        let fresh = line(
            "n",
            "clone-controller",
            "create",
            None,
            "2099-01-01T00:00:00Z",
        );
        std::fs::write(&path, format!("{fresh}\n{fresh}\n{fresh}\n")).unwrap();
        let error = tally_file(&path, start, ts("2100-01-01T00:00:00Z"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("was rotated"), "{error}");
        assert!(error.contains("--audit-log-maxsize"), "{error}");
    }

    #[test]
    fn a_log_shorter_than_where_the_window_began_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let old = line("o", "bench", "create", None, "2026-11-30T01:00:00Z");
        std::fs::write(&path, format!("{old}\n{old}\n")).unwrap();
        let start = Moment::now(&path);
        // The same file, cut short (copytruncate-style rotation keeps the inode).
        std::fs::write(&path, format!("{old}\n")).unwrap();
        let error = tally_file(&path, start, ts("2100-01-01T00:00:00Z"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("was rotated"), "{error}");
    }

    #[test]
    fn a_window_is_read_from_where_the_log_was_when_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let early = line(
            "e",
            "bench",
            "create",
            Some(("namespaces", "", "")),
            "2026-11-30T01:00:00Z",
        );
        std::fs::write(&path, format!("{early}\n")).unwrap();
        let start = Moment::now(&path);
        assert_eq!(start.offset, early.len() as u64 + 1);
        let later = [
            line(
                "a",
                "clone-controller",
                "create",
                Some(("events", "events.k8s.io", "")),
                "2099-01-01T00:00:00Z",
            ),
            line(
                "b",
                "clone-controller",
                "get",
                Some(("virtualmachines", "kubevirt.io", "")),
                "2099-01-01T00:00:00Z",
            ),
            line("c", "clone-controller", "get", None, "2099-01-01T00:00:00Z"),
            line(
                "d",
                "kubevirt-sim",
                "get",
                Some(("namespaces", "", "")),
                "2099-01-01T00:00:00Z",
            ),
            line(
                "f",
                "clone-controller",
                "patch",
                Some(("virtualmachineclones", "clone.kubevirt.io", "status")),
                "2099-01-01T00:00:00Z",
            ),
        ];
        let mut text = std::fs::read_to_string(&path).unwrap();
        // The controller's dry run of the VM a restore will create: a create, never stored.
        let dry_run = line("g", "clone-controller", "create", Some(("virtualmachines", "kubevirt.io", "")), "2099-01-01T00:00:00Z")
            .replace(r#""verb""#, r#""requestURI":"/apis/kubevirt.io/v1/namespaces/n/virtualmachines?dryRun=All&fieldManager=x","verb""#);
        for l in later.iter().chain([&dry_run]) {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        // The early line is skipped by offset even though the window would include it.
        let requests = tally_file(
            &path,
            Moment {
                wall: ts("2000-01-01T00:00:00Z"),
                ..start
            },
            ts("2100-01-01T00:00:00Z"),
        )
        .unwrap();
        assert!(requests.rows.iter().all(|r| r.user != "bench"));
        let per = per_clone_by_user(&requests, 1);
        let controller = per["clone-controller"];
        assert_eq!(
            controller,
            PerClone {
                writes: 2.0,
                event_writes: 1.0,
                dry_runs: 1.0,
                gets: 1.0,
                reads: 2.0,
            }
        );
        assert_eq!(controller.other_reads(), 1.0);
        let dry: Vec<&AuditRow> = requests.rows.iter().filter(|r| r.dry_run).collect();
        assert_eq!(dry.len(), 1);
        assert_eq!(dry[0].verb_label(), "create (dry run)");
        assert!(!dry[0].is_write() && is_write(&dry[0].verb));
        assert_eq!(per["kubevirt-sim"].gets, 1.0);
        let all = sum_except(&per, &[]);
        assert_eq!(all.total(), 6.0);
        assert_eq!(sum_except(&per, &["clone-controller"]).total(), 1.0);
        assert_eq!(
            users_in_order([&requests]),
            ["clone-controller", "kubevirt-sim"]
        );
    }

    #[test]
    fn users_are_ordered_components_first() {
        let requests = AuditRequests {
            rows: ["zed", "bench", "admin", "clone-controller", "alice"]
                .iter()
                .map(|u| AuditRow {
                    user: (*u).to_owned(),
                    verb: "get".into(),
                    resource: "pods".into(),
                    dry_run: false,
                    count: 1,
                })
                .collect(),
            ..AuditRequests::default()
        };
        assert_eq!(
            users_in_order([&requests]),
            ["clone-controller", "admin", "bench", "alice", "zed"]
        );
    }
}
