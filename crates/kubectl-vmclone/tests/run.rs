//! `kubectl vmclone run` against the test bed, on both backends: exit statuses, one watch for a
//! fan-out of 50 clones (counted in the API server's audit log), the live display in a real
//! terminal (tmux) and plain lines in a pipe, and Ctrl-C.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::ensure;
use common::{Backend, Bed};
use serde_json::json;
use testenv::wait_for;

/// A stopped VM `name` with one disk on `class`; `clone_seconds` makes the stand-in's CDI take
/// that long to copy it.
async fn source_vm(bed: &Bed, name: &str, class: &str, clone_seconds: Option<u32>) {
    let mut pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("{name}-root")},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": "1Gi"}}},
    });
    if let Some(seconds) = clone_seconds {
        pvc["metadata"]["annotations"] =
            json!({"sim.vmclone.dev/clone-seconds": seconds.to_string()});
    }
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": "Halted", "template": {"spec": {
            "domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                       "resources": {"requests": {"memory": "128Mi"}}},
            "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": format!("{name}-root")}}],
        }}},
    });
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [pvc, vm]});
    bed.kubectl(&["create", "-f", "-"], Some(&list.to_string()))
        .await
        .unwrap();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `run --wait` of one clone succeeds with exit status 0 and, in a pipe, plain timestamped lines.
async fn run_wait_succeeds_with_plain_lines_in_a_pipe(backend: Backend) {
    let bed = Bed::start(backend, "runok").await.unwrap();
    source_vm(&bed, "vm", "sim-snapshot", None).await;
    let out = bed
        .plugin(&[
            "run",
            "--source-name",
            "vm",
            "--name",
            "c",
            "--target-name",
            "t",
            "--new-mac-address",
            "eth0:02:00:00:00:00:09",
            "--wait",
            "--timeout",
            "3m",
        ])
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("virtualmachineclone.clone.kubevirt.io/c created"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 1 clone(s) succeeded"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "terminal codes in a pipe: {stdout:?}"
    );
    // Every progress line starts with a timestamp: `2026-…Z c <phase> <message>`.
    let progress: Vec<&str> = stdout.lines().filter(|l| l.contains(" c ")).collect();
    assert!(!progress.is_empty(), "{stdout}");
    for line in &progress {
        let stamp = line.split(' ').next().unwrap();
        assert!(
            stamp.parse::<jiff::Timestamp>().is_ok(),
            "no timestamp: {line}"
        );
    }
    assert!(
        progress.iter().any(|l| l.contains(" c Succeeded ")),
        "{stdout}"
    );
    bed.kubectl(&["get", "vm", "t"], None).await.unwrap();
    bed.stop().await;
}

/// A clone onto a VM it did not create fails: exit status 1, the reason and the message printed.
async fn a_clone_onto_an_existing_vm_exits_1_with_the_reason(backend: Backend) {
    let bed = Bed::start(backend, "runexists").await.unwrap();
    source_vm(&bed, "vm", "sim-snapshot", None).await;
    source_vm(&bed, "existing", "sim-snapshot", None).await;
    let out = bed
        .plugin(&[
            "run",
            "--source-name",
            "vm",
            "--name",
            "onto",
            "--target-name",
            "existing",
            "--wait",
            "--timeout",
            "3m",
        ])
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stderr}\n{}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains(&format!(
            "clone onto failed: TargetExists: target VirtualMachine {}/existing already exists",
            bed.ns
        )),
        "{stderr}"
    );
    bed.stop().await;
}

/// Bad input exits 2 and creates nothing, even when only one clone of a `--count` is bad.
async fn bad_input_exits_2_and_creates_nothing(backend: Backend) {
    let bed = Bed::start(backend, "runbad").await.unwrap();
    for args in [
        vec![
            "run",
            "--source-name",
            "vm",
            "--count",
            "3",
            "--strategy",
            "Fast",
        ],
        vec!["run", "--source-name", "vm", "--source-type", "pod"],
        vec!["run", "--source-name", "vm", "--label-filter", "a!b"],
        vec!["run"],
    ] {
        let out = bed.plugin(&args).await.unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).starts_with("error: "), "{args:?}");
    }
    // Names taken by an existing clone: the server's dry run refuses the whole request.
    bed.kubectl(
        &["create", "-f", "-"],
        Some(
            &json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
                    "metadata": {"name": "web-2"},
                    "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
                             "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "x"}}})
            .to_string(),
        ),
    ).await
    .unwrap();
    let out = bed
        .plugin(&[
            "run",
            "--source-name",
            "vm",
            "--name",
            "web",
            "--count",
            "3",
        ])
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing was created"), "{stderr}");
    assert!(stderr.contains("clone web-2: "), "{stderr}");
    let names = bed
        .kubectl(&["get", "vmclone", "-o", "name"], None)
        .await
        .unwrap();
    assert_eq!(names.trim(), "virtualmachineclone.clone.kubevirt.io/web-2");
    bed.stop().await;
}

/// 50 clones of a golden snapshot finish, followed with one watch of clones (and one of
/// DataVolumes): the audit log counts the plugin user's watch requests.
async fn fifty_clones_of_a_golden_snapshot_use_one_watch(backend: Backend) {
    let bed = Bed::start(backend, "run50").await.unwrap();
    source_vm(&bed, "golden-vm", "sim-snapshot", None).await;
    bed.kubectl(
        &["create", "-f", "-"],
        Some(
            &json!({"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                    "metadata": {"name": "golden"},
                    "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "golden-vm"}}})
            .to_string(),
        ),
    ).await
    .unwrap();
    bed.kubectl(
        &[
            "wait",
            "vmsnapshot",
            "golden",
            "--for",
            "jsonpath={.status.readyToUse}=true",
            "--timeout=120s",
        ],
        None,
    )
    .await
    .unwrap();
    let out = bed
        .plugin(&[
            "run",
            "--source-type",
            "snapshot",
            "--source-name",
            "golden",
            "--name",
            "web",
            "--target-name",
            "web",
            "--count",
            "50",
            "--wait",
            "--timeout",
            "10m",
        ])
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout.lines().rev().take(20).collect::<Vec<_>>().join("\n"),
        text(&out.stderr)
    );
    assert!(stdout.contains("50 of 50 clone(s) succeeded"), "{stdout}");
    assert_eq!(
        bed.plugin_requests("watch", "virtualmachineclones")
            .unwrap(),
        1,
        "one watch of clones"
    );
    assert!(bed.plugin_requests("watch", "datavolumes").unwrap() <= 1);
    assert_eq!(
        bed.plugin_requests("create", "virtualmachineclones")
            .unwrap(),
        100,
        "50 dry runs and 50 creates"
    );
    bed.stop().await;
}

/// In a real terminal (tmux) the display redraws a bar per volume as CDI copies; Ctrl-C stops
/// watching, says the clones keep going, and they do.
async fn a_terminal_shows_live_bars_and_ctrl_c_leaves_the_clone_running(backend: Backend) {
    let bed = Bed::start(backend, "runtty").await.unwrap();
    source_vm(&bed, "db", "sim-nosnapshot", Some(40)).await;
    let session = format!("vmclone-{}", bed.ns);
    let command = bed.plugin_command(&[
        "run",
        "--source-name",
        "db",
        "--name",
        "c",
        "--target-name",
        "copy",
        "--strategy",
        "DataVolume",
        "--wait",
    ]);
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let status_file = std::env::temp_dir().join(format!("{session}.status"));
    let _ = std::fs::remove_file(&status_file);
    let shell = format!(
        // The shell catches Ctrl-C itself, so it survives to record the plugin's exit status.
        "trap true INT; env -u KUBECONFIG {line} 2>&1; echo $? > '{}'; sleep 600",
        status_file.display()
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "40",
            &shell,
        ])
        .status()
        .unwrap();
    assert!(started.success());
    let capture = || -> anyhow::Result<String> {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()?;
        Ok(text(&out.stdout))
    };
    // Two different percentages in the bar, seen on the screen.
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    wait_for(
        "two different percentages on the terminal",
        Duration::from_secs(150),
        || async {
            let screen = capture()?;
            for line in screen
                .lines()
                .filter(|l| l.contains(" [") && l.contains('%'))
            {
                let percent = line
                    .split(']')
                    .nth(1)
                    .and_then(|rest| rest.split('%').next())
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned();
                if percent != "0.0" && percent != "100.0" {
                    seen.borrow_mut().insert(percent);
                }
            }
            ensure!(
                seen.borrow().len() >= 2,
                "seen {:?} on:\n{screen}",
                seen.borrow()
            );
            Ok(())
        },
    )
    .await
    .unwrap();
    let screen = capture().unwrap();
    // Redrawn in place: the clone's line appears once on the screen.
    assert_eq!(
        screen.lines().filter(|l| l.starts_with("c  ")).count(),
        1,
        "{screen}"
    );
    // Ctrl-C.
    Command::new("tmux")
        .args(["send-keys", "-t", &session, "C-c"])
        .status()
        .unwrap();
    let code = wait_for("the plugin to exit", Duration::from_secs(30), || async {
        let code = std::fs::read_to_string(&status_file)?;
        anyhow::Ok(code.trim().to_owned())
    })
    .await
    .unwrap();
    let screen = capture().unwrap();
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .stderr(Stdio::null())
        .status();
    assert_eq!(code, "130", "{screen}");
    assert!(
        screen.contains("stopped watching; the clones keep going"),
        "{screen}"
    );
    // The clone goes on without the plugin.
    wait_for("the clone to succeed", Duration::from_secs(150), || async {
        let phase = bed
            .kubectl(
                &["get", "vmclone", "c", "-o", "jsonpath={.status.phase}"],
                None,
            )
            .await?;
        ensure!(phase == "Succeeded", "phase {phase}");
        Ok(())
    })
    .await
    .unwrap();
    bed.stop().await;
}

testenv::on_both_backends!(
    run_wait_succeeds_with_plain_lines_in_a_pipe,
    a_clone_onto_an_existing_vm_exits_1_with_the_reason,
    bad_input_exits_2_and_creates_nothing,
    fifty_clones_of_a_golden_snapshot_use_one_watch,
    a_terminal_shows_live_bars_and_ctrl_c_leaves_the_clone_running,
);
