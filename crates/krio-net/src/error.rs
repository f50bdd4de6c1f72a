//! The error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// Every error returned by `krio-net`.
///
/// Each variant carries the context needed to act on it (paths, plugin names, CNI error codes).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A caller-supplied value is malformed; `field` names the offending argument or struct field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The argument or field name (e.g. `"PodNetwork.id"`).
        field: &'static str,
        /// Why the value was rejected.
        reason: String,
    },

    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (e.g. `"create pin file"`).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A system call (mount, unshare, sethostname, ioctl ...) failed.
    #[error("{op} {path}: {source}")]
    Sys {
        /// The operation (e.g. `"bind-mount namespace"`).
        op: &'static str,
        /// The path involved (empty when none).
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },

    /// A pin already exists at `path`; the namespace directory is in use.
    #[error("namespace pin {path} already exists")]
    PinExists {
        /// The existing pin file.
        path: PathBuf,
    },

    /// The short-lived namespace setup thread panicked or could not be spawned.
    #[error("namespace setup thread failed: {reason}")]
    NsThread {
        /// What happened.
        reason: String,
    },

    /// Several errors happened while unpinning namespaces under `dir` (every pin is attempted).
    #[error("unpin namespaces in {dir}: {}", join_errors(errors))]
    Unpin {
        /// The namespace directory.
        dir: PathBuf,
        /// Every failure, in the order met.
        errors: Vec<NetError>,
    },

    /// No usable network configuration was found in the CNI config directory.
    #[error("no valid CNI network config in {dir}: {reason}")]
    NoNetworkConfig {
        /// The directory searched (`CniConfig::conf_dir`).
        dir: PathBuf,
        /// Why nothing was selected.
        reason: String,
    },

    /// A CNI network configuration file or document is invalid.
    #[error("invalid CNI network config {path}: {reason}")]
    InvalidConfig {
        /// The file (or a description of the in-memory source).
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },

    /// The plugin binary named by a config's `type` was not found in any bin dir.
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound {
        /// The plugin `type`.
        plugin: String,
        /// The directories searched (`CniConfig::bin_dirs`).
        dirs: Vec<PathBuf>,
    },

    /// The plugin binary could not be executed or its pipes failed.
    #[error("exec CNI plugin {path}: {source}")]
    PluginExec {
        /// The plugin binary.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The plugin reported an error (CNI spec section "Error" result; `code` per the spec's
    /// well-known error codes, e.g. 1 incompatible version, 7 invalid network config, 11 try again later).
    #[error(
        "CNI plugin {plugin} {command} failed: code {code}: {msg}{}",
        fmt_details(details)
    )]
    Plugin {
        /// The plugin `type`.
        plugin: String,
        /// `ADD`, `DEL`, `CHECK` or `VERSION`.
        command: &'static str,
        /// The CNI error code (0 when the plugin printed no parseable error).
        code: u32,
        /// The error message (`msg`), or the plugin's stderr when it printed no error JSON.
        msg: String,
        /// The error `details`, may be empty.
        details: String,
    },

    /// The plugin did not finish within the per-call timeout and was killed.
    #[error("CNI plugin {plugin} {command} timed out after {timeout:?}")]
    PluginTimeout {
        /// The plugin `type`.
        plugin: String,
        /// `ADD`, `DEL` or `CHECK`.
        command: &'static str,
        /// The timeout that elapsed.
        timeout: Duration,
    },

    /// The plugin succeeded but printed something that is not a valid CNI result.
    #[error("CNI plugin {plugin} {command}: invalid result: {reason}")]
    PluginOutput {
        /// The plugin `type`.
        plugin: String,
        /// `ADD` or `CHECK`.
        command: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// The on-disk result cache for a sandbox is unreadable or malformed.
    #[error("CNI cache {path}: {reason}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// CHECK cannot run: the network's cniVersion is below 0.4.0, or no ADD result is cached.
    #[error("CNI CHECK for sandbox {id} not possible: {reason}")]
    CheckUnavailable {
        /// The sandbox id.
        id: String,
        /// Why.
        reason: String,
    },

    /// One or more plugins failed during DEL (every plugin is still attempted, in reverse order).
    #[error("CNI DEL for sandbox {id}: {}", join_errors(errors))]
    Del {
        /// The sandbox id.
        id: String,
        /// Every failure, in the order met.
        errors: Vec<NetError>,
    },

    /// ADD failed; `rollback` holds errors from the DEL that undid the partial ADD (empty when clean).
    #[error("CNI ADD for sandbox {id}: {source}{}", fmt_rollback(rollback))]
    Add {
        /// The sandbox id.
        id: String,
        /// The failure that aborted ADD.
        #[source]
        source: Box<NetError>,
        /// Failures of the undo (DEL) step.
        rollback: Vec<NetError>,
    },
}

fn join_errors(errors: &[NetError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn fmt_details(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

fn fmt_rollback(errors: &[NetError]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" (rollback also failed: {})", join_errors(errors))
    }
}
