//! The sim's error type.

/// What went wrong in a reconcile or in [`install`](crate::install()).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the sim tried to do.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// An object could not be (de)serialised.
    #[error("{action}: {source}")]
    Json {
        /// What the sim tried to do.
        action: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// An object the sim looked at is not what it expected.
    #[error("{0}")]
    Invalid(String),
    /// The object changed between reading and writing it (a guarded patch failed); the next
    /// reconcile sees the new version.
    #[error("{0}")]
    Stale(String),
}

impl Error {
    /// Whether the error is expected to go away by itself (conflicts, stale caches).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } => matches!(status.code, 409 | 404 | 429),
            Self::Stale(_) => true,
            _ => false,
        }
    }
}

/// Adds what the sim was doing to a kube error.
pub trait KubeContext<T> {
    /// Wraps the error with `action`.
    fn kube(self, action: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn kube(self, action: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}

/// Whether `err` is the API server's `AlreadyExists`.
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409 && status.reason == "AlreadyExists")
}

/// Whether `err` is the API server's `NotFound`.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
