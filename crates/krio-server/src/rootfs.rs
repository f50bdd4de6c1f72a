//! Container root filesystems: an overlayfs mount of the image's layer directories (read-only
//! lowers) with a per-container writable upper directory.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Result, ServerError};
use crate::sys;

/// Mounts `overlay` at `target` with `lowers` (topmost first), `upper` and `work`.
/// `upper` and `work` are created when missing.
///
/// Errors: [`ServerError::Io`] naming the target when the mount fails (the option string is
/// limited to one page, which bounds the number of layers) or a directory cannot be made.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    for d in [upper, work, target] {
        std::fs::create_dir_all(d).map_err(|e| ServerError::io("creating directory", d, e))?;
    }
    if lowers.is_empty() {
        return Err(ServerError::FailedPrecondition(
            "image has no layers".to_string(),
        ));
    }
    let lower = lowers
        .iter()
        .map(|p| escape(p))
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        escape(upper),
        escape(work)
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| ServerError::io("mounting overlay rootfs at", target, e.into()))
}

/// Unmounts whatever is mounted at `target` (repeatedly, for stacked mounts). Absent or
/// not-mounted targets are fine, so this is idempotent.
///
/// Errors: [`ServerError::Io`] when a mount exists but cannot be detached.
pub fn unmount(target: &Path) -> Result<()> {
    for _ in 0..8 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH)
                    .map_err(|e| ServerError::io("detaching mount", target, e.into()))?;
            }
            Err(e) => return Err(ServerError::io("unmounting", target, e.into())),
        }
    }
    Ok(())
}

/// Whether the kernel has `mount_setattr(2)`, which recursive read-only mounts need (probed
/// once: an invalid call answers `EBADF`/`EINVAL` where it exists and `ENOSYS` where not).
pub fn recursive_read_only_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        !matches!(
            sys::mount_setattr(-1, c"", 0, None).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOSYS))
        )
    })
}

/// Whether the kernel can id-map an overlayfs mount (`MOUNT_ATTR_IDMAP` on overlayfs came in
/// Linux 5.19; `mount_setattr` itself in 5.12), which pods in their own user namespace need.
/// Read from the kernel release once.
pub fn idmapped_overlay_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        version >= (5, 19) && recursive_read_only_supported()
    })
}

/// Mounts a container's overlay rootfs for a pod in its own user namespace (CRI
/// `userns_options` mode POD; the namespace pinned at `userns` maps container id 0 to the host
/// uid and gid `root`). runc 1.1 makes no id-mapped mounts, and overlayfs cannot be
/// id-mapped itself (`mount_setattr` answers `EINVAL` on an overlay mount), but its layers
/// can (Linux 5.19), so:
///
/// * each lower layer gets an id-mapped bind mount at `<staging>/<i>` (`open_tree` +
///   `mount_setattr(MOUNT_ATTR_IDMAP)` + `move_mount`): image files owned by host id 0 appear
///   owned by `root`, that is by 0 inside the pod;
/// * the upper directory is created owned by `root`, plain (an id-mapped upper
///   would need the overlay mounted from inside the user namespace: overlayfs makes its work
///   directory with the mounter's ids, which such a mapping does not map). What the pod's
///   root writes, and what copy-up copies, is stored with host ids in the mapped range;
/// * the overlay is mounted at `target` from those, and the staging mounts are detached at
///   once (overlayfs keeps private clones of its layers).
///
/// Errors: [`ServerError::Io`] naming the step; nothing stays mounted under `staging` then.
pub fn mount_overlay_in_userns(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    userns: &Path,
    root: (u32, u32),
    staging: &Path,
) -> Result<()> {
    let ns = std::fs::File::open(userns)
        .map_err(|e| ServerError::io("opening user namespace", userns, e))?;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|e| ServerError::io("id-mapping", p, std::io::Error::other(e)))
    };
    std::fs::create_dir_all(upper).map_err(|e| ServerError::io("creating directory", upper, e))?;
    std::os::unix::fs::chown(upper, Some(root.0), Some(root.1))
        .map_err(|e| ServerError::io("handing to the pod's root", upper, e))?;
    let staged = (|| {
        let mut staged = Vec::with_capacity(lowers.len());
        for (i, lower) in lowers.iter().enumerate() {
            let dst = staging.join(i.to_string());
            std::fs::create_dir_all(&dst)
                .map_err(|e| ServerError::io("creating directory", &dst, e))?;
            sys::idmap_bind(
                &cstr(lower)?,
                std::os::fd::AsRawFd::as_raw_fd(&ns),
                &cstr(&dst)?,
                false,
            )
            .map_err(|e| ServerError::io("id-mapping image layer", lower, e))?;
            staged.push(dst);
        }
        Ok(staged)
    })();
    let result = staged.and_then(|staged| mount_overlay(&staged, upper, work, target));
    let cleanup = unmount_staging(staging);
    let _ = std::fs::remove_dir_all(staging);
    result.and(cleanup)
}

/// Where a container's recursive read-only sources are staged: `<run_dir>/rro/<mount index>`.
pub fn rro_staging_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("rro")
}

/// Prepares a recursive read-only bind of `source` (a directory or a file; CRI
/// `Mount.recursive_read_only`) at `staging`: a recursive bind mount, made private recursively (so nothing propagates into or
/// out of it), then `mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)` so that every submount is
/// read-only too. runc 1.1 has no `rro` option; handed `staging` as an `rbind` source, it copies
/// the read-only submounts as they are. Undone by [`discard_staging`] on [`rro_staging_dir`]
/// as soon as the runtime has bound it into the container (see `Krio::release_rro_staging`),
/// so the host's submounts of `source` are not held busy while the container lives.
///
/// Errors: [`ServerError::Io`] naming the step; nothing stays mounted at `staging` then.
pub fn stage_recursive_read_only(source: &Path, staging: &Path) -> Result<()> {
    if source.is_dir() {
        std::fs::create_dir_all(staging)
            .map_err(|e| ServerError::io("creating directory", staging, e))?;
    } else {
        // A file source needs a file to be bind-mounted on.
        if let Some(parent) = staging.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ServerError::io("creating directory", parent, e))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(staging)
            .map_err(|e| ServerError::io("creating mount point", staging, e))?;
    }
    mount(
        Some(source),
        staging,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| ServerError::io("bind-mounting (recursive read-only) at", staging, e.into()))?;
    let rest = || -> std::io::Result<()> {
        mount(
            None::<&str>,
            staging,
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )?;
        let path = std::ffi::CString::new(staging.as_os_str().as_encoded_bytes())
            .map_err(std::io::Error::other)?;
        let attr = sys::MountAttr {
            attr_set: sys::MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        sys::mount_setattr(libc::AT_FDCWD, &path, sys::AT_RECURSIVE, Some(&attr))
    };
    rest().map_err(|e| {
        let _ = umount2(staging, MntFlags::MNT_DETACH);
        ServerError::io("making read-only recursively", staging, e)
    })
}

/// Where a container of a pod in a user namespace gets its id-mapped volumes:
/// `<run_dir>/idmapvol/<mount index>`.
pub fn idmap_volume_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("idmapvol")
}

/// Stages an id-mapped recursive bind of `source` (a host volume, directory or file) at
/// `staging`, mapped through the user namespace pinned at `userns`: files the host's root owns
/// are root's inside the pod, and what the pod's root writes is stored as host root's, as with
/// runtimes that id-map volumes themselves. Returns `false`, with nothing mounted, when a
/// filesystem of the tree cannot be id-mapped (`EINVAL`: the volume is then bound as it is).
/// Undone by [`unmount_staging`] on [`idmap_volume_dir`].
///
/// Errors: [`ServerError::Io`] naming the step for any other failure.
pub fn stage_idmapped_volume(source: &Path, staging: &Path, userns: &Path) -> Result<bool> {
    let ns = std::fs::File::open(userns)
        .map_err(|e| ServerError::io("opening user namespace", userns, e))?;
    if source.is_dir() {
        std::fs::create_dir_all(staging)
            .map_err(|e| ServerError::io("creating directory", staging, e))?;
    } else {
        if let Some(parent) = staging.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ServerError::io("creating directory", parent, e))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(staging)
            .map_err(|e| ServerError::io("creating mount point", staging, e))?;
    }
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|e| ServerError::io("id-mapping", p, std::io::Error::other(e)))
    };
    match sys::idmap_bind(
        &cstr(source)?,
        std::os::fd::AsRawFd::as_raw_fd(&ns),
        &cstr(staging)?,
        true,
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(ServerError::io("id-mapping volume", source, e)),
    }
}

/// Where the id-mapped image layers of a container in a user namespace are mounted while its
/// overlay is made: `<run_dir>/idmap/<layer index>` (empty again once it is).
pub fn idmap_staging_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("idmap")
}

/// Detaches every mount staged under `dir` ([`rro_staging_dir`], [`image_volume_dir`]) with
/// all its submounts. Absent or unmounted entries are fine: idempotent.
///
/// Errors: [`ServerError::Io`] when a mount cannot be detached.
pub fn unmount_staging(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        loop {
            match umount2(&p, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => return Err(ServerError::io("detaching", &p, e.into())),
            }
        }
    }
    Ok(())
}

/// Detaches everything staged under `dir` (as [`unmount_staging`]), then removes the emptied
/// mount points and `dir` itself, one `rmdir`/`unlink` each and never recursively: a mount
/// point that is somehow still a mount fails with `EBUSY` instead of having the host tree
/// behind it emptied. An absent `dir` is fine: idempotent.
///
/// Errors: [`ServerError::Io`] naming the mount or the path that could not be detached or
/// removed.
pub fn discard_staging(dir: &Path) -> Result<()> {
    unmount_staging(dir)?;
    let gone = |r: std::io::Result<()>, what: &'static str, p: &Path| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ServerError::io(what, p, e)),
        _ => Ok(()),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        let removed = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir(&p),
            _ => std::fs::remove_file(&p),
        };
        gone(removed, "removing mount point", &p)?;
    }
    gone(std::fs::remove_dir(dir), "removing directory", dir)
}

/// Where a container's image volumes (CRI `Mount.image`) are mounted before being handed to the
/// runtime: `<run_dir>/imgvol/<mount index>`.
pub fn image_volume_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("imgvol")
}

/// Mounts an image's layers read-only at `target` for an image volume: one layer is a read-only
/// bind of its directory, several are an overlay of lower directories only (`lowers` topmost
/// first), which overlayfs serves read-only. `target` is created when missing. Undone by
/// [`unmount_staging`] on the volume directory.
///
/// Errors: [`ServerError::FailedPrecondition`] for an image without layers;
/// [`ServerError::Io`] naming the target when a mount fails (nothing stays mounted then).
pub fn mount_image_volume(lowers: &[PathBuf], target: &Path) -> Result<()> {
    std::fs::create_dir_all(target)
        .map_err(|e| ServerError::io("creating directory", target, e))?;
    match lowers {
        [] => Err(ServerError::FailedPrecondition(
            "the volume's image has no layers".to_string(),
        )),
        [only] => {
            mount(
                Some(only.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| ServerError::io("bind-mounting image volume at", target, e.into()))?;
            // A bind mount ignores MS_RDONLY until remounted.
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| {
                let _ = umount2(target, MntFlags::MNT_DETACH);
                ServerError::io("making image volume read-only at", target, e.into())
            })
        }
        many => {
            let lower = many.iter().map(|p| escape(p)).collect::<Vec<_>>().join(":");
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(format!("lowerdir={lower}").as_str()),
            )
            .map_err(|e| ServerError::io("mounting image volume overlay at", target, e.into()))
        }
    }
}

/// Resolves `sub_path` (CRI `Mount.image_sub_path`, relative to the image's root) inside the
/// image volume mounted at `root`, following symlinks as if `root` were `/`
/// (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`), so no link can lead
/// out of the image. Returns the host path of what it names (a path under `root`; the mount is
/// read-only, so it cannot change afterwards). An empty `sub_path` is `root` itself.
///
/// Errors: [`ServerError::InvalidArgument`] naming `field` when `sub_path` is absolute, has a
/// `..` component or a NUL, or names nothing in the image; [`ServerError::Io`] otherwise.
pub fn resolve_in_image(root: &Path, sub_path: &str, field: &str) -> Result<PathBuf> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    if sub_path.is_empty() {
        return Ok(root.to_path_buf());
    }
    let invalid = |why: &str| {
        ServerError::invalid(field, format!("{} {why}", crate::validate::quote(sub_path)))
    };
    if sub_path.starts_with('/') {
        return Err(invalid("must be relative to the image's root"));
    }
    if sub_path.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    if Path::new(sub_path)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(invalid("must not contain '..'"));
    }
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ServerError::io("opening image volume", root, e.into()))?;
    let fd = rustix::fs::openat2(
        &dir,
        sub_path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => {
            invalid(&format!("is not in the image ({e})"))
        }
        e => ServerError::io("resolving image_sub_path in", root, e.into()),
    })?;
    let link = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ));
    let resolved = std::fs::read_link(&link)
        .map_err(|e| ServerError::io("reading resolved path", &link, e))?;
    if !resolved.starts_with(root) {
        // RESOLVE_IN_ROOT makes this impossible; refuse rather than trust it blindly.
        return Err(invalid("resolves outside the image"));
    }
    Ok(resolved)
}

/// Top-level directories of the rootfs that the OCI runtime mounts fresh filesystems on and then
/// writes into by literal path, before `pivot_root`: runc 1.1 creates `/dev/fd`, `/dev/stdin`,
/// `/dev/stdout`, `/dev/stderr`, `/dev/ptmx` and `/dev/console` as `<rootfs>/dev/...` without
/// resolving symlinks inside the rootfs, so a `/dev` symlink in the image would make it write
/// into whatever host directory the link names. (It refuses symlinked `/proc` and `/sys` itself;
/// they are checked here too so the error is clear and holds for every runtime.)
pub const SPECIAL_DIRS: &[&str] = &["dev", "proc", "sys"];

/// Refuses a rootfs whose [`SPECIAL_DIRS`] are symlinks, whatever they point to. Other mount
/// destinations may go through symlinks: the runtime resolves them inside the rootfs (runc
/// uses `SecureJoin` for every mount destination and device node).
///
/// Errors: [`ServerError::FailedPrecondition`] naming the directory and the link's target;
/// [`ServerError::Io`] when it cannot be inspected.
pub fn check_special_dirs(rootfs: &Path) -> Result<()> {
    for name in SPECIAL_DIRS {
        let p = rootfs.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".to_string());
                return Err(ServerError::FailedPrecondition(format!(
                    "the image's /{name} is a symlink (to {target:?}); the runtime would write \
                     through it outside the container's rootfs, so krio refuses the image"
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServerError::io("inspecting", &p, e)),
        }
    }
    Ok(())
}

/// Overlay options are comma- and colon-separated: escape both in paths.
fn escape(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_dirs_must_not_be_symlinks() {
        let root = tempfile::tempdir().unwrap();
        check_special_dirs(root.path()).unwrap();
        std::fs::create_dir(root.path().join("dev")).unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        // Symlinks elsewhere are the runtime's to resolve inside the rootfs.
        std::os::unix::fs::symlink("/etc/hosts", root.path().join("etc/hosts")).unwrap();
        check_special_dirs(root.path()).unwrap();
        for (name, target) in [("proc", "/host/proc"), ("sys", "../../sys")] {
            let r = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(target, r.path().join(name)).unwrap();
            let e = check_special_dirs(r.path()).unwrap_err();
            assert!(matches!(e, ServerError::FailedPrecondition(_)), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("/{name}")) && msg.contains(target),
                "{msg}"
            );
        }
    }
}
