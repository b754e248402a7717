//! Creates the seed's clone and waits until it is `Ready`, as `kubectl create` and
//! `kubectl wait vmclone testclone --for condition=Ready` would.
//!
//! ```sh
//! cargo run -p clone-api --example create_and_wait --features k8s-openapi/v1_36 -- <namespace>
//! ```
//!
//! It uses the current kubeconfig. The source VM `vm-cirros` must exist in the namespace, and a
//! clone controller must run (vmclone, or KubeVirt's own).

use std::time::Duration;

use anyhow::{Context, Result};
use clone_api::extensions::{self, TargetRunStrategy};
use clone_api::v1beta1::{CloneSource, CloneTarget, VirtualMachineClone, VirtualMachineCloneSpec};
use kube::api::{Api, PostParams};
use kube::runtime::wait::{Condition, await_condition};

/// `Ready` is `True`: the target VM exists.
fn is_ready() -> impl Condition<VirtualMachineClone> {
    |clone: Option<&VirtualMachineClone>| {
        clone
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.condition("Ready"))
            .is_some_and(|c| c.status == "True")
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let namespace = std::env::args().nth(1).unwrap_or_else(|| "default".into());
    let client = kube::Client::try_default().await.context("no kubeconfig")?;
    let clones: Api<VirtualMachineClone> = Api::namespaced(client, &namespace);

    let mut clone = VirtualMachineClone::new(
        "testclone",
        VirtualMachineCloneSpec {
            source: CloneSource {
                api_group: Some("kubevirt.io".into()),
                kind: "VirtualMachine".into(),
                name: "vm-cirros".into(),
            },
            target: Some(CloneTarget {
                api_group: Some("kubevirt.io".into()),
                kind: "VirtualMachine".into(),
                name: "vm-clone-target".into(),
            }),
            label_filters: Some(vec!["*".into(), "!somekey/*".into()]),
            new_smbios_serial: Some("new-serial".into()),
            ..Default::default()
        },
    );
    // vmclone's options are annotations; other clone controllers ignore them.
    clone.metadata.annotations = Some(
        [(
            extensions::TARGET_RUN_STRATEGY.to_owned(),
            TargetRunStrategy::Halted.as_str().to_owned(),
        )]
        .into_iter()
        .collect(),
    );
    clones.create(&PostParams::default(), &clone).await?;
    println!("created clone {namespace}/testclone; waiting for Ready");

    let ready = tokio::time::timeout(
        Duration::from_secs(300),
        await_condition(clones, "testclone", is_ready()),
    )
    .await
    .context("the clone was not Ready within 5 minutes")??;
    let target = ready
        .and_then(|c| c.status)
        .and_then(|s| s.target_name)
        .unwrap_or_default();
    println!("clone ready: target VM {namespace}/{target}");
    Ok(())
}
