//! The only `unsafe` in this crate: the raw `mount_setattr(2)` system call (Linux 5.12), which
//! neither nix nor rustix wraps, for recursive read-only mounts.
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
    /// A user namespace fd for `MOUNT_ATTR_IDMAP`; unused here.
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
