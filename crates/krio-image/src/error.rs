//! The typed error of every `krio-image` operation.

use std::path::PathBuf;

/// Everything that can go wrong in reference parsing, registry pulls and the local image store.
///
/// The variants are chosen so that a CRI server can map them onto gRPC status codes:
/// [`ImageError::InvalidReference`] → `InvalidArgument`, [`ImageError::NotFound`] → `NotFound`,
/// [`ImageError::Unauthorized`] → `PermissionDenied`/`Unauthenticated`, [`ImageError::InUse`] and
/// [`ImageError::ReadOnly`] → `FailedPrecondition`, [`ImageError::Blocked`] → `PermissionDenied`,
/// [`ImageError::AuthFile`] and [`ImageError::RegistriesConf`] → `FailedPrecondition`,
/// [`ImageError::Stalled`] → `DeadlineExceeded`, the rest → `Internal`/`Unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image reference does not follow the distribution reference grammar.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given by the caller.
        reference: String,
        /// Which part is malformed.
        reason: String,
    },
    /// A digest string is malformed (`sha256:` + 64 lowercase hex or `sha512:` + 128 are accepted).
    #[error("invalid digest {digest:?} in {field}: {reason}")]
    InvalidDigest {
        /// The offending value.
        digest: String,
        /// Where it came from (e.g. `manifest.layers[2].digest`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry (or the local store) has no such repository, tag, manifest or image.
    #[error("image {reference:?} not found{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    NotFound {
        /// The reference that was looked up.
        reference: String,
        /// The registry's explanation, if any (e.g. `MANIFEST_UNKNOWN`).
        detail: Option<String>,
    },
    /// The registry refused the credentials (or demanded credentials that were not given).
    #[error("registry {registry} refused access to {reference:?}: {detail}")]
    Unauthorized {
        /// Registry host (`host[:port]`).
        registry: String,
        /// The reference being pulled.
        reference: String,
        /// Status / challenge detail.
        detail: String,
    },
    /// Content did not hash to the digest that referenced it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was verified (e.g. `layer 2 diff_id`, `manifest`).
        what: String,
        /// The digest that was expected.
        expected: String,
        /// The digest of the bytes actually received.
        actual: String,
    },
    /// Content had a different size from its descriptor, or exceeds a safety limit.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was measured.
        what: String,
        /// Expected size in bytes (the descriptor's `size` or the limit).
        expected: u64,
        /// Actual size in bytes (at least this many).
        actual: u64,
    },
    /// A manifest, config or layer media type krio does not handle (Docker schema 1, encrypted layers, artifacts...).
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        /// The media type string as found.
        media_type: String,
        /// Where it was found.
        what: String,
    },
    /// A layer's bytes are not what its media type says (zstd bytes under `+gzip`, gzip bytes under a plain tar
    /// type, ...). Decompression follows the media type only, never the bytes.
    #[error(
        "layer {digest}: media type {media_type:?} says {expected}, but the bytes are {found}"
    )]
    LayerMediaTypeMismatch {
        /// The layer's compressed digest.
        digest: String,
        /// The media type in the manifest.
        media_type: String,
        /// The compression the media type names (`gzip`, `zstd`, `uncompressed tar`).
        expected: &'static str,
        /// What the leading bytes are (`zstd-compressed`, `gzip-compressed`, `not gzip`, ...).
        found: &'static str,
    },
    /// A manifest document is malformed or ambiguous (e.g. has both `manifests` and `layers`).
    #[error("invalid manifest for {reference:?}: {reason}")]
    InvalidManifest {
        /// The reference being pulled.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// An image config could not be parsed or does not match its manifest.
    #[error("invalid image config {digest}: {reason}")]
    InvalidConfig {
        /// Config blob digest.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// An index / manifest list has no entry for the host platform.
    #[error("no manifest for platform {platform} in {reference:?} (available: {available})")]
    NoMatchingPlatform {
        /// The reference being pulled.
        reference: String,
        /// The wanted platform, `os/arch[/variant]`.
        platform: String,
        /// The platforms the index offers, comma separated.
        available: String,
    },
    /// The image is in use and cannot be removed (reserved for callers that track container usage).
    #[error("image {id} is in use by {by}")]
    InUse {
        /// Image id.
        id: String,
        /// Who uses it (e.g. a container id).
        by: String,
    },
    /// The image is served from an additional read-only store, which krio never changes.
    #[error("image {id} is in an additional read-only image store and cannot be removed")]
    ReadOnly {
        /// Image id.
        id: String,
    },
    /// The registry answered with an unexpected status or could not be reached.
    #[error("registry {registry}: {detail}")]
    Registry {
        /// Registry endpoint (`scheme://host[:port]`).
        registry: String,
        /// What happened (status code, registry error codes, transport error).
        detail: String,
    },
    /// A layer tar could not be applied.
    #[error("applying layer {digest}: {source}")]
    Layer {
        /// The layer's compressed digest.
        digest: String,
        /// The layer unpacker's error.
        #[source]
        source: krio_layer::LayerError,
    },
    /// A layer stream could not be read or decompressed.
    #[error("reading layer {digest}: {source}")]
    LayerStream {
        /// The layer's compressed digest.
        digest: String,
        /// The underlying I/O or decompression error.
        #[source]
        source: std::io::Error,
    },
    /// A stored layer needed by an image is missing from `layers/`.
    #[error("layer {chain_id} of image {image} is missing from the store")]
    LayerMissing {
        /// The image id.
        image: String,
        /// The missing chain id.
        chain_id: String,
    },
    /// Store metadata (record / meta.json) could not be encoded or decoded.
    #[error("store metadata {path}: {source}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (e.g. `rename`, `create`).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A registries.conf file (containers-registries.conf(5)) is malformed.
    #[error("registries configuration {path}: {reason}")]
    RegistriesConf {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the TOML field.
        reason: String,
    },
    /// The reference matches a `[[registry]]` table with `blocked = true`.
    #[error("pulling {reference:?} is blocked by registries.conf (prefix {prefix:?})")]
    Blocked {
        /// The fully-qualified reference.
        reference: String,
        /// The prefix of the blocking `[[registry]]` table.
        prefix: String,
    },
    /// The auth file (`config.json`) given as `RegistryConfig::auth_file` is malformed.
    #[error("auth file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the JSON field.
        reason: String,
    },
    /// A download received no bytes for `RegistryConfig::progress_timeout`.
    #[error("pull stalled: no data for {seconds}s on {what} from {registry}")]
    Stalled {
        /// Registry endpoint (`scheme://host[:port]`).
        registry: String,
        /// What was being downloaded (e.g. `layer 2 blob sha256:...`, `manifest latest`).
        what: String,
        /// The progress timeout, in seconds.
        seconds: u64,
    },
    /// The pull was cancelled or a worker task died.
    #[error("pull of {reference:?} aborted: {detail}")]
    Aborted {
        /// The reference being pulled.
        reference: String,
        /// Why.
        detail: String,
    },
}

impl ImageError {
    /// Helper building [`ImageError::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True for [`ImageError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, ImageError::NotFound { .. })
    }
}
