//! `kubectl vmclone disk` against the test bed, on both backends: the OpenShift chapter's 7.13.2
//! (a Filesystem disk) and 7.13.4 (a Block disk) cloned into new DataVolumes; the chapter's checks
//! (volume mode, size) and the powered-off source refused before anything is created; across
//! namespaces, a user who is not cluster-admin refused without the chapter's RBAC (7.13.1) and
//! allowed with it; the plain display while a slow clone runs.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Backend, Bed};
use serde_json::Value;
use testenv::wait_for;
use tokio::io::AsyncBufReadExt;

/// Where the plugin gets a minute or two: the bed shares two CPUs with other work.
const TIMEOUT: Duration = Duration::from_secs(180);

fn example(name: &str) -> String {
    let path = format!(
        "{}/../../manifests/examples/datavolume/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A bed with the guide's two stopped VMs: `db` on the Filesystem PVC `db-root` (2Gi) and
/// `db-block` on the Block PVC `db-block-root` (2Gi), both of class `sim-nosnapshot`.
async fn with_sources(backend: Backend, prefix: &str) -> Bed {
    let bed = Bed::start(backend, prefix).await.unwrap();
    bed.kubectl(&["create", "-f", "-"], Some(&example("source-vms.yaml")))
        .await
        .unwrap();
    bed
}

async fn get_json(bed: &Bed, namespace: &str, kind: &str, name: &str) -> Value {
    let text = bed
        .env
        .kubectl_output(&["get", kind, name, "-n", namespace, "-o", "json"], None)
        .await
        .unwrap()
        .ok()
        .unwrap()
        .stdout;
    serde_json::from_str(&text).unwrap()
}

/// The DataVolumes of `namespace`, by name.
async fn data_volumes(bed: &Bed, namespace: &str) -> Vec<String> {
    bed.env
        .kubectl_output(&["get", "datavolumes", "-n", namespace, "-o", "name"], None)
        .await
        .unwrap()
        .ok()
        .unwrap()
        .stdout
        .lines()
        .map(str::to_owned)
        .collect()
}

fn show(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Checks the DataVolume `name` succeeded cloning `source_namespace/source` and its claim has
/// `mode` and `size` (and the source's class).
async fn assert_cloned(
    bed: &Bed,
    name: &str,
    source_namespace: &str,
    source: &str,
    mode: &str,
    size: &str,
) {
    let dv = get_json(bed, &bed.ns, "datavolume", name).await;
    assert_eq!(dv["status"]["phase"], "Succeeded", "{dv}");
    assert_eq!(
        dv["spec"]["source"]["pvc"]["namespace"], source_namespace,
        "{dv}"
    );
    assert_eq!(dv["spec"]["source"]["pvc"]["name"], source, "{dv}");
    let pvc = get_json(bed, &bed.ns, "pvc", name).await;
    assert_eq!(pvc["spec"]["volumeMode"], mode, "{pvc}");
    assert_eq!(
        pvc["spec"]["resources"]["requests"]["storage"], size,
        "{pvc}"
    );
    assert_eq!(pvc["spec"]["storageClassName"], "sim-nosnapshot", "{pvc}");
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
}

/// 7.13.2 and 7.13.4: a Filesystem disk and a Block disk (a bigger one) cloned with `--wait`.
async fn filesystem_and_block_disks_clone_into_new_datavolumes(backend: Backend) {
    let bed = with_sources(backend, "disk-clone").await;
    let timeout = format!("{}s", TIMEOUT.as_secs());

    let out = bed
        .plugin(&[
            "disk",
            "--source-pvc",
            "db-root",
            "--name",
            "db-root-copy",
            "--wait",
            "--timeout",
            &timeout,
        ])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let printed = stdout(&out);
    assert!(
        printed.starts_with("datavolume.cdi.kubevirt.io/db-root-copy created\n"),
        "{printed}"
    );
    assert!(
        printed.ends_with("datavolume.cdi.kubevirt.io/db-root-copy Succeeded\n"),
        "{printed}"
    );
    assert_cloned(
        &bed,
        "db-root-copy",
        &bed.ns,
        "db-root",
        "Filesystem",
        "2Gi",
    )
    .await;

    let out = bed
        .plugin(&[
            "disk",
            "--source-pvc",
            "db-block-root",
            "--name",
            "db-block-copy",
            "--size",
            "3Gi",
            "--wait",
            "--timeout",
            &timeout,
        ])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).ends_with("datavolume.cdi.kubevirt.io/db-block-copy Succeeded\n"),
        "{}",
        show(&out)
    );
    assert_cloned(
        &bed,
        "db-block-copy",
        &bed.ns,
        "db-block-root",
        "Block",
        "3Gi",
    )
    .await;

    // Each --wait follows its DataVolume with at most one watch (none when the list already
    // shows it done), never a watch per change.
    let watches = bed.plugin_requests("watch", "datavolumes").unwrap();
    assert!(
        watches <= 2,
        "{watches} watches of DataVolumes for two runs"
    );
    bed.stop().await;
}

/// The chapter's checks, in CDI's words: a smaller size and another volume mode are refused
/// (exit status 2: the flags contradict the source) and nothing is created; `--dry-run` prints
/// the DataVolume the flags describe and creates nothing either.
async fn a_smaller_size_or_another_volume_mode_is_refused_with_the_chapters_messages(
    backend: Backend,
) {
    let bed = with_sources(backend, "disk-checks").await;

    let out = bed
        .plugin(&[
            "disk",
            "--source-pvc",
            "db-root",
            "--name",
            "small",
            "--size",
            "1Gi",
            "--wait",
        ])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        stderr(&out).await,
        "error: target resources requests storage size is smaller than the source\n"
    );
    assert_eq!(stdout(&out), "");

    let out = bed
        .plugin(&[
            "disk",
            "--source-pvc",
            "db-block-root",
            "--name",
            "as-filesystem",
            "--volume-mode",
            "Filesystem",
            "--wait",
        ])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        stderr(&out).await,
        "error: source volumeMode (Block) and target volumeMode (Filesystem) do not match\n"
    );

    let out = bed
        .plugin(&[
            "disk",
            "--source-pvc",
            "db-block-root",
            "--name",
            "preview",
            "--size",
            "3Gi",
            "--dry-run",
            "-o",
            "json",
        ])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        serde_json::json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1",
            "kind": "DataVolume",
            "metadata": {"name": "preview", "namespace": bed.ns},
            "spec": {
                "source": {"pvc": {"namespace": bed.ns, "name": "db-block-root"}},
                "pvc": {
                    "accessModes": ["ReadWriteOnce"],
                    "volumeMode": "Block",
                    "storageClassName": "sim-nosnapshot",
                    "resources": {"requests": {"storage": "3Gi"}},
                },
            },
        })
    );
    assert_eq!(data_volumes(&bed, &bed.ns).await, Vec::<String>::new());
    bed.stop().await;
}

/// The chapter: "You must power down the virtual machine that is associated with the PVC before
/// you can clone it." Refused with exit status 1, naming the VM; another VM's disk still goes.
async fn a_disk_a_running_vm_uses_is_refused_naming_the_vm(backend: Backend) {
    let bed = with_sources(backend, "disk-running").await;
    bed.kubectl(
        &[
            "patch",
            "vm",
            "db",
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Always"}}"#,
        ],
        None,
    )
    .await
    .unwrap();

    let out = bed
        .plugin(&[
            "disk",
            "--source-pvc",
            "db-root",
            "--name",
            "db-root-copy",
            "--wait",
        ])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        stderr(&out).await,
        format!(
            "error: source PVC {ns}/db-root is used by running VM {ns}/db: CDI clones only a disk no running VM uses; power it off first (for example with virtctl stop db -n {ns})\n",
            ns = bed.ns
        )
    );
    assert_eq!(data_volumes(&bed, &bed.ns).await, Vec::<String>::new());

    // db-block is stopped: its disk passes the same checks.
    let out = bed
        .plugin(&[
            "disk",
            "--source-pvc",
            "db-block-root",
            "--name",
            "x",
            "--dry-run",
        ])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    bed.stop().await;
}

/// Whether the service account may do `what` (`kubectl auth can-i` words) in `namespace`,
/// asked as cluster-admin impersonating it.
async fn can(bed: &Bed, user: &str, what: &[&str], namespace: &str) -> bool {
    let mut args = vec!["auth", "can-i", "--as", user, "-n", namespace];
    args.extend_from_slice(what);
    let out = bed.env.kubectl_output(&args, None).await.unwrap();
    out.stdout.trim() == "yes"
}

/// Waits until the RBAC authorizer has taken in what was just bound (it reads through caches).
async fn wait_until_allowed(bed: &Bed, user: &str, what: &[&str], namespace: &str) {
    wait_for(
        &format!("{user} to be allowed {what:?} in {namespace}"),
        Duration::from_secs(30),
        || async { can(bed, user, what, namespace).await.then_some(()) },
    )
    .await
    .unwrap();
}

/// 7.13.1: across namespaces, a user who is not cluster-admin — a ServiceAccount allowed to work
/// with DataVolumes in its namespace and to read PVCs and VMs in the source namespace — is
/// refused with CDI's message (exit status 1, as kubectl exits on `Forbidden`) until the
/// chapter's ClusterRole is bound to it in the source namespace; then the clone runs.
async fn across_namespaces_the_chapters_rbac_decides(backend: Backend) {
    let bed = Bed::start(backend, "disk-xns").await.unwrap();
    let ns = bed.ns.clone();
    let source_ns = bed.env.namespace("disk-src").await.unwrap();
    let user = format!("system:serviceaccount:{ns}:disk-user");
    let pvc = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: golden-root
spec:
  storageClassName: sim-nosnapshot
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 2Gi
"#;
    bed.env
        .kubectl_output(&["create", "-n", &source_ns, "-f", "-"], Some(pvc))
        .await
        .unwrap()
        .ok()
        .unwrap();
    let rbac = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: disk-user
  namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: disk-user
  namespace: {ns}
rules:
  - apiGroups: [cdi.kubevirt.io]
    resources: [datavolumes]
    verbs: [create, get, list, watch]
  - apiGroups: [""]
    resources: [persistentvolumeclaims]
    verbs: [get]
  - apiGroups: [kubevirt.io]
    resources: [virtualmachines]
    verbs: [list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: disk-user
  namespace: {ns}
subjects:
  - kind: ServiceAccount
    name: disk-user
    namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: disk-user
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: disk-source-reader
  namespace: {source_ns}
rules:
  - apiGroups: [""]
    resources: [persistentvolumeclaims]
    verbs: [get]
  - apiGroups: [kubevirt.io]
    resources: [virtualmachines]
    verbs: [list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: disk-source-reader
  namespace: {source_ns}
subjects:
  - kind: ServiceAccount
    name: disk-user
    namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: disk-source-reader
"#
    );
    bed.env
        .kubectl_output(&["create", "-f", "-"], Some(&rbac))
        .await
        .unwrap()
        .ok()
        .unwrap();
    wait_until_allowed(&bed, &user, &["watch", "datavolumes.cdi.kubevirt.io"], &ns).await;
    wait_until_allowed(
        &bed,
        &user,
        &["list", "virtualmachines.kubevirt.io"],
        &source_ns,
    )
    .await;
    let source_access = [
        "create",
        "datavolumes.cdi.kubevirt.io",
        "--subresource=source",
    ];
    assert!(
        !can(&bed, &user, &source_access, &source_ns).await,
        "allowed before the chapter's RBAC"
    );
    assert!(
        !can(&bed, &user, &["create", "pods"], &source_ns).await,
        "allowed through pods"
    );

    let kubeconfig = std::env::temp_dir().join(format!("kubeconfig-disk-user-{ns}"));
    bed.env
        .write_service_account_kubeconfig(&ns, "disk-user", &kubeconfig)
        .await
        .unwrap();
    let timeout = format!("{}s", TIMEOUT.as_secs());
    let args = [
        "disk",
        "--source-namespace",
        &source_ns,
        "--source-pvc",
        "golden-root",
        "--name",
        "golden-copy",
        "--wait",
        "--timeout",
        &timeout,
    ];
    let as_user = async |args: &[&str]| run_as(&kubeconfig, &ns, args).await;

    let out = as_user(&args).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let refusal = stderr(&out).await;
    assert_eq!(
        refusal.lines().next(),
        Some(
            format!("error: User {user} has insufficient permissions in clone source namespace {source_ns}")
                .as_str()
        ),
        "{refusal}"
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(data_volumes(&bed, &ns).await, Vec::<String>::new());

    // The chapter's ClusterRole, bound in the source namespace to the user who clones.
    let cloner = format!("datavolume-cloner-{ns}");
    let grant = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {cloner}
rules:
  - apiGroups: ["cdi.kubevirt.io"]
    resources: ["datavolumes/source"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: allow-clone-to-disk-user
  namespace: {source_ns}
subjects:
  - kind: ServiceAccount
    name: disk-user
    namespace: {ns}
roleRef:
  kind: ClusterRole
  name: {cloner}
  apiGroup: rbac.authorization.k8s.io
"#
    );
    bed.env
        .kubectl_output(&["create", "-f", "-"], Some(&grant))
        .await
        .unwrap()
        .ok()
        .unwrap();
    wait_until_allowed(&bed, &user, &source_access, &source_ns).await;

    let out = as_user(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).ends_with("datavolume.cdi.kubevirt.io/golden-copy Succeeded\n"),
        "{}",
        show(&out)
    );
    assert_cloned(
        &bed,
        "golden-copy",
        &source_ns,
        "golden-root",
        "Filesystem",
        "2Gi",
    )
    .await;
    let _ = std::fs::remove_file(&kubeconfig);
    bed.stop().await;
}

/// The plugin as the user of `kubeconfig`, in `namespace`.
async fn run_as(kubeconfig: &Path, namespace: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-vmclone"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("-n")
        .arg(namespace)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap()
}

/// `2026-01-01T00:00:01Z datavolume/<name> CloneInProgress 16.67%`: the time and percentage.
fn progress_line(line: &str, name: &str) -> Option<(jiff::Timestamp, f64)> {
    let (stamp, rest) = line.split_once(' ')?;
    let percent = rest
        .strip_prefix(&format!("datavolume/{name} CloneInProgress "))?
        .strip_suffix('%')?
        .parse()
        .ok()?;
    Some((stamp.parse().ok()?, percent))
}

/// In a pipe, `--wait` prints a timestamped line per change while the copy runs (not all at the
/// end), following the DataVolume with one watch and no polling.
async fn plain_output_shows_progress_while_a_slow_clone_runs(backend: Backend) {
    let bed = with_sources(backend, "disk-slow").await;
    bed.kubectl(
        &[
            "annotate",
            "pvc",
            "db-root",
            "sim.vmclone.dev/clone-seconds=6",
        ],
        None,
    )
    .await
    .unwrap();
    let timeout = format!("{}s", TIMEOUT.as_secs());
    let mut child = tokio::process::Command::from(bed.plugin_command(&[
        "disk",
        "--source-pvc",
        "db-root",
        "--name",
        "slow-copy",
        "--wait",
        "--timeout",
        &timeout,
    ]))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut progress = Vec::new();
    loop {
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line for {TIMEOUT:?}; so far: {seen:#?}"))
            .unwrap();
        let Some(line) = line else { break };
        if let Some((at, percent)) = progress_line(&line, "slow-copy")
            && percent > 0.0
        {
            if progress.is_empty() {
                // Printed as it happens: the copy is still running when the line arrives.
                let dv = get_json(&bed, &bed.ns, "datavolume", "slow-copy").await;
                assert_eq!(dv["status"]["phase"], "CloneInProgress", "{line}\n{dv}");
            }
            progress.push((at, percent));
        }
        seen.push(line);
    }
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{seen:#?}");

    assert_eq!(
        seen.first().map(String::as_str),
        Some("datavolume.cdi.kubevirt.io/slow-copy created")
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("datavolume.cdi.kubevirt.io/slow-copy Succeeded")
    );
    let percents: Vec<f64> = progress.iter().map(|(_, p)| *p).collect();
    assert!(
        percents.len() >= 2,
        "fewer than two progress lines: {seen:#?}"
    );
    assert!(
        percents.windows(2).all(|w| w[0] < w[1]) && percents.iter().all(|p| *p < 100.0),
        "progress does not climb below 100%: {seen:#?}"
    );
    let done = seen
        .iter()
        .rev()
        .find(|l| l.contains(" datavolume/slow-copy Succeeded"))
        .and_then(|l| l.split_once(' '))
        .and_then(|(stamp, _)| stamp.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(|| panic!("no timestamped Succeeded line: {seen:#?}"));
    assert!(
        progress[0].0 < done,
        "the first progress line is not before the end: {seen:#?}"
    );

    assert_eq!(bed.plugin_requests("watch", "datavolumes").unwrap(), 1);
    assert_eq!(
        bed.plugin_requests("list", "datavolumes").unwrap(),
        1,
        "more than the watcher's one list"
    );
    assert_eq!(
        bed.plugin_requests("get", "datavolumes").unwrap(),
        0,
        "polled"
    );
    bed.stop().await;
}

/// `--wait` gives up at `--timeout` with exit status 3 and says the clone keeps going.
async fn a_wait_that_runs_out_of_time_exits_3(backend: Backend) {
    let bed = with_sources(backend, "disk-late").await;
    bed.kubectl(
        &[
            "annotate",
            "pvc",
            "db-root",
            "sim.vmclone.dev/clone-seconds=120",
        ],
        None,
    )
    .await
    .unwrap();
    let out = bed
        .plugin(&[
            "disk",
            "--source-pvc",
            "db-root",
            "--name",
            "late-copy",
            "--wait",
            "--timeout",
            "3s",
        ])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let said = stderr(&out).await;
    let prefix = format!(
        "timed out after 3s waiting for DataVolume {}/late-copy (phase ",
        bed.ns
    );
    assert!(said.starts_with(&prefix), "{said}");
    assert!(
        said.trim_end().ends_with(&format!(
            "it keeps going (kubectl get datavolume late-copy -n {})",
            bed.ns
        )),
        "{said}"
    );
    let dv = get_json(&bed, &bed.ns, "datavolume", "late-copy").await;
    assert_ne!(dv["status"]["phase"], "Succeeded", "{dv}");
    bed.stop().await;
}

testenv::on_both_backends!(
    filesystem_and_block_disks_clone_into_new_datavolumes,
    a_smaller_size_or_another_volume_mode_is_refused_with_the_chapters_messages,
    a_disk_a_running_vm_uses_is_refused_naming_the_vm,
    across_namespaces_the_chapters_rbac_decides,
    plain_output_shows_progress_while_a_slow_clone_runs,
    a_wait_that_runs_out_of_time_exits_3,
);
