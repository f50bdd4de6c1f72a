//! The attach protocol between the daemon and a monitor (CRI `Attach`).
//!
//! Each monitor listens on a unix stream socket at [`attach_socket_path`] of the container's run
//! directory (`<run dir>/attach`, mode 0600), so a restarted daemon finds it again. A connection
//! is one attach session. Both directions carry frames:
//!
//! ```text
//! frame = kind (1 byte) | length (u32, big-endian) | payload (length bytes, at most MAX_PAYLOAD)
//! ```
//!
//! | kind | name | direction | payload |
//! |---|---|---|---|
//! | 0 | `Stdin` | daemon → monitor | bytes for the process's stdin (or terminal) |
//! | 1 | `Stdout` | monitor → daemon | the process's stdout (the terminal's output with a tty) |
//! | 2 | `Stderr` | monitor → daemon | the process's stderr |
//! | 3 | `Exit` | monitor → daemon | the exit code, i32 big-endian; the monitor then closes |
//! | 4 | `Resize` | daemon → monitor | width, height: two u16 big-endian (columns, rows) |
//! | 5 | `CloseStdin` | daemon → monitor | empty: this session sends no more input |
//! | 6 | `Open` | daemon → monitor | one byte of [`OpenFlags`]; must be the first frame |
//!
//! A session ends when either side closes the connection (a shut-down sending side counts as
//! closed). Stream kinds 0-2 are the channel numbers of `channel.k8s.io`. The monitor sends a session
//! only the output streams its `Open` asked for, from the moment it was received (no replay).
//! Output is fanned out to every session while the CRI log is written as before; a session
//! whose unsent output passes [`CLIENT_QUEUE_LIMIT`] is disconnected, so a slow reader never
//! blocks the log nor grows the monitor. With `stdin_once`, the container's stdin is closed
//! (a pipe: EOF; a terminal: its EOF character, `^D`, is written) once the first session that
//! opened with stdin sends `CloseStdin` or disconnects.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The attach socket's file name in the container's run directory.
pub const SOCKET_NAME: &str = "attach";
/// Largest frame payload either side sends or accepts (bytes).
pub const MAX_PAYLOAD: usize = 32 * 1024;
/// Frame header length (bytes): kind and length.
pub const HEADER_LEN: usize = 5;
/// Unsent output a monitor keeps for one session before it disconnects it (bytes).
pub const CLIENT_QUEUE_LIMIT: usize = 512 * 1024;
/// Sessions a monitor serves at once; more are closed at once.
pub const MAX_CLIENTS: usize = 32;

/// The attach socket of the container whose run (bundle) directory is `run_dir`.
pub fn attach_socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// A frame's kind (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Input for the process.
    Stdin = 0,
    /// The process's standard output (or terminal output).
    Stdout = 1,
    /// The process's standard error.
    Stderr = 2,
    /// The container exited; payload: exit code (i32 BE).
    Exit = 3,
    /// Terminal size; payload: width, height (u16 BE each).
    Resize = 4,
    /// The session's input ended.
    CloseStdin = 5,
    /// Opens the session; payload: [`OpenFlags`] byte.
    Open = 6,
}

impl FrameKind {
    /// Parses a kind byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Exit,
            4 => FrameKind::Resize,
            5 => FrameKind::CloseStdin,
            6 => FrameKind::Open,
            _ => return None,
        })
    }
}

/// What a session asks for in its `Open` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags {
    /// The session sends input (counts for `stdin_once`).
    pub stdin: bool,
    /// Send it the process's stdout (the terminal's output with a tty).
    pub stdout: bool,
    /// Send it the process's stderr.
    pub stderr: bool,
}

impl OpenFlags {
    /// Bit 0 stdin, bit 1 stdout, bit 2 stderr.
    pub fn to_byte(self) -> u8 {
        u8::from(self.stdin) | (u8::from(self.stdout) << 1) | (u8::from(self.stderr) << 2)
    }

    /// The inverse of [`OpenFlags::to_byte`]; other bits are ignored.
    pub fn from_byte(b: u8) -> Self {
        OpenFlags {
            stdin: b & 1 != 0,
            stdout: b & 2 != 0,
            stderr: b & 4 != 0,
        }
    }
}

/// A frame's header bytes.
pub fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let l = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind as u8, l[0], l[1], l[2], l[3]]
}

/// Appends one frame to `out`. Payloads longer than [`MAX_PAYLOAD`] are split into several
/// frames of the same kind.
pub fn encode_into(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8]) {
    if payload.is_empty() {
        out.extend_from_slice(&header(kind, 0));
        return;
    }
    for chunk in payload.chunks(MAX_PAYLOAD) {
        out.extend_from_slice(&header(kind, chunk.len()));
        out.extend_from_slice(chunk);
    }
}

/// One frame as bytes (see [`encode_into`]).
pub fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(&mut v, kind, payload);
    v
}

/// A `Resize` frame.
pub fn resize_frame(width: u16, height: u16) -> Vec<u8> {
    let (w, h) = (width.to_be_bytes(), height.to_be_bytes());
    encode(FrameKind::Resize, &[w[0], w[1], h[0], h[1]])
}

/// Why a byte sequence is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Unknown kind byte.
    #[error("unknown attach frame kind {0}")]
    Kind(u8),
    /// Payload length over [`MAX_PAYLOAD`].
    #[error("attach frame of {0} bytes is over the limit")]
    TooLong(u32),
}

/// Parses the header at the start of `buf`: `Ok(None)` until [`HEADER_LEN`] bytes are there.
///
/// Errors: [`FrameError`] for an unknown kind or an oversized payload.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameKind, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = FrameKind::from_byte(buf[0]).ok_or(FrameError::Kind(buf[0]))?;
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len as usize > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    Ok(Some((kind, len as usize)))
}

/// Takes the first complete frame off the front of `buf`: `Ok(None)` while it is incomplete.
///
/// Errors: as [`parse_header`].
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<(FrameKind, Vec<u8>)>, FrameError> {
    let Some((kind, len)) = parse_header(buf)? else {
        return Ok(None);
    };
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let payload = buf[HEADER_LEN..HEADER_LEN + len].to_vec();
    buf.drain(..HEADER_LEN + len);
    Ok(Some((kind, payload)))
}

/// Runs `f` with a path naming `path` that is short enough for a `sockaddr_un` (108 bytes)
/// however deep `path` lies: `/proc/self/fd/<dir fd>/<name>`, through a descriptor of its
/// directory.
///
/// Errors: the directory cannot be opened, `path` has no file name, or `f`'s error.
pub(crate) fn with_short_path<T>(
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file in a directory", path.display()),
        ));
    };
    let dir = std::fs::File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    let r = f(&short);
    drop(dir);
    r
}

/// Connects to a monitor's attach socket at `path` (any length). The stream is blocking;
/// callers on an async runtime make it non-blocking and register it.
///
/// Errors: `NotFound` / `ConnectionRefused` when no monitor serves it (the container exited,
/// or its monitor predates attach), or another connect error.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    with_short_path(path, |p| UnixStream::connect(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split() {
        let f = encode(FrameKind::Stdout, b"hi");
        assert_eq!(f, vec![1, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(encode(FrameKind::CloseStdin, b""), vec![5, 0, 0, 0, 0]);
        assert_eq!(resize_frame(80, 24), vec![4, 0, 0, 0, 4, 0, 80, 0, 24]);
        let big = vec![7u8; MAX_PAYLOAD + 10];
        let mut buf = encode(FrameKind::Stdin, &big);
        assert_eq!(buf.len(), 2 * HEADER_LEN + big.len());
        let (k, a) = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!((k, a.len()), (FrameKind::Stdin, MAX_PAYLOAD));
        let (_, b) = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!(b.len(), 10);
        assert!(buf.is_empty());
        // Incomplete input waits for more.
        let mut part = vec![1, 0, 0];
        assert_eq!(take_frame(&mut part).unwrap(), None);
        let mut part = vec![1, 0, 0, 0, 3, b'a'];
        assert_eq!(take_frame(&mut part).unwrap(), None);
        assert_eq!(part.len(), 6);
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(
            take_frame(&mut vec![9, 0, 0, 0, 0]),
            Err(FrameError::Kind(9))
        );
        let mut huge = vec![0u8];
        huge.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert!(matches!(take_frame(&mut huge), Err(FrameError::TooLong(_))));
    }

    #[test]
    fn open_flags_bits() {
        for b in 0..8u8 {
            assert_eq!(OpenFlags::from_byte(b).to_byte(), b);
        }
        let f = OpenFlags {
            stdin: true,
            stdout: false,
            stderr: true,
        };
        assert_eq!(f.to_byte(), 5);
    }

    #[test]
    fn long_socket_paths_bind_and_connect() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(100)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = attach_socket_path(&deep);
        assert!(path.as_os_str().len() > 108);
        let l = with_short_path(&path, |p| std::os::unix::net::UnixListener::bind(p)).unwrap();
        let mut c = connect(&path).unwrap();
        let (mut s, _) = l.accept().unwrap();
        use std::io::{Read, Write};
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}
