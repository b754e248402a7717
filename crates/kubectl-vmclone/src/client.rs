//! A client for the cluster kubectl would talk to: `--kubeconfig`, `--context`, `-n`.

use anyhow::Context as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::Global;

/// A client and the namespace to work in (`-n`, else the context's, else `default`).
pub async fn connect(global: &Global) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &global.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            Err(_) if global.context.is_none() => kube::Config::infer().await?,
            Err(error) => return Err(error).context("reading the kubeconfig"),
        },
    };
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}
