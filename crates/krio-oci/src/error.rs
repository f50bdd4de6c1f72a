//! Error types of this crate.

use std::path::PathBuf;

/// Errors returned by [`crate::build_spec`] and [`crate::write_bundle`].
///
/// Every variant names the CRI field (or file) that caused it, so the daemon can return it to the kubelet
/// verbatim as an `InvalidArgument` / `Internal` status message.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A CRI (or image config) field has a value this runtime rejects.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Dotted CRI field path, e.g. `linux.security_context.run_as_username`.
        field: String,
        /// Human readable reason.
        reason: String,
    },
    /// A CRI feature that krio does not implement was requested.
    #[error("unsupported {field}: {reason}")]
    Unsupported {
        /// Dotted CRI field path.
        field: String,
        /// What is not supported.
        reason: String,
    },
    /// A capability was asked for explicitly that the daemon's own bounding set lacks, so no container it starts
    /// can hold it (the daemon maps this to `FailedPrecondition`).
    #[error(
        "{field}: {capability} is not in the node's capability bounding set (krio cannot grant it)"
    )]
    CapabilityUnavailable {
        /// Dotted CRI field path, e.g. `linux.security_context.capabilities.add_capabilities[0]`.
        field: String,
        /// The capability, e.g. `CAP_SYS_RESOURCE`.
        capability: String,
    },
    /// A CRI mount asks for `rslave` or `rshared` propagation but the host mount holding its `host_path` cannot
    /// carry it (the daemon maps this to `FailedPrecondition`).
    #[error("{field}: host path {path} lies on mount {mount_point}, which is not {need} (make it so with `mount --make-shared` or `--make-slave`)")]
    MountPropagation {
        /// Dotted CRI field path, e.g. `mounts[0].propagation`.
        field: String,
        /// The host path (symlinks resolved).
        path: PathBuf,
        /// The host mount point the path lies on.
        mount_point: PathBuf,
        /// What the propagation needs, e.g. "a shared mount".
        need: &'static str,
    },
    /// The resolved process has no arguments (neither CRI command/args nor image Entrypoint/Cmd).
    #[error("no command specified: CRI command/args and image Entrypoint/Cmd are all empty")]
    NoCommand,
    /// A user or group name could not be resolved against the rootfs `/etc/passwd` / `/etc/group`.
    #[error("{field}: {kind} {name:?} not found in the container's {file}")]
    UnknownName {
        /// CRI / image field the name came from.
        field: String,
        /// `user` or `group`.
        kind: &'static str,
        /// The name looked up.
        name: String,
        /// `/etc/passwd` or `/etc/group`.
        file: &'static str,
    },
    /// A namespace that must be joined has no pinned path in [`crate::NamespacePaths`].
    #[error("namespace {namespace}: mode {mode} requires a namespace path but none was given")]
    MissingNamespacePath {
        /// `pid`, `network`, ...
        namespace: &'static str,
        /// The CRI mode, e.g. `POD` or `TARGET`.
        mode: &'static str,
    },
    /// Reading a file inside the rootfs (`/etc/passwd`, `/etc/group`) failed.
    #[error("reading {path} inside rootfs {rootfs}: {source}")]
    RootfsRead {
        /// The rootfs directory.
        rootfs: PathBuf,
        /// Path inside the rootfs.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A host file or directory (mount source, device, seccomp profile) could not be read.
    #[error("{field}: host path {path}: {source}")]
    HostPath {
        /// CRI field the path came from.
        field: String,
        /// The host path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A Localhost seccomp profile is not valid JSON for an OCI `LinuxSeccomp`.
    #[error("seccomp profile {path}: {source}")]
    SeccompProfile {
        /// Profile path on the host.
        path: PathBuf,
        /// JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An `oci-spec` builder rejected a value.
    #[error("building OCI {what}: {source}")]
    Build {
        /// Which OCI object was being built.
        what: &'static str,
        /// The builder error.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// Serialising `config.json` failed.
    #[error("serialising OCI spec: {0}")]
    Serialize(#[source] serde_json::Error),
    /// Writing the bundle failed.
    #[error("writing bundle file {path}: {source}")]
    BundleWrite {
        /// The file being written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl SpecError {
    /// Shorthand for [`SpecError::InvalidField`].
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`SpecError::Unsupported`].
    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Maps an `oci-spec` builder error.
    pub(crate) fn build(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> Self {
        move |source| SpecError::Build { what, source }
    }
}
