//! The Prometheus text format, as far as the bench reads it: samples with labels (the
//! controller's `/metrics`).

use std::collections::BTreeMap;

use anyhow::{Result, bail};

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Parses every sample of a Prometheus text exposition; comments and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(sample) => samples.push(sample),
            Err(err) => bail!("line {}: {err}: {line:?}", number + 1),
        }
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        bail!("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no value"))?;
    let value = parse_value(value_text)?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Labels after the `{`; returns them and the text after the closing `}`.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut chars = text.char_indices().peekable();
    loop {
        // Skip separators.
        while let Some(&(_, c)) = chars.peek() {
            if c == ',' || c.is_whitespace() {
                chars.next();
            } else {
                break;
            }
        }
        let Some(&(start, c)) = chars.peek() else {
            bail!("unterminated label set");
        };
        if c == '}' {
            return Ok((labels, &text[start + 1..]));
        }
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('=') {
            bail!("label {key:?} has no '='");
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            bail!("the value of label {key:?} is not quoted");
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => bail!("unterminated value of label {key:?}"),
                Some((_, '"')) => break,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => bail!("unterminated escape in label {key:?}"),
                },
                Some((_, other)) => value.push(other),
            }
        }
        labels.insert(key, value);
    }
}

fn parse_value(text: &str) -> Result<f64> {
    Ok(match text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other
            .parse::<f64>()
            .map_err(|err| anyhow::anyhow!("bad value {other:?}: {err}"))?,
    })
}

/// The sum of samples named `name`, grouped by the value of `label`.
pub fn sum_by_label(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for sample in samples.iter().filter(|s| s.name == name) {
        *out.entry(sample.label(label).to_owned()).or_default() += sample.value;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 3000
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="clone.kubevirt.io",resource="virtualmachineclones",scope="resource",subresource="status",verb="APPLY",version="v1beta1"} 41
apiserver_request_total{code="200",component="apiserver",dry_run="",group="clone.kubevirt.io",resource="virtualmachineclones",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 1
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 7
apiserver_request_duration_seconds_bucket{le="+Inf",verb="GET"} 12
weird_metric{msg="a \"quoted\" \\ value, with {braces}",other="x"} 1.5e3 1700000000000
no_labels 4
"#;

    #[test]
    fn samples_are_parsed_with_escapes_and_timestamps() {
        let samples = parse(TEXT).unwrap();
        assert_eq!(samples.len(), 8);
        let weird = samples.iter().find(|s| s.name == "weird_metric").unwrap();
        assert_eq!(weird.label("msg"), r#"a "quoted" \ value, with {braces}"#);
        assert_eq!(weird.label("other"), "x");
        assert_eq!(weird.value, 1500.0);
        let plain = samples.iter().find(|s| s.name == "no_labels").unwrap();
        assert!(plain.labels.is_empty());
        assert_eq!(plain.value, 4.0);
        let bucket = samples
            .iter()
            .find(|s| s.name == "apiserver_request_duration_seconds_bucket")
            .unwrap();
        assert_eq!(bucket.label("le"), "+Inf");
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse("metric{a=\"b\" 1").is_err());
        assert!(parse("metric{a=b} 1").is_err());
        assert!(parse("metric notanumber").is_err());
        assert!(parse("metric").is_err());
    }

    #[test]
    fn sums_by_label() {
        let text = "vmclone_reconciles_total{result=\"ok\"} 10\nvmclone_reconciles_total{result=\"error\"} 2\n";
        let sums = sum_by_label(&parse(text).unwrap(), "vmclone_reconciles_total", "result");
        assert_eq!(sums["ok"], 10.0);
        assert_eq!(sums["error"], 2.0);
    }
}
