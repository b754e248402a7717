//! Progress lines on stderr, each with a UTC wall-clock timestamp.
//!
//! Building the control plane takes minutes on a fresh machine, so every step says what it is
//! doing and when. The lines are written straight to the process's stderr rather than through
//! `eprintln!`, which the test harness captures: someone waiting on a cold build sees it move.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Writes one `[testenv HH:MM:SS] message` line to stderr.
pub(crate) fn say(message: &str) {
    let line = format!("[testenv {}] {message}\n", clock());
    // Progress is best effort: a closed stderr must not fail a build or a test.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `HH:MM:SS` (UTC) of the current time.
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A duration as `1m05s` or `3.2s`, for "took" and "still running" lines.
pub(crate) fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_minutes_and_seconds() {
        assert_eq!(human(Duration::from_millis(3200)), "3.2s");
        assert_eq!(human(Duration::from_secs(65)), "1m05s");
        assert_eq!(human(Duration::from_secs(252)), "4m12s");
    }

    #[test]
    fn clock_is_hours_minutes_seconds() {
        let c = clock();
        assert_eq!(c.len(), 8, "{c}");
        assert_eq!(&c[2..3], ":");
        assert_eq!(&c[5..6], ":");
    }
}
