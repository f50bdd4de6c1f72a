//! Hard links whose target is not in the layer being written: look the target up through
//! this layer and the lower layers like overlayfs would, and copy it.
//!
//! The lookup walks each layer component by component without following any symlink (a
//! symlink on the path is treated as hiding everything below it, like any non-directory).
//! A whiteout on the path ends the search (absent); an opaque directory on the path ends it
//! after the layer that holds it. Xattrs of copied symlinks, device nodes and FIFOs are not
//! copied (they cannot be read without following or opening them); regular files keep theirs
//! (except `trusted.overlay.*` / `user.overlay.*`).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{self, FileType, Mode, OFlags, Stat, Timespec};
use rustix::io::Errno;

use crate::sys::{self, errno_io, DIR_RD};
use crate::unpack::{cname, io_err, is_overlay_xattr, Meta, Target, Unpacker};
use crate::LayerError;

/// Where a hard-link target was found.
pub(crate) struct Found {
    /// 0 for the layer being written, `i + 1` for `lowers[i]`.
    pub(crate) layer: usize,
    /// Readable fd of the directory holding the target.
    pub(crate) dir: OwnedFd,
    /// Final component of the target.
    pub(crate) name: CString,
    /// `lstat` of the target.
    pub(crate) stat: Stat,
}

/// `st_mtime` as a [`Timespec`]; the field types differ between architectures.
#[allow(clippy::useless_conversion)]
fn stat_mtime(st: &Stat) -> Timespec {
    Timespec {
        tv_sec: i64::from(st.st_mtime),
        tv_nsec: i64::try_from(st.st_mtime_nsec).unwrap_or(0),
    }
}

/// `st_rdev` as a [`fs::Dev`]; the field type differs between architectures.
#[allow(clippy::useless_conversion)]
fn stat_rdev(st: &Stat) -> fs::Dev {
    fs::Dev::from(st.st_rdev)
}

impl Unpacker<'_> {
    fn layer_err(&self, layer: usize, shown: &Path, e: io::Error) -> LayerError {
        match layer.checked_sub(1).and_then(|i| self.lowers.get(i)) {
            Some(p) => LayerError::Lower {
                path: p.clone(),
                source: e,
            },
            None => LayerError::Io {
                path: shown.to_path_buf(),
                op: "look up hard link target",
                source: e,
            },
        }
    }

    fn layer_root(&mut self, layer: usize, shown: &Path) -> Result<Rc<OwnedFd>, LayerError> {
        let Some(i) = layer.checked_sub(1) else {
            return Ok(self.root.clone());
        };
        if let Some(Some(fd)) = self.lower_fds.get(i) {
            return Ok(fd.clone());
        }
        let path = self.lowers.get(i).cloned().unwrap_or_default();
        let fd = fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.layer_err(layer, shown, errno_io(e)))?;
        let fd = Rc::new(fd);
        if let Some(slot) = self.lower_fds.get_mut(i) {
            *slot = Some(fd.clone());
        }
        Ok(fd)
    }

    /// Looks `comps` (non-empty, normalised) up in this layer, then in each lower layer,
    /// topmost first. `Ok(None)` when absent or hidden by a whiteout / opaque directory.
    pub(crate) fn find_in_layers(
        &mut self,
        comps: &[&[u8]],
        shown: &Path,
    ) -> Result<Option<Found>, LayerError> {
        let Some((last, parents)) = comps.split_last() else {
            return Ok(None);
        };
        let lname = cname(shown, last)?;
        for layer in 0..=self.lowers.len() {
            let root = self.layer_root(layer, shown)?;
            let e = |s: &Self, err: Errno| s.layer_err(layer, shown, errno_io(err));
            let mut cur =
                fs::openat(&*root, c".", DIR_RD, Mode::empty()).map_err(|x| e(self, x))?;
            let mut stop =
                sys::is_opaque(cur.as_fd()).map_err(|x| self.layer_err(layer, shown, x))?;
            let mut missing = false;
            for comp in parents {
                let c = cname(shown, comp)?;
                match sys::lstat_at(cur.as_fd(), &c) {
                    Err(Errno::NOENT) => {
                        missing = true;
                        break;
                    }
                    Err(x) => return Err(e(self, x)),
                    Ok(st) if sys::is_whiteout(&st) => return Ok(None),
                    Ok(st) if sys::file_type(&st) == FileType::Directory => {
                        cur =
                            fs::openat(&cur, &c, DIR_RD, Mode::empty()).map_err(|x| e(self, x))?;
                        if sys::is_opaque(cur.as_fd())
                            .map_err(|x| self.layer_err(layer, shown, x))?
                        {
                            stop = true;
                        }
                    }
                    Ok(_) => return Ok(None),
                }
            }
            if !missing {
                match sys::lstat_at(cur.as_fd(), &lname) {
                    Err(Errno::NOENT) => {}
                    Err(x) => return Err(e(self, x)),
                    Ok(st) if sys::is_whiteout(&st) => return Ok(None),
                    Ok(st) => {
                        return Ok(Some(Found {
                            layer,
                            dir: cur,
                            name: lname,
                            stat: st,
                        }))
                    }
                }
            }
            if stop {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Copies a lower-layer node (regular file, symlink, device, FIFO) to `parent/name` in
    /// this layer with its owner, mode, mtime (atime = mtime) and, for regular files, xattrs.
    pub(crate) fn copy_from_lower(
        &mut self,
        found: &Found,
        shown: &Path,
        parent: &[&[u8]],
        name: &[u8],
        joined: &[u8],
    ) -> Result<(), LayerError> {
        let lerr = |s: &Self, err: io::Error| s.layer_err(found.layer, shown, err);
        let st = &found.stat;
        let mut meta = Meta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            mtime: stat_mtime(st),
            xattrs: Vec::new(),
        };
        let dir = self.parent_dir(parent, shown)?;
        let cn = cname(shown, name)?;
        match sys::file_type(st) {
            FileType::RegularFile => {
                let src = fs::openat(
                    &found.dir,
                    &found.name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                    Mode::empty(),
                )
                .map_err(|x| lerr(self, errno_io(x)))?;
                let xattrs = sys::list_xattrs(src.as_fd()).map_err(|x| lerr(self, errno_io(x)))?;
                for (k, v) in xattrs {
                    if is_overlay_xattr(k.to_bytes()) {
                        continue;
                    }
                    meta.xattrs.push((k, v));
                }
                let dst = self
                    .create_replacing(dir.as_fd(), &cn, joined, || {
                        fs::openat(
                            &*dir,
                            &cn,
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_bits_truncate(0o600),
                        )
                    })
                    .map_err(|x| io_err(shown, "create copy of lower-layer file", x))?;
                let mut sf = File::from(src);
                let mut df = File::from(dst);
                let n = io::copy(&mut sf, &mut df).map_err(|source| LayerError::Io {
                    path: shown.to_path_buf(),
                    op: "copy lower-layer file",
                    source,
                })?;
                self.stats.bytes += n;
                self.apply_meta(Target::Fd(df.as_fd()), &meta, shown, true)
            }
            FileType::Symlink => {
                let target = fs::readlinkat(&found.dir, &found.name, Vec::new())
                    .map_err(|x| lerr(self, errno_io(x)))?;
                self.create_replacing(dir.as_fd(), &cn, joined, || {
                    fs::symlinkat(&target, &*dir, &cn)
                })
                .map_err(|x| io_err(shown, "create copy of lower-layer symlink", x))?;
                self.apply_meta(Target::At(dir.as_fd(), &cn, false), &meta, shown, true)
            }
            ft @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
                let dev = stat_rdev(st);
                self.create_replacing(dir.as_fd(), &cn, joined, || {
                    fs::mknodat(&*dir, &cn, ft, Mode::from_bits_truncate(0o600), dev)
                })
                .map_err(|x| io_err(shown, "create copy of lower-layer node", x))?;
                self.apply_meta(Target::At(dir.as_fd(), &cn, true), &meta, shown, true)
            }
            _ => Err(LayerError::InvalidLinkTarget {
                path: shown.to_path_buf(),
                target: shown.to_path_buf(),
                reason: "hard link to a directory or socket in a lower layer",
            }),
        }
    }
}
