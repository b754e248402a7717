//! The control plane behaves like a real cluster: kubectl talks to it, the API server serves
//! its OpenAPI document, the garbage collector deletes orphans, namespaces isolate tests, CRDs
//! can be installed, and a private control plane survives restarts and cleans up after itself.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use testenv::{TestEnv, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A ConfigMap, owned by the ConfigMap `owner` (name, uid) if given.
fn config_map(name: &str, owner: Option<(&str, &str)>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            owner_references: owner.map(|(owner, uid)| {
                vec![OwnerReference {
                    api_version: "v1".to_owned(),
                    kind: "ConfigMap".to_owned(),
                    name: owner.to_owned(),
                    uid: uid.to_owned(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn kubectl_reads_the_pinned_server_version() {
    let env = TestEnv::shared().await.unwrap();
    let out = env
        .kubectl_output(&["version", "-o", "json"], None)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let version: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("kubectl version printed no JSON ({e}): {}", out.stdout));
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.36.3",
        "{version:#}"
    );
    assert_eq!(version["serverVersion"]["minor"], "36", "{version:#}");
}

#[tokio::test]
async fn kubectl_apply_validates_against_the_served_openapi() {
    let env = TestEnv::shared().await.unwrap();
    let ns = env.namespace("apply").await.unwrap();

    let good =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  colour: blue\n";
    env.kubectl_output(&["apply", "-n", &ns, "-f", "-"], Some(good))
        .await
        .unwrap()
        .ok()
        .unwrap();
    let colour = env
        .kubectl_output(
            &[
                "get",
                "configmap",
                "applied",
                "-n",
                &ns,
                "-o",
                "jsonpath={.data.colour}",
            ],
            None,
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(colour.stdout, "blue");

    // Validation is on: an unknown field is refused, not silently dropped.
    let bad =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: invalid\nspec:\n  colour: blue\n";
    let refused = env
        .kubectl_output(&["apply", "-n", &ns, "-f", "-"], Some(bad))
        .await
        .unwrap();
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("unknown field \"spec\""),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn the_garbage_collector_deletes_a_child_after_its_owner() {
    let env = TestEnv::shared().await.unwrap();
    let ns = env.namespace("gc").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.client().await.unwrap(), &ns);
    let pp = PostParams::default();

    let owner = api.create(&pp, &config_map("owner", None)).await.unwrap();
    let uid = owner.metadata.uid.unwrap();
    api.create(&pp, &config_map("child", Some(("owner", &uid))))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::default()).await.unwrap();

    wait_for(
        "the child ConfigMap to be garbage-collected",
        TIMEOUT,
        || async {
            match api.get_opt("child").await? {
                None => Ok(()),
                Some(child) => Err(anyhow::anyhow!("child still there: {:?}", child.metadata)),
            }
        },
    )
    .await
    .unwrap();
    // A ConfigMap without an owner is left alone.
    api.create(&pp, &config_map("unowned", None)).await.unwrap();
    assert!(api.get_opt("unowned").await.unwrap().is_some());
}

#[tokio::test]
async fn each_namespace_is_fresh_and_exists() {
    let env = TestEnv::shared().await.unwrap();
    let a = env.namespace("fresh").await.unwrap();
    let b = env.namespace("fresh").await.unwrap();
    assert_ne!(a, b);
    assert!(
        a.starts_with("fresh-") && b.starts_with("fresh-"),
        "{a} {b}"
    );

    let namespaces: Api<Namespace> = Api::all(env.client().await.unwrap());
    for name in [&a, &b] {
        let ns = namespaces.get(name).await.unwrap();
        let phase = ns.status.and_then(|s| s.phase);
        assert_eq!(phase.as_deref(), Some("Active"), "namespace {name}");
    }
}

#[tokio::test]
async fn installed_crds_are_established_and_serve_their_objects() {
    let env = TestEnv::shared().await.unwrap();
    let ns = env.namespace("crd").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("widgets.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testenv.example.com
spec:
  group: testenv.example.com
  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {{type: integer, minimum: 1}}
---
apiVersion: testenv.example.com/v1
kind: Widget
metadata:
  name: first
  namespace: {ns}
spec:
  size: 3
"
        ),
    )
    .unwrap();
    env.install_crds_from(std::slice::from_ref(&file))
        .await
        .unwrap();
    // Installing again is harmless (server-side apply).
    env.install_crds_from(&[file]).await.unwrap();

    let out = env
        .kubectl_output(
            &[
                "get",
                "widgets",
                "first",
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.size}",
            ],
            None,
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(out.stdout, "3");

    // The schema is enforced by the API server.
    let refused = env
        .apply_yaml(&format!(
            "apiVersion: testenv.example.com/v1\nkind: Widget\nmetadata: {{name: tiny, namespace: {ns}}}\nspec: {{size: 0}}\n"
        ))
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("should be greater than or equal to 1"),
        "{refused:#}"
    );
}

#[tokio::test]
async fn a_private_control_plane_survives_restarts_and_cleans_up_on_drop() {
    let mut env = TestEnv::start().await.unwrap();
    let folder: PathBuf = env.kubeconfig_path().parent().unwrap().to_owned();
    let api: Api<ConfigMap> = Api::namespaced(env.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &config_map("kept", None))
        .await
        .unwrap();

    env.restart_etcd().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.client().await.unwrap(), "default");
    assert!(
        api.get_opt("kept").await.unwrap().is_some(),
        "data lost across an etcd restart"
    );

    env.restart_apiserver().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.client().await.unwrap(), "default");
    assert!(api.get_opt("kept").await.unwrap().is_some());

    let url = env.apiserver_url().to_owned();
    drop(env);
    assert!(!folder.exists(), "{} was not removed", folder.display());
    let port = url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "kube-apiserver still listens on {port}"
    );
}

#[tokio::test]
async fn the_audit_log_names_each_component_by_its_own_user() {
    let env = TestEnv::start_with_options(testenv::Options {
        audit_log: true,
        ..testenv::Options::default()
    })
    .await
    .unwrap();
    let log = env.audit_log_path().unwrap();
    let api: Api<ConfigMap> =
        Api::namespaced(env.identity_client("bench").await.unwrap(), "default");
    api.create(&PostParams::default(), &config_map("audited", None))
        .await
        .unwrap();
    let line = wait_for("the create in the audit log", TIMEOUT, || async {
        let text = std::fs::read_to_string(&log)?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| {
                e["verb"] == "create"
                    && e["objectRef"]["resource"] == "configmaps"
                    && e["objectRef"]["name"] == "audited"
                    && e["stage"] == "ResponseComplete"
            })
            .ok_or_else(|| anyhow::anyhow!("not logged yet"))
    })
    .await
    .unwrap();
    assert_eq!(line["user"]["username"], "bench", "{line}");
    assert_eq!(line["responseStatus"]["code"], 201, "{line}");
    assert!(TestEnv::start().await.unwrap().audit_log_path().is_none());
}

/// The ServiceAccount signing key works both ways: kube-apiserver signs a TokenRequest's token
/// with it and then authenticates that token as the account.
#[tokio::test]
async fn a_service_account_kubeconfig_authenticates_as_the_account() {
    let env = TestEnv::shared().await.unwrap();
    let ns = env.namespace("sa-token").await.unwrap();
    env.kubectl_output(&["-n", &ns, "create", "serviceaccount", "robot"], None)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    env.write_service_account_kubeconfig(&ns, "robot", &kubeconfig)
        .await
        .unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap();
    let out = env
        .kubectl_output(
            &[
                "--kubeconfig",
                kubeconfig,
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(out.stdout, format!("system:serviceaccount:{ns}:robot"));
}
