//! The container checkpoint archive that CRI-O writes for `CheckpointContainer` and kubelet's
//! checkpoint API hands out (the layout `checkpointctl` reads), and its reading back for a
//! restore.
//!
//! An archive is a tar (written uncompressed, as CRI-O does; read plain, gzip or zstd) whose
//! members are, relative to its root:
//!
//! | member | what |
//! |---|---|
//! | `checkpoint/` | the CRIU image directory (`runc checkpoint --image-path`) |
//! | `config.dump` | JSON [`ConfigDump`]: id, name, image, runtime, times |
//! | `spec.dump` | the container's OCI `config.json` |
//! | `rootfs-diff.tar` | the writable layer's added and changed files ([`write_rootfs_diff`]) |
//! | `deleted.files` | JSON list of the absolute paths deleted from the image's files |
//! | `bind.mounts` | JSON list of [`BindMount`], when the container has bind mounts |
//! | `io.kubernetes.cri-o.LogPath` | a copy of the container's CRI log, when it has one |
//! | `stats-dump`, `dump.log` | CRIU's statistics and log, when the runtime left them |
//!
//! Reading ([`unpack`]) checks every member before anything is written: relative paths
//! without `..`, no `.wh.` names, regular files and directories only (no links, devices or
//! FIFOs, so no member can point a later read at a host file); the members are then written
//! with krio's confined layer unpacker ([`krio_layer::apply_layer`]) into an empty directory,
//! and `config.dump`, `spec.dump`, `deleted.files` and `bind.mounts` are parsed.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, ServerError};

/// The CRIU image directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The container's metadata ([`ConfigDump`]).
pub const CONFIG_DUMP: &str = "config.dump";
/// The container's OCI runtime spec (`config.json`).
pub const SPEC_DUMP: &str = "spec.dump";
/// The writable layer's changes, a tar.
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
/// JSON list of the paths deleted from the image's files.
pub const DELETED_FILES: &str = "deleted.files";
/// JSON list of [`BindMount`].
pub const BIND_MOUNTS: &str = "bind.mounts";
/// CRIU's statistics of the dump.
pub const STATS_DUMP: &str = "stats-dump";
/// The file every CRIU image directory has.
pub const CRIU_INVENTORY: &str = "inventory.img";
/// CRIU's log of the dump.
pub const DUMP_LOG: &str = "dump.log";
/// The container's CRI log, under CRI-O's annotation name.
pub const LOG_FILE: &str = "io.kubernetes.cri-o.LogPath";

/// The members [`write_archive`] takes from its staging directory, in archive order, when
/// present.
const MEMBERS: &[&str] = &[
    CHECKPOINT_DIR,
    CONFIG_DUMP,
    SPEC_DUMP,
    BIND_MOUNTS,
    ROOTFS_DIFF,
    DELETED_FILES,
    LOG_FILE,
    STATS_DUMP,
    DUMP_LOG,
];

/// Largest `config.dump`, `spec.dump`, `deleted.files` or `bind.mounts` read back: 16 MiB.
const MAX_JSON: u64 = 16 << 20;

/// Mount destinations left out of the root file-system diff, as CRI-O and Podman do: the
/// runtime mounts fresh file systems there.
const CONTAINER_MOUNTS: &[&str] = &[
    "/dev",
    "/dev/shm",
    "/proc",
    "/run",
    "/run/.containerenv",
    "/run/secrets",
    "/sys",
];

/// `config.dump`: the container's metadata, field names and shapes as `checkpointctl`'s
/// `ContainerConfig` (times are RFC 3339 strings, as Go writes `time.Time`; the zero time is
/// `0001-01-01T00:00:00Z`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDump {
    /// The checkpointed container's id.
    #[serde(default)]
    pub id: String,
    /// Its reserved name (`<name>_<pod>_<namespace>_<uid>_<attempt>`).
    #[serde(default)]
    pub name: String,
    /// The image as the CRI request named it.
    #[serde(
        rename = "rootfsImage",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image: String,
    /// The image's id (`sha256:` of its config).
    #[serde(
        rename = "rootfsImageRef",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image_ref: String,
    /// A name of the image with its digest (`repo@sha256:...`), what a restore pulls.
    #[serde(
        rename = "rootfsImageName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_image_name: String,
    /// The runtime handler (`runc` for the default).
    #[serde(rename = "runtime", default, skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    /// When the container was created.
    #[serde(rename = "createdTime", default = "zero_time")]
    pub created_time: String,
    /// When the checkpoint was taken.
    #[serde(rename = "checkpointedTime", default = "zero_time")]
    pub checkpointed_time: String,
    /// When the container was restored (the zero time for one that never was).
    #[serde(rename = "restoredTime", default = "zero_time")]
    pub restored_time: String,
    /// Whether the container was itself restored from a checkpoint.
    #[serde(default)]
    pub restored: bool,
}

/// One bind mount of the container (`bind.mounts`), so a restore knows whether a missing
/// source must be a file or a directory. Shape as CRI-O's `ExternalBindMount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Host path.
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// `directory` or `file`.
    pub file_type: String,
    /// The source's permission bits.
    pub permissions: u32,
}

/// Go's zero `time.Time` as JSON.
pub fn zero_time() -> String {
    "0001-01-01T00:00:00Z".to_string()
}

/// Nanoseconds since the epoch as an RFC 3339 UTC time, as Go encodes `time.Time`; 0 is the
/// zero time.
pub fn rfc3339(ns: i64) -> String {
    if ns == 0 {
        return zero_time();
    }
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    .unwrap_or_else(zero_time)
}

/// The bind mounts of an OCI spec for `bind.mounts`: every `bind` mount but those of
/// [`CONTAINER_MOUNTS`], with its source's type and permissions.
///
/// Errors: [`ServerError::Io`] when a source cannot be inspected.
pub fn bind_mounts(spec: &oci_spec::runtime::Spec) -> Result<Vec<BindMount>> {
    let mut out = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let dest = m.destination().to_string_lossy().into_owned();
        if CONTAINER_MOUNTS.contains(&dest.as_str()) || m.typ().as_deref() != Some("bind") {
            continue;
        }
        let Some(source) = m.source() else { continue };
        let meta =
            std::fs::metadata(source).map_err(|e| ServerError::io("inspecting", source, e))?;
        out.push(BindMount {
            source: source.to_string_lossy().into_owned(),
            destination: dest,
            file_type: if meta.is_dir() { "directory" } else { "file" }.to_string(),
            permissions: meta.mode() & 0o7777,
        });
    }
    Ok(out)
}

/// Writes the root file-system diff of a container from its overlay upper directory: a tar
/// of every added or changed entry (directories, files, symlinks, devices, FIFOs; sockets are
/// left out) with paths relative to the root, to `out`. Returns the absolute paths deleted from
/// the image's files, sorted: each whiteout (a 0:0 character device) and, for each opaque
/// directory (`trusted.overlay.opaque=y`), every name of the `lowers` (topmost first) at that
/// directory that the upper directory does not have. Entries at `skip` destinations (and
/// [`CONTAINER_MOUNTS`]) and below them are left out: the runtime mounts over them.
///
/// Errors: [`ServerError::Io`] naming the entry that could not be read or written.
pub fn write_rootfs_diff<W: Write>(
    upper: &Path,
    lowers: &[PathBuf],
    skip: &[String],
    out: W,
) -> Result<Vec<String>> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut deleted = BTreeSet::new();
    let skip: BTreeSet<&str> = skip
        .iter()
        .map(String::as_str)
        .chain(CONTAINER_MOUNTS.iter().copied())
        .collect();
    diff_dir(
        upper,
        Path::new(""),
        lowers,
        &skip,
        &mut builder,
        &mut deleted,
    )?;
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| ServerError::io("finishing rootfs diff of", upper, e))?;
    Ok(deleted.into_iter().collect())
}

fn diff_dir<W: Write>(
    upper: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    skip: &BTreeSet<&str>,
    builder: &mut tar::Builder<W>,
    deleted: &mut BTreeSet<String>,
) -> Result<()> {
    let dir = upper.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| ServerError::io("reading", &dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| ServerError::io("reading", &dir, e))?;
    names.sort();
    for name in &names {
        let rel_path = rel.join(name);
        let abs = format!("/{}", rel_path.to_string_lossy());
        if skip.contains(abs.as_str()) {
            continue;
        }
        let path = upper.join(&rel_path);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| ServerError::io("inspecting", &path, e))?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            deleted.insert(abs);
            continue;
        }
        if ft.is_socket() {
            continue;
        }
        builder
            .append_path_with_name(&path, &rel_path)
            .map_err(|e| ServerError::io("adding to rootfs diff", &path, e))?;
        if ft.is_dir() {
            if is_opaque(&path) {
                let here: BTreeSet<_> = names_in(&path);
                for lower in lowers {
                    for n in names_in(&lower.join(&rel_path)) {
                        if !here.contains(&n) {
                            deleted.insert(format!("{abs}/{}", n.to_string_lossy()));
                        }
                    }
                }
            }
            diff_dir(upper, &rel_path, lowers, skip, builder, deleted)?;
        }
    }
    Ok(())
}

/// Whether `dir` is an overlay opaque directory.
fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

/// The names in `dir` (none when it cannot be read or is not a directory).
fn names_in(dir: &Path) -> BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .map(|it| it.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// Writes the archive at `location` from the members present in `staging` (see the module
/// docs), atomically: into a temp file of its own beside `location` (mode 0600: it holds
/// every memory page of the container), fsynced, then renamed over `location`, whose
/// directory is fsynced. On error the temp file is removed and `location` is untouched.
/// Returns the archive's size in bytes.
///
/// Errors: [`ServerError::Io`] naming the step.
pub fn write_archive(staging: &Path, location: &Path) -> Result<u64> {
    let dir = location.parent().ok_or_else(|| {
        ServerError::io(
            "finding parent directory of",
            location,
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let mut tmp_name = location.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(
        ".krio-tmp.{}",
        crate::ids::new_id()?.get(..16).unwrap_or("0")
    ));
    let tmp = dir.join(tmp_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| ServerError::io("creating temp file", &tmp, e))?;
    let result = (|| -> Result<u64> {
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        builder.follow_symlinks(false);
        for name in MEMBERS {
            let p = staging.join(name);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => builder.append_dir_all(name, &p),
                Ok(_) => builder.append_path_with_name(&p, name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(e),
            }
            .map_err(|e| ServerError::io("adding to checkpoint archive", &p, e))?;
        }
        let file = builder
            .into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(|e| ServerError::io("writing", &tmp, e))?;
        file.sync_all()
            .map_err(|e| ServerError::io("syncing", &tmp, e))?;
        let size = file
            .metadata()
            .map_err(|e| ServerError::io("inspecting", &tmp, e))?
            .len();
        std::fs::rename(&tmp, location)
            .map_err(|e| ServerError::io("renaming checkpoint archive to", location, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(size)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A checkpoint archive unpacked and checked by [`unpack`].
#[derive(Debug)]
pub struct Unpacked {
    /// Where it was unpacked.
    pub dir: PathBuf,
    /// `config.dump`.
    pub config: ConfigDump,
    /// `spec.dump`.
    pub spec: oci_spec::runtime::Spec,
    /// `deleted.files` (empty when absent).
    pub deleted: Vec<String>,
    /// `bind.mounts` (empty when absent).
    pub bind_mounts: Vec<BindMount>,
    /// Whether `rootfs-diff.tar` is present.
    pub has_rootfs_diff: bool,
}

impl Unpacked {
    /// The CRIU image directory.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_DIR)
    }

    /// `rootfs-diff.tar`.
    pub fn rootfs_diff(&self) -> PathBuf {
        self.dir.join(ROOTFS_DIFF)
    }
}

/// Opens an archive for reading, undoing gzip or zstd compression (told by magic bytes).
fn open_archive(archive: &Path, field: &str) -> Result<Box<dyn Read>> {
    let bad = |why: String| {
        ServerError::invalid(
            field,
            format!("checkpoint archive {}: {why}", archive.display()),
        )
    };
    let mut f = File::open(archive).map_err(|e| bad(e.to_string()))?;
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| bad(e.to_string()))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let r = BufReader::new(head.chain(f));
    Ok(match magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(r)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Box::new(zstd::Decoder::with_buffer(r).map_err(|e| bad(e.to_string()))?)
        }
        _ => Box::new(r),
    })
}

/// Checks every member's name and type: relative, no `..`, no `.wh.` component, a regular
/// file or a directory (PAX global headers are ignored).
fn check_members(archive: &Path, field: &str) -> Result<()> {
    let bad = |why: String| {
        ServerError::invalid(
            field,
            format!("checkpoint archive {}: {why}", archive.display()),
        )
    };
    let mut tar = tar::Archive::new(open_archive(archive, field)?);
    let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
    let mut count = 0u64;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("not a readable tar: {e}")))?;
        count += 1;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("member name: {e}")))?
            .into_owned();
        let shown = crate::validate::quote(&path.to_string_lossy());
        for c in path.components() {
            match c {
                Component::RootDir | Component::Prefix(_) => {
                    return Err(bad(format!("member {shown} has an absolute path")))
                }
                Component::ParentDir => {
                    return Err(bad(format!("member {shown} has a '..' component")))
                }
                Component::Normal(n) if n.as_encoded_bytes().starts_with(b".wh.") => {
                    return Err(bad(format!("member {shown} has a whiteout name")))
                }
                _ => {}
            }
        }
        if !matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory
        ) {
            return Err(bad(format!(
                "member {shown} is not a regular file or a directory (type {:#04x})",
                kind.as_byte()
            )));
        }
    }
    if count == 0 {
        return Err(bad("is empty".into()));
    }
    Ok(())
}

/// Reads a JSON member of `dir`, not following a link, at most [`MAX_JSON`] bytes. `None`
/// when absent.
fn read_member(dir: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(dir.join(name))
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(MAX_JSON + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_JSON {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_JSON} bytes"
        )));
    }
    Ok(Some(buf))
}

/// Unpacks the checkpoint archive `archive` into `target` (an existing, empty directory) and
/// checks it: members as described in the module docs; `checkpoint/` a directory holding at
/// least one file; `config.dump` and `spec.dump` present and parsing, `config.dump` naming
/// the image (`rootfsImageName` or `rootfsImageRef`); `deleted.files` and `bind.mounts`
/// parsing when present, each deleted path without `..`.
///
/// Errors: [`ServerError::InvalidArgument`] naming `field` (the request field that named the
/// archive) and saying what is wrong. What was unpacked is the caller's to remove.
pub fn unpack(archive: &Path, target: &Path, field: &str) -> Result<Unpacked> {
    let bad = |why: String| {
        ServerError::invalid(
            field,
            format!("checkpoint archive {}: {why}", archive.display()),
        )
    };
    check_members(archive, field)?;
    krio_layer::apply_layer(open_archive(archive, field)?, target, &[])
        .map_err(|e| bad(format!("unpacking: {e}")))?;
    let ckpt = target.join(CHECKPOINT_DIR);
    match std::fs::symlink_metadata(&ckpt) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad(format!("{CHECKPOINT_DIR} is not a directory"))),
        Err(_) => return Err(bad(format!("has no {CHECKPOINT_DIR}/ directory"))),
    }
    // CRIU writes `inventory.img` in every image directory.
    if !std::fs::symlink_metadata(ckpt.join(CRIU_INVENTORY)).is_ok_and(|m| m.is_file()) {
        return Err(bad(format!(
            "{CHECKPOINT_DIR}/ holds no CRIU image (no {CRIU_INVENTORY})"
        )));
    }
    let json = |name: &str| -> Result<Option<Vec<u8>>> {
        read_member(target, name).map_err(|e| bad(format!("{name}: {e}")))
    };
    let config: ConfigDump = match json(CONFIG_DUMP)? {
        None => return Err(bad(format!("has no {CONFIG_DUMP}"))),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| bad(format!("{CONFIG_DUMP} does not parse: {e}")))?,
    };
    if config.rootfs_image_name.is_empty() && config.rootfs_image_ref.is_empty() {
        return Err(bad(format!(
            "{CONFIG_DUMP} names no image (rootfsImageName, rootfsImageRef)"
        )));
    }
    let spec: oci_spec::runtime::Spec = match json(SPEC_DUMP)? {
        None => return Err(bad(format!("has no {SPEC_DUMP}"))),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| bad(format!("{SPEC_DUMP} does not parse: {e}")))?,
    };
    let deleted: Vec<String> = match json(DELETED_FILES)? {
        None => Vec::new(),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| bad(format!("{DELETED_FILES} does not parse: {e}")))?,
    };
    for d in &deleted {
        if d.contains('\0')
            || Path::new(d)
                .components()
                .any(|c| matches!(c, Component::ParentDir))
            || d.trim_start_matches('/').is_empty()
        {
            return Err(bad(format!(
                "{DELETED_FILES} names {}, which is not a path inside the container",
                crate::validate::quote(d)
            )));
        }
    }
    let bind_mounts: Vec<BindMount> = match json(BIND_MOUNTS)? {
        None => Vec::new(),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| bad(format!("{BIND_MOUNTS} does not parse: {e}")))?,
    };
    let has_rootfs_diff = std::fs::symlink_metadata(target.join(ROOTFS_DIFF)).is_ok();
    Ok(Unpacked {
        dir: target.to_path_buf(),
        config,
        spec,
        deleted,
        bind_mounts,
        has_rootfs_diff,
    })
}

/// Applies `rootfs-diff.tar` to a new container's overlay upper directory (empty, before the
/// overlay is mounted), confined like an image layer; `lowers` are the image's layers,
/// topmost first (hard links to their files are copied up).
///
/// Errors: [`ServerError::InvalidArgument`] naming `field` when the diff is refused.
pub fn apply_rootfs_diff(diff: &Path, upper: &Path, lowers: &[PathBuf], field: &str) -> Result<()> {
    let f = File::open(diff).map_err(|e| ServerError::io("opening", diff, e))?;
    krio_layer::apply_layer(BufReader::new(f), upper, lowers)
        .map(drop)
        .map_err(|e| ServerError::invalid(field, format!("{ROOTFS_DIFF}: {e}")))
}

/// Removes each path of `deleted.files` from the mounted root file system `rootfs` (through
/// the overlay, which records whiteouts), resolving every parent inside `rootfs`
/// (`openat2(RESOLVE_IN_ROOT)`) and never following the last component; directories go
/// recursively. A path that is already absent is fine.
///
/// Errors: [`ServerError::Io`] naming the path when a removal fails.
pub fn remove_deleted(rootfs: &Path, deleted: &[String]) -> Result<()> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ServerError::io("opening", rootfs, e.into()))?;
    for d in deleted {
        let rel = Path::new(d.trim_start_matches('/'));
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let dir = match rustix::fs::openat2(
            &root,
            parent,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => continue,
            Err(e) => return Err(ServerError::io("resolving", rootfs.join(rel), e.into())),
        };
        remove_at(&dir, name).map_err(|e| ServerError::io("removing", rootfs.join(rel), e))?;
    }
    Ok(())
}

/// Removes `name` in `dir` without following it; a directory with its contents.
fn remove_at(dir: &rustix::fd::OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&sub)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(std::ffi::OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in names {
        remove_at(&sub, &n)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config() -> ConfigDump {
        ConfigDump {
            id: "c".repeat(64),
            name: "app_pod_ns_uid_0".into(),
            rootfs_image: "busybox:latest".into(),
            rootfs_image_ref: format!("sha256:{}", "a".repeat(64)),
            rootfs_image_name: format!("docker.io/library/busybox@sha256:{}", "b".repeat(64)),
            runtime: "runc".into(),
            created_time: rfc3339(1_700_000_000_123_456_789),
            checkpointed_time: rfc3339(1_700_000_100_000_000_000),
            restored_time: zero_time(),
            restored: false,
        }
    }

    /// A staging directory as `CheckpointContainer` leaves it, with a fake CRIU image.
    fn staging() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join(CHECKPOINT_DIR)).unwrap();
        std::fs::write(p.join("checkpoint/inventory.img"), b"inventory").unwrap();
        std::fs::write(p.join("checkpoint/pages-1.img"), vec![7u8; 10_000]).unwrap();
        std::fs::write(p.join(CONFIG_DUMP), serde_json::to_vec(&config()).unwrap()).unwrap();
        let spec = oci_spec::runtime::Spec::default();
        std::fs::write(p.join(SPEC_DUMP), serde_json::to_vec(&spec).unwrap()).unwrap();
        let binds = vec![BindMount {
            source: "/var/lib/x".into(),
            destination: "/data".into(),
            file_type: "directory".into(),
            permissions: 0o755,
        }];
        std::fs::write(p.join(BIND_MOUNTS), serde_json::to_vec(&binds).unwrap()).unwrap();
        std::fs::write(p.join(DELETED_FILES), br#"["/etc/old"]"#).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/new", &b"new"[..]).unwrap();
        std::fs::write(p.join(ROOTFS_DIFF), b.into_inner().unwrap()).unwrap();
        std::fs::write(p.join(LOG_FILE), b"2026-01-01T00:00:00Z stdout F hi\n").unwrap();
        std::fs::write(p.join(STATS_DUMP), b"stats").unwrap();
        std::fs::write(p.join(DUMP_LOG), b"log").unwrap();
        d
    }

    fn member_names(archive: &Path) -> Vec<String> {
        let mut a = tar::Archive::new(File::open(archive).unwrap());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn archive_round_trips_with_every_member() {
        let s = staging();
        let out = tempfile::tempdir().unwrap();
        let location = out.path().join("ckpt.tar");
        let size = write_archive(s.path(), &location).unwrap();
        let meta = std::fs::metadata(&location).unwrap();
        assert_eq!(meta.len(), size);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Nothing but the archive beside it (the temp file was renamed).
        assert_eq!(names_in(out.path()).len(), 1);
        let names = member_names(&location);
        for want in [
            "checkpoint",
            "checkpoint/inventory.img",
            "checkpoint/pages-1.img",
            CONFIG_DUMP,
            SPEC_DUMP,
            BIND_MOUNTS,
            ROOTFS_DIFF,
            DELETED_FILES,
            LOG_FILE,
            STATS_DUMP,
            DUMP_LOG,
        ] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == want),
                "{want} missing from {names:?}"
            );
        }
        // Every name is relative and the CRIU image comes first, as CRI-O orders it.
        assert!(names
            .iter()
            .all(|n| !n.starts_with('/') && !n.contains("..")));
        assert_eq!(names[0].trim_end_matches('/'), "checkpoint");

        let target = tempfile::tempdir().unwrap();
        let u = unpack(&location, target.path(), "f").unwrap();
        assert_eq!(u.config, config());
        assert_eq!(u.deleted, vec!["/etc/old".to_string()]);
        assert_eq!(u.bind_mounts.len(), 1);
        assert_eq!(u.bind_mounts[0].destination, "/data");
        assert!(u.has_rootfs_diff);
        assert_eq!(
            std::fs::read(u.checkpoint_dir().join("pages-1.img")).unwrap(),
            vec![7u8; 10_000]
        );
        assert_eq!(
            std::fs::read(target.path().join(LOG_FILE)).unwrap(),
            b"2026-01-01T00:00:00Z stdout F hi\n"
        );
        // config.dump has checkpointctl's JSON names.
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(target.path().join(CONFIG_DUMP)).unwrap())
                .unwrap();
        for key in [
            "id",
            "name",
            "rootfsImage",
            "rootfsImageRef",
            "rootfsImageName",
            "runtime",
            "createdTime",
            "checkpointedTime",
            "restoredTime",
            "restored",
        ] {
            assert!(raw.get(key).is_some(), "{key} missing from {raw}");
        }
        assert_eq!(raw["createdTime"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(raw["restoredTime"], "0001-01-01T00:00:00Z");
    }

    #[test]
    fn compressed_archives_are_read() {
        let s = staging();
        let out = tempfile::tempdir().unwrap();
        let plain = out.path().join("a.tar");
        write_archive(s.path(), &plain).unwrap();
        let gz = out.path().join("a.tar.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        std::io::copy(&mut File::open(&plain).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap();
        let zst = out.path().join("a.tar.zst");
        zstd::stream::copy_encode(File::open(&plain).unwrap(), File::create(&zst).unwrap(), 1)
            .unwrap();
        for a in [gz, zst] {
            let t = tempfile::tempdir().unwrap();
            assert_eq!(unpack(&a, t.path(), "f").unwrap().config, config());
        }
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let s = staging();
        // A socket cannot go into a tar: the write fails halfway.
        let _l = std::os::unix::net::UnixListener::bind(s.path().join("checkpoint/sock")).unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("old.tar"), b"old").unwrap();
        let location = out.path().join("old.tar");
        write_archive(s.path(), &location).unwrap_err();
        assert_eq!(std::fs::read(&location).unwrap(), b"old");
        assert_eq!(names_in(out.path()).len(), 1, "{:?}", names_in(out.path()));
        write_archive(s.path(), Path::new("/nonexistent-dir/x.tar")).unwrap_err();
    }

    #[test]
    fn times_are_written_as_go_writes_them() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_000_000_000), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(1_500_000_000), "1970-01-01T00:00:01.500Z");
    }

    fn mknod_whiteout(p: &Path) {
        nix::sys::stat::mknod(
            p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
    }

    #[test]
    fn rootfs_diff_lists_changes_and_turns_whiteouts_into_deleted_files() {
        let lower = tempfile::tempdir().unwrap();
        for d in ["etc", "opq", "keep"] {
            std::fs::create_dir(lower.path().join(d)).unwrap();
        }
        for f in ["etc/old", "etc/kept", "opq/a", "opq/b", "opq/c", "keep/x"] {
            std::fs::write(lower.path().join(f), f).unwrap();
        }
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        for d in ["etc", "opq", "proc", "data"] {
            std::fs::create_dir(u.join(d)).unwrap();
        }
        std::fs::write(u.join("etc/new"), b"new").unwrap();
        std::fs::write(u.join("etc/hosts"), b"").unwrap(); // a mount point
        std::fs::write(u.join("data/inside"), b"hidden by a bind mount").unwrap();
        std::fs::write(u.join("opq/c"), b"replaced").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", u.join("etc/link")).unwrap();
        mknod_whiteout(&u.join("etc/old"));
        rustix::fs::setxattr(
            u.join("opq"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(u.join("sock")).unwrap();

        let mut out = Vec::new();
        let deleted = write_rootfs_diff(
            u,
            &[lower.path().to_path_buf()],
            &["/etc/hosts".to_string(), "/data".to_string()],
            &mut out,
        )
        .unwrap();
        assert_eq!(deleted, vec!["/etc/old", "/opq/a", "/opq/b"]);
        let mut a = tar::Archive::new(&out[..]);
        let mut got = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let mut body = String::new();
            if e.header().entry_type().is_file() {
                e.read_to_string(&mut body).unwrap();
            }
            if e.header().entry_type().is_symlink() {
                body = e
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
            }
            got.push((name, body));
        }
        let want: Vec<(String, String)> = [
            ("etc", ""),
            ("etc/link", "/etc/shadow"),
            ("etc/new", "new"),
            ("opq", ""),
            ("opq/c", "replaced"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    /// A tar whose members are written raw, names unchecked (the `tar` crate refuses `..`).
    fn raw_tar(members: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in members {
            let mut h = tar::Header::new_gnu();
            let n = &mut h.as_old_mut().name;
            n[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if !link.is_empty() {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn good_members() -> Vec<(&'static str, tar::EntryType, Vec<u8>, &'static str)> {
        let spec = serde_json::to_vec(&oci_spec::runtime::Spec::default()).unwrap();
        vec![
            ("checkpoint/", tar::EntryType::Directory, vec![], ""),
            (
                "checkpoint/inventory.img",
                tar::EntryType::Regular,
                b"i".to_vec(),
                "",
            ),
            (
                "config.dump",
                tar::EntryType::Regular,
                serde_json::to_vec(&config()).unwrap(),
                "",
            ),
            ("spec.dump", tar::EntryType::Regular, spec, ""),
        ]
    }

    /// Unpacks an archive made of `members` and returns the error's text; checks that nothing
    /// was written beside the target directory.
    fn refused(members: Vec<(&str, tar::EntryType, Vec<u8>, &str)>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let m: Vec<_> = members
            .iter()
            .map(|(a, b, c, d)| (*a, *b, &c[..], *d))
            .collect();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, raw_tar(&m)).unwrap();
        let target = dir.path().join("t");
        std::fs::create_dir(&target).unwrap();
        let e = unpack(&archive, &target, "config.image.image").unwrap_err();
        assert!(matches!(e, ServerError::InvalidArgument { .. }), "{e:?}");
        let mut beside: Vec<_> = names_in(dir.path()).into_iter().collect();
        beside.sort();
        assert_eq!(
            beside,
            vec!["a.tar", "t"],
            "something written outside the target"
        );
        let msg = e.to_string();
        assert!(msg.contains("config.image.image"), "{msg}");
        msg
    }

    #[test]
    fn the_good_members_alone_unpack() {
        let dir = tempfile::tempdir().unwrap();
        let m = good_members();
        let m: Vec<_> = m.iter().map(|(a, b, c, d)| (*a, *b, &c[..], *d)).collect();
        std::fs::write(dir.path().join("a.tar"), raw_tar(&m)).unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        let u = unpack(&dir.path().join("a.tar"), &dir.path().join("t"), "f").unwrap();
        assert!(u.deleted.is_empty() && u.bind_mounts.is_empty() && !u.has_rootfs_diff);
    }

    #[test]
    fn missing_members_are_refused() {
        for (drop, want) in [
            (CONFIG_DUMP, "has no config.dump"),
            (SPEC_DUMP, "has no spec.dump"),
            ("checkpoint/inventory.img", "no inventory.img"),
        ] {
            let m: Vec<_> = good_members().into_iter().filter(|x| x.0 != drop).collect();
            let msg = refused(m);
            assert!(msg.contains(want), "{msg}");
        }
        let m: Vec<_> = good_members()
            .into_iter()
            .filter(|x| !x.0.starts_with("checkpoint"))
            .collect();
        assert!(refused(m).contains("has no checkpoint/"));
        assert!(refused(vec![]).contains("is empty"));
    }

    #[test]
    fn bad_json_is_refused() {
        for (name, body, want) in [
            (CONFIG_DUMP, &b"{not json"[..], "config.dump does not parse"),
            (CONFIG_DUMP, br#"{"id":"x","name":"y"}"#, "names no image"),
            (SPEC_DUMP, b"[1,2]", "spec.dump does not parse"),
            (DELETED_FILES, br#"{"a":1}"#, "deleted.files does not parse"),
            (DELETED_FILES, br#"["/etc/../../x"]"#, "not a path inside"),
            (DELETED_FILES, br#"["/"]"#, "not a path inside"),
            (BIND_MOUNTS, b"7", "bind.mounts does not parse"),
        ] {
            let mut m: Vec<_> = good_members().into_iter().filter(|x| x.0 != name).collect();
            m.push((name, tar::EntryType::Regular, body.to_vec(), ""));
            let msg = refused(m);
            assert!(msg.contains(want), "{name}: {msg}");
        }
    }

    #[test]
    fn traversal_links_and_odd_members_are_refused() {
        let reg = tar::EntryType::Regular;
        for (member, want) in [
            (("../escape", reg, b"x".to_vec(), ""), "'..'"),
            (("checkpoint/../../escape", reg, b"x".to_vec(), ""), "'..'"),
            (("/abs", reg, b"x".to_vec(), ""), "absolute"),
            ((".wh.config.dump", reg, vec![], ""), "whiteout"),
            (
                ("hosts", tar::EntryType::Symlink, vec![], "/etc/hosts"),
                "not a regular file",
            ),
            (
                ("hl", tar::EntryType::Link, vec![], "/etc/shadow"),
                "not a regular file",
            ),
            (
                ("dev", tar::EntryType::Char, vec![], ""),
                "not a regular file",
            ),
            (
                ("fifo", tar::EntryType::Fifo, vec![], ""),
                "not a regular file",
            ),
        ] {
            let mut m = good_members();
            m.push(member);
            let msg = refused(m);
            assert!(msg.contains(want), "{msg}");
        }
        // A symlink in the place of config.dump, pointing at a host file, is refused before
        // anything reads through it.
        let mut m: Vec<_> = good_members()
            .into_iter()
            .filter(|x| x.0 != CONFIG_DUMP)
            .collect();
        m.push((CONFIG_DUMP, tar::EntryType::Symlink, vec![], "/etc/passwd"));
        assert!(refused(m).contains("not a regular file"));
    }

    #[test]
    fn garbage_and_non_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.tar");
        std::fs::write(&a, vec![0x42u8; 2048]).unwrap();
        let t = tempfile::tempdir().unwrap();
        let e = unpack(&a, t.path(), "f").unwrap_err();
        assert!(matches!(e, ServerError::InvalidArgument { .. }), "{e:?}");
        let e = unpack(dir.path(), t.path(), "f").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn deleted_files_are_removed_inside_the_root_only() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("a/sub/deeper")).unwrap();
        std::fs::write(r.join("a/file"), b"x").unwrap();
        std::fs::write(r.join("a/sub/deeper/f"), b"x").unwrap();
        std::fs::write(r.join("keep"), b"x").unwrap();
        // A link that would lead out of the root if followed.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"host").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), r.join("filelink")).unwrap();
        let deleted: Vec<String> = [
            "/a/file",
            "/a/sub",
            "/missing/x",
            "/link/victim",
            "/filelink",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        remove_deleted(r, &deleted).unwrap();
        assert!(!r.join("a/file").exists());
        assert!(!r.join("a/sub").exists());
        assert!(r.join("keep").exists());
        assert!(r.join("link").symlink_metadata().is_ok());
        // The link itself went, not what it named.
        assert!(r.join("filelink").symlink_metadata().is_err());
        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            b"host"
        );
    }
}
