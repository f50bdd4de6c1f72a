//! The crate's only `unsafe` code: closing inherited file descriptors, resetting inherited signal state,
//! owning a descriptor received over a socket, and forking a single-threaded process (the pod init of a user
//! namespace).
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

/// Makes `cmd`'s child start with an empty signal mask and no ignored signal, whatever this process blocked or
/// ignored (the monitor blocks SIGCHLD, SIGUSR1, SIGTERM, SIGINT and SIGHUP for its
/// signalfd). Both are inherited across `execve(2)` and, through the OCI runtime, by the container's processes:
/// a container must see the signal state its image asked for, nothing of ours.
///
/// Dispositions are reset with the raw `rt_sigaction(2)` system call so that the signals glibc reserves for
/// itself (32 and 33, which its `sigaction` wrapper refuses) are reset too. Handlers need no reset: `execve`
/// resets every handled signal to its default.
pub fn reset_signals_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls only async-signal-safe system calls
    // (rt_sigaction, sigprocmask) on stack data; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            reset_signal_state(0);
            Ok(())
        });
    }
}

/// Resets the signal state this process inherited: every ignored signal but SIGPIPE back to its default
/// disposition, and an empty signal mask. A daemon started from a shell's background job inherits SIGINT and
/// SIGQUIT ignored (and whatever else its parent ignored or blocked); an ignored signal stays ignored across
/// `execve(2)`, so every process it starts (the OCI runtime, and so `runc exec`'d processes, CNI plugins,
/// monitors) would inherit that in turn. Handlers (Rust's own for SIGSEGV and SIGBUS) are kept: `execve`
/// resets them anyway. SIGPIPE stays as Rust's runtime set it (ignored, so a write to a closed socket is an
/// error, not death; `std::process::Command` resets it in children).
///
/// Call it first thing in `main`, before any thread exists.
pub fn reset_inherited_signals() {
    reset_signal_state(libc::SIGPIPE);
}

/// The body of [`reset_signals_on_exec`] and [`reset_inherited_signals`]: every signal 1..=64 whose
/// disposition is "ignore", except `keep` (0: none), back to the default, then an empty mask. Errors are
/// ignored: a signal the kernel refuses to change (SIGKILL, SIGSTOP) cannot have been changed either.
fn reset_signal_state(keep: i32) {
    // The kernel's `struct sigaction` (handler, flags, restorer, mask; at most 4 words on every Linux
    // architecture): all zero is SIG_DFL with no flags and an empty mask. The handler is the first word.
    let dfl = [0u64; 4];
    for sig in 1..=64i64 {
        if sig == i64::from(libc::SIGKILL)
            || sig == i64::from(libc::SIGSTOP)
            || sig == i64::from(keep)
        {
            continue;
        }
        let mut old = [0u64; 4];
        // SAFETY: rt_sigaction with a NULL new action only writes the current one into `old`, which is large
        // enough for the kernel's struct.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<libc::c_void>(),
                old.as_mut_ptr(),
                8usize,
            )
        };
        if rc != 0 || old[0] != libc::SIG_IGN as u64 {
            continue;
        }
        // SAFETY: rt_sigaction reads `dfl` (large enough for the kernel's struct) and writes nothing (old = NULL).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            );
        }
    }
    // SAFETY: sigemptyset initialises `empty` before sigprocmask reads it; the old mask is not requested.
    unsafe {
        let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
    }
}

/// Takes ownership of a descriptor that `recvmsg(2)` just delivered with `SCM_RIGHTS` (the
/// terminal master a runtime sends on its console socket).
pub(crate) fn own_received_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel installed `fd` in our table for this message alone; nothing else in the
    // process knows or owns it, so the OwnedFd is its only owner.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// `fork(2)` for a process that has exactly one thread (checked here: `/proc/self/task` must list one task).
/// Returns `Ok(None)` in the child and `Ok(Some(child's pid))` in the parent.
///
/// Errors: `EBUSY` when the process has other threads; the error reading `/proc/self/task`; the `fork` errno.
pub(crate) fn fork_single_threaded() -> std::io::Result<Option<i32>> {
    let tasks = std::fs::read_dir("/proc/self/task")?.count();
    if tasks != 1 {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    // SAFETY: the process has a single thread (checked just above; nothing between the check and the fork starts
    // one), so no lock or allocator state can be held by another thread at the fork, and the child may run any
    // code, as after fork in a single-threaded C program.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(None),
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child.as_raw())),
    }
}
