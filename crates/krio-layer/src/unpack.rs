//! The per-entry state machine behind [`crate::apply_layer`].

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    self, AtFlags, Dir, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

use crate::path::{is_same_or_under, join, normalize};
use crate::sys::{self, errno_io, DIR_PATH, DIR_RD};
use crate::{ApplyStats, LayerError};

/// Size of the content copy buffer, in bytes.
const COPY_BUF: usize = 1 << 20;

/// Granularity of hole detection for GNU sparse entries, in bytes.
const SPARSE_BLOCK: usize = 4096;

/// Whether the block of `chunk` starting at `off` (up to [`SPARSE_BLOCK`] bytes) is all zero.
fn is_zero_block(chunk: &[u8], off: usize) -> bool {
    let end = (off + SPARSE_BLOCK).min(chunk.len());
    chunk
        .get(off..end)
        .is_some_and(|b| b.iter().all(|x| *x == 0))
}

/// Flags used to create a regular file: never reuse or follow anything already there.
const CREATE_FILE: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The xattr marking an overlayfs opaque directory.
pub(crate) const OPAQUE_XATTR: &std::ffi::CStr = c"trusted.overlay.opaque";

/// Builds an [`LayerError::Io`] from an errno.
pub(crate) fn io_err(path: &Path, op: &'static str, e: Errno) -> LayerError {
    LayerError::Io {
        path: path.to_path_buf(),
        op,
        source: errno_io(e),
    }
}

/// A path component as a C string (components never contain NUL: see `normalize`).
pub(crate) fn cname(path: &Path, comp: &[u8]) -> Result<CString, LayerError> {
    CString::new(comp).map_err(|_| LayerError::InvalidPath {
        path: path.to_path_buf(),
        reason: "contains a NUL byte",
    })
}

/// Metadata of one entry, parsed from its header and PAX records.
pub(crate) struct Meta {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Permission bits incl. setuid/setgid/sticky (`& 0o7777`).
    pub(crate) mode: u32,
    pub(crate) mtime: Timespec,
    pub(crate) xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    pub(crate) fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }
}

/// True for xattr names a layer may not set (they steer overlayfs itself).
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Parses a PAX time record (`"1700000000"`, `"1700000000.5"`, `"-1.25"`).
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nsec += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if neg {
        if nsec > 0 {
            Timespec {
                tv_sec: -secs - 1,
                tv_nsec: 1_000_000_000 - nsec,
            }
        } else {
            Timespec {
                tv_sec: -secs,
                tv_nsec: 0,
            }
        }
    } else {
        Timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        }
    })
}

fn read_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    shown: &Path,
    stats: &mut ApplyStats,
) -> Result<Meta, LayerError> {
    let hdr_err = |field: &'static str| {
        move |source: io::Error| LayerError::Header {
            path: shown.to_path_buf(),
            field,
            source,
        }
    };
    let bad = |field: &'static str, reason: &'static str| LayerError::InvalidField {
        path: shown.to_path_buf(),
        field,
        reason,
    };
    let h = entry.header();
    let uid = u32::try_from(h.uid().map_err(hdr_err("uid"))?)
        .map_err(|_| bad("uid", "does not fit in 32 bits"))?;
    let gid = u32::try_from(h.gid().map_err(hdr_err("gid"))?)
        .map_err(|_| bad("gid", "does not fit in 32 bits"))?;
    let mode = h.mode().map_err(hdr_err("mode"))? & 0o7777;
    let mtime_secs = i64::try_from(h.mtime().map_err(hdr_err("mtime"))?)
        .map_err(|_| bad("mtime", "out of range"))?;
    let mut mtime = Timespec {
        tv_sec: mtime_secs,
        tv_nsec: 0,
    };
    let mut xattrs = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(hdr_err("pax"))? {
        for ext in exts {
            let ext = ext.map_err(hdr_err("pax"))?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                mtime = parse_pax_time(ext.value_bytes())
                    .ok_or_else(|| bad("pax mtime", "not a decimal time"))?;
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if name.is_empty() {
                    return Err(bad("SCHILY.xattr", "empty xattr name"));
                }
                if is_overlay_xattr(name) {
                    stats.skipped_xattrs += 1;
                    continue;
                }
                let name = CString::new(name)
                    .map_err(|_| bad("SCHILY.xattr", "xattr name contains a NUL byte"))?;
                xattrs.push((name, ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        mtime,
        xattrs,
    })
}

/// What must be done to a node after creating it, chosen by how it can be addressed.
pub(crate) enum Target<'a> {
    /// An open fd (regular files, directories).
    Fd(BorrowedFd<'a>),
    /// `dir` + `name`, never followed (symlinks, devices, FIFOs, whiteouts).
    At(BorrowedFd<'a>, &'a std::ffi::CStr, bool),
}

pub(crate) struct Unpacker<'a> {
    pub(crate) root: Rc<OwnedFd>,
    pub(crate) lowers: &'a [PathBuf],
    /// Lazily opened lower roots (readable directory fds), same order as `lowers`.
    pub(crate) lower_fds: Vec<Option<Rc<OwnedFd>>>,
    /// The last parent directory resolved: (joined relative path, fd).
    parent_cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directory times applied at the end, keyed by joined relative path.
    dir_times: HashMap<Vec<u8>, Timespec>,
    /// Lower-layer hard-link targets already copied here: target path -> copy path.
    pub(crate) lower_copies: HashMap<Vec<u8>, Vec<u8>>,
    buf: Vec<u8>,
    pub(crate) stats: ApplyStats,
}

impl<'a> Unpacker<'a> {
    pub(crate) fn new(target: &'a Path, lowers: &'a [PathBuf]) -> Result<Self, LayerError> {
        let terr = |source: io::Error| LayerError::Target {
            path: target.to_path_buf(),
            source,
        };
        let root = fs::open(
            target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| terr(errno_io(e)))?;
        let mut rd = Dir::new(
            fs::openat(&root, c".", DIR_RD, Mode::empty()).map_err(|e| terr(errno_io(e)))?,
        )
        .map_err(|e| terr(errno_io(e)))?;
        while let Some(ent) = rd.read() {
            let ent = ent.map_err(|e| terr(errno_io(e)))?;
            if ent.file_name() != c"." && ent.file_name() != c".." {
                return Err(LayerError::TargetNotEmpty {
                    path: target.to_path_buf(),
                });
            }
        }
        Ok(Self {
            root: Rc::new(root),
            lowers,
            lower_fds: vec![None; lowers.len()],
            parent_cache: None,
            dir_times: HashMap::new(),
            lower_copies: HashMap::new(),
            buf: Vec::new(),
            stats: ApplyStats::default(),
        })
    }

    /// Applies one tar member.
    pub(crate) fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = PathBuf::from(OsStr::from_bytes(&raw));
        let comps = normalize(&raw).map_err(|reason| LayerError::InvalidPath {
            path: shown.clone(),
            reason,
        })?;
        self.stats.entries += 1;
        let Some((name, parent)) = comps.split_last() else {
            if kind != EntryType::Directory {
                return Err(LayerError::InvalidPath {
                    path: shown,
                    reason: "names the layer root but is not a directory",
                });
            }
            let meta = read_meta(entry, &shown, &mut self.stats)?;
            let fd = fs::openat(&*self.root, c".", DIR_RD, Mode::empty())
                .map_err(|e| io_err(&shown, "open layer root", e))?;
            self.apply_meta(Target::Fd(fd.as_fd()), &meta, &shown, false)?;
            self.dir_times.insert(Vec::new(), meta.mtime);
            return Ok(());
        };
        if let Some(rest) = name.strip_prefix(b".wh.") {
            return self.whiteout(entry, &shown, parent, rest);
        }
        let joined = join(&comps);
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => self.regular(
                entry,
                &shown,
                parent,
                name,
                &joined,
                kind == EntryType::GNUSparse,
            ),
            EntryType::Directory => self.directory(entry, &shown, parent, name, &joined),
            EntryType::Symlink => self.symlink(entry, &shown, parent, name, &joined),
            EntryType::Link => self.hardlink(entry, &shown, &comps, &joined),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(entry, &shown, parent, name, &joined, kind)
            }
            other => Err(LayerError::UnsupportedType {
                path: shown,
                kind: other.as_byte(),
            }),
        }
    }

    /// Resolves (creating missing directories as 0755 root:root) the parent directory
    /// `comps` inside the layer and returns a path fd to it.
    pub(crate) fn parent_dir(
        &mut self,
        comps: &[&[u8]],
        shown: &Path,
    ) -> Result<Rc<OwnedFd>, LayerError> {
        if comps.is_empty() {
            return Ok(self.root.clone());
        }
        let key = join(comps);
        if let Some((k, fd)) = &self.parent_cache {
            if *k == key {
                return Ok(fd.clone());
            }
        }
        let fd = match sys::open_in_root(self.root.as_fd(), &key, DIR_PATH) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => self.create_parents(comps, shown)?,
            Err(e) => return Err(io_err(shown, "open parent directory", e)),
        };
        let fd = Rc::new(fd);
        self.parent_cache = Some((key, fd.clone()));
        Ok(fd)
    }

    fn create_parents(&mut self, comps: &[&[u8]], shown: &Path) -> Result<OwnedFd, LayerError> {
        let mut cur = sys::open_in_root(self.root.as_fd(), b"", DIR_PATH)
            .map_err(|e| io_err(shown, "open layer root", e))?;
        let mut creating = false;
        for (i, comp) in comps.iter().enumerate() {
            if !creating {
                match sys::open_in_root(self.root.as_fd(), &join(&comps[..=i]), DIR_PATH) {
                    Ok(fd) => {
                        cur = fd;
                        continue;
                    }
                    Err(Errno::NOENT) => creating = true,
                    Err(e) => return Err(io_err(shown, "open parent directory", e)),
                }
            }
            let name = cname(shown, comp)?;
            fs::mkdirat(&cur, &name, Mode::from_bits_truncate(0o755))
                .map_err(|e| io_err(shown, "create parent directory", e))?;
            fs::chownat(
                &cur,
                &name,
                Some(Uid::ROOT),
                Some(Gid::ROOT),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err(shown, "chown parent directory", e))?;
            fs::chmodat(
                &cur,
                &name,
                Mode::from_bits_truncate(0o755),
                AtFlags::empty(),
            )
            .map_err(|e| io_err(shown, "chmod parent directory", e))?;
            cur = fs::openat(&cur, &name, DIR_PATH | OFlags::NOFOLLOW, Mode::empty())
                .map_err(|e| io_err(shown, "open parent directory", e))?;
        }
        Ok(cur)
    }

    /// Removes whatever is at `dir/name` (a directory recursively, never following
    /// symlinks) and forgets cached state under `joined`.
    pub(crate) fn remove(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        joined: &[u8],
    ) -> Result<(), Errno> {
        self.parent_cache = None;
        self.dir_times.retain(|k, _| !is_same_or_under(k, joined));
        self.lower_copies
            .retain(|_, v| !is_same_or_under(v, joined));
        sys::remove_tree(dir, name)
    }

    /// Runs `create`; if the name already exists, removes it and runs `create` once more
    /// (a later entry replaces an earlier one).
    pub(crate) fn create_replacing<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        joined: &[u8],
        mut create: impl FnMut() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        match create() {
            Err(Errno::EXIST) => {
                self.remove(dir, name, joined)?;
                create()
            }
            r => r,
        }
    }

    /// chown, then chmod (so setuid/setgid survive), then xattrs (chown and writes clear
    /// `security.capability`), then times (unless deferred for directories).
    pub(crate) fn apply_meta(
        &mut self,
        t: Target<'_>,
        meta: &Meta,
        shown: &Path,
        times: bool,
    ) -> Result<(), LayerError> {
        let uid = Some(Uid::from_raw(meta.uid));
        let gid = Some(Gid::from_raw(meta.gid));
        let mode = Mode::from_bits_truncate(meta.mode);
        match t {
            Target::Fd(fd) => {
                fs::fchown(fd, uid, gid).map_err(|e| io_err(shown, "fchown", e))?;
                fs::fchmod(fd, mode).map_err(|e| io_err(shown, "fchmod", e))?;
                for (k, v) in &meta.xattrs {
                    match fs::fsetxattr(fd, k, v, XattrFlags::empty()) {
                        Ok(()) => {}
                        Err(Errno::NOTSUP) => self.stats.skipped_xattrs += 1,
                        Err(e) => return Err(io_err(shown, "fsetxattr", e)),
                    }
                }
                if times {
                    fs::futimens(fd, &meta.times()).map_err(|e| io_err(shown, "futimens", e))?;
                }
            }
            Target::At(dir, name, chmod) => {
                fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(shown, "fchownat", e))?;
                if chmod {
                    // Only for nodes just created here by mknodat (never a symlink).
                    fs::chmodat(dir, name, mode, AtFlags::empty())
                        .map_err(|e| io_err(shown, "fchmodat", e))?;
                }
                for (k, v) in &meta.xattrs {
                    match sys::lsetxattr_at(dir, name, k, v) {
                        Ok(()) => {}
                        Err(Errno::NOTSUP) => self.stats.skipped_xattrs += 1,
                        Err(e) => return Err(io_err(shown, "lsetxattr", e)),
                    }
                }
                if times {
                    fs::utimensat(dir, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| io_err(shown, "utimensat", e))?;
                }
            }
        }
        Ok(())
    }

    fn whiteout<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        parent: &[&[u8]],
        rest: &[u8],
    ) -> Result<(), LayerError> {
        let invalid = |reason| LayerError::InvalidWhiteout {
            path: shown.to_path_buf(),
            reason,
        };
        if rest == b".wh..opq" {
            let dir = self.parent_dir(parent, shown)?;
            let fd = fs::openat(&*dir, c".", DIR_RD, Mode::empty())
                .map_err(|e| io_err(shown, "open opaque directory", e))?;
            fs::fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| io_err(shown, "set trusted.overlay.opaque", e))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if rest.is_empty() {
            return Err(invalid("`.wh.` without a name"));
        }
        if rest == b"." || rest == b".." {
            return Err(invalid("whiteout of `.` or `..`"));
        }
        if rest.starts_with(b".wh.") {
            return Err(invalid("unknown `.wh..wh.` metadata name"));
        }
        let meta = read_meta(entry, shown, &mut self.stats)?;
        let dir = self.parent_dir(parent, shown)?;
        let name = cname(shown, rest)?;
        let mut comps = parent.to_vec();
        comps.push(rest);
        let joined = join(&comps);
        self.create_replacing(dir.as_fd(), &name, &joined, || {
            fs::mknodat(&*dir, &name, FileType::CharacterDevice, Mode::empty(), 0)
        })
        .map_err(|e| io_err(shown, "create whiteout device", e))?;
        fs::chownat(
            &*dir,
            &name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(shown, "fchownat", e))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        parent: &[&[u8]],
        name: &[u8],
        joined: &[u8],
        sparse: bool,
    ) -> Result<(), LayerError> {
        let meta = read_meta(entry, shown, &mut self.stats)?;
        let dir = self.parent_dir(parent, shown)?;
        let cn = cname(shown, name)?;
        let fd = self
            .create_replacing(dir.as_fd(), &cn, joined, || {
                fs::openat(&*dir, &cn, CREATE_FILE, Mode::from_bits_truncate(0o600))
            })
            .map_err(|e| io_err(shown, "create file", e))?;
        let mut file = File::from(fd);
        let n = self.copy_content(entry, &mut file, shown, sparse)?;
        self.stats.bytes += n;
        self.apply_meta(Target::Fd(file.as_fd()), &meta, shown, true)
    }

    /// Copies the entry content into `file` in chunks of up to [`COPY_BUF`] bytes; for
    /// sparse entries all-zero chunks are skipped with a seek and the size fixed at the end.
    fn copy_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        shown: &Path,
        sparse: bool,
    ) -> Result<u64, LayerError> {
        if self.buf.len() < COPY_BUF {
            self.buf.resize(COPY_BUF, 0);
        }
        let werr = |op: &'static str| {
            move |source: io::Error| LayerError::Io {
                path: shown.to_path_buf(),
                op,
                source,
            }
        };
        let mut total: u64 = 0;
        let mut holes = false;
        loop {
            // Fill the buffer as far as the stream allows, to write in large chunks.
            let mut filled = 0;
            while filled < self.buf.len() {
                match entry.read(&mut self.buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(LayerError::ReadEntry {
                            path: shown.to_path_buf(),
                            source,
                        })
                    }
                }
            }
            if filled == 0 {
                break;
            }
            let chunk = &self.buf[..filled];
            if sparse {
                // Alternate runs of all-zero and data blocks of SPARSE_BLOCK bytes.
                let mut off = 0;
                while off < filled {
                    let zero = is_zero_block(chunk, off);
                    let mut end = (off + SPARSE_BLOCK).min(filled);
                    while end < filled && is_zero_block(chunk, end) == zero {
                        end = (end + SPARSE_BLOCK).min(filled);
                    }
                    if zero {
                        file.seek(SeekFrom::Current((end - off) as i64))
                            .map_err(werr("seek over hole"))?;
                        holes = true;
                    } else {
                        file.write_all(&chunk[off..end])
                            .map_err(werr("write file"))?;
                    }
                    off = end;
                }
            } else {
                file.write_all(chunk).map_err(werr("write file"))?;
            }
            total += filled as u64;
            if filled < self.buf.len() {
                break;
            }
        }
        if holes {
            file.set_len(total).map_err(werr("set file length"))?;
        }
        Ok(total)
    }

    fn directory<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        parent: &[&[u8]],
        name: &[u8],
        joined: &[u8],
    ) -> Result<(), LayerError> {
        let meta = read_meta(entry, shown, &mut self.stats)?;
        let dir = self.parent_dir(parent, shown)?;
        let cn = cname(shown, name)?;
        match fs::mkdirat(&*dir, &cn, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = sys::lstat_at(dir.as_fd(), &cn).map_err(|e| io_err(shown, "lstat", e))?;
                if sys::file_type(&st) != FileType::Directory {
                    self.remove(dir.as_fd(), &cn, joined)
                        .map_err(|e| io_err(shown, "remove replaced entry", e))?;
                    fs::mkdirat(&*dir, &cn, Mode::from_bits_truncate(0o700))
                        .map_err(|e| io_err(shown, "create directory", e))?;
                }
            }
            Err(e) => return Err(io_err(shown, "create directory", e)),
        }
        let fd = fs::openat(&*dir, &cn, DIR_RD, Mode::empty())
            .map_err(|e| io_err(shown, "open directory", e))?;
        self.apply_meta(Target::Fd(fd.as_fd()), &meta, shown, false)?;
        self.dir_times.insert(joined.to_vec(), meta.mtime);
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        parent: &[&[u8]],
        name: &[u8],
        joined: &[u8],
    ) -> Result<(), LayerError> {
        let target = entry
            .link_name_bytes()
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let bad = |reason| LayerError::InvalidLinkTarget {
            path: shown.to_path_buf(),
            target: PathBuf::from(OsStr::from_bytes(&target)),
            reason,
        };
        if target.is_empty() {
            return Err(bad("empty symlink target"));
        }
        let ctarget = CString::new(target.clone()).map_err(|_| bad("contains a NUL byte"))?;
        let meta = read_meta(entry, shown, &mut self.stats)?;
        let dir = self.parent_dir(parent, shown)?;
        let cn = cname(shown, name)?;
        self.create_replacing(dir.as_fd(), &cn, joined, || {
            fs::symlinkat(&ctarget, &*dir, &cn)
        })
        .map_err(|e| io_err(shown, "create symlink", e))?;
        self.apply_meta(Target::At(dir.as_fd(), &cn, false), &meta, shown, true)
    }

    fn special<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        parent: &[&[u8]],
        name: &[u8],
        joined: &[u8],
        kind: EntryType,
    ) -> Result<(), LayerError> {
        let h = entry.header();
        let hdr_err = |field| {
            move |source| LayerError::Header {
                path: shown.to_path_buf(),
                field,
                source,
            }
        };
        let major = h.device_major().map_err(hdr_err("devmajor"))?.unwrap_or(0);
        let minor = h.device_minor().map_err(hdr_err("devminor"))?.unwrap_or(0);
        let (ft, dev) = match kind {
            EntryType::Char => (FileType::CharacterDevice, fs::makedev(major, minor)),
            EntryType::Block => (FileType::BlockDevice, fs::makedev(major, minor)),
            _ => (FileType::Fifo, 0),
        };
        let meta = read_meta(entry, shown, &mut self.stats)?;
        let dir = self.parent_dir(parent, shown)?;
        let cn = cname(shown, name)?;
        self.create_replacing(dir.as_fd(), &cn, joined, || {
            fs::mknodat(&*dir, &cn, ft, Mode::from_bits_truncate(0o600), dev)
        })
        .map_err(|e| io_err(shown, "mknodat", e))?;
        self.apply_meta(Target::At(dir.as_fd(), &cn, true), &meta, shown, true)
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        comps: &[&[u8]],
        joined: &[u8],
    ) -> Result<(), LayerError> {
        let traw = entry
            .link_name_bytes()
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let tshown = PathBuf::from(OsStr::from_bytes(&traw));
        let bad = |reason| LayerError::InvalidLinkTarget {
            path: shown.to_path_buf(),
            target: tshown.clone(),
            reason,
        };
        let tcomps = normalize(&traw).map_err(bad)?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(bad("hard link to the layer root"));
        };
        let Some((name, parent)) = comps.split_last() else {
            return Err(bad("hard link at the layer root"));
        };
        let tjoined = join(&tcomps);
        let not_found = || LayerError::LinkTargetNotFound {
            path: shown.to_path_buf(),
            target: tshown.clone(),
        };
        // Target in this layer?
        let tcn = cname(shown, tname)?;
        let tdir = match sys::open_in_root(self.root.as_fd(), &join(tparent), DIR_PATH) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => None,
            Err(e) => return Err(io_err(shown, "open hard link target directory", e)),
        };
        if let Some(tdir) = &tdir {
            match sys::lstat_at(tdir.as_fd(), &tcn) {
                Ok(st) if sys::is_whiteout(&st) => return Err(not_found()),
                Ok(st) if sys::file_type(&st) == FileType::Directory => {
                    return Err(bad("hard link to a directory"))
                }
                Ok(_) => {
                    if tjoined == joined {
                        return Ok(()); // a link to itself: already there
                    }
                    return self.link_at(tdir.as_fd(), &tcn, shown, parent, name, joined);
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(io_err(shown, "lstat hard link target", e)),
            }
        }
        // A lower-layer target already copied into this layer: link to the copy.
        if let Some(copy) = self.lower_copies.get(&tjoined).cloned() {
            if let Ok(ccomps) = normalize(&copy) {
                if let Some((cname_, cparent)) = ccomps.split_last() {
                    let ccn = cname(shown, cname_)?;
                    if let Ok(cdir) = sys::open_in_root(self.root.as_fd(), &join(cparent), DIR_PATH)
                    {
                        if copy.as_slice() == joined {
                            return Ok(());
                        }
                        if sys::lstat_at(cdir.as_fd(), &ccn).is_ok() {
                            return self.link_at(cdir.as_fd(), &ccn, shown, parent, name, joined);
                        }
                    }
                }
            }
        }
        match self.find_in_layers(&tcomps, shown)? {
            None => Err(not_found()),
            Some(found) => {
                if found.layer == 0 {
                    return self.link_at(
                        found.dir.as_fd(),
                        &found.name,
                        shown,
                        parent,
                        name,
                        joined,
                    );
                }
                if sys::file_type(&found.stat) == FileType::Directory {
                    return Err(bad("hard link to a directory"));
                }
                self.copy_from_lower(&found, shown, parent, name, joined)?;
                self.lower_copies.insert(tjoined, joined.to_vec());
                Ok(())
            }
        }
    }

    fn link_at(
        &mut self,
        tdir: BorrowedFd<'_>,
        tname: &std::ffi::CStr,
        shown: &Path,
        parent: &[&[u8]],
        name: &[u8],
        joined: &[u8],
    ) -> Result<(), LayerError> {
        let dir = self.parent_dir(parent, shown)?;
        let cn = cname(shown, name)?;
        self.create_replacing(dir.as_fd(), &cn, joined, || {
            fs::linkat(tdir, tname, &*dir, &cn, AtFlags::empty())
        })
        .map_err(|e| io_err(shown, "create hard link", e))
    }

    /// Applies the deferred directory times (deepest first) and returns the counters.
    pub(crate) fn finish(mut self) -> Result<ApplyStats, LayerError> {
        let mut dirs: Vec<(Vec<u8>, Timespec)> = self.dir_times.drain().collect();
        dirs.sort_by_key(|(p, _)| {
            std::cmp::Reverse(p.iter().filter(|b| **b == b'/').count() + usize::from(!p.is_empty()))
        });
        for (p, t) in dirs {
            let shown = PathBuf::from(OsStr::from_bytes(&p));
            let fd = match sys::open_in_root(self.root.as_fd(), &p, DIR_RD) {
                Ok(fd) => fd,
                // Replaced later in the layer by a non-directory: nothing to do.
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(io_err(&shown, "open directory for times", e)),
            };
            let ts = Timestamps {
                last_access: t,
                last_modification: t,
            };
            fs::futimens(&fd, &ts).map_err(|e| io_err(&shown, "futimens", e))?;
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_time() {
        let t = parse_pax_time(b"1700000000.123456789").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 123_456_789));
        let t = parse_pax_time(b"5.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (5, 500_000_000));
        let t = parse_pax_time(b"-1.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 750_000_000));
        let t = parse_pax_time(b"42").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (42, 0));
        assert!(parse_pax_time(b"").is_none());
        assert!(parse_pax_time(b"1e5").is_none());
        assert!(parse_pax_time(b".5").is_none());
        assert!(parse_pax_time(b"99999999999999999999999").is_none());
    }
}
