//! The only `unsafe` in this crate: the SIOCGIFFLAGS / SIOCSIFFLAGS ioctls used to bring an
//! interface up in the calling thread's network namespace (netdevice(7)), and the `fork(2)` of
//! a child that makes a pod's user namespace and the namespaces it owns.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// Sets `IFF_UP` on interface `name` in the network namespace of the calling thread.
///
/// The control socket is opened with `SOCK_CLOEXEC` and closed before returning.
/// Errors: `EINVAL` when `name` does not fit `IFNAMSIZ`, `ENODEV` when it does not exist, or the errno
/// of `socket(2)` / `ioctl(2)`.
pub(crate) fn set_link_up(name: &str) -> nix::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(nix::Error::EINVAL);
    }
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, src) in ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let mut req = libc::ifreq {
        ifr_name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: 0 },
    };
    // SAFETY: `sock` is a valid open socket for the duration of the call, and `req` is a fully
    // initialised `struct ifreq` that outlives the call; SIOCGIFFLAGS writes only inside it.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: after a successful SIOCGIFFLAGS the kernel has stored the flags in `ifru_flags`,
    // which is the union member we read; it is a plain integer, valid for any bit pattern.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// A forked child that made a new user namespace (and, once told, namespaces owned by it),
/// driven over two pipes by [`spawn_userns_child`]'s caller. Dropping it without
/// [`UsernsChild::finish`] kills and reaps the child.
pub(crate) struct UsernsChild {
    /// The child's pid (its `/proc/<pid>/ns/*` are the namespaces to pin).
    pub pid: libc::pid_t,
    /// Read end: the child writes one status byte per stage ([`STAGE_OK`] or an error record).
    from_child: std::os::fd::OwnedFd,
    /// Write end: one byte tells the child to go on; closing it tells it to exit.
    to_child: Option<std::os::fd::OwnedFd>,
    reaped: bool,
}

/// A stage went well.
const STAGE_OK: u8 = b'k';
/// A stage failed: four bytes of errno follow (native endian).
const STAGE_ERR: u8 = b'e';

impl UsernsChild {
    /// Waits (up to 10 s) for the child to finish its current stage.
    ///
    /// Errors: the errno the child met, `EPIPE` when it died without a word, `ETIMEDOUT`
    /// when it said nothing in time.
    pub fn wait_stage(&mut self) -> nix::Result<()> {
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            self.from_child.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16))? == 0 {
            return Err(nix::Error::ETIMEDOUT);
        }
        let mut b = [0u8; 5];
        let n = read_full(&self.from_child, &mut b[..1])?;
        match (n, b[0]) {
            (1, STAGE_OK) => Ok(()),
            (1, STAGE_ERR) => {
                read_full(&self.from_child, &mut b[1..])?;
                let errno = i32::from_ne_bytes([b[1], b[2], b[3], b[4]]);
                Err(nix::Error::from_raw(errno))
            }
            _ => Err(nix::Error::EPIPE),
        }
    }

    /// Tells the child to go on with its next stage.
    ///
    /// Errors: the errno of `write(2)` (`EPIPE` when the child is gone).
    pub fn go(&mut self) -> nix::Result<()> {
        let fd = self.to_child.as_ref().ok_or(nix::Error::EPIPE)?;
        nix::unistd::write(fd, b"g").map(|_| ())
    }

    /// Lets the child exit (closes its pipe) and reaps it.
    ///
    /// Errors: the errno of `waitpid(2)`.
    pub fn finish(mut self) -> nix::Result<()> {
        self.to_child = None;
        self.reaped = true;
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None).map(|_| ())
    }
}

impl Drop for UsernsChild {
    fn drop(&mut self) {
        if !self.reaped {
            let pid = nix::unistd::Pid::from_raw(self.pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

fn read_full(fd: &std::os::fd::OwnedFd, buf: &mut [u8]) -> nix::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Forks a child that
/// 1. `unshare(CLONE_NEWUSER)`s and reports (the caller then writes its `uid_map`/`gid_map`
///    and calls [`UsernsChild::go`]);
/// 2. `unshare(flags)`s (net/ipc/uts namespaces, which the new user namespace then owns), sets
///    `hostname` when given, brings `lo` up when `lo_up`, and reports (the caller then pins
///    `/proc/<pid>/ns/*`);
/// 3. waits for its pipe to close and exits.
///
/// A child is needed because a multi-threaded process cannot enter or create a user
/// namespace. Between `fork` and `_exit` the child makes raw system calls only (no allocation,
/// no locks), as a child of a multi-threaded parent must.
///
/// Errors: the errno of `pipe2(2)` or `fork(2)`.
pub(crate) fn spawn_userns_child(
    flags: libc::c_int,
    hostname: Option<&[u8]>,
    lo_up: bool,
) -> nix::Result<UsernsChild> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let pipe = || -> nix::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(nix::Error::last());
        }
        // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    };
    let (up_r, up_w) = pipe()?;
    let (down_r, down_w) = pipe()?;
    // Everything the child needs is prepared before the fork.
    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, src) in ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    let (host_ptr, host_len) = match hostname {
        Some(h) => (h.as_ptr() as *const libc::c_char, h.len()),
        None => (std::ptr::null(), 0),
    };
    let (up, down) = (up_w.as_raw_fd(), down_r.as_raw_fd());
    let (parent_up, parent_down) = (up_r.as_raw_fd(), down_w.as_raw_fd());
    // SAFETY: fork(2) in a multi-threaded process: the child below only makes raw system calls
    // on memory prepared before the fork, and leaves through `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(nix::Error::last());
    }
    if pid == 0 {
        // SAFETY (whole block): raw system calls on descriptors and buffers that stay valid in
        // the child; no allocation, no lock, no return to Rust code of the parent.
        unsafe {
            let report = |r: libc::c_int| {
                let mut msg = [STAGE_OK, 0, 0, 0, 0];
                let mut len = 1;
                if r < 0 {
                    msg[0] = STAGE_ERR;
                    msg[1..].copy_from_slice(&(*libc::__errno_location()).to_ne_bytes());
                    len = 5;
                }
                libc::write(up, msg.as_ptr().cast(), len);
                if r < 0 {
                    libc::_exit(1);
                }
            };
            let wait_go = || {
                let mut b = 0u8;
                if libc::read(down, (&mut b as *mut u8).cast(), 1) != 1 {
                    libc::_exit(0);
                }
            };
            // The parent's ends: closing the write end is how the parent lets the child go.
            libc::close(parent_up);
            libc::close(parent_down);
            report(libc::unshare(libc::CLONE_NEWUSER));
            wait_go();
            // The ids are mapped by now: make the namespaces the new user namespace owns.
            let mut r = if flags != 0 { libc::unshare(flags) } else { 0 };
            if r == 0 && !host_ptr.is_null() {
                r = libc::sethostname(host_ptr, host_len);
            }
            if r == 0 && lo_up {
                let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                let mut req = libc::ifreq {
                    ifr_name,
                    ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: 0 },
                };
                r = sock.min(0);
                if r == 0 {
                    r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req).min(0);
                }
                if r == 0 {
                    req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                    r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req).min(0);
                }
            }
            report(r);
            wait_go();
            libc::_exit(0);
        }
    }
    drop(up_w);
    drop(down_r);
    Ok(UsernsChild {
        pid,
        from_child: up_r,
        to_child: Some(down_w),
        reaped: false,
    })
}
