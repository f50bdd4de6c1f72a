//! Typed errors of this crate.

use std::path::PathBuf;

/// Every failure the library can report. Each variant names the thing (path, URL, image, field) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a host file (e.g. `/bin/busybox`) or writing an OCI layout file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Running `busybox --list` failed or printed something unusable.
    #[error("cannot list busybox applets with `{busybox} --list`: {reason}")]
    BusyboxList {
        /// The busybox binary that was run.
        busybox: PathBuf,
        /// What went wrong (spawn error, exit status, bad output).
        reason: String,
    },
    /// A path given to the layer builder is not a clean relative path (absolute, `..`, empty, NUL, ...).
    #[error("invalid path {path:?} in layer: {reason}")]
    InvalidPath {
        /// The offending path as given.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Two different entries were added for the same path of one layer.
    #[error("duplicate entry {path:?} in layer")]
    DuplicateEntry {
        /// The normalised path.
        path: String,
    },
    /// A hard link points to a path that is not a regular file in the same layer.
    #[error(
        "hard link {path:?} points to {target:?}, which is not a regular file in the same layer"
    )]
    DanglingHardLink {
        /// The link's path.
        path: String,
        /// Its target.
        target: String,
    },
    /// Writing the tar stream or compressing it failed.
    #[error("building layer tar ({stage}) failed: {source}")]
    Tar {
        /// Which step failed (e.g. "append bin/busybox", "gzip").
        stage: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Serialising a config/manifest/index to JSON failed.
    #[error("serialising {what} to JSON failed: {source}")]
    Json {
        /// What was being serialised or parsed.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A digest string is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The string given.
        digest: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A layer compression that the chosen manifest format has no media type for (Docker schema 2 is gzip-only).
    #[error("{format} manifests cannot carry {compression} layers")]
    UnsupportedCompression {
        /// Manifest format name ("docker" / "oci").
        format: &'static str,
        /// Compression name.
        compression: &'static str,
    },
    /// A registry address, repository name or tag is malformed.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidReference {
        /// Which field ("registry", "repository", "tag").
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An image name that is not in the catalogue ([`crate::catalog::IMAGE_NAMES`]).
    #[error("unknown test image {name:?} (known: {known})")]
    UnknownImage {
        /// The requested name.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// `scripts/registry.sh start PORT` could not be run or failed.
    #[error("{} start {port} failed: {output}", script.display())]
    RegistryScript {
        /// The script path.
        script: PathBuf,
        /// The port asked for.
        port: u16,
        /// Exit status and output of the script.
        output: String,
    },
    /// The HTTP request could not be made or its body could not be read.
    #[error("HTTP {method} {url} failed: {source}")]
    Http {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The registry answered with a status code the distribution spec does not allow here.
    #[error("HTTP {method} {url}: expected status {expected}, got {status}: {body}")]
    UnexpectedStatus {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// What the spec says it should be (e.g. "201").
        expected: &'static str,
        /// What came back.
        status: u16,
        /// Start of the response body (registry error JSON), for diagnosis.
        body: String,
    },
    /// A required response header is missing or not valid text.
    #[error("HTTP {method} {url}: missing or invalid header {header}")]
    MissingHeader {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// Header name.
        header: &'static str,
    },
    /// What the registry returned does not match what was pushed.
    #[error("verification of {what} failed: expected {expected}, got {actual}")]
    Mismatch {
        /// What was compared (e.g. "manifest digest of krio-test/busybox:latest").
        what: String,
        /// The value we pushed / computed.
        expected: String,
        /// The value the registry returned.
        actual: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
