//! The monitor's side of attach: the listening socket, its sessions, the fan-out of output and
//! the container's input (its stdin pipe or terminal). Everything is non-blocking and driven by
//! the monitor's one `poll(2)` loop; see [`crate::attach`] for the protocol.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::MsgFlags;

use crate::attach::{self, FrameKind, OpenFlags, CLIENT_QUEUE_LIMIT, HEADER_LEN, MAX_PAYLOAD};
use crate::logwriter::Stream;

/// Input buffered for the container before sessions stop being read (bytes).
const INPUT_LIMIT: usize = 64 * 1024;
/// A session's unparsed input is read only while it holds less than this (bytes).
const INBUF_LIMIT: usize = HEADER_LEN + MAX_PAYLOAD;
/// An emptied output queue whose allocation is larger than this is freed (bytes).
const KEEP_CAPACITY: usize = 64 * 1024;

/// Binds the attach socket at `path` (mode 0600, any path length), non-blocking.
///
/// Errors: the directory cannot be opened or the bind fails.
pub(crate) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    // The monitor is single-threaded: the umask change affects nothing else.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let r = attach::with_short_path(path, |p| UnixListener::bind(p));
    nix::sys::stat::umask(old);
    let l = r?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The container's input side.
#[derive(Debug, Default)]
pub(crate) struct Input {
    /// The write end of the container's stdin pipe (no tty, `stdin` set).
    pub pipe: Option<OwnedFd>,
    /// The terminal's master (a tty): resizes, and input when `stdin` is set.
    pub term: Option<OwnedFd>,
    /// Whether the container was created with `stdin`.
    pub stdin: bool,
    /// CRI `stdin_once`.
    pub stdin_once: bool,
    buf: Vec<u8>,
    /// No more input is accepted (stdin_once spent, or the process closed its stdin).
    closed: bool,
    once_spent: bool,
}

impl Input {
    /// The input side of a container: its stdin pipe's write end (no tty), its terminal's
    /// master (tty), and its CRI `stdin` and `stdin_once`.
    pub(crate) fn new(
        pipe: Option<OwnedFd>,
        term: Option<OwnedFd>,
        stdin: bool,
        stdin_once: bool,
    ) -> Self {
        Input {
            pipe,
            term,
            stdin,
            stdin_once,
            ..Default::default()
        }
    }
}

impl Input {
    fn target(&self) -> Option<BorrowedFd<'_>> {
        if !self.stdin {
            return None;
        }
        self.pipe
            .as_ref()
            .map(|f| f.as_fd())
            .or_else(|| self.term.as_ref().map(|f| f.as_fd()))
    }

    fn accepts(&self) -> bool {
        !self.closed && self.target().is_some()
    }

    /// Ends the container's input: a pipe is closed once the buffered input is written, a
    /// terminal gets its EOF character.
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.pipe.is_none() && self.term.is_some() && self.stdin {
            self.buf.push(0x04);
        }
        self.flush();
    }

    /// Writes buffered input without blocking.
    fn flush(&mut self) {
        while !self.buf.is_empty() {
            let Some(fd) = self.target() else {
                self.buf.clear();
                break;
            };
            match nix::unistd::write(fd, &self.buf) {
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    // The process closed its stdin (EPIPE) or the terminal is gone.
                    self.buf.clear();
                    self.closed = true;
                    self.pipe = None;
                }
            }
        }
        if self.buf.is_empty() && self.closed {
            self.pipe = None;
        }
        if self.buf.capacity() > KEEP_CAPACITY && self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }
}

#[derive(Debug)]
struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    flags: Option<OpenFlags>,
    stdin_done: bool,
    dead: bool,
}

impl Client {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    fn queue(&mut self, kind: FrameKind, data: &[u8]) {
        if self.dead {
            return;
        }
        if self.pending() + data.len() + 2 * HEADER_LEN > CLIENT_QUEUE_LIMIT {
            // Too slow a reader: drop it rather than block the log or grow.
            self.dead = true;
            return;
        }
        attach::encode_into(&mut self.out, kind, data);
        self.flush();
    }

    fn flush(&mut self) {
        while self.sent < self.out.len() {
            match nix::sys::socket::send(
                std::os::fd::AsRawFd::as_raw_fd(&self.sock),
                &self.out[self.sent..],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => self.sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        self.sent = 0;
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
    }
}

/// What a registered descriptor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Listener,
    Input,
    Client(usize),
}

/// The attach side of one monitor.
#[derive(Debug)]
pub(crate) struct AttachServer {
    listener: Option<UnixListener>,
    path: Option<PathBuf>,
    clients: Vec<Client>,
    /// The container's input.
    pub input: Input,
}

impl AttachServer {
    /// Serves `listener` (bound at `path`, removed again by [`AttachServer::finish`]).
    pub(crate) fn new(listener: Option<(UnixListener, PathBuf)>, input: Input) -> Self {
        let (listener, path) = match listener {
            Some((l, p)) => (Some(l), Some(p)),
            None => (None, None),
        };
        AttachServer {
            listener,
            path,
            clients: Vec::new(),
            input,
        }
    }

    /// Adds the descriptors to poll and what for.
    pub(crate) fn register<'a>(&'a self, regs: &mut Vec<(Token, BorrowedFd<'a>, PollFlags)>) {
        if let Some(l) = &self.listener {
            regs.push((Token::Listener, l.as_fd(), PollFlags::POLLIN));
        }
        if !self.input.buf.is_empty() {
            if let Some(fd) = self.input.target() {
                regs.push((Token::Input, fd, PollFlags::POLLOUT));
            }
        }
        let reading = self.input.buf.len() < INPUT_LIMIT;
        for (i, c) in self.clients.iter().enumerate() {
            let mut fl = PollFlags::empty();
            if reading && c.inbuf.len() < INBUF_LIMIT {
                fl |= PollFlags::POLLIN;
            }
            if c.pending() > 0 {
                fl |= PollFlags::POLLOUT;
            }
            // Registered even without events: hang-ups and errors are always reported.
            regs.push((Token::Client(i), c.sock.as_fd(), fl));
        }
    }

    /// Handles readiness `revents` of `token` (as registered by the last
    /// [`AttachServer::register`]).
    pub(crate) fn handle(&mut self, token: Token, revents: PollFlags) {
        match token {
            Token::Listener => self.accept(),
            Token::Input => self.input.flush(),
            Token::Client(i) => {
                let reading = self.input.buf.len() < INPUT_LIMIT;
                let Some(c) = self.clients.get_mut(i) else {
                    return;
                };
                if revents.contains(PollFlags::POLLOUT) {
                    c.flush();
                }
                if revents.intersects(PollFlags::POLLIN) && reading {
                    self.read_client(i);
                } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    c.dead = true;
                }
            }
        }
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            match l.accept() {
                Ok((sock, _)) => {
                    if self.clients.len() >= attach::MAX_CLIENTS
                        || sock.set_nonblocking(true).is_err()
                    {
                        continue;
                    }
                    self.clients.push(Client {
                        sock,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        sent: 0,
                        flags: None,
                        stdin_done: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        let c = &mut self.clients[i];
        let room = INBUF_LIMIT.saturating_sub(c.inbuf.len()).min(buf.len());
        match (&c.sock).read(&mut buf[..room.max(1)]) {
            Ok(0) => c.dead = true,
            Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => c.dead = true,
        }
        loop {
            let c = &mut self.clients[i];
            let frame = match attach::take_frame(&mut c.inbuf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    c.dead = true;
                    break;
                }
            };
            match (frame.0, c.flags) {
                (FrameKind::Open, None) => {
                    c.flags = Some(OpenFlags::from_byte(frame.1.first().copied().unwrap_or(0)));
                }
                (FrameKind::Stdin, Some(f)) => {
                    if f.stdin && !c.stdin_done && self.input.accepts() {
                        self.input.buf.extend_from_slice(&frame.1);
                        self.input.flush();
                    }
                }
                (FrameKind::CloseStdin, Some(f)) => {
                    if f.stdin && !c.stdin_done {
                        c.stdin_done = true;
                        self.session_input_ended();
                    }
                }
                (FrameKind::Resize, Some(_)) => {
                    if let (Some(term), [w0, w1, h0, h1]) = (&self.input.term, frame.1.as_slice()) {
                        let ws = rustix::termios::Winsize {
                            ws_col: u16::from_be_bytes([*w0, *w1]),
                            ws_row: u16::from_be_bytes([*h0, *h1]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // The kernel sends SIGWINCH to the terminal's foreground process group.
                        let _ = rustix::termios::tcsetwinsize(term, ws);
                    }
                }
                _ => {
                    // Anything else breaks the protocol.
                    c.dead = true;
                    break;
                }
            }
        }
        self.reap();
    }

    /// A session that had input ended it: with `stdin_once`, the container's input ends too.
    fn session_input_ended(&mut self) {
        if self.input.stdin_once && !self.input.once_spent {
            self.input.once_spent = true;
            self.input.close();
        }
    }

    /// Removes dead sessions.
    pub(crate) fn reap(&mut self) {
        let mut ended_input = false;
        self.clients.retain(|c| {
            if c.dead {
                if c.flags.is_some_and(|f| f.stdin) && !c.stdin_done {
                    ended_input = true;
                }
                return false;
            }
            true
        });
        if ended_input {
            self.session_input_ended();
        }
    }

    /// Sends `data` read from the container's `stream` to every session that asked for it.
    pub(crate) fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let kind = match stream {
            Stream::Stdout => FrameKind::Stdout,
            Stream::Stderr => FrameKind::Stderr,
        };
        for c in &mut self.clients {
            let wants = c.flags.is_some_and(|f| match stream {
                Stream::Stdout => f.stdout,
                Stream::Stderr => f.stderr,
            });
            if wants {
                c.queue(kind, data);
            }
        }
        self.reap();
    }

    /// The container exited with `code`: tells every session, flushes what they were sent
    /// until `deadline`, closes them and removes the socket.
    pub(crate) fn finish(&mut self, code: i32, deadline: Instant) {
        self.listener = None;
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
        for c in &mut self.clients {
            if c.flags.is_some() {
                c.queue(FrameKind::Exit, &code.to_be_bytes());
            }
        }
        loop {
            self.clients.retain(|c| !c.dead && c.pending() > 0);
            if self.clients.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            {
                let mut fds: Vec<nix::poll::PollFd> = self
                    .clients
                    .iter()
                    .map(|c| nix::poll::PollFd::new(c.sock.as_fd(), PollFlags::POLLOUT))
                    .collect();
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            }
            for c in &mut self.clients {
                c.flush();
            }
        }
        self.clients.clear();
    }
}
