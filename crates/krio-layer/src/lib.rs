//! Confined unpacking of OCI layer tarballs into overlayfs-format layer directories.
//!
//! [`apply_layer`] turns one *uncompressed* layer tar stream (the caller decompresses it and
//! verifies its digest) into a fresh directory that can be used as an overlayfs `lowerdir`,
//! following the OCI image spec `layer.md` ("Whiteouts", "Opaque Whiteout") with the
//! overlayfs conventions containerd's overlay snapshotter uses:
//!
//! * `.wh.NAME` becomes a character device 0:0 named `NAME` (an overlay whiteout);
//! * `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory. Opaque only hides
//!   *lower* layers, so entries of the same directory in this layer are kept whatever their
//!   order in the stream;
//! * any other `.wh.`-prefixed name is refused ([`LayerError::InvalidWhiteout`]);
//! * a later entry replaces an earlier one at the same path (a directory is removed
//!   recursively, without following symlinks); a directory entry over an existing directory
//!   only updates its metadata.
//!
//! # Confinement
//!
//! The target directory is opened once; every parent directory is resolved relative to that
//! fd with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a symlink written by the
//! layer (`link -> /`, `link -> ../../..`) resolves *inside* the layer root, exactly as if the
//! layer were extracted in a `chroot` (what Docker and containerd do), and can never reach
//! the host. Final components are never followed: nodes are created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat` (no `AT_SYMLINK_FOLLOW`),
//! `mknodat`, and metadata is set on the opened fd or with `AT_SYMLINK_NOFOLLOW`.
//! Entry names are normalised lexically first: a leading `/` is dropped and a `..` that
//! would climb above the root is refused ([`LayerError::InvalidPath`]). Hard-link targets
//! get the same treatment. Symlink targets are stored verbatim and never interpreted.
//!
//! # Metadata
//!
//! Numeric uid/gid from the header (PAX `uid`/`gid` honoured), the mode including
//! setuid/setgid/sticky (applied with `fchmod` *after* `fchown`, which would clear them),
//! mtime (PAX `mtime` with its fraction honoured; atime is set equal to mtime) and xattrs
//! from PAX `SCHILY.xattr.*` records (e.g. `security.capability`, set last since `chown`
//! and writes clear it). Xattrs named `trusted.overlay.*` or `user.overlay.*` in the tar are
//! skipped and counted in [`ApplyStats::skipped_xattrs`]: they would let a layer forge
//! whiteouts, opaque directories or redirects. Xattrs the filesystem does not support
//! (`EOPNOTSUPP`) are also skipped and counted, like containerd does. Directory times are
//! applied after all entries, deepest first, so creating children cannot disturb them.
//!
//! # Limits
//!
//! Paths longer than `PATH_MAX` (4095 bytes) or with a component over 255 bytes are
//! refused. GNU sparse files are written sparse (holes are seeked over). Xattrs of
//! symlinks, device nodes and FIFOs are set through `/proc/self/fd/N/NAME` with
//! `lsetxattr`, so `/proc` must be mounted when such entries carry xattrs.

mod lower;
mod path;
mod sys;
mod unpack;

use std::io;
use std::path::{Path, PathBuf};

/// Counters describing one [`apply_layer`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries applied (every member except PAX global headers), whiteouts included.
    pub entries: u64,
    /// Regular-file content bytes written (logical size, holes of sparse files included;
    /// files copied from a lower layer for a cross-layer hard link included).
    pub bytes: u64,
    /// Whiteout devices created plus opaque markers applied.
    pub whiteouts: u64,
    /// Xattrs not applied: `trusted.overlay.*` / `user.overlay.*` from the tar, and
    /// xattrs the target filesystem does not support.
    pub skipped_xattrs: u64,
}

/// Why [`apply_layer`] failed. Every entry-level variant names the entry path as written
/// in the tar (before normalisation). On error the target directory is left partially
/// written; the caller deletes it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The target directory could not be opened or read.
    #[error("layer target directory {path:?}: {source}")]
    Target {
        /// The target directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The target directory is not empty.
    #[error("layer target directory {path:?} is not empty")]
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
    },
    /// A lower layer directory could not be opened or read while resolving a hard link.
    #[error("lower layer directory {path:?}: {source}")]
    Lower {
        /// The lower layer directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tar stream itself is malformed or could not be read (bad checksum, truncated
    /// header, I/O error of the reader) after `entries` entries were applied.
    #[error("reading layer tar stream after {entries} entries: {source}")]
    Read {
        /// Entries applied before the failure.
        entries: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The content of an entry could not be read from the stream (e.g. truncated).
    #[error("tar entry {path:?}: reading its content: {source}")]
    ReadEntry {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The entry name is not acceptable (escapes the root, too long, NUL byte, ...).
    #[error("tar entry {path:?}: invalid path: {reason}")]
    InvalidPath {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The link name of a symlink or hard link is not acceptable.
    #[error("tar entry {path:?}: invalid link target {target:?}: {reason}")]
    InvalidLinkTarget {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// Link name as written in the tar.
        target: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `.wh.`-prefixed name that is neither `.wh.NAME` nor `.wh..wh..opq`.
    #[error("tar entry {path:?}: invalid whiteout name: {reason}")]
    InvalidWhiteout {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tar entry type cannot be represented in a layer (e.g. volume labels).
    #[error("tar entry {path:?}: unsupported entry type {kind:#04x}")]
    UnsupportedType {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// The raw type flag byte of the header.
        kind: u8,
    },
    /// A header field (or a PAX record overriding it) could not be parsed.
    #[error("tar entry {path:?}: header field {field}: {source}")]
    Header {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// The field, e.g. `uid`, `mode`, `mtime`, `pax`.
        field: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A header field parsed but has an unusable value.
    #[error("tar entry {path:?}: header field {field}: {reason}")]
    InvalidField {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// The field, e.g. `uid`, `SCHILY.xattr`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A hard link's target exists neither in this layer nor in any visible lower layer.
    #[error(
        "tar entry {path:?}: hard link target {target:?} not found in this layer or a lower layer"
    )]
    LinkTargetNotFound {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// Link name as written in the tar.
        target: PathBuf,
    },
    /// A filesystem operation for an entry failed.
    #[error("tar entry {path:?}: {op}: {source}")]
    Io {
        /// Entry path as written in the tar.
        path: PathBuf,
        /// The operation, e.g. `create file`, `fchown`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Applies one uncompressed layer tar stream onto `target` (an existing, empty directory)
/// in overlayfs lower-layer format.
///
/// * `tar`: the uncompressed layer (OCI media types `...tar`, after gzip/zstd decoding);
///   read sequentially, content copied in 1 MiB chunks.
/// * `target`: an existing, empty directory; the layer root.
/// * `lowers`: the already-unpacked lower layers, topmost first (the order of overlayfs
///   `lowerdir=`). They are only read, to satisfy a hard link whose target is not in this
///   layer: the target is looked up like overlayfs would (whiteouts and opaque directories
///   of this layer and of upper lowers hide lower ones) and copied (content, owner, mode,
///   times, xattrs) to the link path; further links to the same target link to that copy.
///
/// Returns counters on success. Errors: see [`LayerError`]; the first error stops the
/// run and the caller is expected to delete `target`. Never panics on any input.
pub fn apply_layer<R: io::Read>(
    tar: R,
    target: &Path,
    lowers: &[PathBuf],
) -> Result<ApplyStats, LayerError> {
    let mut unpacker = unpack::Unpacker::new(target, lowers)?;
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|source| LayerError::Read { entries: 0, source })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| LayerError::Read {
            entries: unpacker.stats.entries,
            source,
        })?;
        unpacker.apply_entry(&mut entry)?;
    }
    unpacker.finish()
}
