//! Container root filesystems: an overlayfs mount of the image's layer directories (read-only
//! lowers) with a per-container writable upper directory.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Result, ServerError};

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

/// Overlay options are comma- and colon-separated: escape both in paths.
fn escape(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}
