//! Percentiles and summaries of measured values.

use serde::{Deserialize, Serialize};

/// The `p`-th percentile (0–100) of values sorted ascending (not empty), by the nearest-rank
/// method: the smallest value such that at least `p` % of the values are less or equal.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// The latency summary of a scenario, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn latency(values: &[f64]) -> Option<Latency> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(Latency {
        p50: percentile_sorted(&sorted, 50.0),
        p90: percentile_sorted(&sorted, 90.0),
        p99: percentile_sorted(&sorted, 99.0),
        max: sorted[sorted.len() - 1],
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percentile(values: &[f64], p: f64) -> Option<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        (!sorted.is_empty()).then(|| percentile_sorted(&sorted, p))
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        // Order does not matter; one value is every percentile.
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        // p99 of 1000 values is the 990th.
        let many: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        assert_eq!(percentile(&many, 99.0), Some(990.0));
    }

    #[test]
    fn latency_summary() {
        let l = latency(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            (l.p50, l.p90, l.p99, l.max, l.mean),
            (2.0, 4.0, 4.0, 4.0, 2.5)
        );
        assert!(latency(&[]).is_none());
    }
}
