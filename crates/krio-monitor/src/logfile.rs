//! Opening a container's CRI log file without ever following a link or blocking.
//!
//! The log path is `ContainerConfig.log_path` (relative) under the pod's `log_directory`. Everything below the
//! log directory is reachable by whoever can write there (the pod's owner, a compromised node agent, another
//! container with the directory mounted), so a symbolic link, a FIFO or a directory may sit where krio expects
//! its log. The file is therefore opened relative to an opened descriptor of the log directory, one component at
//! a time with `O_NOFOLLOW`, the last with `O_NONBLOCK` (opening a FIFO for writing would otherwise wait for a
//! reader forever), and only a regular file is accepted.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, FcntlArg, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// Mode of a newly created log file (rw-r-----), as CRI-O and containerd create them.
const LOG_FILE_MODE: u32 = 0o640;

/// Mode of a directory created between the log directory and the log file.
const LOG_DIR_MODE: u32 = 0o755;

/// Opens (creating it, mode 0640, when absent) the log file `rel` below the directory `dir` for appending
/// (`O_WRONLY | O_APPEND | O_CLOEXEC`), creating missing intermediate directories (mode 0755).
///
/// `dir` itself is opened as given (it is the pod's `log_directory`, chosen by kubelet). `rel` must be a
/// relative path of plain components: no `..`, no root. No component of `rel` may be a symbolic link, the
/// intermediate ones must be directories, and the last must be a regular file (or absent); it is opened with
/// `O_NONBLOCK` (so a FIFO never blocks), checked with `fstat`, and then switched back to blocking writes.
///
/// Errors (`std::io::Error` whose message names the offending component): `InvalidInput` for a bad `rel`;
/// `ELOOP` for a symbolic link; `ENOTDIR` for an intermediate component that is not a directory; `EISDIR`,
/// `ENXIO` (a FIFO or socket without a reader) or `InvalidInput` ("not a regular file") for the last component;
/// any other `open(2)`/`mkdirat(2)` error as is.
pub fn open_log_file(dir: &Path, rel: &Path) -> std::io::Result<File> {
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(p) => Ok(p),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} must be a relative path without '..' or '.'",
                    rel.display()
                ),
            )),
        })
        .collect::<std::io::Result<_>>()?;
    let Some((last, intermediate)) = parts.split_last() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty log path",
        ));
    };
    let ctx = |what: &Path, e: Errno, why: &str| {
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("{}: {why} ({e})", what.display()),
        )
    };
    let mut cur: OwnedFd = openat(
        nix::fcntl::AT_FDCWD,
        dir,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ctx(dir, e, "opening the log directory"))?;
    let mut walked = dir.to_path_buf();
    for part in intermediate {
        walked.push(part);
        match mkdirat(cur.as_fd(), *part, Mode::from_bits_truncate(LOG_DIR_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(ctx(&walked, e, "creating a directory")),
        }
        cur = openat(
            cur.as_fd(),
            *part,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => ctx(
                &walked,
                e,
                "is a symbolic link or not a directory; refusing to follow it",
            ),
            e => ctx(&walked, e, "opening a directory"),
        })?;
    }
    walked.push(last);
    let fd = openat(
        cur.as_fd(),
        *last,
        OFlag::O_WRONLY
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(LOG_FILE_MODE),
    )
    .map_err(|e| match e {
        Errno::ELOOP => ctx(&walked, e, "is a symbolic link; refusing to follow it"),
        Errno::EISDIR => ctx(&walked, e, "is a directory, not a regular file"),
        Errno::ENXIO => ctx(&walked, e, "is a FIFO or socket, not a regular file"),
        e => ctx(&walked, e, "opening the log file"),
    })?;
    let st = fstat(fd.as_fd()).map_err(|e| ctx(&walked, e, "fstat"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: is not a regular file", walked.display()),
        ));
    }
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_APPEND))
        .map_err(|e| ctx(&walked, e, "clearing O_NONBLOCK"))?;
    Ok(File::from(fd))
}

/// Splits an absolute log path into the directory to open and the relative part to walk: `log_path` below
/// `log_directory` when it is given and a prefix, else the parent directory and the file name.
///
/// Errors: `InvalidInput` when `log_path` has no file name.
pub fn split_log_path<'a>(
    log_directory: Option<&'a Path>,
    log_path: &'a Path,
) -> std::io::Result<(&'a Path, &'a Path)> {
    if let Some(dir) = log_directory {
        if let Ok(rel) = log_path.strip_prefix(dir) {
            if !rel.as_os_str().is_empty() {
                return Ok((dir, rel));
            }
        }
    }
    match (log_path.parent(), log_path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, Path::new(name))),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", log_path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn creates_directories_and_appends() {
        let d = tempfile::tempdir().unwrap();
        let mut f = open_log_file(d.path(), Path::new("a/b/c.log")).unwrap();
        f.write_all(b"one\n").unwrap();
        let mut f = open_log_file(d.path(), Path::new("a/b/c.log")).unwrap();
        f.write_all(b"two\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("a/b/c.log")).unwrap(),
            "one\ntwo\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("a/b/c.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn refuses_links_fifos_directories_and_dotdot() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("link.log")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("new"), d.path().join("dangling.log"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("dirlink")).unwrap();
        nix::unistd::mkfifo(&d.path().join("fifo.log"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(d.path().join("dir.log")).unwrap();
        std::fs::write(d.path().join("file"), "").unwrap();
        for rel in [
            "link.log",
            "dangling.log",
            "dirlink/x.log",
            "fifo.log",
            "dir.log",
            "file/x.log",
            "../x.log",
            "a/../x.log",
            "/abs.log",
            "",
        ] {
            let e = open_log_file(d.path(), Path::new(rel)).unwrap_err();
            assert!(!e.to_string().is_empty(), "{rel}");
        }
        // A FIFO with a reader is refused too (open succeeds, fstat says FIFO).
        let fifo = d.path().join("fifo.log");
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let e = open_log_file(d.path(), Path::new("fifo.log")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        drop(reader);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn splits_paths() {
        let (d, r) = split_log_path(Some(Path::new("/l")), Path::new("/l/a/b.log")).unwrap();
        assert_eq!((d, r), (Path::new("/l"), Path::new("a/b.log")));
        let (d, r) = split_log_path(None, Path::new("/l/a/b.log")).unwrap();
        assert_eq!((d, r), (Path::new("/l/a"), Path::new("b.log")));
        let (d, r) = split_log_path(Some(Path::new("/x")), Path::new("/l/b.log")).unwrap();
        assert_eq!((d, r), (Path::new("/l"), Path::new("b.log")));
    }
}
