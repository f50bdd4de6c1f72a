//! The error type of krioctl commands.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::ConnectError;
use crate::config::ConfigError;
use crate::logs::LogReadError;
use crate::resolve::ResolveError;

/// Why a krioctl command failed. `main` prints it and exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime answered with a gRPC error; printed crictl-style with the
    /// code and message.
    #[error("{op}: rpc error: code = {code:?} desc = {message}", code = status.code(), message = status.message())]
    Rpc {
        /// The CRI method, e.g. "RunPodSandbox".
        op: &'static str,
        /// The status returned.
        status: tonic::Status,
    },
    /// A call took longer than its deadline.
    #[error("{op}: rpc error: code = DeadlineExceeded desc = no answer within {after:?}")]
    Timeout {
        /// The CRI method.
        op: &'static str,
        /// The deadline that elapsed.
        after: Duration,
    },
    /// The endpoint is unusable or unreachable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A config file could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An ID prefix did not name exactly one object.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A log file could not be read.
    #[error(transparent)]
    LogRead(#[from] LogReadError),
    /// A flag or argument value is invalid.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The flag or argument, e.g. "--label".
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The runtime's answer lacks something the command needs.
    #[error("{op}: {message}")]
    Response {
        /// The CRI method.
        op: &'static str,
        /// What is missing, e.g. "no such image \"busybox\"".
        message: String,
    },
    /// The object is in a state that forbids the operation.
    #[error("{message}")]
    State {
        /// E.g. "pod sandbox ... is running, stop it first or use -f".
        message: String,
    },
    /// Output could not be produced.
    #[error("formatting output: {0}")]
    Output(String),
    /// Writing to stdout/stderr failed (e.g. a closed pipe).
    #[error("writing output: {0}")]
    Write(#[source] std::io::Error),
    /// A log file path reported by the runtime is unusable.
    #[error("container {id} has no usable log path {path:?}")]
    LogPath {
        /// The container.
        id: String,
        /// The path reported.
        path: PathBuf,
    },
    /// A streaming session (exec, attach, port-forward) failed.
    #[error("{0}")]
    Stream(String),
    /// Some of several objects failed; each failure was already printed.
    #[error("{failed} of {total} operations failed")]
    Partial {
        /// How many failed.
        failed: usize,
        /// How many were attempted.
        total: usize,
    },
}

impl Error {
    /// Builds an [`Error::Invalid`].
    pub fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            message: message.into(),
        }
    }
}
