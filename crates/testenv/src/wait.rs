//! Waiting for a condition with a deadline and a failure message worth reading.
//!
//! Tests never sleep and hope: they poll the API until what they expect is there, and when it
//! never comes the message names what was expected and shows what was seen last.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The outcome of one poll of [`wait_for`]: done with a value, or not yet, with what was seen.
///
/// Implemented for `Option<T>` (`None` = not yet) and for `Result<T, E>` (`Err` = not yet; the
/// error, or whatever value the closure put there, is the observation shown on timeout). With
/// `anyhow::Result<T>` a poll can use `?` for API calls and `anyhow::ensure!` for the condition.
pub trait Attempt {
    /// The value [`wait_for`] returns once the condition holds.
    type Output;
    /// `Ok(value)` when done, `Err(observation)` (rendered with `Debug`) when not yet.
    fn into_outcome(self) -> Result<Self::Output, String>;
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn into_outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "the condition did not hold (None)".to_owned())
    }
}

impl<T, E: Debug> Attempt for Result<T, E> {
    type Output = T;
    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|observed| {
            let mut text = format!("{observed:?}");
            // anyhow::Error's Debug appends a backtrace when RUST_BACKTRACE is set; the
            // observation is what matters in a timeout message.
            if let Some(at) = text.find("\n\nStack backtrace:") {
                text.truncate(at);
            }
            text
        })
    }
}

/// Polls `poll` until it reports done, or fails after `timeout` with a message that names `what`
/// was expected and shows the last observation.
///
/// ```no_run
/// # async fn example(env: &testenv::TestEnv) -> anyhow::Result<()> {
/// use k8s_openapi::api::core::v1::ConfigMap;
/// let client = env.client().await?;
/// let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
/// let cm = testenv::wait_for("config map `x` to have key `ready`", std::time::Duration::from_secs(10), || async {
///     let cm = api.get("x").await?;
///     anyhow::ensure!(cm.data.as_ref().is_some_and(|d| d.contains_key("ready")), "data is {:?}", cm.data);
///     Ok(cm)
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_for<A, F, Fut>(
    what: &str,
    timeout: Duration,
    mut poll: F,
) -> anyhow::Result<A::Output>
where
    A: Attempt,
    F: FnMut() -> Fut,
    Fut: Future<Output = A>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let mut interval = Duration::from_millis(50);
    let mut polls = 0u32;
    loop {
        polls += 1;
        let last = match poll().await.into_outcome() {
            Ok(value) => return Ok(value),
            Err(observed) => observed,
        };
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!(
                "timed out after {:.1}s ({polls} polls) waiting for {what}; last observed:\n{last}",
                (now - started).as_secs_f64()
            );
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let value = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let seen = n;
            async move { (seen >= 3).then_some(seen) }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_timeout_names_the_expectation_and_the_last_observation() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct VmClone {
            phase: &'static str,
        }
        let err = wait_for("clone to succeed", Duration::from_millis(200), || async {
            Err::<(), _>(VmClone {
                phase: "Snapshotting",
            })
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for clone to succeed"), "{err}");
        assert!(err.contains("VmClone { phase: \"Snapshotting\" }"), "{err}");
    }

    #[tokio::test]
    async fn anyhow_errors_show_their_message() {
        let err = wait_for("a key", Duration::from_millis(100), || async {
            anyhow::ensure!(false, "data is {:?}", Some("other"));
            Ok(())
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("data is Some(\"other\")"), "{err}");
    }
}
