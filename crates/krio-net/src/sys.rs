//! The only `unsafe` in this crate: the SIOCGIFFLAGS / SIOCSIFFLAGS ioctls used to bring an
//! interface up in the calling thread's network namespace (netdevice(7)).
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
