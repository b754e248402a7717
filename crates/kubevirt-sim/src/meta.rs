//! Metadata helpers shared by the controllers: owner references, annotations, finalizers
//! (KubeVirt's guarded JSON patches), idempotent creates.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{Error, KubeContext, is_already_exists};

/// A controller owner reference (`controller` and `blockOwnerDeletion` set), as KubeVirt and CDI
/// write them.
pub fn controller_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller owner reference of `meta`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The value of annotation `key`.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Whether annotation `key` is `"true"`.
pub fn annotation_true(meta: &ObjectMeta, key: &str) -> bool {
    annotation(meta, key) == Some("true")
}

/// Whether `meta` lists `finalizer`.
pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// JSON Patch operations replacing the finalizers `current` with `desired`, guarded by a `test`
/// of the current list (KubeVirt's `generateFinalizerPatch`).
pub fn finalizer_operations(current: Option<&Vec<String>>, desired: &[String]) -> Vec<Value> {
    match current {
        Some(current) => vec![
            json!({"op": "test", "path": "/metadata/finalizers", "value": current}),
            json!({"op": "replace", "path": "/metadata/finalizers", "value": desired}),
        ],
        None => vec![json!({"op": "add", "path": "/metadata/finalizers", "value": desired})],
    }
}

/// Applies JSON Patch `operations` to `name`; a failed `test` (the object changed since the
/// cache saw it) is [`Error::Stale`], so the reconcile retries with the new version.
pub async fn json_patch<K>(api: &Api<K>, name: &str, operations: Vec<Value>) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(operations)).map_err(|source| Error::Json {
            action: format!("building a JSON patch of {name}"),
            source,
        })?;
    match api
        .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 422 => Err(Error::Stale(format!(
            "{name} changed meanwhile: {}",
            status.message
        ))),
        Err(err) => Err(err).kube(|| format!("patching {name}")),
    }
}

/// Replaces the finalizers of `name` with `desired`, guarded by a JSON Patch `test` of the
/// current list (so a concurrent change makes the patch fail and the reconcile retry).
pub async fn patch_finalizers<K>(
    api: &Api<K>,
    name: &str,
    current: Option<&Vec<String>>,
    desired: Vec<String>,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    json_patch(api, name, finalizer_operations(current, &desired)).await
}

/// Removes `finalizer` from `meta` (of `name`), if it is there.
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    finalizer: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !has_finalizer(meta, finalizer) {
        return Ok(());
    }
    let current = meta.finalizers.as_ref();
    let desired = current
        .into_iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    let name = meta.name.clone().unwrap_or_default();
    patch_finalizers(api, &name, current, desired).await
}

/// Adds `finalizer` to `meta` (of `name`), unless it is there.
pub async fn add_finalizer<K>(api: &Api<K>, meta: &ObjectMeta, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if has_finalizer(meta, finalizer) {
        return Ok(());
    }
    let current = meta.finalizers.as_ref();
    let mut desired: Vec<String> = current.into_iter().flatten().cloned().collect();
    desired.push(finalizer.to_owned());
    let name = meta.name.clone().unwrap_or_default();
    patch_finalizers(api, &name, current, desired).await
}

/// A JSON merge patch of `body` on the status subresource of `name`.
pub async fn patch_status<K>(api: &Api<K>, name: &str, body: &Value) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .kube(|| format!("updating the status of {name}"))?;
    Ok(())
}

/// A JSON merge patch of `body` on `name`.
pub async fn merge_patch<K>(api: &Api<K>, name: &str, body: &Value) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .kube(|| format!("patching {name}"))?;
    Ok(())
}

/// Creates `object` from JSON; `Ok(false)` if it already existed.
pub async fn create_json<K>(api: &Api<K>, object: Value) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let typed: K = serde_json::from_value(object).map_err(|source| Error::Json {
        action: format!("building {name}"),
        source,
    })?;
    match api.create(&PostParams::default(), &typed).await {
        Ok(_) => Ok(true),
        Err(err) if is_already_exists(&err) => Ok(false),
        Err(err) => Err(err).kube(|| format!("creating {name}")),
    }
}

/// Labels or annotations as a JSON object (empty when absent).
pub fn string_map(map: Option<&BTreeMap<String, String>>) -> serde_json::Map<String, Value> {
    map.into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}
