//! Reading criterion's results: every `<target>/criterion/**/new/{estimates,benchmark}.json`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One benchmark's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineResult {
    /// criterion's full id: `group/function[/parameter]`.
    pub id: String,
    pub group: String,
    /// Mean time per iteration, nanoseconds, with its confidence interval.
    pub mean_ns: f64,
    pub mean_lower_ns: f64,
    pub mean_upper_ns: f64,
    pub confidence_level: f64,
    /// Median time per iteration, nanoseconds.
    pub median_ns: Option<f64>,
    /// Elements (or bytes) processed per iteration, as the benchmark declared.
    pub throughput: Option<Throughput>,
    /// `throughput` per second at the mean time.
    pub per_second: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// `elements`, `bytes` or `bits`.
    pub unit: String,
    pub per_iteration: u64,
}

/// Parses criterion's `benchmark.json` and `estimates.json` of one benchmark.
pub fn parse_result(benchmark: &str, estimates: &str) -> Result<EngineResult> {
    let benchmark: Value = serde_json::from_str(benchmark).context("parsing benchmark.json")?;
    let estimates: Value = serde_json::from_str(estimates).context("parsing estimates.json")?;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let group = text(&benchmark, "group_id").context("benchmark.json has no group_id")?;
    let id = text(&benchmark, "full_id").unwrap_or_else(|| {
        [
            Some(group.clone()),
            text(&benchmark, "function_id"),
            text(&benchmark, "value_str"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("/")
    });
    let number = |pointer: &str| estimates.pointer(pointer).and_then(Value::as_f64);
    let mean_ns = number("/mean/point_estimate").context("estimates.json has no mean")?;
    let throughput = benchmark.get("throughput").and_then(parse_throughput);
    let per_second = throughput
        .as_ref()
        .filter(|_| mean_ns > 0.0)
        .map(|t| t.per_iteration as f64 / (mean_ns * 1e-9));
    Ok(EngineResult {
        id,
        group,
        mean_ns,
        mean_lower_ns: number("/mean/confidence_interval/lower_bound").unwrap_or(mean_ns),
        mean_upper_ns: number("/mean/confidence_interval/upper_bound").unwrap_or(mean_ns),
        confidence_level: number("/mean/confidence_interval/confidence_level").unwrap_or(0.95),
        median_ns: number("/median/point_estimate"),
        throughput,
        per_second,
    })
}

/// criterion serialises its `Throughput` enum externally tagged: `{"Elements": 100}`,
/// `{"Bytes": 64}`, `{"ElementsAndBytes": {"elements": 1, "bytes": 64}}`, or `null`.
fn parse_throughput(value: &Value) -> Option<Throughput> {
    let object = value.as_object()?;
    let (kind, amount) = object.iter().next()?;
    let (unit, per_iteration) = match kind.as_str() {
        "Elements" => ("elements", amount.as_u64()?),
        "Bytes" | "BytesDecimal" => ("bytes", amount.as_u64()?),
        "Bits" => ("bits", amount.as_u64()?),
        "ElementsAndBytes" => ("elements", amount.get("elements")?.as_u64()?),
        _ => return None,
    };
    Some(Throughput {
        unit: unit.to_owned(),
        per_iteration,
    })
}

/// Every result under `root` (criterion's output folder), sorted by id. With `since`, results
/// written before it (left over from other runs) are skipped. A missing `root` is no results.
pub fn read_results(root: &Path, since: Option<SystemTime>) -> Result<Vec<EngineResult>> {
    let mut folders = Vec::new();
    collect_new_folders(root, &mut folders);
    let mut results = Vec::new();
    for folder in folders {
        let estimates_path = folder.join("estimates.json");
        let benchmark_path = folder.join("benchmark.json");
        if !(estimates_path.is_file() && benchmark_path.is_file()) {
            continue;
        }
        if let Some(since) = since {
            let modified = std::fs::metadata(&estimates_path)
                .and_then(|m| m.modified())
                .ok();
            if modified.is_none_or(|m| m < since) {
                continue;
            }
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let result = parse_result(&read(&benchmark_path)?, &read(&estimates_path)?)
            .with_context(|| format!("in {}", folder.display()))?;
        results.push(result);
    }
    results.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(results)
}

/// Folders named `new` below `dir` (criterion's latest results; `base` and `change` are older).
fn collect_new_folders(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        match entry.file_name().to_str() {
            Some("new") => out.push(path),
            Some("report" | "base" | "change") => {}
            _ => collect_new_folders(&path, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1900.5,"upper_bound":2100.5},"point_estimate":2000.0,"standard_error":50.0},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1890.0,"upper_bound":2010.0},"point_estimate":1950.0,"standard_error":30.0},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":2.0,"standard_error":0.5},"slope":null,"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":10.0,"upper_bound":30.0},"point_estimate":20.0,"standard_error":5.0}}"#;

    fn write(dir: &Path, rel: &str, benchmark: &str) {
        let folder = dir.join(rel).join("new");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("benchmark.json"), benchmark).unwrap();
        std::fs::write(folder.join("estimates.json"), ESTIMATES).unwrap();
    }

    #[test]
    fn results_are_read_generically() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("criterion");
        write(
            &root,
            "filter/glob",
            r#"{"group_id":"filter","function_id":"glob","value_str":null,"throughput":{"Elements":100},"full_id":"filter/glob","directory_name":"filter/glob","title":"filter/glob"}"#,
        );
        write(
            &root,
            "patches/generate/64",
            r#"{"group_id":"patches","function_id":"generate","value_str":"64","throughput":{"ElementsAndBytes":{"elements":64,"bytes":4096}},"full_id":"patches/generate/64","directory_name":"patches/generate/64","title":"patches/generate/64"}"#,
        );
        write(
            &root,
            "decide/one pass",
            r#"{"group_id":"decide","function_id":"one pass","value_str":null,"throughput":null}"#,
        );
        // criterion's own report and the previous run's results are not results.
        std::fs::create_dir_all(root.join("report")).unwrap();
        let base = root.join("filter/glob/base");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("estimates.json"), "not json").unwrap();
        std::fs::write(base.join("benchmark.json"), "not json").unwrap();

        let results = read_results(&root, None).unwrap();
        let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["decide/one pass", "filter/glob", "patches/generate/64"]
        );

        let glob = &results[1];
        assert_eq!(glob.group, "filter");
        assert_eq!(glob.mean_ns, 2000.0);
        assert_eq!((glob.mean_lower_ns, glob.mean_upper_ns), (1900.5, 2100.5));
        assert_eq!(glob.median_ns, Some(1950.0));
        assert_eq!(
            glob.throughput,
            Some(Throughput {
                unit: "elements".into(),
                per_iteration: 100
            })
        );
        // 100 elements per 2 µs.
        assert!((glob.per_second.unwrap() - 5e7).abs() < 1.0);
        assert_eq!(results[2].throughput.as_ref().unwrap().per_iteration, 64);
        assert_eq!(results[0].throughput, None);
        assert_eq!(results[0].per_second, None);
    }

    #[test]
    fn no_results_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_results(&dir.path().join("missing"), None)
                .unwrap()
                .is_empty()
        );
        assert!(read_results(dir.path(), None).unwrap().is_empty());
    }

    #[test]
    fn old_results_are_skipped_with_since() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "filter/glob",
            r#"{"group_id":"filter","function_id":"glob","full_id":"filter/glob","throughput":null}"#,
        );
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert!(read_results(dir.path(), Some(later)).unwrap().is_empty());
        let earlier = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(read_results(dir.path(), Some(earlier)).unwrap().len(), 1);
    }

    #[test]
    fn broken_files_are_errors() {
        assert!(parse_result("{}", ESTIMATES).is_err());
        assert!(parse_result(r#"{"group_id":"g"}"#, "{}").is_err());
        assert!(parse_result("nope", ESTIMATES).is_err());
    }
}
