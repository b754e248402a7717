//! The controller's `/metrics` (Prometheus text, parsed by `prometheus-parse`): reconciles by
//! result and the reconcile-duration histogram's count and sum.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use prometheus_parse::{Scrape, Value};

/// What the bench reads from the controller's `/metrics` at the end of a scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerMetrics {
    /// `vmclone_reconciles_total` by its `result` label.
    pub reconciles: BTreeMap<String, f64>,
    /// `vmclone_reconcile_duration_seconds_count`: passes, whatever their result.
    pub passes: f64,
    /// `vmclone_reconcile_duration_seconds_sum`: the seconds those passes took.
    pub pass_seconds: f64,
}

pub fn controller_metrics(text: &str) -> Result<ControllerMetrics> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .context("parsing the controller's /metrics")?;
    let mut out = ControllerMetrics::default();
    for sample in &scrape.samples {
        let value = match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(_) | Value::Summary(_) => continue,
        };
        match sample.metric.as_str() {
            "vmclone_reconciles_total" => {
                let result = sample.labels.get("result").unwrap_or_default();
                *out.reconciles.entry(result.to_owned()).or_default() += value;
            }
            "vmclone_reconcile_duration_seconds_count" => out.passes += value,
            "vmclone_reconcile_duration_seconds_sum" => out.pass_seconds += value,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ResultLabel {
        result: String,
    }

    /// What the controller exposes, encoded by the same library the same way
    /// (`crates/clone-controller/src/telemetry.rs`: prefix `vmclone`, a counter family by
    /// result, an unlabelled histogram).
    fn controller_text() -> String {
        let mut registry = Registry::with_prefix("vmclone");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile pass duration",
            duration.clone(),
        );
        let label = |r: &str| ResultLabel { result: r.into() };
        reconciles.get_or_create(&label("ok")).inc_by(10);
        reconciles.get_or_create(&label("error")).inc_by(2);
        for seconds in [0.002, 0.004, 0.5] {
            duration.observe(seconds);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn the_controllers_metrics_are_read() {
        let metrics = controller_metrics(&controller_text()).unwrap();
        assert_eq!(
            metrics.reconciles,
            [("error".to_owned(), 2.0), ("ok".to_owned(), 10.0)].into()
        );
        assert_eq!(metrics.passes, 3.0);
        assert!((metrics.pass_seconds - 0.506).abs() < 1e-9);
    }

    #[test]
    fn metrics_the_bench_does_not_read_are_ignored() {
        let text = "# TYPE apiserver_request_total counter\n\
            apiserver_request_total{code=\"200\",verb=\"GET\"} 7\n\
            vmclone_reconciles_total{result=\"ok\"} 4\n";
        let metrics = controller_metrics(text).unwrap();
        assert_eq!(metrics.reconciles, [("ok".to_owned(), 4.0)].into());
        assert_eq!(metrics.passes, 0.0);
        assert_eq!(
            controller_metrics("").unwrap(),
            ControllerMetrics::default()
        );
    }
}
