//! The crate's only `unsafe` code: closing inherited file descriptors.
#![allow(unsafe_code)]

/// Closes every file descriptor >= 3 of the calling process (`close_range(3, ~0U, 0)`).
///
/// Must be called at the very start of `main`, before anything in this process owns a descriptor >= 3: it is how
/// the monitor guarantees that no descriptor of the daemon (or anything else that spawned it) leaks into the
/// monitor, the runtime, or the container.
///
/// Errors: the `close_range(2)` errno (e.g. `ENOSYS` before Linux 5.9).
pub(crate) fn close_inherited_fds() -> std::io::Result<()> {
    // SAFETY: close_range only closes descriptors; it reads and writes no memory of ours. It is called first thing
    // in main (see the doc comment), when no Rust object (File, OwnedFd, ...) owns a descriptor >= 3, so no owner
    // is left holding a closed (and possibly reused) descriptor.
    let rc = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
