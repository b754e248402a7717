//! The controller's errors. Each has a short stable label for metrics and logs.

/// Something a reconcile could not do; the clone is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read from the API server failed.
    #[error("reading {what}: {source}")]
    Read {
        /// What was read.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// Creating a child object failed for a reason that may pass.
    #[error("creating {what}: {source}")]
    Create {
        /// What was created.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// The API server refused a creation for a reason that may pass (e.g. another restore for
    /// the same target is in progress); the clone says so and is retried with backoff.
    #[error("creating {what} refused for now: {message}")]
    Refused {
        /// What was created.
        what: String,
        /// The server's message.
        message: String,
    },
    /// Deleting an object failed.
    #[error("deleting {what}: {source}")]
    Delete {
        /// What was deleted.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// Writing the clone's status failed.
    #[error("writing the status of clone {clone}: {source}")]
    WriteStatus {
        /// The clone.
        clone: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// Publishing an event failed.
    #[error("publishing event {reason} about {regarding}: {source}")]
    Publish {
        /// What the event is about (`clone <name>`, `KubeVirt <ns>/<name>`).
        regarding: String,
        /// The event reason.
        reason: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// The clone object lacks what every stored object has (namespace, UID).
    #[error("clone object is incomplete: {0}")]
    Incomplete(String),
}

impl Error {
    /// The API verb that failed (metrics), if an API call failed.
    pub fn verb(&self) -> Option<&'static str> {
        match self {
            Error::Read { .. } => Some("get"),
            Error::Create { .. } | Error::Refused { .. } | Error::Publish { .. } => Some("create"),
            Error::Delete { .. } => Some("delete"),
            Error::WriteStatus { .. } => Some("patch"),
            Error::Incomplete(_) => None,
        }
    }

    /// A short stable label (metrics, logs).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Create { .. } => "create",
            Error::Refused { .. } => "refused",
            Error::Delete { .. } => "delete",
            Error::WriteStatus { .. } => "write_status",
            Error::Publish { .. } => "publish_event",
            Error::Incomplete(_) => "incomplete",
        }
    }
}

/// The controller's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
