//! Small fd-relative filesystem helpers (rustix). Nothing here follows a symlink in a final
//! path component, and every path handed to the kernel is resolved relative to a directory fd.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{self, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat, XattrFlags};
use rustix::io::Errno;

/// Resolution used for every path inside the layer being written: symlinks are resolved as
/// if the layer root were `/` (never above it), and `/proc` magic links are refused.
pub(crate) const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Flags to open a directory for reading/metadata without following a final symlink.
pub(crate) const DIR_RD: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Flags for a path-only directory handle (enough for the `*at` calls).
pub(crate) const DIR_PATH: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// How often an `openat2` that returned `EAGAIN` (a concurrent rename somewhere in the
/// kernel) is retried before giving up.
const EAGAIN_RETRIES: usize = 128;

pub(crate) fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`; an empty `path`
/// opens the root itself.
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    let mut tries = 0;
    loop {
        match fs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), IN_ROOT) {
            Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            r => return r,
        }
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<Stat, Errno> {
    fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// An overlayfs whiteout is a character device with device number 0:0.
pub(crate) fn is_whiteout(st: &Stat) -> bool {
    file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Whether the directory open at `dir` (a readable fd, not `O_PATH`) carries
/// `trusted.overlay.opaque=y`.
pub(crate) fn is_opaque(dir: BorrowedFd<'_>) -> io::Result<bool> {
    let mut buf = [0u8; 4];
    match fs::fgetxattr(dir, c"trusted.overlay.opaque", &mut buf[..]) {
        Ok(n) => Ok(n == 1 && buf[0] == b'y'),
        Err(Errno::NODATA) | Err(Errno::NOTSUP) | Err(Errno::RANGE) => Ok(false),
        Err(e) => Err(errno_io(e)),
    }
}

/// Sets an xattr on `dir/name` without following `name` if it is a symlink and without
/// opening it (needed for symlinks, device nodes and FIFOs). The path goes through the
/// `/proc/self/fd/N` magic link of the already-confined parent fd, then one plain name,
/// and `lsetxattr` does not follow that last component.
pub(crate) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    key: &CStr,
    value: &[u8],
) -> Result<(), Errno> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    fs::lsetxattr(p.as_slice(), key, value, XattrFlags::empty())
}

/// Removes `dir/name`: unlinks a non-directory, or removes a directory tree depth-first
/// without ever following a symlink (each level is opened with `O_NOFOLLOW` relative to its
/// parent fd). Iterative, so deep trees neither overflow the stack nor hold one fd per level.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    let st = lstat_at(dir, name)?;
    if file_type(&st) != FileType::Directory {
        return fs::unlinkat(dir, name, AtFlags::empty());
    }
    let mut stack: Vec<CString> = Vec::new();
    let mut cur = fs::openat(dir, name, DIR_RD, Mode::empty())?;
    loop {
        let mut subdir: Option<CString> = None;
        {
            let mut rd = Dir::new(fs::openat(&cur, c".", DIR_RD, Mode::empty())?)?;
            while let Some(ent) = rd.read() {
                let ent = ent?;
                let n = ent.file_name();
                if n == c"." || n == c".." {
                    continue;
                }
                let is_dir = match ent.file_type() {
                    FileType::Directory => true,
                    FileType::Unknown => {
                        file_type(&lstat_at(cur.as_fd(), n)?) == FileType::Directory
                    }
                    _ => false,
                };
                if is_dir {
                    if subdir.is_none() {
                        subdir = Some(n.to_owned());
                    }
                } else {
                    fs::unlinkat(&cur, n, AtFlags::empty())?;
                }
            }
        }
        match subdir {
            Some(sub) => {
                let next = fs::openat(&cur, &sub, DIR_RD, Mode::empty())?;
                stack.push(sub);
                cur = next;
            }
            None => match stack.pop() {
                Some(done) => {
                    let up = fs::openat(&cur, c"..", DIR_RD, Mode::empty())?;
                    fs::unlinkat(&up, &done, AtFlags::REMOVEDIR)?;
                    cur = up;
                }
                None => break,
            },
        }
    }
    drop(cur);
    fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Lists the xattrs of an open fd as (name, value) pairs.
pub(crate) fn list_xattrs(fd: BorrowedFd<'_>) -> Result<Vec<(CString, Vec<u8>)>, Errno> {
    let size = match fs::flistxattr_query(fd) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; size];
    let n = fs::flistxattr(fd, &mut names[..])?;
    names.truncate(n);
    let mut out = Vec::new();
    for raw in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(key) = CString::new(raw) else { continue };
        let len = fs::fgetxattr_query(fd, &key)?;
        let mut val = vec![0u8; len];
        let got = fs::fgetxattr(fd, &key, &mut val[..])?;
        val.truncate(got);
        out.push((key, val));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn remove_tree_does_not_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let victim = t.path().join("victim");
        let mut deep = victim.clone();
        for i in 0..50 {
            deep = deep.join(format!("d{i}"));
            std::fs::create_dir_all(&deep).unwrap();
            std::fs::write(deep.join("f"), b"y").unwrap();
            symlink(&outside, deep.join("l")).unwrap();
        }
        let root = std::fs::File::open(t.path()).unwrap();
        remove_tree(root.as_fd(), c"victim").unwrap();
        assert!(!victim.exists());
        assert!(outside.join("keep").exists());
    }
}
