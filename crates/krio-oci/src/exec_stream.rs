//! Streaming exec: `runc exec` with the caller's choice of stdin/stdout/stderr pipes, or one
//! pseudo-terminal (CRI `ExecRequest.tty`), for the streaming server's `Exec`.
//!
//! With a tty, the runtime runs in the foreground with a pty slave of ours as its stdio: runc
//! then makes the container's own terminal, copies between the two, and applies our terminal's
//! size to the container's whenever it gets SIGWINCH. The runtime's exit status is the
//! process's, and the process is our child's child, so nothing is left unreaped.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

use crate::runtime::{tempfile_dir, validate_container_id, RuntimeError};
use crate::OciRuntime;

/// What a streaming exec carries.
#[derive(Debug, Clone, Default)]
pub struct ExecStreamOptions {
    /// Command and arguments (non-empty).
    pub args: Vec<String>,
    /// Give the process a stdin pipe (otherwise `/dev/null`).
    pub stdin: bool,
    /// Give the process a stdout pipe (otherwise `/dev/null`).
    pub stdout: bool,
    /// Give the process a stderr pipe (otherwise `/dev/null`); ignored with `tty`.
    pub stderr: bool,
    /// Run the process on a pseudo-terminal; its output comes on `stdout`.
    pub tty: bool,
    /// The initial terminal size (columns, rows), when known.
    pub size: Option<(u16, u16)>,
}

/// A running streaming exec. Dropping it kills the runtime process (and so the exec'd
/// process, which the runtime kills when it dies) and removes its pid file.
pub struct ExecProcess {
    child: tokio::process::Child,
    pid_dir: PathBuf,
    pid_file: PathBuf,
    pty: Option<std::sync::Arc<OwnedFd>>,
    /// The process's input, when asked for. Dropping it closes stdin (EOF); with a tty it
    /// writes to the terminal.
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// The process's output (the terminal's with a tty), when asked for.
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// The process's standard error, when asked for and without a tty.
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("runtime_pid", &self.child.id())
            .field("tty", &self.pty.is_some())
            .finish_non_exhaustive()
    }
}

fn io_err(id: &str) -> impl Fn(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        verb: "exec",
        id: id.to_string(),
        source,
    }
}

/// Opens a pty pair: (master, slave). The slave is in raw mode so the runtime's copy passes
/// bytes through unchanged.
fn open_pty(size: Option<(u16, u16)>) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut t = rustix::termios::tcgetattr(&slave)?;
    t.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t)?;
    if let Some((cols, rows)) = size {
        set_size(&master, cols, rows)?;
    }
    Ok((master, slave))
}

fn set_size(fd: &OwnedFd, cols: u16, rows: u16) -> std::io::Result<()> {
    rustix::termios::tcsetwinsize(
        fd,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

impl OciRuntime {
    /// Writes the `--process` file of a terminal exec: the container's own `process` (user,
    /// environment, working directory, capabilities, from `<bundle>/config.json`, the bundle
    /// found with `state`) with `args` replaced, `terminal: true` and the size when known.
    ///
    /// Errors: [`RuntimeError`] from `state`; `Io` when the spec cannot be read or written.
    async fn write_tty_process(
        &self,
        id: &str,
        opts: &ExecStreamOptions,
        file: &Path,
    ) -> Result<(), RuntimeError> {
        let io = io_err(id);
        let bundle = self.state(id).await?.bundle;
        let text = std::fs::read(bundle.join(crate::CONFIG_FILE)).map_err(&io)?;
        let spec: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let mut process = spec
            .get("process")
            .cloned()
            .filter(|p| p.is_object())
            .ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the container's spec has no process",
                ))
            })?;
        process["args"] = serde_json::json!(opts.args);
        process["terminal"] = serde_json::json!(true);
        if let Some((cols, rows)) = opts.size {
            process["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
        }
        let out = serde_json::to_vec(&process)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        std::fs::write(file, out).map_err(io)
    }

    /// Starts `exec --pid-file <tmp> [-t] <id> <args...>` with the stdio `opts` asks for.
    ///
    /// Errors: [`RuntimeError::Io`] when `args` is empty or a pipe, pty or the pid file
    /// cannot be made; [`RuntimeError::Spawn`] when the runtime binary cannot be started.
    pub async fn exec_streaming(
        &self,
        id: &str,
        opts: &ExecStreamOptions,
    ) -> Result<ExecProcess, RuntimeError> {
        validate_container_id(id)?;
        let io = io_err(id);
        if opts.args.is_empty() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "exec needs a command",
            )));
        }
        let pid_dir = tempfile_dir(self.root()).map_err(&io)?;
        let pid_file = pid_dir.join("exec.pid");
        let mut cmd = self.command();
        cmd.arg("exec").arg("--pid-file").arg(&pid_file);
        let mut pty = None;
        let by_process = opts.tty && self.tty_by_process();
        if by_process {
            let file = pid_dir.join("process.json");
            if let Err(e) = self.write_tty_process(id, opts, &file).await {
                let _ = std::fs::remove_dir_all(&pid_dir);
                return Err(e);
            }
            cmd.arg("--process").arg(&file);
        }
        if opts.tty {
            if !by_process {
                cmd.arg("--tty");
            }
            let (master, slave) = match open_pty(opts.size) {
                Ok(p) => p,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&pid_dir);
                    return Err(io(e));
                }
            };
            let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
            let stdio = (|| Ok::<_, std::io::Error>((dup(&slave)?, dup(&slave)?, dup(&slave)?)))();
            match stdio {
                Ok((i, o, e)) => {
                    cmd.stdin(i).stdout(o).stderr(e);
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&pid_dir);
                    return Err(io(e));
                }
            }
            pty = Some(master);
        } else {
            let pipe_or_null = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
            cmd.stdin(pipe_or_null(opts.stdin))
                .stdout(pipe_or_null(opts.stdout))
                .stderr(pipe_or_null(opts.stderr));
        }
        cmd.arg(id);
        if !by_process {
            cmd.args(&opts.args);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                let _ = std::fs::remove_dir_all(&pid_dir);
                return Err(RuntimeError::Spawn {
                    verb: "exec",
                    binary: self.binary().to_path_buf(),
                    source,
                });
            }
        };
        // The Command held the slave copies; dropping it closes ours, so the master reads EOF
        // (EIO) once the runtime and the process are gone.
        drop(cmd);
        let (c, o, e) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let mut proc = ExecProcess {
            child,
            pid_dir,
            pid_file,
            pty: None,
            stdin: c.map(|x| Box::new(x) as Box<dyn AsyncWrite + Send + Unpin>),
            stdout: o.map(|x| Box::new(x) as Box<dyn AsyncRead + Send + Unpin>),
            stderr: e.map(|x| Box::new(x) as Box<dyn AsyncRead + Send + Unpin>),
        };
        if let Some(master) = pty {
            let nonblock = |fd: &OwnedFd| {
                rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK)
            };
            let setup = (|| -> std::io::Result<()> {
                nonblock(&master)?;
                if opts.stdin {
                    let w = pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
                    proc.stdin = Some(Box::new(w));
                }
                let r = pipe::Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
                proc.stdout = Some(Box::new(PtyReader(r)));
                Ok(())
            })();
            proc.pty = Some(std::sync::Arc::new(master));
            setup.map_err(&io)?;
        }
        Ok(proc)
    }
}

/// Resizes the terminal of a tty exec.
#[derive(Debug, Clone)]
pub struct Resizer {
    master: std::sync::Arc<OwnedFd>,
    runtime_pid: Option<u32>,
    pid_file: PathBuf,
}

impl Resizer {
    /// Applies a terminal size (columns, rows): sets our terminal's size and tells the runtime
    /// (SIGWINCH), which copies it to the container's terminal.
    ///
    /// Errors: the `TIOCSWINSZ` or signal error.
    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        set_size(&self.master, cols, rows)?;
        if let Some(pid) = self
            .runtime_pid
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            rustix::process::kill_process(pid, rustix::process::Signal::WINCH)?;
        }
        Ok(())
    }

    /// Whether the runtime has started the process (it wrote the pid file). runc copies the
    /// terminal size only on SIGWINCH, and only once its signal handler is installed, which
    /// it is by then; earlier signals are ignored.
    pub fn started(&self) -> bool {
        self.pid_file.exists()
    }
}

/// Reads a pty master, turning the EIO that follows the last close of the slave into EOF.
struct PtyReader(pipe::Receiver);

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e))
                if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) =>
            {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl ExecProcess {
    /// The pid of the exec'd process inside the container, once the runtime has written it.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// A handle that resizes the terminal while [`ExecProcess::wait`] runs; `None` without
    /// a tty.
    pub fn resizer(&self) -> Option<Resizer> {
        Some(Resizer {
            master: self.pty.clone()?,
            runtime_pid: self.child.id(),
            pid_file: self.pid_file.clone(),
        })
    }

    /// Kills the exec'd process (SIGKILL), or the runtime when the process has not started;
    /// the runtime then exits and [`ExecProcess::wait`] returns.
    pub fn kill(&mut self) {
        match self.pid().and_then(rustix::process::Pid::from_raw) {
            Some(pid) => {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            None => {
                let _ = self.child.start_kill();
            }
        }
    }

    /// Waits for the runtime to exit and returns the process's exit code (128 + signal when
    /// it was killed by one).
    ///
    /// Errors: [`RuntimeError::Io`] when waiting fails, or when the runtime failed before the
    /// process started (it wrote no pid file).
    pub async fn wait(&mut self) -> Result<i32, RuntimeError> {
        let status = self.child.wait().await.map_err(|source| RuntimeError::Io {
            verb: "exec",
            id: String::new(),
            source,
        })?;
        let code = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => -1,
        };
        if code != 0 && !self.pid_file.exists() {
            return Err(RuntimeError::Io {
                verb: "exec",
                id: String::new(),
                source: std::io::Error::other(format!(
                    "the runtime could not start the process (exit status {code})"
                )),
            });
        }
        Ok(code)
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        let _ = std::fs::remove_dir_all(&self.pid_dir);
    }
}
