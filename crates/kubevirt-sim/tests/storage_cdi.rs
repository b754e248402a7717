//! Storage binding and CDI DataVolume clones: a WaitForFirstConsumer PVC waits for a running VM;
//! a clone from a PVC a running VM uses waits with `CloneSourceInUse` until the VM stops; the
//! strict clone checks fail with the seed's messages; a Block source clones into a Block target;
//! a source annotated `sim.vmclone.dev/clone-seconds` makes its clones take that long, with
//! progress, across a restart of the sim.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::jiff::Timestamp;
use kubevirt_sim::{Sim, SimConfig};
use serde_json::{Value, json};

fn clone_dv(name: &str, source_ns: &str, source: &str, storage: Value) -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": {"name": name},
        "spec": {"source": {"pvc": {"namespace": source_ns, "name": source}}, "storage": storage},
    })
}

#[tokio::test]
async fn a_wait_for_first_consumer_pvc_stays_pending_until_the_vm_starts() {
    let world = World::new("sim-wffc", SimConfig::default()).await;
    world
        .create(&world.pvcs(), pvc("late", "sim-wffc", "1Gi"))
        .await;
    world
        .create(&world.pvcs(), pvc("early", "sim-snapshot", "1Gi"))
        .await;
    let volumes = vec![
        json!({"name": "late", "persistentVolumeClaim": {"claimName": "late"}}),
        json!({"name": "early", "persistentVolumeClaim": {"claimName": "early"}}),
    ];
    world
        .create(&world.vms(), vm("vm", "Halted", volumes, vec![]))
        .await;

    // The binder has seen both claims (the Immediate one is bound) and the VM is stopped.
    world
        .wait(&world.pvcs(), "early", "bound", |p| phase(p) == "Bound")
        .await;
    world
        .wait(
            &world.vms(),
            "vm",
            "stopped with both volumes known",
            |vm| {
                vm["status"]["printableStatus"] == "Stopped"
                    && vm["status"]["volumeSnapshotStatuses"]
                        .as_array()
                        .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["enabled"] == true))
            },
        )
        .await;
    let late = serde_json::to_value(world.pvcs().get("late").await.unwrap()).unwrap();
    assert_eq!(phase(&late), "Pending", "{late:#}");
    assert!(world.vmis().get_opt("vm").await.unwrap().is_none());

    world
        .merge(
            &world.vms(),
            "vm",
            json!({"spec": {"runStrategy": "Always"}}),
        )
        .await;
    world
        .wait(&world.pvcs(), "late", "bound", |p| phase(p) == "Bound")
        .await;
    let vmi = world
        .wait(&world.vmis(), "vm", "running", |vmi| {
            phase(vmi) == "Running"
        })
        .await;
    assert_eq!(vmi["metadata"]["ownerReferences"][0]["name"], "vm");
    assert_eq!(
        vmi["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "late"
    );
    world
        .wait(&world.vms(), "vm", "running", |vm| {
            vm["status"]["printableStatus"] == "Running"
                && vm["status"]["ready"] == true
                && vm["status"]["created"] == true
        })
        .await;

    // Stopping the VM deletes its instance.
    world
        .merge(
            &world.vms(),
            "vm",
            json!({"spec": {"runStrategy": "Halted"}}),
        )
        .await;
    world
        .wait(&world.vms(), "vm", "stopped", |vm| {
            vm["status"]["printableStatus"] == "Stopped"
        })
        .await;
    assert!(world.vmis().get_opt("vm").await.unwrap().is_none());
}

#[tokio::test]
async fn a_clone_of_a_pvc_in_use_by_a_running_vm_waits_until_the_vm_stops() {
    let world = World::new("sim-inuse", SimConfig::default()).await;
    world
        .create(&world.pvcs(), pvc("golden", "sim-snapshot", "1Gi"))
        .await;
    let volumes = vec![json!({"name": "root", "persistentVolumeClaim": {"claimName": "golden"}})];
    world
        .create(&world.vms(), vm("user", "Always", volumes, vec![]))
        .await;
    world
        .wait(&world.vmis(), "user", "running", |vmi| {
            phase(vmi) == "Running"
        })
        .await;

    let ns = world.ns.clone();
    world
        .create(
            &world.dvs(),
            clone_dv(
                "copy",
                &ns,
                "golden",
                json!({"storageClassName": "sim-snapshot"}),
            ),
        )
        .await;
    let waiting = world
        .wait(
            &world.dvs(),
            "copy",
            "CloneScheduled, source in use",
            |dv| {
                phase(dv) == "CloneScheduled"
                    && condition(dv, "Running").is_some_and(|c| c["reason"] == "CloneSourceInUse")
            },
        )
        .await;
    assert!(
        condition(&waiting, "Running").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("using PersistentVolumeClaim golden"),
        "{waiting:#}"
    );
    let message = world.wait_event("copy", "CloneSourceInUse").await;
    assert!(message.contains("golden"), "{message}");
    assert!(
        world.pvcs().get_opt("copy").await.unwrap().is_none(),
        "no target while in use"
    );

    world
        .merge(
            &world.vms(),
            "user",
            json!({"spec": {"runStrategy": "Halted"}}),
        )
        .await;
    let done = world
        .wait(&world.dvs(), "copy", "Succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    assert_eq!(done["status"]["progress"], "100.0%");
    assert_eq!(done["status"]["claimName"], "copy");
    assert!(condition_is(&done, "Ready", "True"), "{done:#}");
    assert!(condition_is(&done, "Bound", "True"), "{done:#}");
    assert_eq!(condition(&done, "Running").unwrap()["reason"], "Completed");
    let target = world
        .wait(&world.pvcs(), "copy", "bound", |p| phase(p) == "Bound")
        .await;
    assert_eq!(
        target["metadata"]["ownerReferences"][0]["kind"],
        "DataVolume"
    );
    assert_eq!(target["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(
        target["metadata"]["annotations"]["k8s.io/CloneRequest"],
        format!("{ns}/golden")
    );
    let reasons: Vec<String> = world
        .event_reasons("copy")
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    for reason in ["CloneScheduled", "CloneInProgress", "CloneSucceeded"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
}

#[tokio::test]
async fn strict_clone_checks_fail_with_the_seeds_messages() {
    let world = World::new("sim-strict", SimConfig::default()).await;
    let mut block = pvc("block", "sim-snapshot", "2Gi");
    block["spec"]["volumeMode"] = json!("Block");
    world.create(&world.pvcs(), block).await;
    let ns = world.ns.clone();
    let cases = [
        (
            "to-filesystem",
            json!({"volumeMode": "Filesystem", "storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "2Gi"}}}),
            "source volumeMode (Block) and target volumeMode (Filesystem) do not match",
        ),
        (
            "too-small",
            json!({"volumeMode": "Block", "storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "1Gi"}}}),
            "target resources requests storage size is smaller than the source",
        ),
    ];
    for (name, storage, _) in &cases {
        world
            .create(&world.dvs(), clone_dv(name, &ns, "block", storage.clone()))
            .await;
    }
    for (name, _, message) in cases {
        let failed = world
            .wait(&world.dvs(), name, "Failed", |dv| phase(dv) == "Failed")
            .await;
        assert_eq!(
            condition(&failed, "Running").unwrap()["message"],
            message,
            "{failed:#}"
        );
        assert_eq!(
            condition(&failed, "Running").unwrap()["reason"],
            "CloneValidationFailed"
        );
        let event = world.wait_event(name, "CloneValidationFailed").await;
        assert_eq!(
            event,
            format!("The clone doesn't meet the validation requirements: {message}")
        );
        assert!(world.pvcs().get_opt(name).await.unwrap().is_none());
    }

    // Block clones as block, inheriting the source's mode and size through the storage API.
    world
        .create(
            &world.dvs(),
            clone_dv(
                "as-block",
                &ns,
                "block",
                json!({"storageClassName": "sim-snapshot"}),
            ),
        )
        .await;
    world
        .wait(&world.dvs(), "as-block", "Succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    let target = serde_json::to_value(world.pvcs().get("as-block").await.unwrap()).unwrap();
    assert_eq!(target["spec"]["volumeMode"], "Block");
    assert_eq!(target["spec"]["resources"]["requests"]["storage"], "2Gi");
}

#[tokio::test]
async fn lenient_clone_checks_fall_back_or_wait_like_todays_cdi() {
    let world = World::new(
        "sim-lenient",
        SimConfig::default().strict_clone_checks(false),
    )
    .await;
    let mut block = pvc("block", "sim-snapshot", "2Gi");
    block["spec"]["volumeMode"] = json!("Block");
    world.create(&world.pvcs(), block).await;
    let ns = world.ns.clone();
    world
        .create(
            &world.dvs(),
            clone_dv("to-filesystem", &ns, "block", json!({"volumeMode": "Filesystem", "storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "2Gi"}}})),
        )
        .await;
    world
        .create(
            &world.dvs(),
            clone_dv("too-small", &ns, "block", json!({"volumeMode": "Block", "storageClassName": "sim-snapshot", "resources": {"requests": {"storage": "1Gi"}}})),
        )
        .await;
    world
        .wait(&world.dvs(), "to-filesystem", "Succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    let target = serde_json::to_value(world.pvcs().get("to-filesystem").await.unwrap()).unwrap();
    assert_eq!(
        target["metadata"]["annotations"]["cdi.kubevirt.io/cloneFallbackReason"],
        "The volume modes of source and target are incompatible"
    );
    let waiting = world
        .wait(&world.dvs(), "too-small", "waiting on validation", |dv| {
            condition(dv, "Running").is_some_and(|c| c["reason"] == "CloneValidationFailed")
        })
        .await;
    assert_eq!(phase(&waiting), "CloneScheduled");
    let event = world.wait_event("too-small", "CloneValidationFailed").await;
    assert!(event.contains("target resources requests storage size is smaller than the source 1073741824 < 2147483648"), "{event}");
}

#[tokio::test]
async fn a_data_volume_on_a_wait_for_first_consumer_class_waits_for_its_vm() {
    let world = World::new("sim-dvwffc", SimConfig::default()).await;
    let template = json!({
        "metadata": {"name": "vm-root"},
        "spec": {"source": {"blank": {}}, "storage": {"storageClassName": "sim-wffc", "resources": {"requests": {"storage": "1Gi"}}}},
    });
    let volumes = vec![json!({"name": "root", "dataVolume": {"name": "vm-root"}})];
    world
        .create(&world.vms(), vm("vm", "Halted", volumes, vec![template]))
        .await;
    world
        .wait(&world.dvs(), "vm-root", "WaitForFirstConsumer", |dv| {
            phase(dv) == "WaitForFirstConsumer"
        })
        .await;
    world
        .wait(
            &world.vms(),
            "vm",
            "stopped (WaitForFirstConsumer is ready enough)",
            |vm| vm["status"]["printableStatus"] == "Stopped",
        )
        .await;
    world
        .merge(
            &world.vms(),
            "vm",
            json!({"spec": {"runStrategy": "Always"}}),
        )
        .await;
    world
        .wait(&world.dvs(), "vm-root", "Succeeded", |dv| {
            phase(dv) == "Succeeded"
        })
        .await;
    world
        .wait(&world.pvcs(), "vm-root", "bound", |p| phase(p) == "Bound")
        .await;
    world
        .wait(&world.vms(), "vm", "running", |vm| {
            vm["status"]["printableStatus"] == "Running"
        })
        .await;
}

/// A source PVC whose clones take `seconds` (the sim's `clone-seconds` knob).
fn slow_source(name: &str, seconds: &str) -> Value {
    let mut source = pvc(name, "sim-snapshot", "1Gi");
    source["metadata"]["annotations"] = json!({"sim.vmclone.dev/clone-seconds": seconds});
    source
}

/// `status.progress` as a number, for `"45.50%"`.
fn percent(dv: &Value) -> Option<f64> {
    dv["status"]["progress"]
        .as_str()?
        .strip_suffix('%')?
        .parse()
        .ok()
}

fn clone_started(dv: &Value) -> Option<String> {
    dv["metadata"]["annotations"]["sim.vmclone.dev/clone-started"]
        .as_str()
        .map(str::to_owned)
}

/// Polls DataVolume `name` until `done` accepts it, recording every `(phase, progress)` seen on
/// the way; returns the last DataVolume and the observations.
async fn watch_progress(
    world: &World,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Vec<(String, String)>) {
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let api = world.dvs();
    let dv = testenv::wait_for(&format!("{name}: {what}"), TIMEOUT, || {
        let (api, seen) = (api.clone(), seen.clone());
        let done = &done;
        async move {
            let dv = api.get(name).await.map_err(|e| e.to_string())?;
            let dv = serde_json::to_value(dv).map_err(|e| e.to_string())?;
            let observed = (
                phase(&dv).to_owned(),
                dv["status"]["progress"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&observed) {
                seen.push(observed);
            }
            if done(&dv) {
                Ok(dv)
            } else {
                Err(format!("{seen:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let seen = seen.lock().unwrap().clone();
    (dv, seen)
}

/// The progress values seen in `CloneInProgress`, as numbers (panics on any other format).
fn in_progress(seen: &[(String, String)]) -> Vec<f64> {
    seen.iter()
        .filter(|(phase, _)| phase == "CloneInProgress")
        .map(|(_, progress)| {
            let number = progress
                .strip_suffix('%')
                .and_then(|p| p.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("progress {progress:?} in {seen:?}"));
            assert_eq!(
                progress.split_once('.').map(|(_, decimals)| decimals.len()),
                Some(3),
                "CDI's two decimals and a percent sign: {progress:?}"
            );
            number
        })
        .collect()
}

#[tokio::test]
async fn a_slow_clone_reports_rising_progress_until_it_succeeds() {
    let world = World::new("sim-slow", SimConfig::default()).await;
    world.create(&world.pvcs(), slow_source("big", "4")).await;
    let ns = world.ns.clone();
    world
        .create(
            &world.dvs(),
            clone_dv(
                "copy",
                &ns,
                "big",
                json!({"storageClassName": "sim-snapshot"}),
            ),
        )
        .await;

    let running = world
        .wait(&world.dvs(), "copy", "CloneInProgress", |dv| {
            phase(dv) == "CloneInProgress" && clone_started(dv).is_some()
        })
        .await;
    let began = Instant::now();
    let started = clone_started(&running).unwrap();
    started
        .parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("clone-started {started:?}: {e}"));
    assert!(condition_is(&running, "Running", "True"), "{running:#}");
    assert!(condition_is(&running, "Bound", "True"), "{running:#}");

    let (done, seen) =
        watch_progress(&world, "copy", "Succeeded", |dv| phase(dv) == "Succeeded").await;
    let took = began.elapsed();
    assert_eq!(done["status"]["progress"], "100.0%", "{done:#}");
    assert!(condition_is(&done, "Ready", "True"), "{done:#}");
    assert_eq!(
        clone_started(&done).as_deref(),
        Some(started.as_str()),
        "the start is recorded once"
    );
    let progress = in_progress(&seen);
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "never backwards: {seen:?}"
    );
    let mut between: Vec<f64> = progress
        .iter()
        .copied()
        .filter(|p| *p > 0.0 && *p < 100.0)
        .collect();
    between.dedup();
    assert!(
        between.len() >= 2,
        "at least two progress values between 0% and 100%: {seen:?}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "a 4 s clone took {took:?} after it was first seen running: {seen:?}"
    );
    let reasons: Vec<String> = world
        .event_reasons("copy")
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "CloneInProgress").count(),
        1,
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_restarted_sim_carries_on_with_a_slow_clone() {
    let mut world = World::new("sim-slowrestart", SimConfig::default()).await;
    world.create(&world.pvcs(), slow_source("big", "6")).await;
    let ns = world.ns.clone();
    world
        .create(
            &world.dvs(),
            clone_dv(
                "copy",
                &ns,
                "big",
                json!({"storageClassName": "sim-snapshot"}),
            ),
        )
        .await;
    let before = world
        .wait(&world.dvs(), "copy", "a third copied", |dv| {
            phase(dv) == "CloneInProgress" && percent(dv).is_some_and(|p| p >= 30.0)
        })
        .await;
    world.sim.take().unwrap().stop().await;
    let reached = world
        .dvs()
        .get("copy")
        .await
        .map(|dv| serde_json::to_value(dv).unwrap())
        .unwrap();
    let reached_progress = percent(&reached).unwrap();
    let started = clone_started(&before).unwrap();

    // Stopped, the progress stands still (so what follows is the new sim's doing).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stood = serde_json::to_value(world.dvs().get("copy").await.unwrap()).unwrap();
    assert_eq!(phase(&stood), "CloneInProgress", "{stood:#}");
    assert_eq!(stood["status"]["progress"], reached["status"]["progress"]);

    let sim = Sim::start(
        world.client.clone(),
        SimConfig::default().namespace(world.ns.clone()),
    )
    .await
    .expect("the sim starts again");
    let (done, seen) =
        watch_progress(&world, "copy", "Succeeded", |dv| phase(dv) == "Succeeded").await;
    assert_eq!(done["status"]["progress"], "100.0%", "{done:#}");
    assert_eq!(clone_started(&done).as_deref(), Some(started.as_str()));
    let progress = in_progress(&seen);
    assert!(
        progress.iter().all(|p| *p >= reached_progress),
        "carries on from {reached_progress}%, never back: {seen:?}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn without_a_valid_clone_duration_a_clone_finishes_at_once() {
    let world = World::new("sim-fastclone", SimConfig::default()).await;
    world
        .create(&world.pvcs(), pvc("plain", "sim-snapshot", "1Gi"))
        .await;
    world
        .create(&world.pvcs(), slow_source("odd", "soon"))
        .await;
    world.create(&world.pvcs(), slow_source("none", "0")).await;
    let ns = world.ns.clone();
    for source in ["plain", "odd", "none"] {
        world
            .create(
                &world.dvs(),
                clone_dv(
                    &format!("copy-{source}"),
                    &ns,
                    source,
                    json!({"storageClassName": "sim-snapshot"}),
                ),
            )
            .await;
    }
    for source in ["plain", "odd", "none"] {
        let done = world
            .wait(&world.dvs(), &format!("copy-{source}"), "Succeeded", |dv| {
                phase(dv) == "Succeeded"
            })
            .await;
        assert_eq!(done["status"]["progress"], "100.0%", "{done:#}");
        assert_eq!(clone_started(&done), None, "no extra writes: {done:#}");
    }
}

#[tokio::test]
async fn a_block_source_clones_into_a_block_target_through_either_api() {
    let world = World::new("sim-block", SimConfig::default()).await;
    let mut block = pvc("block", "sim-snapshot", "2Gi");
    block["spec"]["volumeMode"] = json!("Block");
    world.create(&world.pvcs(), block).await;
    let ns = world.ns.clone();
    let claim = |mode: Option<&str>| {
        let mut spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "sim-snapshot",
            "resources": {"requests": {"storage": "2Gi"}},
        });
        if let Some(mode) = mode {
            spec["volumeMode"] = json!(mode);
        }
        spec
    };
    let with_pvc = |name: &str, spec: Value| {
        json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1",
            "kind": "DataVolume",
            "metadata": {"name": name},
            "spec": {"source": {"pvc": {"namespace": ns, "name": "block"}}, "pvc": spec},
        })
    };
    world
        .create(&world.dvs(), with_pvc("pvc-block", claim(Some("Block"))))
        .await;
    world
        .create(
            &world.dvs(),
            clone_dv("storage-block", &ns, "block", claim(Some("Block"))),
        )
        .await;
    // `spec.pvc` without a mode asks for Filesystem.
    world
        .create(&world.dvs(), with_pvc("pvc-default", claim(None)))
        .await;

    for name in ["pvc-block", "storage-block"] {
        let done = world
            .wait(&world.dvs(), name, "Succeeded", |dv| {
                phase(dv) == "Succeeded"
            })
            .await;
        assert_eq!(done["status"]["progress"], "100.0%", "{done:#}");
        let target = world
            .wait(&world.pvcs(), name, "bound", |p| phase(p) == "Bound")
            .await;
        assert_eq!(target["spec"]["volumeMode"], "Block", "{target:#}");
        assert_eq!(target["spec"]["resources"]["requests"]["storage"], "2Gi");
        assert_eq!(
            target["metadata"]["annotations"].get("cdi.kubevirt.io/cloneFallbackReason"),
            None,
            "same modes, no fallback: {target:#}"
        );
    }
    let failed = world
        .wait(&world.dvs(), "pvc-default", "Failed", |dv| {
            phase(dv) == "Failed"
        })
        .await;
    assert_eq!(
        condition(&failed, "Running").unwrap()["message"],
        "source volumeMode (Block) and target volumeMode (Filesystem) do not match",
        "{failed:#}"
    );
    assert!(world.pvcs().get_opt("pvc-default").await.unwrap().is_none());
}
