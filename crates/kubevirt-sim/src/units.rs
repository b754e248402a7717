//! Small value parsers the controllers need: Go durations (`failureDeadline`, the binary's
//! `--latency`), Kubernetes quantities (storage sizes) and RFC 3339 timestamps.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Parses a Go duration (`5m`, `1h30m`, `250ms`, `0`, `1.5s`); `None` if it is not one.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Parses a Kubernetes quantity (`10Gi`, `1G`, `512Mi`, `1e9`, `100m`) into bytes (rounded up).
pub fn parse_quantity(text: &str) -> Option<u128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    if number < 0.0 {
        return None;
    }
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        other => {
            // Decimal exponent: `1e9`, `2E3`.
            let exponent = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))?;
            10f64.powi(exponent.parse().ok()?)
        }
    };
    let bytes = (number * factor).ceil();
    if bytes.is_finite() && bytes >= 0.0 {
        // The value is finite, non-negative and integral: the conversion is exact up to f64's
        // precision, which is all a size comparison needs.
        Some(bytes as u128)
    } else {
        None
    }
}

/// Now, as Kubernetes writes `metav1.Time` (RFC 3339, seconds, `Z`).
pub fn now_rfc3339() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Seconds elapsed since `timestamp` (negative if it lies ahead).
pub fn seconds_since(timestamp: &Timestamp) -> f64 {
    let elapsed = Timestamp::now().duration_since(*timestamp);
    elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("5m", Some(300.0)),
            ("5m0s", Some(300.0)),
            ("1h2m3s", Some(3723.0)),
            ("250ms", Some(0.25)),
            ("1.5s", Some(1.5)),
            ("0", Some(0.0)),
            ("0s", Some(0.0)),
            ("", None),
            ("5", None),
            ("-1s", None),
            ("3d", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_go_duration(text).map(|d| d.as_secs_f64()),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn quantities() {
        let cases = [
            ("1Gi", Some(1 << 30)),
            ("512Mi", Some(512 << 20)),
            ("1G", Some(1_000_000_000)),
            ("10", Some(10)),
            ("1e3", Some(1000)),
            ("1.5Ki", Some(1536)),
            ("100m", Some(1)),
            ("abc", None),
            ("1Xi", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_quantity(text), expected, "{text}");
        }
        assert!(parse_quantity("1Gi") > parse_quantity("1G"));
    }

    #[test]
    fn timestamps_are_seconds_in_utc() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
        let parsed: Timestamp = now.parse().unwrap();
        assert!(seconds_since(&parsed) < 5.0);
    }
}
