//! The only `unsafe` in this crate: the raw `mount_setattr(2)`, `open_tree(2)` and
//! `move_mount(2)` system calls (Linux 5.12), which neither nix nor rustix wraps in the versions
//! used, for recursive read-only mounts and id-mapped root filesystems.
#![allow(unsafe_code)]

/// `mount_setattr(2)`'s argument (`struct mount_attr` of `<linux/mount.h>`).
#[repr(C)]
pub(crate) struct MountAttr {
    /// `MOUNT_ATTR_*` flags to set.
    pub attr_set: u64,
    /// `MOUNT_ATTR_*` flags to clear.
    pub attr_clr: u64,
    /// `MS_SHARED`, `MS_SLAVE`, `MS_PRIVATE` or `MS_UNBINDABLE`; 0 leaves it.
    pub propagation: u64,
    /// A user namespace fd for `MOUNT_ATTR_IDMAP`.
    pub userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`: the mount is read-only.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `AT_RECURSIVE`: apply to the whole mount tree below `path`.
pub(crate) const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Raw `mount_setattr(2)` (Linux 5.12): changes the attributes of the mount at `path` relative
/// to `dirfd` (and, with [`AT_RECURSIVE`], of every mount below it).
///
/// Errors: the errno (`ENOSYS` on older kernels).
pub(crate) fn mount_setattr(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    attr: Option<&MountAttr>,
) -> std::io::Result<()> {
    let (ptr, size) = match attr {
        Some(a) => (a as *const MountAttr, std::mem::size_of::<MountAttr>()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `path` is NUL-terminated; `ptr` is null or points to a live `MountAttr` of `size`
    // bytes for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            ptr,
            size,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `MOUNT_ATTR_IDMAP`: the mount maps ids through `userns_fd`'s mapping.
pub(crate) const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `OPEN_TREE_CLONE`: `open_tree(2)` returns a detached copy of the mount.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `MOVE_MOUNT_F_EMPTY_PATH`: `move_mount(2)`'s source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Makes an id-mapped bind mount of `source` at `target` (an existing directory or file): an
/// `open_tree(OPEN_TREE_CLONE)` detached copy of `source` (with its submounts when
/// `recursive`), `mount_setattr(MOUNT_ATTR_IDMAP)` through the user namespace `userns` (an
/// nsfs file descriptor; on every mount of the copy when `recursive`), then `move_mount` onto
/// `target` (Linux 5.12).
///
/// Errors: the errno of the failing call (`EINVAL` from `mount_setattr` when a filesystem of
/// the tree cannot be id-mapped); nothing is mounted at `target` then.
pub(crate) fn idmap_bind(
    source: &std::ffi::CStr,
    userns: libc::c_int,
    target: &std::ffi::CStr,
    recursive: bool,
) -> std::io::Result<()> {
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: `source` is NUL-terminated; the call only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns as u64,
    };
    mount_setattr(
        std::os::fd::AsRawFd::as_raw_fd(&tree),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint | rec,
        Some(&attr),
    )?;
    // SAFETY: both paths are NUL-terminated; the descriptor is live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            std::os::fd::AsRawFd::as_raw_fd(&tree),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
