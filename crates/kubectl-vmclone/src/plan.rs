//! `plan`: the target VM a clone would produce, as a diff against its source. Creates nothing.
//!
//! It reads what the controller reads before it acts (the source VM, or the source snapshot and
//! the VM its content holds; for the DataVolume strategy the source VM's claims), picks the
//! strategy as the controller does ([`datavolume::choose`]) and hands everything to
//! [`clone_core::preview`], which computes the target with the controller's own functions. Every
//! request is a GET: no clone, snapshot, restore or VM is created, not even as a dry run.
//!
//! Output: a unified diff of the target against the source (YAML with sorted keys, `---` naming
//! the source and `+++` the target and its strategy), or with `-o yaml|json` the whole target.
//! Values that exist only once the clone or KubeVirt's restore does are placeholders in angle
//! brackets (`<clone-uid>`, `<restore-uid>`, `<restored PVC of volume root>`, ...; see
//! [`clone_core::preview`]). Warnings go to stderr as `warning: …`: the preview's (filter lists
//! with only negative entries, `newMacAddresses` keys that name no interface, holds the clone would
//! wait in), a source snapshot that is not ready yet, and a target VM that exists already. What
//! would fail the clone before it has a target is an error (exit status 1). With `--count`, the
//! first clone is planned (the others differ only in their names).

use anyhow::Context as _;
use clone_api::extensions::CloneExtensions;
use clone_api::kubevirt::{VirtualMachine, VirtualMachineSnapshot, VirtualMachineSnapshotContent};
use clone_api::names;
use clone_api::v1beta1::VirtualMachineClone;
use clone_core::datavolume;
use clone_core::decide;
use clone_core::preview::{self, Preview, PreviewInput, PreviewSource};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Client};
use serde_json::{Map, Value};

use crate::cli::{Global, Output, PlanArgs};
use crate::{Exit, UsageError, client, create};

/// Prints the plan of the first clone the flags describe.
pub async fn command(global: &Global, args: &PlanArgs) -> anyhow::Result<Exit> {
    // The flags are checked before anything is read (exit status 2, no request).
    let first = create::clones(None, &args.clone)?
        .into_iter()
        .next()
        .ok_or_else(|| UsageError("no clone to plan".to_owned()))?;
    let (client, namespace) = client::connect(global).await?;
    let mut clone = first;
    clone.metadata.namespace = Some(namespace.clone());
    let plan = plan(&client, &clone).await?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    match args.output {
        Some(output) => print!("{}", create::render(&plan.preview.target, output)?),
        None => print!(
            "{}",
            diff(
                &plan.preview.source,
                &plan.preview.target,
                &plan.source_label,
                &plan.target_label
            )?
        ),
    }
    Ok(Exit::Success)
}

/// A preview and how to name its two sides.
#[derive(Debug)]
struct Plan {
    preview: Preview,
    /// `VirtualMachine ns/name`, or `VirtualMachineSnapshot ns/name (VirtualMachine vm)`.
    source_label: String,
    /// `VirtualMachine ns/name (Snapshot strategy)`.
    target_label: String,
    /// The preview's warnings and what only the cluster can tell.
    warnings: Vec<String>,
}

/// Reads the clone's world and previews its target.
async fn plan(client: &Client, clone: &VirtualMachineClone) -> anyhow::Result<Plan> {
    let namespace = clone.metadata.namespace.clone().unwrap_or_default();
    let source_namespace = clone
        .source_namespace()
        .unwrap_or(namespace.as_str())
        .to_owned();
    let source = &clone.spec.source;
    let mut warnings = Vec::new();

    let (source_vm, snapshot_vm, source_label) = if source.kind
        == names::VIRTUAL_MACHINE_SNAPSHOT_KIND
    {
        let (vm, label) = snapshot_source(client, &namespace, &source.name, &mut warnings).await?;
        (None, Some(vm), label)
    } else {
        let api = Api::<VirtualMachine>::namespaced(client.clone(), &source_namespace);
        let vm = api
            .get_opt(&source.name)
            .await
            .with_context(|| format!("reading VirtualMachine {source_namespace}/{}", source.name))?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "VirtualMachine {source_namespace}/{} not found: the clone would wait for it (SourceDoesNotExist)",
                    source.name
                )
            })?;
        let label = format!("VirtualMachine {source_namespace}/{}", source.name);
        (Some(vm), None, label)
    };

    let choice = datavolume::choose(clone, source_vm.as_ref(), None);
    let mut claims = std::collections::BTreeMap::new();
    if choice.strategy == clone_api::extensions::CloneStrategy::DataVolume
        && let Some(vm) = &source_vm
    {
        let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &source_namespace);
        for claim in datavolume::source_claims(vm) {
            let pvc = api.get_opt(&claim).await.with_context(|| {
                format!("reading PersistentVolumeClaim {source_namespace}/{claim}")
            })?;
            if let Some(pvc) = pvc {
                claims.insert(claim, pvc);
            }
        }
    }
    let preview_source = match (&source_vm, &snapshot_vm) {
        (Some(vm), _) => PreviewSource::Vm(vm),
        (None, Some(vm)) => PreviewSource::Snapshot {
            name: &source.name,
            vm,
        },
        (None, None) => anyhow::bail!("no source was read"),
    };
    let preview = preview::preview(&PreviewInput {
        clone,
        strategy: choice.strategy,
        source: preview_source,
        source_namespace: &source_namespace,
        claims: &claims,
    })
    .map_err(|hold| anyhow::anyhow!("{hold}"))?;
    warnings.splice(0..0, preview.warnings.iter().map(ToString::to_string));

    let target_name = preview.target["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let target_named = clone
        .spec
        .target
        .as_ref()
        .is_some_and(|t| !t.name.is_empty());
    if target_named {
        let api = Api::<VirtualMachine>::namespaced(client.clone(), &namespace);
        let existing = api
            .get_metadata_opt(&target_name)
            .await
            .with_context(|| format!("reading VirtualMachine {namespace}/{target_name}"))?;
        if existing.is_some() {
            warnings.push(decide::target_exists(&namespace, &target_name).to_string());
        }
    }
    let mut strategy = choice.label();
    if let Some(because) = &choice.because {
        strategy = format!("{strategy}: {because}");
    }
    Ok(Plan {
        preview,
        source_label,
        target_label: format!("VirtualMachine {namespace}/{target_name} ({strategy})"),
        warnings,
    })
}

/// The VM a source snapshot's content holds, checked as the controller checks it.
async fn snapshot_source(
    client: &Client,
    namespace: &str,
    name: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Value, String)> {
    let snapshots = Api::<VirtualMachineSnapshot>::namespaced(client.clone(), namespace);
    let snapshot = snapshots
        .get_opt(name)
        .await
        .with_context(|| format!("reading VirtualMachineSnapshot {namespace}/{name}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "VirtualMachineSnapshot {namespace}/{name} not found: the clone would wait for it (SourceDoesNotExist)"
            )
        })?;
    let status = snapshot.status.clone().unwrap_or_default();
    if let Some(failure) = status.failure() {
        anyhow::bail!("the clone would fail (SnapshotFailed): snapshot {name} failed: {failure}");
    }
    if !status.is_ready() {
        warnings.push(format!(
            "VirtualMachineSnapshot {namespace}/{name} is not ready yet: the clone waits for it"
        ));
    }
    let content_name = decide::content_name(&snapshot);
    let contents = Api::<VirtualMachineSnapshotContent>::namespaced(client.clone(), namespace);
    let content = contents
        .get_opt(&content_name)
        .await
        .with_context(|| format!("reading VirtualMachineSnapshotContent {namespace}/{content_name}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "VirtualMachineSnapshotContent {namespace}/{content_name} of snapshot {name} does not exist yet: nothing to preview until the snapshot has taken its content"
            )
        })?;
    let vm = decide::check_content(&content, namespace).map_err(|message| {
        anyhow::anyhow!("the clone would fail (SnapshotContentInvalid): {message}")
    })?;
    let vm_name = vm
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let label = format!("VirtualMachineSnapshot {namespace}/{name} (VirtualMachine {vm_name})");
    Ok((vm, label))
}

/// A unified diff of two objects as YAML with sorted keys.
fn diff(source: &Value, target: &Value, from: &str, to: &str) -> anyhow::Result<String> {
    let old = create::render(&sorted(source), Output::Yaml)?;
    let new = create::render(&sorted(target), Output::Yaml)?;
    Ok(similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string())
}

/// `value` with every object's keys in order, so a diff lines up and reads like kubectl's YAML.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for key in keys {
                out.insert(key.clone(), sorted(&map[key]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_diff_names_both_sides_and_shows_only_changes_in_context() {
        let source =
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"b": 1, "a": 2}});
        let target =
            json!({"spec": {"a": 2, "b": 1}, "metadata": {"name": "b", "labels": {"x": "1"}}});
        let text = diff(
            &source,
            &target,
            "VirtualMachine ns/a",
            "VirtualMachine ns/b",
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "--- VirtualMachine ns/a");
        assert_eq!(lines[1], "+++ VirtualMachine ns/b");
        assert!(lines[2].starts_with("@@ "), "{text}");
        assert!(lines.contains(&"-  name: a"), "{text}");
        assert!(lines.contains(&"+  name: b"), "{text}");
        // Key order alone is no change.
        let changed: Vec<&&str> = lines[3..]
            .iter()
            .filter(|l| l.starts_with('+') || l.starts_with('-'))
            .collect();
        assert_eq!(changed.len(), 2, "{text}");
    }

    #[test]
    fn identical_objects_have_an_empty_diff() {
        let vm = json!({"metadata": {"name": "a"}});
        assert_eq!(diff(&vm, &vm, "a", "b").unwrap(), "");
    }
}
