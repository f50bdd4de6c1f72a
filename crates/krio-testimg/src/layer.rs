//! Deterministic layer tarballs (OCI image spec, `layer.md`).
//!
//! A [`LayerBuilder`] collects entries in memory and writes them as a tar stream that is byte-for-byte
//! reproducible: every entry has uid/gid 0, mtime [`LAYER_MTIME`], GNU headers, and a fixed order (regular
//! entries sorted by path, then hard links sorted by path, so a link always follows its target). Missing
//! parent directories are added implicitly with mode 0755. Whiteouts follow `layer.md#whiteouts`.

use std::collections::BTreeMap;

use std::io::Write;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Modification time of every tar entry, in seconds since the Unix epoch (2024-01-01T00:00:00Z).
pub const LAYER_MTIME: u64 = 1_704_067_200;

/// Prefix of a whiteout file name (`layer.md#whiteouts`): `dir/.wh.NAME` deletes `dir/NAME` of lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// Name of the opaque-directory marker (`layer.md#opaque-whiteout`): hides all lower-layer children of its directory.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// gzip level used for [`Compression::Gzip`] (flate2 / miniz_oxide; fixed so output is reproducible).
pub const GZIP_LEVEL: u32 = 6;

/// zstd level used for [`Compression::Zstd`] (single-threaded, so output is reproducible).
pub const ZSTD_LEVEL: i32 = 3;

/// How a layer blob is compressed. Determines the OCI/Docker layer media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar: `application/vnd.oci.image.layer.v1.tar`.
    None,
    /// gzip: `application/vnd.oci.image.layer.v1.tar+gzip` / `application/vnd.docker.image.rootfs.diff.tar.gzip`.
    Gzip,
    /// zstd: `application/vnd.oci.image.layer.v1.tar+zstd` (OCI only).
    Zstd,
}

impl Compression {
    /// Lowercase name ("none", "gzip", "zstd"), as used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A hard link to another regular file of the same layer (relative path, no leading `/`).
    HardLink(String),
    /// A symbolic link with this target (stored verbatim).
    Symlink(String),
}

/// One entry of a layer: kind plus permission bits (e.g. `0o755`, `0o1777`). Owner is always uid/gid 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Kind and payload.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    implicit: bool,
}

/// Collects layer entries and renders them to a reproducible tar stream. Paths are relative to the
/// layer root; a leading `/` is accepted and stripped.
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
}

/// Checks and normalises a layer path: strips one leading `/` and a trailing `/`, rejects empty paths,
/// empty/`.`/`..` components and NUL bytes.
///
/// # Errors
/// [`Error::InvalidPath`] naming the path and the reason.
pub fn normalize_path(path: &str) -> Result<String> {
    let bad = |reason| Error::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix('/').unwrap_or(p);
    if p.is_empty() {
        return Err(bad("empty path (the layer root cannot be an entry)"));
    }
    for comp in p.split('/') {
        match comp {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("`.` or `..` component")),
            _ => {}
        }
    }
    Ok(p.to_owned())
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, kind: EntryKind, mode: u32) -> Result<&mut Self> {
        let path = normalize_path(path)?;
        // Implicit parents.
        let mut idx = 0;
        while let Some(pos) = path[idx..].find('/') {
            let parent = &path[..idx + pos];
            match self.entries.get(parent) {
                Some(e) if e.kind != EntryKind::Dir => {
                    return Err(Error::InvalidPath {
                        path: path.clone(),
                        reason: "a parent path is already a non-directory entry",
                    })
                }
                Some(_) => {}
                None => {
                    self.entries.insert(
                        parent.to_owned(),
                        Entry {
                            kind: EntryKind::Dir,
                            mode: 0o755,
                            implicit: true,
                        },
                    );
                }
            }
            idx += pos + 1;
        }
        let entry = Entry {
            kind,
            mode: mode & 0o7777,
            implicit: false,
        };
        match self.entries.get(&path) {
            // An explicit directory may refine an implicit one; identical re-adds are no-ops.
            Some(old) if old.implicit && entry.kind == EntryKind::Dir => {}
            Some(old) if old.kind == entry.kind && old.mode == entry.mode => {}
            Some(_) => return Err(Error::DuplicateEntry { path }),
            None => {}
        }
        self.entries.insert(path, entry);
        Ok(self)
    }

    /// Adds a directory with permission bits `mode` (e.g. `0o1777` for `/tmp`).
    ///
    /// # Errors
    /// [`Error::InvalidPath`], or [`Error::DuplicateEntry`] if `path` already holds something else.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        self.insert(path, EntryKind::Dir, mode)
    }

    /// Adds a regular file with `contents` and permission bits `mode`.
    ///
    /// # Errors
    /// [`Error::InvalidPath`], or [`Error::DuplicateEntry`] if `path` already holds something else.
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        contents: impl Into<Vec<u8>>,
    ) -> Result<&mut Self> {
        self.insert(path, EntryKind::File(contents.into()), mode)
    }

    /// Adds a hard link at `path` to the regular file `target` (layer-relative) of this same layer. The
    /// target is checked when the tar is rendered.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for either path, or [`Error::DuplicateEntry`].
    pub fn hard_link(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let target = normalize_path(target)?;
        self.insert(path, EntryKind::HardLink(target), 0o755)
    }

    /// Adds a symbolic link at `path` pointing to `target` (stored verbatim, may be absolute).
    ///
    /// # Errors
    /// [`Error::InvalidPath`] (also if `target` is empty or has NUL), or [`Error::DuplicateEntry`].
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        if target.is_empty() || target.contains('\0') {
            return Err(Error::InvalidPath {
                path: target.to_owned(),
                reason: "symlink target empty or contains NUL",
            });
        }
        self.insert(path, EntryKind::Symlink(target.to_owned()), 0o777)
    }

    /// Adds a whiteout deleting `path` of lower layers: an empty file `dirname(path)/.wh.basename(path)`.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] (also if the basename itself starts with `.wh.`), or [`Error::DuplicateEntry`].
    pub fn whiteout(&mut self, path: &str) -> Result<&mut Self> {
        let p = normalize_path(path)?;
        let (dir, base) = match p.rsplit_once('/') {
            Some((d, b)) => (Some(d), b),
            None => (None, p.as_str()),
        };
        if base.starts_with(WHITEOUT_PREFIX) {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
                reason: "cannot white out a whiteout name",
            });
        }
        let wh = match dir {
            Some(d) => format!("{d}/{WHITEOUT_PREFIX}{base}"),
            None => format!("{WHITEOUT_PREFIX}{base}"),
        };
        self.insert(&wh, EntryKind::File(Vec::new()), 0o644)
    }

    /// Marks directory `dir` opaque: adds `dir/` (mode 0755 unless already present) and `dir/.wh..wh..opq`.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] or [`Error::DuplicateEntry`].
    pub fn opaque(&mut self, dir: &str) -> Result<&mut Self> {
        let d = normalize_path(dir)?;
        if !self.entries.contains_key(&d) {
            self.dir(&d, 0o755)?;
        }
        self.insert(
            &format!("{d}/{OPAQUE_WHITEOUT}"),
            EntryKind::File(Vec::new()),
            0o644,
        )
    }

    /// Copies every entry of `other` into this builder (same duplicate rules as adding them one by one).
    ///
    /// # Errors
    /// [`Error::DuplicateEntry`] if an entry conflicts.
    pub fn extend_from(&mut self, other: &LayerBuilder) -> Result<&mut Self> {
        for (path, e) in &other.entries {
            if e.implicit {
                if !self.entries.contains_key(path) {
                    self.entries.insert(path.clone(), e.clone());
                }
                continue;
            }
            self.insert(path, e.kind.clone(), e.mode)?;
        }
        Ok(self)
    }

    /// The entries, keyed by normalised path, in path order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// Looks up one entry by (normalisable) path.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        normalize_path(path).ok().and_then(|p| self.entries.get(&p))
    }

    /// Renders the uncompressed tar stream (its SHA-256 is the layer's `diff_id`).
    ///
    /// # Errors
    /// [`Error::DanglingHardLink`] if a hard link's target is not a regular file here;
    /// [`Error::Tar`] if the tar writer fails (e.g. a name too long even for GNU long names).
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        let ordered = self
            .entries
            .iter()
            .filter(|(_, e)| !matches!(e.kind, EntryKind::HardLink(_)))
            .chain(
                self.entries
                    .iter()
                    .filter(|(_, e)| matches!(e.kind, EntryKind::HardLink(_))),
            );
        for (path, e) in ordered {
            let terr = |source| Error::Tar {
                stage: format!("append {path}"),
                source,
            };
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(LAYER_MTIME);
            h.set_username("root").map_err(terr)?;
            h.set_groupname("root").map_err(terr)?;
            match &e.kind {
                EntryKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())
                        .map_err(terr)?;
                }
                EntryKind::File(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice()).map_err(terr)?;
                }
                EntryKind::HardLink(target) => {
                    if !matches!(
                        self.entries.get(target).map(|t| &t.kind),
                        Some(EntryKind::File(_))
                    ) {
                        return Err(Error::DanglingHardLink {
                            path: path.clone(),
                            target: target.clone(),
                        });
                    }
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).map_err(terr)?;
                }
                EntryKind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).map_err(terr)?;
                }
            }
        }
        b.into_inner().map_err(|source| Error::Tar {
            stage: "finish".into(),
            source,
        })
    }

    /// Renders the tar and compresses it into a [`Layer`].
    ///
    /// # Errors
    /// As [`LayerBuilder::tar`], plus [`Error::Tar`] if compression fails.
    pub fn build(&self, compression: Compression) -> Result<Layer> {
        Layer::from_tar(self.tar()?, compression)
    }
}

/// A finished layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// How `blob` is compressed.
    pub compression: Compression,
    /// The blob bytes as stored in the registry (compressed per `compression`).
    pub blob: Vec<u8>,
    /// SHA-256 of `blob`: the descriptor digest in the manifest.
    pub digest: Digest,
    /// SHA-256 of the uncompressed tar: the entry in the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
}

impl Layer {
    /// Compresses an already rendered tar stream.
    ///
    /// # Errors
    /// [`Error::Tar`] if the compressor fails.
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Result<Layer> {
        let diff_id = Digest::of(&tar);
        let uncompressed_size = tar.len() as u64;
        let cerr = |source| Error::Tar {
            stage: compression.name().to_owned(),
            source,
        };
        let blob = match compression {
            Compression::None => tar,
            Compression::Gzip => {
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
                enc.write_all(&tar).map_err(cerr)?;
                enc.finish().map_err(cerr)?
            }
            Compression::Zstd => zstd::bulk::compress(&tar, ZSTD_LEVEL).map_err(cerr)?,
        };
        Ok(Layer {
            compression,
            digest: Digest::of(&blob),
            blob,
            diff_id,
            uncompressed_size,
        })
    }

    /// Size of the blob in bytes (the descriptor `size`).
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }

    /// Decompresses the blob back to the tar stream.
    ///
    /// # Errors
    /// [`Error::Tar`] if the blob is not valid for its compression.
    pub fn uncompressed(&self) -> Result<Vec<u8>> {
        use std::io::Read;
        let cerr = |source| Error::Tar {
            stage: format!("decompress {}", self.compression.name()),
            source,
        };
        match self.compression {
            Compression::None => Ok(self.blob.clone()),
            Compression::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(self.blob.as_slice())
                    .read_to_end(&mut out)
                    .map_err(cerr)?;
                Ok(out)
            }
            Compression::Zstd => zstd::stream::decode_all(self.blob.as_slice()).map_err(cerr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(tar: &[u8]) -> Vec<(String, tar::EntryType, u32, Option<String>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn paths_are_validated() {
        assert_eq!(normalize_path("/a/b/").unwrap(), "a/b");
        for bad in ["", "/", "a//b", "a/../b", "./a", "a\0b"] {
            assert!(normalize_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn order_parents_and_links() {
        let mut l = LayerBuilder::new();
        l.file("/bin/busybox", 0o755, b"ELF".to_vec()).unwrap();
        l.hard_link("/bin/[", "/bin/busybox").unwrap();
        l.hard_link("/bin/ash", "bin/busybox").unwrap();
        l.dir("/tmp", 0o1777).unwrap();
        l.symlink("/usr/bin/env", "/bin/busybox").unwrap();
        let t = l.tar().unwrap();
        let names: Vec<_> = list(&t).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/busybox",
                "tmp/",
                "usr/",
                "usr/bin/",
                "usr/bin/env",
                "bin/[",
                "bin/ash"
            ]
        );
        let entries = list(&t);
        assert_eq!(entries[2].2, 0o1777);
        assert_eq!(entries[6].1, tar::EntryType::Link);
        assert_eq!(entries[6].3.as_deref(), Some("bin/busybox"));
        assert_eq!(entries[5].1, tar::EntryType::Symlink);
        // Deterministic.
        assert_eq!(t, l.tar().unwrap());
    }

    #[test]
    fn dangling_hard_link_is_an_error() {
        let mut l = LayerBuilder::new();
        l.hard_link("bin/sh", "bin/busybox").unwrap();
        assert!(matches!(l.tar(), Err(Error::DanglingHardLink { .. })));
    }

    #[test]
    fn duplicates() {
        let mut l = LayerBuilder::new();
        l.file("a/b", 0o644, b"x".to_vec()).unwrap();
        l.dir("a", 0o700).unwrap(); // refines implicit parent
        assert_eq!(l.get("a").unwrap().mode, 0o700);
        l.file("a/b", 0o644, b"x".to_vec()).unwrap(); // identical: fine
        assert!(matches!(
            l.file("a/b", 0o644, b"y".to_vec()),
            Err(Error::DuplicateEntry { .. })
        ));
        assert!(l.file("a/b/c", 0o644, b"".to_vec()).is_err());
    }

    #[test]
    fn whiteouts() {
        let mut l = LayerBuilder::new();
        l.whiteout("/data/remove.txt").unwrap();
        l.opaque("/opaque").unwrap();
        l.whiteout("top").unwrap();
        let names: Vec<_> = list(&l.tar().unwrap()).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                ".wh.top",
                "data/",
                "data/.wh.remove.txt",
                "opaque/",
                "opaque/.wh..wh..opq"
            ]
        );
        assert!(l.whiteout("a/.wh.x").is_err());
    }

    #[test]
    fn compressions_roundtrip_and_digests() {
        let mut l = LayerBuilder::new();
        l.file("hello.txt", 0o644, b"hello world\n".to_vec())
            .unwrap();
        let tar = l.tar().unwrap();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let layer = l.build(c).unwrap();
            assert_eq!(layer.diff_id, Digest::of(&tar), "{c:?}");
            assert_eq!(layer.digest, Digest::of(&layer.blob), "{c:?}");
            assert_eq!(layer.uncompressed().unwrap(), tar, "{c:?}");
            assert_eq!(layer, l.build(c).unwrap(), "deterministic {c:?}");
            if c == Compression::None {
                assert_eq!(layer.digest, layer.diff_id);
            } else {
                assert_ne!(layer.digest, layer.diff_id);
            }
        }
    }
}
