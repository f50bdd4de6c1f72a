//! The two service-manager protocols, spoken without libsystemd: readiness notification
//! (sd_notify(3): `READY=1`, `STOPPING=1` datagrams to `$NOTIFY_SOCKET`) and socket activation
//! (sd_listen_fds(3): listening sockets passed from fd 3 on, `$LISTEN_FDS` of them, for
//! `$LISTEN_PID`, named by `$LISTEN_FDNAMES`). Neither needs systemd: any supervisor that follows
//! them works (`systemd-socket-activate`, s6, a test).
//!
//! [`ServiceEnv::take`] reads the variables and removes them from the process environment, so no
//! child could inherit them even if it were given the daemon's environment.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt, SockType};

/// The first fd passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The `LISTEN_FDNAMES` name that marks the CRI socket when several are passed
/// (`FileDescriptorName=cri` in the socket unit); without it the first fd is the CRI socket.
pub const CRI_FD_NAME: &str = "cri";

/// What the service manager handed the daemon.
#[derive(Debug, Default)]
pub struct ServiceEnv {
    /// Where readiness goes, when `$NOTIFY_SOCKET` named a usable address.
    pub notifier: Option<Notifier>,
    /// The CRI socket passed by socket activation, with its name (`LISTEN_FDNAMES` entry, or
    /// `unknown` as systemd says when none is given).
    pub listener: Option<(UnixListener, String)>,
    /// Things worth a log line once logging is set up (ignored variables, extra fds).
    pub notes: Vec<String>,
}

/// Errors of [`ServiceEnv::take`]: socket activation that cannot be honoured. Serving on a
/// socket of our own instead would leave the one systemd listens on dead, so these end start-up.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `LISTEN_FDS` is not a number.
    #[error("LISTEN_FDS={0:?} is not a number")]
    BadCount(String),
    /// The chosen fd is not a listening unix stream socket.
    #[error("socket activation: fd {fd} ({name}) is not a listening unix stream socket: {why}")]
    NotAListener {
        /// The fd.
        fd: RawFd,
        /// Its `LISTEN_FDNAMES` name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A `$NOTIFY_SOCKET` address: a filesystem path, or an abstract name (written `@name`).
#[derive(Debug)]
pub struct Notifier {
    addr: SocketAddr,
    shown: String,
}

impl Notifier {
    /// Parses a `$NOTIFY_SOCKET` value: `/path` or `@abstract`. Anything else is `None`, as
    /// sd_notify(3) ignores it.
    pub fn parse(value: &OsString) -> Option<Notifier> {
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(value)).ok()?,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]).ok()?,
            _ => return None,
        };
        Some(Notifier {
            addr,
            shown: value.to_string_lossy().into_owned(),
        })
    }

    /// Sends one notification datagram (newline-separated `KEY=value` assignments, e.g.
    /// `READY=1`).
    ///
    /// Errors: the socket's I/O error (the manager is gone, the socket is full...).
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }

    /// The address as given, for log lines.
    pub fn address(&self) -> &str {
        &self.shown
    }
}

impl ServiceEnv {
    /// Reads `NOTIFY_SOCKET`, `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, removes them from
    /// the environment, and takes the passed sockets (each made close-on-exec, so no child
    /// inherits one).
    ///
    /// Passed fds are used only when `LISTEN_PID` equals our pid: that is sd_listen_fds(3)'s
    /// rule, and it keeps a variable inherited by accident from making us claim fds that are not
    /// sockets meant for us. The CRI socket is the fd named [`CRI_FD_NAME`], else the first;
    /// other passed fds are closed.
    ///
    /// Must run before any thread starts (it changes the environment).
    ///
    /// Errors: [`ServiceError`] when `LISTEN_FDS` is malformed or the chosen fd is not a
    /// listening unix stream socket.
    pub fn take() -> Result<ServiceEnv, ServiceError> {
        let mut env = ServiceEnv::default();
        let notify = std::env::var_os("NOTIFY_SOCKET");
        let pid = std::env::var_os("LISTEN_PID");
        let count = std::env::var_os("LISTEN_FDS");
        let names = std::env::var_os("LISTEN_FDNAMES");
        for k in [
            "NOTIFY_SOCKET",
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
        ] {
            std::env::remove_var(k);
        }
        if let Some(v) = notify {
            env.notifier = Notifier::parse(&v);
            if env.notifier.is_none() {
                env.notes.push(format!(
                    "ignoring NOTIFY_SOCKET={v:?}: neither a path nor an @abstract name"
                ));
            }
        }
        let Some(count) = count else {
            return Ok(env);
        };
        let me = std::process::id().to_string();
        match pid.as_ref().map(|p| p.to_string_lossy()) {
            Some(p) if p == me => {}
            other => {
                env.notes.push(format!(
                    "ignoring LISTEN_FDS: LISTEN_PID is {other:?}, not our pid {me}"
                ));
                return Ok(env);
            }
        }
        let count = count.to_string_lossy();
        let n: RawFd = count
            .parse()
            .map_err(|_| ServiceError::BadCount(count.to_string()))?;
        let names: Vec<String> = names
            .map(|n| n.to_string_lossy().split(':').map(str::to_string).collect())
            .unwrap_or_default();
        let name_of = |i: RawFd| {
            usize::try_from(i)
                .ok()
                .and_then(|i| names.get(i))
                .cloned()
                .unwrap_or_else(|| "unknown".to_string())
        };
        let chosen = (0..n).find(|i| name_of(*i) == CRI_FD_NAME).unwrap_or(0);
        for i in 0..n {
            let fd = LISTEN_FDS_START + i;
            let Some(owned) = claim(fd) else {
                env.notes
                    .push(format!("LISTEN_FDS: fd {fd} ({}) is not open", name_of(i)));
                continue;
            };
            if i != chosen {
                env.notes
                    .push(format!("closing passed fd {fd} ({}): not used", name_of(i)));
                continue;
            }
            let not = |why: String| ServiceError::NotAListener {
                fd,
                name: name_of(i),
                why,
            };
            check_listener(&owned).map_err(not)?;
            env.listener = Some((UnixListener::from(owned), name_of(i)));
        }
        if n > 0 && env.listener.is_none() {
            return Err(ServiceError::NotAListener {
                fd: LISTEN_FDS_START + chosen,
                name: name_of(chosen),
                why: "not open".to_string(),
            });
        }
        Ok(env)
    }
}

/// Takes ownership of passed fd `fd` if it is open, and makes it close-on-exec.
#[allow(unsafe_code)]
fn claim(fd: RawFd) -> Option<OwnedFd> {
    // F_GETFD on a raw number touches no memory; it only says whether the fd is open.
    let flags = nix::errno::Errno::result(
        // SAFETY: fcntl(F_GETFD) takes no pointer.
        unsafe { libc::fcntl(fd, libc::F_GETFD) },
    )
    .ok()?;
    // SAFETY: the fd is open, and it was passed to this process by its supervisor under the
    // socket-activation protocol (LISTEN_PID is our pid), which gives it to us: nothing else in
    // the process owns it, and `take` runs once, before anything else opens descriptors.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut flags = FdFlag::from_bits_truncate(flags);
    flags.insert(FdFlag::FD_CLOEXEC);
    let _ = fcntl(&owned, FcntlArg::F_SETFD(flags));
    Some(owned)
}

fn check_listener(fd: &OwnedFd) -> Result<(), String> {
    let ty = getsockopt(fd, sockopt::SockType).map_err(|e| e.to_string())?;
    if ty != SockType::Stream {
        return Err(format!("socket type {ty:?}"));
    }
    let addr: nix::sys::socket::SockaddrStorage =
        nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(fd))
            .map_err(|e| e.to_string())?;
    if addr.as_unix_addr().is_none() {
        return Err("not a unix socket".to_string());
    }
    if !getsockopt(fd, sockopt::AcceptConn).map_err(|e| e.to_string())? {
        return Err("not listening".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::parse(&path.clone().into_os_string()).unwrap();
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");

        let name = format!("krio-unit-notify-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier::parse(&OsString::from(format!("@{name}"))).unwrap();
        n.notify("STOPPING=1").unwrap();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");

        assert!(Notifier::parse(&OsString::from("relative/notify.sock")).is_none());
        assert!(Notifier::parse(&OsString::new()).is_none());
    }

    #[test]
    fn a_listening_unix_socket_passes_the_check_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join("l.sock")).unwrap();
        assert_eq!(check_listener(&OwnedFd::from(l)), Ok(()));
        let d = UnixDatagram::bind(dir.path().join("d.sock")).unwrap();
        assert!(check_listener(&OwnedFd::from(d)).is_err());
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(check_listener(&OwnedFd::from(t)).is_err());
    }
}
