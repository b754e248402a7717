//! Applying YAML manifests: CustomResourceDefinitions first (waiting until each is
//! `Established`), then every other document.
//!
//! Everything is applied with server-side apply (field manager `testenv`, forced): KubeVirt's
//! CRDs are too large for the `last-applied-configuration` annotation of client-side apply, and
//! applying twice is harmless.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde_json::Value;

use crate::wait::wait_for;

/// The field manager of everything testenv applies.
pub(crate) const FIELD_MANAGER: &str = "testenv";

/// One Kubernetes object read from a manifest, with where it came from for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    source: String,
    object: Value,
}

impl Document {
    fn field(&self, key: &str) -> Option<&str> {
        self.object.get(key).and_then(Value::as_str)
    }

    fn name(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
    }

    fn is_crd(&self) -> bool {
        self.field("apiVersion") == Some("apiextensions.k8s.io/v1")
            && self.field("kind") == Some("CustomResourceDefinition")
    }
}

/// The documents of a YAML (or JSON) text; empty documents are skipped, `List`s are unpacked.
pub(crate) fn parse_documents(text: &str, source: &str) -> Result<Vec<Document>> {
    let values: Vec<Value> =
        serde_saphyr::from_multiple(text).with_context(|| format!("parsing YAML of {source}"))?;
    let mut documents = Vec::new();
    let mut pending: Vec<(String, Value)> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("{source} (document {})", i + 1), v))
        .collect();
    pending.reverse();
    while let Some((source, object)) = pending.pop() {
        if object.is_null() {
            continue;
        }
        if object.get("kind").and_then(Value::as_str) == Some("List") {
            if let Some(items) = object.get("items").and_then(Value::as_array) {
                for (i, item) in items.iter().enumerate().rev() {
                    pending.push((format!("{source}, item {}", i + 1), item.clone()));
                }
            }
            continue;
        }
        let document = Document { source, object };
        if document.field("apiVersion").is_none()
            || document.field("kind").is_none()
            || document.name().is_none()
        {
            bail!(
                "{} lacks apiVersion, kind or metadata.name",
                document.source
            );
        }
        documents.push(document);
    }
    Ok(documents)
}

/// The documents of the given files; a folder stands for its `.yaml`, `.yml` and `.json` files
/// (recursively, in name order). Paths that do not exist are skipped.
pub(crate) fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>> {
    let mut files = Vec::new();
    for path in paths {
        collect_manifest_files(path, &mut files)?;
    }
    let mut documents = Vec::new();
    for file in files {
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        documents.extend(parse_documents(&text, &file.display().to_string())?);
    }
    Ok(documents)
}

fn collect_manifest_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_file() {
        files.push(path.to_owned());
        return Ok(());
    }
    if !path.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let is_manifest = entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if entry.is_dir() || is_manifest {
            collect_manifest_files(&entry, files)?;
        }
    }
    Ok(())
}

/// Applies the CRDs among `documents`, waits until they are all `Established`, then applies
/// the other documents in order (they may be objects of those CRDs).
pub(crate) async fn apply(client: &Client, documents: &[Document]) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // All at once: the API server compiles each schema, and that overlaps with the uploads.
    let mut uploads = tokio::task::JoinSet::new();
    let mut names = Vec::new();
    for document in documents.iter().filter(|d| d.is_crd()).cloned() {
        let name = document.name().unwrap_or_default().to_owned();
        names.push(name.clone());
        let (crds, params) = (crds.clone(), params.clone());
        uploads.spawn(async move {
            crds.patch(&name, &params, &Patch::Apply(&document.object))
                .await
                .with_context(|| format!("applying CRD {name} from {}", document.source))
        });
    }
    while let Some(upload) = uploads.join_next().await {
        upload.context("a CRD upload task failed")??;
    }
    wait_until_established(&crds, &names).await?;

    for document in documents.iter().filter(|d| !d.is_crd()) {
        apply_object(client, document, &params).await?;
    }
    Ok(())
}

async fn wait_until_established(
    crds: &Api<CustomResourceDefinition>,
    names: &[String],
) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    wait_for(
        &format!("{} CRD(s) to be Established", names.len()),
        Duration::from_secs(60),
        || async {
            let mut pending = Vec::new();
            for name in names {
                let crd = crds.get(name).await?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                let established = conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if !established {
                    let seen: Vec<String> = conditions
                        .iter()
                        .map(|c| {
                            format!(
                                "{}={} ({})",
                                c.type_,
                                c.status,
                                c.message.as_deref().unwrap_or_default()
                            )
                        })
                        .collect();
                    pending.push(format!("{name}: {seen:?}"));
                }
            }
            anyhow::ensure!(pending.is_empty(), "not Established: {pending:#?}");
            Ok(())
        },
    )
    .await
}

async fn apply_object(client: &Client, document: &Document, params: &PatchParams) -> Result<()> {
    let api_version = document.field("apiVersion").unwrap_or_default();
    let kind = document.field("kind").unwrap_or_default();
    let name = document.name().unwrap_or_default();
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    // A CRD that just became Established can take a moment to show up in discovery.
    let (resource, capabilities) = wait_for(
        &format!(
            "{api_version} {kind} to be served (for {})",
            document.source
        ),
        Duration::from_secs(30),
        || kube::discovery::pinned_kind(client, &gvk),
    )
    .await?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let namespace = document
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
    };
    api.patch(name, params, &Patch::Apply(&document.object))
        .await
        .with_context(|| format!("applying {kind} {name} from {}", document.source))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_lists_unpacked_and_empties_skipped() {
        let yaml = "---
apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b}
- apiVersion: apiextensions.k8s.io/v1
  kind: CustomResourceDefinition
  metadata: {name: things.example.com}
";
        let docs = parse_documents(yaml, "test.yaml").unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.name().unwrap()).collect();
        assert_eq!(names, ["a", "b", "things.example.com"]);
        assert!(!docs[0].is_crd());
        assert!(docs[2].is_crd());
        assert!(docs[1].source.contains("item 1"), "{}", docs[1].source);
    }

    #[test]
    fn a_document_without_a_name_is_an_error_naming_its_source() {
        let err = parse_documents("apiVersion: v1\nkind: ConfigMap\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.yaml (document 1)"), "{err}");
    }

    #[test]
    fn folders_contribute_their_manifests_in_name_order_and_missing_paths_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cm = |n: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\n");
        fs::write(dir.path().join("b.yaml"), cm("b")).unwrap();
        fs::write(dir.path().join("a.yml"), cm("a")).unwrap();
        fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
        let docs = read_documents(&[dir.path().to_owned(), dir.path().join("missing")]).unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.name().unwrap()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
