//! The monitor process itself (what the `krio-monitor` binary runs).
//!
//! Invocation (by [`crate::spawn`]): `krio-monitor` with the [`MonitorConfig`] JSON on stdin and the sync pipe
//! as stdout. This first process (the launcher) re-executes itself as `krio-monitor --foreground` (config piped
//! again on stdin, same stdout) and exits at once, so the long-lived monitor is not a child of the daemon: it is
//! reparented to init (or the nearest subreaper) and survives daemon restarts, and the daemon only ever reaps the
//! short-lived launcher.
//!
//! The foreground monitor: closes inherited descriptors, `setsid()`, becomes a child subreaper, blocks
//! SIGCHLD/SIGUSR1/SIGTERM/SIGINT/SIGHUP and receives them through a signalfd, opens the CRI log, creates the
//! stdout/stderr pipes, runs `<runtime> --root R --log L --log-format json create --bundle B --pid-file P <id>`
//! with stdin `/dev/null` and the pipes' write ends as stdout/stderr, reports a [`SyncMessage`], then loops on
//! `poll(2)` over the pipes and the signalfd: output is written to the log as it arrives, children are reaped
//! (`waitpid(-1, WNOHANG)`), SIGUSR1 reopens the log, SIGTERM/SIGINT/SIGHUP are ignored (the monitor only ends
//! with its container; SIGKILL it to force). When the container's init is reaped the pipes are drained, the
//! [`ExitStatus`] is written atomically to the exit file and the monitor exits 0.
//!
//! With [`MonitorConfig::start_on_signal`] (a container joining another's runtime sandbox) the monitor also runs
//! `runtime start` on SIGUSR2 and then `runtime wait`, whose exit stands for the container's; before that
//! start, SIGTERM ends it with the exit of a killed container.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::attachsrv::{AttachServer, Input};
use crate::logwriter::{CriLogWriter, Stream};
use crate::types::{ExitStatus, MonitorConfig, SyncMessage};

/// Largest config document accepted on stdin (bytes).
const MAX_CONFIG: u64 = 1 << 20;

/// Read size for the container's pipes (bytes).
const READ_CHUNK: usize = 32 * 1024;

/// Entry point of the `krio-monitor` binary: [`run_with_args`] with the process arguments; returns the exit code.
pub fn main_entry() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run_with_args(&args)
}

/// Runs the monitor with explicit arguments (without the program name): `[]` is the launcher (config JSON on
/// stdin, sync pipe on stdout), `["--foreground"]` the long-lived monitor, `["pod-init", pin]` and
/// `["pod-init", pin, "--userns", path]` the pod-init launcher, `["pod-init-run", pin]` and
/// `["pod-init-run", pin, "--userns", path]` the pod init itself (see [`crate::spawn_pod_init`]) and
/// `["exec-wait", pid_file, runtime, args...]` the exec helper (`OciRuntime::with_exec_helper` in krio-oci). The launchers
/// re-execute `/proc/self/exe --foreground` / `/proc/self/exe pod-init-run <pin> [--userns <path>]`, so a program
/// embedding the monitor (e.g. a test binary acting as its own monitor) must route those arguments here too.
///
/// Must be called at the very start of `main`: it closes every inherited descriptor >= 3 first.
pub fn run_with_args(args: &[String]) -> i32 {
    if let Err(e) = crate::sys::close_inherited_fds() {
        eprintln!("krio-monitor: close_range: {e}");
    }
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => launcher(),
        ["--foreground"] => foreground(),
        ["pod-init", pin] => crate::podinit::launcher(pin, None),
        ["pod-init", pin, "--userns", userns] => crate::podinit::launcher(pin, Some(userns)),
        ["pod-init-run", _pin] => crate::podinit::init_main(),
        ["pod-init-run", _pin, "--userns", userns] => crate::podinit::init_in_userns_main(userns),
        ["exec-wait", pid_file, runtime, ..] => {
            crate::execwait::main(pid_file, runtime, &args[3..])
        }
        ["--version"] => {
            println!("krio-monitor {}", env!("CARGO_PKG_VERSION"));
            0
        }
        _ => {
            eprintln!("usage: krio-monitor [--foreground] < config.json | krio-monitor pod-init <pin> [--userns <path>] | krio-monitor exec-wait <pid-file> <runtime> <args...>  (see the krio-monitor crate docs)");
            2
        }
    }
}

/// Writes one sync message line to stdout (the sync pipe).
fn report(msg: &SyncMessage) {
    let mut line = serde_json::to_vec(msg).unwrap_or_else(|_| {
        b"{\"status\":\"error\",\"stage\":\"report\",\"message\":\"serialising status\"}".to_vec()
    });
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
}

fn fail(stage: &str, message: impl Into<String>, runtime_stderr: String) -> i32 {
    let message = message.into();
    eprintln!("krio-monitor: {stage}: {message} {runtime_stderr}");
    report(&SyncMessage::Error {
        stage: stage.to_string(),
        message,
        runtime_stderr,
    });
    1
}

fn read_config() -> Result<(Vec<u8>, MonitorConfig), String> {
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_CONFIG)
        .read_to_end(&mut data)
        .map_err(|e| format!("reading config from stdin: {e}"))?;
    let cfg: MonitorConfig =
        serde_json::from_slice(&data).map_err(|e| format!("parsing config: {e}"))?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok((data, cfg))
}

/// Stage 1: validate the config and hand it to a re-executed, detached copy of ourselves.
fn launcher() -> i32 {
    let (data, _cfg) = match read_config() {
        Ok(v) => v,
        Err(e) => return fail("config", e, String::new()),
    };
    let child = Command::new("/proc/self/exe")
        .arg0("krio-monitor")
        .arg("--foreground")
        .stdin(Stdio::piped())
        .current_dir("/")
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return fail(
                "launch",
                format!("re-executing the monitor: {e}"),
                String::new(),
            )
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(&data) {
            let _ = child.kill();
            let _ = child.wait();
            return fail("launch", format!("passing the config: {e}"), String::new());
        }
    }
    // Exit without waiting: the monitor is reparented to init / the nearest subreaper.
    0
}

/// Replaces stdin and stdout with `/dev/null` (after the sync message: the daemon must see EOF, and later
/// writes must not hit a closed pipe).
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

/// Stage 2: the long-lived monitor.
fn foreground() -> i32 {
    let (_, cfg) = match read_config() {
        Ok(v) => v,
        Err(e) => return fail("config", e, String::new()),
    };
    // Already a session leader only when started by hand from a shell that made us a group leader.
    let _ = nix::unistd::setsid();
    // Re-executed through /proc/self/exe, the kernel named us `exe`: take our own name back, so
    // `ps` and the daemon's recovery (which checks a container's parent is a monitor) see it.
    let _ = nix::sys::prctl::set_name(c"krio-monitor");
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(
            "subreaper",
            format!("PR_SET_CHILD_SUBREAPER: {e}"),
            String::new(),
        );
    }
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    if let Err(e) = mask.thread_block() {
        return fail("signals", format!("blocking signals: {e}"), String::new());
    }
    let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => return fail("signals", format!("signalfd: {e}"), String::new()),
    };
    let mut log = match CriLogWriter::open_below(
        cfg.log_directory.as_deref(),
        cfg.log_path.as_deref(),
        cfg.max_log_line,
    ) {
        Ok(mut l) => {
            l.set_max_size(cfg.max_log_size);
            l
        }
        Err(e) => {
            let p = cfg
                .log_path
                .as_deref()
                .unwrap_or(Path::new(""))
                .display()
                .to_string();
            return fail("log", format!("opening {p}: {e}"), String::new());
        }
    };
    let (out_r, out_w, err_r, err_w) = match make_pipes() {
        Ok(p) => p,
        Err(e) => return fail("pipes", format!("creating stdio pipes: {e}"), String::new()),
    };
    // The container's stdin: a pipe whose write end the monitor keeps (no terminal), else
    // /dev/null; with a terminal, the runtime hands us its master through a console socket.
    let (stdin_r, stdin_w) = if cfg.stdin && !cfg.tty {
        match make_stdin_pipe() {
            Ok((r, w)) => (Some(r), Some(w)),
            Err(e) => {
                return fail(
                    "pipes",
                    format!("creating the stdin pipe: {e}"),
                    String::new(),
                )
            }
        }
    } else {
        (None, None)
    };
    let console = if cfg.tty {
        match ConsoleSocket::bind(&cfg.bundle) {
            Ok(c) => Some(c),
            Err(e) => return fail("console", format!("console socket: {e}"), String::new()),
        }
    } else {
        None
    };
    // A container joining another's runtime sandbox gets the stdio of `runtime start`, which
    // the monitor runs later: keep copies (none with a terminal, which `create` already sent).
    let pending = if cfg.start_on_signal {
        match PendingStart::keep(cfg.tty, &out_w, &err_w, stdin_r.as_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                return fail(
                    "pipes",
                    format!("keeping stdio for start: {e}"),
                    String::new(),
                )
            }
        }
    } else {
        None
    };
    let stdin = match stdin_r {
        Some(r) => Stdio::from(r),
        None => Stdio::null(),
    };
    if let Err((msg, runtime_stderr)) = run_create(
        &cfg,
        out_w,
        err_w,
        &err_r,
        stdin,
        console.as_ref().map(|c| c.runtime_path.as_str()),
    ) {
        return fail(verb(&cfg), msg, runtime_stderr);
    }
    let term = match console.map(ConsoleSocket::receive) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            let _ = runtime_delete(&cfg);
            return fail(
                "console",
                format!("receiving the terminal: {e}"),
                String::new(),
            );
        }
    };
    let container_pid = match read_pid_file(&cfg.pid_file) {
        Ok(p) => p,
        Err(e) => {
            let _ = runtime_delete(&cfg);
            return fail("pid_file", e, String::new());
        }
    };
    let listener = match &cfg.attach_socket {
        Some(p) => match crate::attachsrv::bind(p) {
            Ok(l) => Some((l, p.clone())),
            Err(e) => {
                let _ = runtime_delete(&cfg);
                return fail(
                    "attach",
                    format!("binding {}: {e}", p.display()),
                    String::new(),
                );
            }
        },
        None => None,
    };
    // The terminal's master is read for output (`output`) and written for input and resized
    // (`input.term`): two descriptors of one open file.
    let (output_term, input_term) = match term {
        Some(t) => match t.try_clone() {
            Ok(dup) => (Some(t), Some(dup)),
            Err(e) => {
                let _ = runtime_delete(&cfg);
                return fail("console", format!("dup: {e}"), String::new());
            }
        },
        None => (None, None),
    };
    let mut attach = AttachServer::new(
        listener,
        Input::new(stdin_w, input_term, cfg.stdin, cfg.stdin_once),
    );
    report(&SyncMessage::Ok {
        monitor_pid: i32::try_from(std::process::id()).unwrap_or(-1),
        container_pid,
    });
    detach_stdio();

    let status = supervise(
        &cfg,
        container_pid,
        pending,
        &sigfd,
        &mut log,
        &mut attach,
        [Some(out_r), Some(err_r), output_term],
    );
    // Sessions learn the exit first (their clients end at once); the exit file follows.
    attach.finish(status.exit_code, Instant::now() + FINAL_FLUSH);
    if let Err(e) = write_exit_file(&cfg.exit_file, &status) {
        eprintln!(
            "krio-monitor: writing exit file {}: {e}",
            cfg.exit_file.display()
        );
        return 1;
    }
    0
}

/// How long attach sessions may take to read their last output after the container exited.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// The stdin pipe: both ends close-on-exec, the write end (ours) non-blocking.
fn make_stdin_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

/// The socket on which the runtime sends the terminal's master (`runc --console-socket`).
struct ConsoleSocket {
    listener: std::os::unix::net::UnixListener,
    /// Keeps the bundle directory open: the runtime reaches the socket through it.
    _dir: std::fs::File,
    file: std::path::PathBuf,
    /// The path given to the runtime: `/proc/<monitor pid>/fd/<dir fd>/console.sock`, short
    /// enough for a socket address however deep the bundle lies.
    runtime_path: String,
}

impl ConsoleSocket {
    fn bind(bundle: &Path) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = bundle.join("console.sock");
        let _ = std::fs::remove_file(&file);
        let dir = std::fs::File::open(bundle)?;
        let fd = dir.as_raw_fd();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let listener =
            std::os::unix::net::UnixListener::bind(format!("/proc/self/fd/{fd}/console.sock"));
        nix::sys::stat::umask(old);
        let listener = listener?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket {
            listener,
            runtime_path: format!("/proc/{}/fd/{fd}/console.sock", std::process::id()),
            _dir: dir,
            file,
        })
    }

    /// Takes the master the runtime sent during `create` (it connected and sent it before
    /// `create` returned), non-blocking and close-on-exec.
    fn receive(self) -> std::io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        let _ = std::fs::remove_file(&self.file);
        let (conn, _) = self.listener.accept().map_err(|e| {
            std::io::Error::new(e.kind(), format!("the runtime sent no terminal: {e}"))
        })?;
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let mut master = None;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // Every descriptor received is ours; extra ones are closed on drop.
                    let owned = crate::sys::own_received_fd(fd);
                    if master.is_none() {
                        master = Some(owned);
                    }
                }
            }
        }
        let master = master.ok_or_else(|| std::io::Error::other("no descriptor in the message"))?;
        fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(std::io::Error::from)?;
        Ok(master)
    }
}

type PipeSet = (OwnedFd, OwnedFd, OwnedFd, OwnedFd);

/// stdout and stderr pipes: both ends close-on-exec (std's dup2 onto 1/2 clears it for the runtime), read ends
/// non-blocking (the write ends stay blocking: they are the container's stdout/stderr).
fn make_pipes() -> nix::Result<PipeSet> {
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    for fd in [&out_r, &err_r] {
        fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    Ok((out_r, out_w, err_r, err_w))
}

/// The runtime verb the monitor runs: `restore` for a container restored from a checkpoint,
/// else `create`.
fn verb(cfg: &MonitorConfig) -> &'static str {
    if cfg.restore_from.is_some() {
        "restore"
    } else {
        "create"
    }
}

/// Runs `runtime create` (or `runtime restore`). On failure returns (message, runtime error
/// output).
fn run_create(
    cfg: &MonitorConfig,
    out_w: OwnedFd,
    err_w: OwnedFd,
    err_r: &OwnedFd,
    stdin: Stdio,
    console_socket: Option<&str>,
) -> Result<(), (String, String)> {
    let runtime_log = cfg.runtime_log_path();
    let _ = std::fs::remove_file(&runtime_log);
    let spawned = {
        let mut cmd = Command::new(&cfg.runtime_binary);
        cmd.arg("--root")
            .arg(&cfg.runtime_root)
            .args(&cfg.runtime_args)
            .arg("--log")
            .arg(&runtime_log)
            .arg("--log-format")
            .arg("json");
        match &cfg.restore_from {
            // `restore --detach` brings the checkpointed processes back running and exits,
            // as `create` exits once the init waits: the monitor carries on the same way.
            Some(image) => {
                cmd.arg("restore")
                    .arg("--detach")
                    .arg("--image-path")
                    .arg(image)
                    .arg("--work-path")
                    .arg(&cfg.bundle);
            }
            None => {
                cmd.arg("create");
            }
        }
        if cfg.no_pivot {
            cmd.arg("--no-pivot");
        }
        if let Some(sock) = console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        cmd.arg("--bundle")
            .arg(&cfg.bundle)
            .arg("--pid-file")
            .arg(&cfg.pid_file)
            .arg(&cfg.id)
            .stdin(stdin)
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            .current_dir(&cfg.bundle);
        crate::sys::reset_signals_on_exec(&mut cmd);
        cmd.spawn()
        // `cmd` (holding our copies of the write ends) is dropped here.
    };
    let mut child = spawned.map_err(|e| {
        (
            format!("starting {}: {e}", cfg.runtime_binary.display()),
            String::new(),
        )
    })?;
    let deadline = Instant::now() + Duration::from_secs(cfg.create_timeout_secs);
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = runtime_delete(cfg);
                return Err((
                    format!(
                        "runtime {} timed out after {}s",
                        verb(cfg),
                        cfg.create_timeout_secs
                    ),
                    runtime_errors(&runtime_log, Some(err_r)),
                ));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err((format!("waiting for runtime create: {e}"), String::new())),
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err((
            format!("runtime {} exited with {status}", verb(cfg)),
            runtime_errors(&runtime_log, Some(err_r)),
        ))
    }
}

/// Best-effort `runtime delete --force <id>` after a failed or abandoned create.
fn runtime_delete(cfg: &MonitorConfig) -> std::io::Result<std::process::ExitStatus> {
    let mut cmd = Command::new(&cfg.runtime_binary);
    crate::sys::reset_signals_on_exec(&mut cmd);
    cmd.arg("--root")
        .arg(&cfg.runtime_root)
        .args(&cfg.runtime_args)
        .arg("delete")
        .arg("--force")
        .arg(&cfg.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// The runtime's error messages: `level` error/fatal `msg`s from its JSON log, plus whatever it wrote on stderr
/// (when `err_r` is its stderr's read end).
fn runtime_errors(runtime_log: &Path, err_r: Option<&OwnedFd>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Ok(text) = std::fs::read_to_string(runtime_log) {
        for line in text.lines() {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => {
                    let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
                    if matches!(level, "error" | "fatal" | "panic") {
                        if let Some(m) = v.get("msg").and_then(|m| m.as_str()) {
                            parts.push(m.to_string());
                        }
                    }
                }
                Err(_) if !line.trim().is_empty() => parts.push(line.trim().to_string()),
                Err(_) => {}
            }
        }
    }
    let mut buf = [0u8; 4096];
    let mut stderr = Vec::new();
    while let Some(err_r) = err_r.filter(|_| stderr.len() < 64 * 1024) {
        match nix::unistd::read(err_r, &mut buf) {
            Ok(n) if n > 0 => stderr.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
    // runc writes the same error to its log and to stderr: keep each text once.
    if !stderr.is_empty()
        && !parts
            .iter()
            .any(|p| p.contains(&stderr) || stderr.contains(p.as_str()))
    {
        parts.push(stderr);
    }
    parts.dedup();
    parts.join("; ")
}

fn read_pid_file(path: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading pid file {}: {e}", path.display()))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("pid file {} holds {text:?}", path.display()))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Reaps every exited child; returns the container's status if its init was among them.
fn reap(container_pid: i32) -> Option<ExitStatus> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == container_pid => {
                found = Some(ExitStatus {
                    exit_code: code,
                    signal: None,
                    finished_at_ns: now_ns(),
                    oom_killed: false,
                });
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == container_pid => {
                found = Some(ExitStatus {
                    exit_code: 128 + sig as i32,
                    signal: Some(sig as i32),
                    finished_at_ns: now_ns(),
                    oom_killed: false,
                });
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(e) => {
                eprintln!("krio-monitor: waitpid: {e}");
                break;
            }
        }
    }
    found
}

/// Reads once from a pipe (or the terminal) into the log and the attach sessions.
fn pump(
    fd: &OwnedFd,
    stream: Stream,
    log: &mut CriLogWriter,
    attach: &mut AttachServer,
    buf: &mut [u8],
) -> PumpResult {
    match nix::unistd::read(fd, buf) {
        Ok(0) => PumpResult::Eof,
        Ok(n) => {
            if let Err(e) = log.write(stream, &buf[..n], SystemTime::now()) {
                eprintln!("krio-monitor: writing log: {e}");
            }
            attach.broadcast(stream, &buf[..n]);
            PumpResult::Data
        }
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => PumpResult::Empty,
        // A terminal's master reads EIO once no process holds the other side.
        Err(Errno::EIO) => PumpResult::Eof,
        Err(e) => {
            eprintln!("krio-monitor: reading {}: {e}", stream.as_str());
            PumpResult::Eof
        }
    }
}

#[derive(PartialEq, Eq)]
enum PumpResult {
    Data,
    Empty,
    Eof,
}

/// The log stream of each output: the stdout pipe, the stderr pipe, the terminal.
const STREAMS: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::Stdout];

/// What a polled descriptor is.
#[derive(Clone, Copy)]
enum Token {
    Signals,
    Output(usize),
    Attach(crate::attachsrv::Token),
}

/// The main loop: log output (and fan it out to attach sessions), serve attach, reap children,
/// reopen the log on SIGUSR1, until the container's init exits.
///
/// With `pending` (a container joining another's runtime sandbox, [`MonitorConfig::start_on_signal`]) nothing is
/// reaped as the container until SIGUSR2 has run `runtime start`; then the `runtime wait` child stands for the
/// container. SIGTERM before that start ends the loop with the exit of a killed container.
fn supervise(
    cfg: &MonitorConfig,
    container_pid: i32,
    mut pending: Option<PendingStart>,
    sigfd: &SignalFd,
    log: &mut CriLogWriter,
    attach: &mut AttachServer,
    mut outputs: [Option<OwnedFd>; 3],
) -> ExitStatus {
    let mut buf = vec![0u8; READ_CHUNK];
    // The pid whose exit is the container's: its init, or `runtime wait` once started (0: none).
    let mut waited = if pending.is_some() { 0 } else { container_pid };
    // The output of `runtime wait` (its read end), for a container in another's sandbox.
    let mut wait_output: Option<OwnedFd> = None;
    let mut exit = reap(waited);
    while exit.is_none() {
        let events: Vec<(Token, PollFlags)> = {
            let mut regs: Vec<(Token, std::os::fd::BorrowedFd<'_>, PollFlags)> =
                vec![(Token::Signals, sigfd.as_fd(), PollFlags::POLLIN)];
            for (i, p) in outputs.iter().enumerate() {
                if let Some(fd) = p {
                    regs.push((Token::Output(i), fd.as_fd(), PollFlags::POLLIN));
                }
            }
            let mut attach_regs = Vec::new();
            attach.register(&mut attach_regs);
            regs.extend(
                attach_regs
                    .into_iter()
                    .map(|(t, fd, fl)| (Token::Attach(t), fd, fl)),
            );
            let mut fds: Vec<PollFd> = regs
                .iter()
                .map(|(_, fd, fl)| PollFd::new(*fd, *fl))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("krio-monitor: poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            regs.iter()
                .zip(fds.iter())
                .filter_map(|((t, _, _), f)| f.revents().filter(|r| !r.is_empty()).map(|r| (*t, r)))
                .collect()
        };
        let mut signals = false;
        for (token, revents) in events {
            match token {
                Token::Signals => signals = true,
                Token::Output(i) => {
                    if let Some(fd) = &outputs[i] {
                        if pump(fd, STREAMS[i], log, attach, &mut buf) == PumpResult::Eof {
                            let _ = log.close_stream(STREAMS[i], SystemTime::now());
                            outputs[i] = None;
                        }
                    }
                }
                Token::Attach(t) => attach.handle(t, revents),
            }
        }
        attach.reap();
        if signals {
            let mut child_exited = false;
            while let Ok(Some(si)) = sigfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => child_exited = true,
                    Ok(Signal::SIGUSR2) => {
                        if let Some(p) = pending.take() {
                            match start_in_sandbox(cfg, p) {
                                Ok((pid, out)) => {
                                    report_start(cfg, Ok(()));
                                    waited = pid;
                                    wait_output = Some(out);
                                }
                                Err(e) => {
                                    eprintln!("krio-monitor: starting {}: {e}", cfg.id);
                                    report_start(cfg, Err(&e));
                                    let _ = runtime_delete(cfg);
                                    exit = Some(ExitStatus {
                                        exit_code: START_FAILED_EXIT,
                                        signal: None,
                                        finished_at_ns: now_ns(),
                                        oom_killed: false,
                                    });
                                }
                            }
                        }
                    }
                    Ok(Signal::SIGTERM) if pending.is_some() => {
                        pending = None;
                        exit = Some(ExitStatus {
                            exit_code: 128 + libc::SIGKILL,
                            signal: Some(libc::SIGKILL),
                            finished_at_ns: now_ns(),
                            oom_killed: false,
                        });
                    }
                    Ok(Signal::SIGUSR1) => {
                        let outcome = log.reopen();
                        if let Err(e) = &outcome {
                            eprintln!("krio-monitor: reopening log for {}: {e}", cfg.id);
                        }
                        report_reopen(cfg, &outcome);
                    }
                    _ => {}
                }
            }
            if child_exited && exit.is_none() {
                exit = reap(waited);
                if let (Some(e), Some(out)) = (exit.as_mut(), wait_output.as_ref()) {
                    *e = wait_result(out, e.finished_at_ns);
                }
            }
        }
    }
    // Drain what the container wrote before exiting; stop at EAGAIN (processes outside a private pid namespace
    // may still hold the pipes open) or EOF.
    for i in 0..outputs.len() {
        if let Some(fd) = outputs[i].take() {
            while pump(&fd, STREAMS[i], log, attach, &mut buf) == PumpResult::Data {}
        }
        let _ = log.close_stream(STREAMS[i], SystemTime::now());
    }
    // Reap anything else that already exited so no zombies linger while we finish.
    let _ = reap(waited);
    exit.unwrap_or(ExitStatus {
        exit_code: -1,
        signal: None,
        finished_at_ns: now_ns(),
        oom_killed: false,
    })
}

/// The exit code recorded for a container joining another's sandbox whose `runtime start` failed.
const START_FAILED_EXIT: i32 = 128;

/// The stdio a container joining another's runtime sandbox gets at `runtime start`: copies of
/// the monitor's pipe ends (all `None` with a terminal, which the runtime set up at `create`).
struct PendingStart {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl PendingStart {
    fn keep(
        tty: bool,
        out_w: &OwnedFd,
        err_w: &OwnedFd,
        stdin_r: Option<&OwnedFd>,
    ) -> std::io::Result<PendingStart> {
        if tty {
            return Ok(PendingStart {
                stdin: None,
                stdout: None,
                stderr: None,
            });
        }
        Ok(PendingStart {
            stdin: stdin_r.map(OwnedFd::try_clone).transpose()?,
            stdout: Some(out_w.try_clone()?),
            stderr: Some(err_w.try_clone()?),
        })
    }
}

/// Runs `runtime start <id>` with the container's stdio (runsc hands it to the container), then
/// starts `runtime wait <id>`, whose exit stands for the container's. Returns the wait child's
/// pid and the read end of its stdout; or the runtime's error.
fn start_in_sandbox(cfg: &MonitorConfig, p: PendingStart) -> Result<(i32, OwnedFd), String> {
    let runtime_log = cfg.bundle.join("runtime-start.log");
    let _ = std::fs::remove_file(&runtime_log);
    let io = |f: Option<OwnedFd>| f.map_or_else(Stdio::null, Stdio::from);
    let spawned = {
        let mut cmd = Command::new(&cfg.runtime_binary);
        cmd.arg("--root")
            .arg(&cfg.runtime_root)
            .args(&cfg.runtime_args)
            .arg("--log")
            .arg(&runtime_log)
            .arg("--log-format")
            .arg("json")
            .arg("start")
            .arg(&cfg.id)
            .stdin(io(p.stdin))
            .stdout(io(p.stdout))
            .stderr(io(p.stderr))
            .current_dir(&cfg.bundle);
        crate::sys::reset_signals_on_exec(&mut cmd);
        cmd.spawn()
        // `cmd`, holding the monitor's copies of the container's stdio, is dropped here.
    };
    let mut child =
        spawned.map_err(|e| format!("starting {}: {e}", cfg.runtime_binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(cfg.create_timeout_secs);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "runtime start timed out after {}s",
                    cfg.create_timeout_secs
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for runtime start: {e}")),
        }
    };
    if !status.success() {
        let errors = runtime_errors(&runtime_log, None);
        return Err(format!("runtime start exited with {status}: {errors}"));
    }
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the pipe of runtime wait: {e}"))?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(|e| format!("creating the pipe of runtime wait: {e}"))?;
    let mut cmd = Command::new(&cfg.runtime_binary);
    cmd.arg("--root")
        .arg(&cfg.runtime_root)
        .args(&cfg.runtime_args)
        .arg("wait")
        .arg(&cfg.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::null())
        .current_dir(&cfg.bundle);
    crate::sys::reset_signals_on_exec(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting runtime wait: {e}"))?;
    let pid = i32::try_from(child.id()).map_err(|e| format!("runtime wait pid: {e}"))?;
    Ok((pid, r))
}

/// The container's exit from what `runtime wait` printed (`{"id": ..., "exitStatus": N}`, where N
/// is `128 + signal` for a signalled process); 255 ("unknown") when it printed nothing usable,
/// as when the sandbox itself died.
fn wait_result(out: &OwnedFd, finished_at_ns: i64) -> ExitStatus {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while text.len() < 64 * 1024 {
        match nix::unistd::read(out, &mut buf) {
            Ok(n) if n > 0 => text.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let code = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("exitStatus").and_then(|c| c.as_i64()))
        .and_then(|c| i32::try_from(c).ok());
    let Some(exit_code) = code else {
        eprintln!(
            "krio-monitor: runtime wait gave no exit status: {:?}",
            String::from_utf8_lossy(&text)
        );
        return ExitStatus {
            exit_code: 255,
            signal: None,
            finished_at_ns,
            oom_killed: false,
        };
    };
    ExitStatus {
        exit_code,
        signal: (exit_code > 128 && exit_code <= 128 + 64).then_some(exit_code - 128),
        finished_at_ns,
        oom_killed: false,
    }
}

/// Writes the outcome of a start asked for with SIGUSR2 to [`MonitorConfig::start_status_file`]
/// (temp file, rename), for the daemon's `StartContainer`.
fn report_start(cfg: &MonitorConfig, outcome: Result<(), &str>) {
    let text = match outcome {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("error: {e}\n"),
    };
    let path = cfg.start_status_file();
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        eprintln!("krio-monitor: writing {}: {e}", path.display());
    }
}

/// Writes the outcome of a log reopen to [`MonitorConfig::log_reopen_status_file`] (temp file, rename), so the
/// daemon's `ReopenContainerLog` can answer with it. A failure to write it is only logged: the daemon then
/// times out.
fn report_reopen(cfg: &MonitorConfig, outcome: &std::io::Result<()>) {
    let text = match outcome {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("error: {e}\n"),
    };
    let path = cfg.log_reopen_status_file();
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        eprintln!("krio-monitor: writing {}: {e}", path.display());
    }
}

/// Writes the exit file atomically: `<path>.tmp`, fsync, rename, fsync of the directory.
pub fn write_exit_file(path: &Path, status: &ExitStatus) -> std::io::Result<()> {
    let data = serde_json::to_vec(status).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
