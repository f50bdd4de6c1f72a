//! The server's error type and its mapping to gRPC status codes: the one place where errors
//! become `tonic::Status`.

use std::path::PathBuf;

use tonic::{Code, Status};

/// Every error a CRI handler can return. Each variant maps to one gRPC code in
/// [`From<ServerError> for Status`].
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A request field is missing or malformed (`InvalidArgument`).
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The CRI field, e.g. `config.metadata.name`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The named object does not exist (`NotFound`).
    #[error("{kind} {} not found", crate::validate::quote(id))]
    NotFound {
        /// `sandbox`, `container` or `image`.
        kind: &'static str,
        /// The id or reference that was asked for.
        id: String,
    },
    /// A name is already reserved by another object (`AlreadyExists`).
    #[error("{kind} name {} is reserved by {id}", crate::validate::quote(name))]
    AlreadyExists {
        /// `sandbox` or `container`.
        kind: &'static str,
        /// The reserved name.
        name: String,
        /// The id holding it.
        id: String,
    },
    /// The object is in the wrong state for the call (`FailedPrecondition`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A lifecycle transition the sandbox's or container's current state does not allow
    /// (`FailedPrecondition`); the message names the kind, the id and the state.
    #[error(transparent)]
    Transition(#[from] crate::state::TransitionError),
    /// The request is valid but krio cannot carry it out at all (`Unimplemented`).
    #[error("{0}")]
    Unimplemented(String),
    /// An image store or registry error; mapped per variant.
    #[error(transparent)]
    Image(#[from] krio_image::ImageError),
    /// The OCI spec could not be built from the request (`InvalidArgument`).
    #[error(transparent)]
    Spec(#[from] krio_oci::SpecError),
    /// The OCI runtime binary failed (`Internal`).
    #[error(transparent)]
    Runtime(#[from] krio_oci::RuntimeError),
    /// The container monitor failed (`Internal`).
    #[error(transparent)]
    Monitor(#[from] krio_monitor::MonitorError),
    /// A namespace or CNI operation failed (`Internal`).
    #[error(transparent)]
    Net(#[from] krio_net::NetError),
    /// A file-system operation failed (`Internal`).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Several teardown steps failed; all are reported (`Internal`).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<ServerError>),
    /// A step krio drives failed in a way no other variant describes, e.g. a container's
    /// monitor reporting that `runtime start` failed (`Internal`).
    #[error("{0}")]
    Internal(String),
    /// The task running a handler panicked (`Internal`).
    #[error("handler task failed: {0}")]
    Task(String),
    /// The call was cancelled or timed out (`DeadlineExceeded`).
    #[error("{0}")]
    DeadlineExceeded(String),
}

impl ServerError {
    /// Shorthand for [`ServerError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ServerError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for an I/O error on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ServerError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Collapses a list of teardown errors: `Ok` when empty, the error itself when single.
    pub fn collect(mut errors: Vec<ServerError>) -> Result<(), ServerError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ServerError::Many(errors)),
        }
    }

    /// The gRPC code this error maps to. An error that would be `Internal` but was caused by
    /// a full filesystem or an exhausted quota (`ENOSPC`, `EDQUOT` anywhere in its chain, or a
    /// runtime's message saying so) is `ResourceExhausted`, so that a caller can tell "the
    /// node's disk is full" from a bug.
    pub fn code(&self) -> Code {
        let code = self.base_code();
        if code == Code::Internal && self.is_no_space() {
            return Code::ResourceExhausted;
        }
        code
    }

    /// Whether this error comes from a full filesystem or quota: an `io::Error` with `ENOSPC`
    /// or `EDQUOT` anywhere in the source chain (including errors wrapped inside an
    /// `io::Error`), or, for errors that carry another program's output only as text (runc,
    /// the monitor), the OS's message for those errors.
    pub fn is_no_space(&self) -> bool {
        if let ServerError::Many(v) = self {
            return v.first().is_some_and(|e| e.is_no_space());
        }
        if chain_has_no_space(self) {
            return true;
        }
        match self {
            ServerError::Runtime(_) | ServerError::Monitor(_) | ServerError::Net(_) => {
                // Go programs (runc) print the OS message in lower case.
                let msg = self.to_string().to_ascii_lowercase();
                msg.contains("no space left on device") || msg.contains("disk quota exceeded")
            }
            _ => false,
        }
    }

    fn base_code(&self) -> Code {
        use krio_image::ImageError as I;
        match self {
            ServerError::Spec(
                krio_oci::SpecError::CapabilityUnavailable { .. }
                | krio_oci::SpecError::MountPropagation { .. },
            ) => Code::FailedPrecondition,
            ServerError::InvalidArgument { .. } | ServerError::Spec(_) => Code::InvalidArgument,
            ServerError::NotFound { .. } => Code::NotFound,
            ServerError::AlreadyExists { .. } => Code::AlreadyExists,
            ServerError::FailedPrecondition(_) | ServerError::Transition(_) => {
                Code::FailedPrecondition
            }
            ServerError::Unimplemented(_) => Code::Unimplemented,
            ServerError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ServerError::Image(e) => match e {
                I::InvalidReference { .. } => Code::InvalidArgument,
                I::NotFound { .. } => Code::NotFound,
                I::Unauthorized { .. } => Code::PermissionDenied,
                I::Blocked { .. } => Code::PermissionDenied,
                I::UnsupportedMediaType { .. }
                | I::LayerMediaTypeMismatch { .. }
                | I::NoMatchingPlatform { .. }
                | I::AuthFile { .. }
                | I::RegistriesConf { .. }
                | I::InUse { .. }
                | I::ReadOnly { .. } => Code::FailedPrecondition,
                I::Stalled { .. } => Code::DeadlineExceeded,
                I::Registry { .. } => Code::Unavailable,
                _ => Code::Internal,
            },
            ServerError::Many(v) => v.first().map(|e| e.code()).unwrap_or(Code::Internal),
            // kubelet treats DeadlineExceeded from ExecSync as a probe timeout, as containerd
            // answers it.
            ServerError::Runtime(krio_oci::RuntimeError::Timeout { .. }) => Code::DeadlineExceeded,
            ServerError::Runtime(_)
            | ServerError::Monitor(_)
            | ServerError::Net(_)
            | ServerError::Task(_)
            | ServerError::Internal(_)
            | ServerError::Io { .. } => Code::Internal,
        }
    }
}

/// Whether `e` or any error in its source chain is an `io::Error` for `ENOSPC` or `EDQUOT`.
fn chain_has_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                return true;
            }
            // `io::Error::source` skips the error it wraps; look at that one too.
            if let Some(inner) = io.get_ref() {
                if chain_has_no_space(inner) {
                    return true;
                }
            }
        }
        cur = err.source();
    }
    false
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "request failed");
        }
        Status::new(code, cut_message(e.to_string()))
    }
}

/// The longest status message sent (bytes). gRPC carries the message in a trailer, and
/// clients refuse trailers over their metadata limit (8 KiB by default in grpc-go) with
/// `RESOURCE_EXHAUSTED`, hiding the real code.
const MAX_MESSAGE: usize = 4096;

/// Cuts `msg` to [`MAX_MESSAGE`] bytes at a character boundary: the backstop behind
/// [`crate::validate::quote`] for any error that still echoes a long input (a registry's
/// answer, a runtime's stderr).
fn cut_message(mut msg: String) -> String {
    if msg.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str("... (cut)");
    }
    msg
}

/// Result alias for handlers.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn no_space_is_resource_exhausted_wherever_it_is_wrapped() {
        let direct = ServerError::io("writing", "/x", enospc());
        assert_eq!(direct.code(), Code::ResourceExhausted);
        let wrapped = ServerError::io("writing", "/x", std::io::Error::other(enospc()));
        assert_eq!(wrapped.code(), Code::ResourceExhausted);
        let image = ServerError::Image(krio_image::ImageError::Io {
            op: "write spool",
            path: "/x".into(),
            source: enospc(),
        });
        assert_eq!(image.code(), Code::ResourceExhausted);
        let many = ServerError::Many(vec![direct, ServerError::Task("x".into())]);
        assert_eq!(many.code(), Code::ResourceExhausted);
        let status = Status::from(ServerError::io("writing", "/x", enospc()));
        assert!(
            status.message().contains("No space left on device"),
            "{status:?}"
        );
    }

    #[test]
    fn other_io_errors_stay_internal_and_input_errors_keep_their_code() {
        let eio = ServerError::io(
            "writing",
            "/x",
            std::io::Error::from_raw_os_error(libc::EIO),
        );
        assert_eq!(eio.code(), Code::Internal);
        let bad = ServerError::invalid("config.metadata.name", "No space left on device");
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert_eq!(
            ServerError::Task("No space left on device".into()).code(),
            Code::Internal
        );
    }
}
