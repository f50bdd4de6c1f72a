//! Pod namespaces pinned by bind mounts, without a pause process.
//!
//! The scheme follows `ip netns add` (iproute2): a namespace stays alive while a bind mount of its
//! nsfs handle (`/proc/<tid>/ns/<kind>`) exists. The namespaces are created by `unshare(2)` in a
//! dedicated short-lived thread (net/ipc/uts namespaces are per task), bind-mounted onto
//! `<dir>/<kind>`, and the thread then exits.
//!
//! The pin directory itself is made a bind mount of itself with shared propagation (like
//! `/run/netns` in `ip netns`), so a pin that is later unmounted here is also unmounted in every
//! mount namespace that copied it (for example a container's, created while the pin existed):
//! pins therefore do not keep namespaces alive behind our back.

use std::collections::BTreeSet;
use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::NetError;

/// A kind of namespace that can be pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NsKind {
    /// Network namespace (`CLONE_NEWNET`); the pod's interfaces, routes and iptables.
    Net,
    /// IPC namespace (`CLONE_NEWIPC`); System V IPC and POSIX message queues.
    Ipc,
    /// UTS namespace (`CLONE_NEWUTS`); hostname and NIS domain name.
    Uts,
}

impl NsKind {
    /// The file name of this kind both under `/proc/<tid>/ns/` and under the pin directory
    /// (`"net"`, `"ipc"`, `"uts"`).
    pub fn file_name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// The pin files created by [`pin_namespaces`]; `None` for kinds that were not requested.
///
/// Each path is `<dir>/<kind>` and can be handed to runc as an OCI `linux.namespaces[].path`, to CNI as
/// `CNI_NETNS`, or to `nsenter --net=<path>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedNamespaces {
    /// The pinned network namespace (`<dir>/net`).
    pub net: Option<PathBuf>,
    /// The pinned IPC namespace (`<dir>/ipc`).
    pub ipc: Option<PathBuf>,
    /// The pinned UTS namespace (`<dir>/uts`).
    pub uts: Option<PathBuf>,
    /// The pinned user namespace (`<dir>/user`) that owns the others, made by
    /// [`pin_namespaces_in_userns`]; `None` from [`pin_namespaces`].
    pub user: Option<PathBuf>,
}

/// One id mapping of a user namespace (a line of `/proc/<pid>/uid_map`, user_namespaces(7)):
/// ids `container_id..container_id + length` inside are `host_id..host_id + length` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the namespace.
    pub container_id: u32,
    /// First id outside (in the daemon's user namespace).
    pub host_id: u32,
    /// Number of ids mapped (at least 1).
    pub length: u32,
}

impl PinnedNamespaces {
    /// The pin of `kind`, if it was requested.
    pub fn path(&self, kind: NsKind) -> Option<&Path> {
        match kind {
            NsKind::Net => self.net.as_deref(),
            NsKind::Ipc => self.ipc.as_deref(),
            NsKind::Uts => self.uts.as_deref(),
        }
    }
}

/// Creates new namespaces of the given `kinds` and pins each by bind-mounting it onto `<dir>/<kind>`.
///
/// * `dir` must be absolute; it (and missing parents) is created with mode 0700 and made a shared
///   bind mount of itself. It must not already contain pins.
/// * `hostname` is set in the new UTS namespace when `kinds` contains [`NsKind::Uts`] (ignored
///   otherwise); it must be 1..=64 bytes of `[A-Za-z0-9.-]` (CRI `PodSandboxConfig.hostname`).
/// * For [`NsKind::Net`] the loopback interface `lo` is brought up.
///
/// Duplicated kinds are pinned once; an empty `kinds` only creates `dir`. Blocking: call from
/// `spawn_blocking` in async code (a fresh thread is spawned internally for the unshare, so no
/// pool thread is ever moved into another namespace).
///
/// Errors: [`NetError::InvalidArgument`] (`dir`, `hostname`), [`NetError::PinExists`],
/// [`NetError::Io`] / [`NetError::Sys`] for failed syscalls, [`NetError::NsThread`]. On any error
/// everything done so far (mounts, files, the directory if created here) is undone.
pub fn pin_namespaces(
    dir: &Path,
    kinds: &[NsKind],
    hostname: Option<&str>,
) -> Result<PinnedNamespaces, NetError> {
    if !dir.is_absolute() {
        return Err(NetError::InvalidArgument {
            field: "dir",
            reason: format!("{} is not an absolute path", dir.display()),
        });
    }
    let kinds: BTreeSet<NsKind> = kinds.iter().copied().collect();
    let hostname = match hostname {
        Some(h) if kinds.contains(&NsKind::Uts) => {
            validate_hostname(h)?;
            Some(h.to_owned())
        }
        _ => None,
    };

    let mut undo = Undo {
        dir: dir.to_path_buf(),
        created_dir: false,
        bound_dir: false,
        pins: Vec::new(),
    };
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(NetError::InvalidArgument {
                field: "dir",
                reason: format!("{} exists and is not a directory", dir.display()),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| io_err("create namespace dir", dir, source))?;
            undo.created_dir = true;
        }
        Err(source) => return Err(io_err("stat namespace dir", dir, source)),
    }
    let result = pin_inner(dir, &kinds, hostname, &mut undo);
    match result {
        Ok(p) => Ok(p),
        Err(e) => {
            undo.run();
            Err(e)
        }
    }
}

/// Like [`pin_namespaces`], but the namespaces belong to a new user namespace with the given
/// single `uid` and `gid` mappings (CRI `userns_options` mode POD), which is pinned too, at
/// `<dir>/user`. Kubernetes expects a pod's network, IPC and UTS namespaces to be owned by the
/// pod's user namespace: the containers join that user namespace first and could not join
/// namespaces owned by the host's afterwards.
///
/// A multi-threaded process can neither create nor enter a user namespace, so a forked child
/// makes them all (`unshare(CLONE_NEWUSER)`, the maps written by this process, then
/// `unshare` of the other kinds, `sethostname`, `lo` up); this process bind-mounts the child's
/// `/proc/<pid>/ns/*` and the child exits. No process is left holding anything.
///
/// Errors: as [`pin_namespaces`]; an empty mapping is [`NetError::InvalidArgument`]. On any
/// error everything done so far is undone and the child is killed and reaped.
pub fn pin_namespaces_in_userns(
    dir: &Path,
    kinds: &[NsKind],
    hostname: Option<&str>,
    uid: IdMap,
    gid: IdMap,
) -> Result<PinnedNamespaces, NetError> {
    for (field, m) in [("uid", uid), ("gid", gid)] {
        if m.length == 0 || u64::from(m.host_id) + u64::from(m.length) > u64::from(u32::MAX) {
            return Err(NetError::InvalidArgument {
                field,
                reason: format!("{m:?} is not a range of 32-bit ids"),
            });
        }
    }
    let kinds: BTreeSet<NsKind> = kinds.iter().copied().collect();
    let hostname = match hostname {
        Some(h) if kinds.contains(&NsKind::Uts) => {
            validate_hostname(h)?;
            Some(h.to_owned())
        }
        _ => None,
    };
    // The directory, its shared mount and empty pin files, as for the other kinds; the user
    // namespace's pin comes first so that the undo removes it last.
    let mut pinned = pin_namespaces(dir, &[], None)?;
    let mut undo = Undo {
        dir: dir.to_path_buf(),
        created_dir: false,
        bound_dir: false,
        pins: Vec::new(),
    };
    let result = (|| {
        let mut targets = Vec::new();
        for name in std::iter::once("user").chain(kinds.iter().map(|k| k.file_name())) {
            let pin = dir.join(name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&pin)
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(NetError::PinExists { path: pin })
                }
                Err(source) => return Err(io_err("create namespace pin", &pin, source)),
            }
            undo.pins.push(pin.clone());
            targets.push((name, pin));
        }
        let flags = kinds
            .iter()
            .fold(CloneFlags::empty(), |f, k| f | k.clone_flag());
        let sys = |op: &'static str| {
            move |source| NetError::Sys {
                op,
                path: dir.to_path_buf(),
                source,
            }
        };
        let mut child = crate::sys::spawn_userns_child(
            flags.bits(),
            hostname.as_deref().map(str::as_bytes),
            kinds.contains(&NsKind::Net),
        )
        .map_err(sys("fork the namespace child for"))?;
        child
            .wait_stage()
            .map_err(sys("unshare the user namespace for"))?;
        for (file, m) in [("uid_map", uid), ("gid_map", gid)] {
            let path = PathBuf::from(format!("/proc/{}/{file}", child.pid));
            std::fs::write(
                &path,
                format!("{} {} {}\n", m.container_id, m.host_id, m.length),
            )
            .map_err(|source| io_err("write id map", &path, source))?;
        }
        child.go().map_err(sys("resume the namespace child for"))?;
        child
            .wait_stage()
            .map_err(sys("make namespaces in the user namespace for"))?;
        for (name, pin) in &targets {
            let src = PathBuf::from(format!("/proc/{}/ns/{name}", child.pid));
            mount(
                Some(&src),
                pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| NetError::Sys {
                op: "bind-mount namespace onto",
                path: pin.clone(),
                source,
            })?;
        }
        child
            .finish()
            .map_err(sys("reap the namespace child for"))?;
        Ok(targets)
    })();
    match result {
        Ok(targets) => {
            for (name, pin) in targets {
                match name {
                    "user" => pinned.user = Some(pin),
                    "net" => pinned.net = Some(pin),
                    "ipc" => pinned.ipc = Some(pin),
                    _ => pinned.uts = Some(pin),
                }
            }
            Ok(pinned)
        }
        Err(e) => {
            undo.run();
            let _ = unpin_namespaces(dir);
            Err(e)
        }
    }
}

struct Undo {
    dir: PathBuf,
    created_dir: bool,
    bound_dir: bool,
    pins: Vec<PathBuf>,
}

impl Undo {
    fn run(&self) {
        for pin in &self.pins {
            if let Err(e) = umount_all(pin) {
                tracing::warn!(pin = %pin.display(), error = %e, "undo: unmount namespace pin");
            }
            if let Err(e) = std::fs::remove_file(pin) {
                tracing::warn!(pin = %pin.display(), error = %e, "undo: remove namespace pin");
            }
        }
        if self.bound_dir {
            if let Err(e) = umount_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "undo: unmount namespace dir");
            }
        }
        if self.created_dir {
            if let Err(e) = std::fs::remove_dir(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "undo: remove namespace dir");
            }
        }
    }
}

fn pin_inner(
    dir: &Path,
    kinds: &BTreeSet<NsKind>,
    hostname: Option<String>,
    undo: &mut Undo,
) -> Result<PinnedNamespaces, NetError> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|source| io_err("chmod namespace dir", dir, source))?;
    make_shared_mount(dir, undo)?;

    let mut pinned = PinnedNamespaces::default();
    if kinds.is_empty() {
        return Ok(pinned);
    }
    let mut targets = Vec::new();
    for kind in kinds {
        let pin = dir.join(kind.file_name());
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&pin)
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(NetError::PinExists { path: pin })
            }
            Err(source) => return Err(io_err("create namespace pin", &pin, source)),
        }
        undo.pins.push(pin.clone());
        targets.push((*kind, pin.clone()));
        match kind {
            NsKind::Net => pinned.net = Some(pin),
            NsKind::Ipc => pinned.ipc = Some(pin),
            NsKind::Uts => pinned.uts = Some(pin),
        }
    }

    // net/ipc/uts namespaces belong to the task: unshare in a throwaway thread so no other
    // thread (and no pooled thread) ever runs inside the new namespaces.
    let handle = std::thread::Builder::new()
        .name("krio-ns-pin".into())
        .spawn(move || pin_in_thread(&targets, hostname.as_deref()))
        .map_err(|e| NetError::NsThread {
            reason: format!("spawn: {e}"),
        })?;
    match handle.join() {
        Ok(r) => r?,
        Err(_) => {
            return Err(NetError::NsThread {
                reason: "namespace setup thread panicked".into(),
            })
        }
    }
    Ok(pinned)
}

/// Runs in the dedicated thread: unshare, configure, bind-mount the thread's namespaces.
fn pin_in_thread(targets: &[(NsKind, PathBuf)], hostname: Option<&str>) -> Result<(), NetError> {
    let flags = targets
        .iter()
        .fold(CloneFlags::empty(), |f, (k, _)| f | k.clone_flag());
    unshare(flags).map_err(|source| NetError::Sys {
        op: "unshare namespaces",
        path: PathBuf::new(),
        source,
    })?;
    for (kind, pin) in targets {
        match kind {
            NsKind::Uts => {
                if let Some(h) = hostname {
                    nix::unistd::sethostname(h).map_err(|source| NetError::Sys {
                        op: "sethostname in new UTS namespace for",
                        path: pin.clone(),
                        source,
                    })?;
                }
            }
            NsKind::Net => {
                crate::sys::set_link_up("lo").map_err(|source| NetError::Sys {
                    op: "bring lo up in new network namespace for",
                    path: pin.clone(),
                    source,
                })?;
            }
            NsKind::Ipc => {}
        }
        let src = PathBuf::from(format!("/proc/thread-self/ns/{}", kind.file_name()));
        mount(
            Some(&src),
            pin,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetError::Sys {
            op: "bind-mount namespace onto",
            path: pin.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Makes `dir` a mount point with shared propagation, bind-mounting it onto itself if it is not
/// a mount point yet (the `ip netns` approach).
fn make_shared_mount(dir: &Path, undo: &mut Undo) -> Result<(), NetError> {
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if !undo.created_dir {
        match shared() {
            // Success means `dir` already is a mount point (now shared); EINVAL means it is not.
            Ok(()) => return Ok(()),
            Err(nix::Error::EINVAL) => {}
            Err(source) => {
                return Err(NetError::Sys {
                    op: "make shared mount",
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| NetError::Sys {
        op: "bind-mount namespace dir onto itself",
        path: dir.to_path_buf(),
        source,
    })?;
    undo.bound_dir = true;
    shared().map_err(|source| NetError::Sys {
        op: "make shared mount",
        path: dir.to_path_buf(),
        source,
    })
}

/// Whether `path` is a live namespace handle (a bind mount of an nsfs file, statfs magic
/// `NSFS_MAGIC`). Returns `false` for missing paths and for plain files left behind.
pub fn is_namespace_pin(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        Ok(st) => st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC,
        Err(_) => false,
    }
}

/// Unmounts (`MNT_DETACH`) and removes every pin under `dir`, then unmounts and removes `dir`.
///
/// Idempotent: a missing `dir` is `Ok(())`, entries that are not mounted are just removed.
/// Symlinks are never followed (`UMOUNT_NOFOLLOW`). Every entry is attempted; all failures are
/// returned together as [`NetError::Unpin`].
pub fn unpin_namespaces(dir: &Path) -> Result<(), NetError> {
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(NetError::InvalidArgument {
                field: "dir",
                reason: format!("{} is not a directory", dir.display()),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_err("stat namespace dir", dir, source)),
    }
    let mut errors = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(source) => {
                        errors.push(io_err("read namespace dir", dir, source));
                        continue;
                    }
                };
                let path = entry.path();
                if let Err(e) = umount_all(&path) {
                    errors.push(e);
                    continue;
                }
                match entry.file_type() {
                    Ok(t) if t.is_dir() => {} // not ours; remove_dir below reports ENOTEMPTY
                    _ => match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(source) => errors.push(io_err("remove namespace pin", &path, source)),
                    },
                }
            }
        }
        Err(source) => errors.push(io_err("read namespace dir", dir, source)),
    }
    if let Err(e) = umount_all(dir) {
        errors.push(e);
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => errors.push(io_err("remove namespace dir", dir, source)),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NetError::Unpin {
            dir: dir.to_path_buf(),
            errors,
        })
    }
}

/// Lazily unmounts everything stacked on `path`; "not a mount point" / "missing" end the loop.
fn umount_all(path: &Path) -> Result<(), NetError> {
    for _ in 0..16 {
        match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(NetError::Sys {
                    op: "unmount",
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Validates a hostname for `sethostname(2)`: 1..=64 bytes of letters, digits, '-' and '.'.
fn validate_hostname(h: &str) -> Result<(), NetError> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidArgument {
            field: "hostname",
            reason: format!("{h:?} must be 1-64 characters of [A-Za-z0-9.-]"),
        })
    }
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> NetError {
    NetError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_validation() {
        assert!(validate_hostname("pod-1.example").is_ok());
        assert!(validate_hostname("").is_err());
        assert!(validate_hostname("a b").is_err());
        assert!(validate_hostname(&"a".repeat(65)).is_err());
    }

    #[test]
    fn relative_dir_rejected() {
        let e = pin_namespaces(Path::new("rel"), &[NsKind::Net], None);
        assert!(matches!(
            e,
            Err(NetError::InvalidArgument { field: "dir", .. })
        ));
    }
}
