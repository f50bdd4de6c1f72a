//! A minimal pod init: PID 1 of a pod-level PID namespace, pinned by a bind mount.
//!
//! krio pins a pod's net/ipc/uts namespaces without a pause process (`krio-net`), but a PID namespace dies with
//! its first process, so a pod-level PID namespace (CRI `NamespaceMode::POD` for `pid`, Kubernetes
//! `shareProcessNamespace`) needs a live init. This module provides one that costs a few hundred KiB:
//!
//! * Daemon side: [`spawn_pod_init`] runs `krio-monitor pod-init <pin>` (the launcher) and reads its one-line
//!   [`PodInitMessage`]; [`stop_pod_init`] kills the init (and with it every process in the namespace) and
//!   removes the pin; [`pod_init_running`] checks that a recorded init is still alive.
//! * Launcher (`krio-monitor pod-init <pin> [--userns <path>]`): closes inherited descriptors, creates `<pin>`
//!   (mode 0444, `O_EXCL`), `setsid()`, `unshare(CLONE_NEWPID)`, re-executes itself as
//!   `krio-pod-init pod-init-run <pin>` (so that child is PID 1 of the new namespace), waits for its `ready` line,
//!   bind-mounts `/proc/<child>/ns/pid` onto `<pin>`, reports
//!   the child's host pid and start time, and exits without waiting: the init is reparented to the host init (or
//!   the nearest child subreaper), never left as a child of the daemon.
//! * In a user namespace (`--userns <path>`, CRI `userns_options` mode POD): a PID namespace belongs to the user
//!   namespace of the process that makes it, and a container that joined the pod's user namespace can only join
//!   (and mount a `/proc` for) a PID namespace owned by it. The launcher must stay the host's root (it bind-mounts
//!   the pin) and a process cannot leave a user namespace it entered, so its child
//!   (`krio-pod-init pod-init-run <pin> --userns <path>`) does it: `setns(CLONE_NEWUSER)`,
//!   `unshare(CLONE_NEWPID)`, then `fork()` without `exec`; the forked process is PID 1 and runs the init, the
//!   parent writes `init <host pid>` and waits for the launcher to close its stdin. Without an `exec`, the
//!   init's memory keeps the host's user namespace, and the init is not dumpable, so the pod's processes (even
//!   with `CAP_SYS_PTRACE` in the pod's user namespace) can neither trace it nor read its `/proc/1/root`, which
//!   is the host's filesystem.
//! * Init (`pod-init-run`): refuses to run unless it is PID 1, `setsid()`, `chdir("/")`, stdio on `/dev/null`, no
//!   other descriptor, every signal blocked (only SIGKILL, and SIGSTOP, can affect it), not dumpable, writes `ready` on the
//!   pipe it got as stdout (then replaces it with `/dev/null`), and reaps every child
//!   forever: `waitpid(-1)` while it has children, `sigwait(SIGCHLD)` when it has none.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::spawn::{run_launcher, LauncherFailure};
use crate::types::{MonitorError, PodInit, PodInitMessage};

/// Longest status line accepted from the launcher (bytes).
const MAX_STATUS_LINE: u64 = 64 * 1024;

/// How long [`stop_pod_init`] waits for the init (and its namespace) to die after SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the launcher waits for the init to report readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The init's `argv[0]` (what `ps` shows).
const INIT_ARGV0: &str = "krio-pod-init";

/// Longest readiness message read from the init and its forking parent (bytes); an error line is cut there.
const MAX_READY_MESSAGE: usize = 4096;

/// Starts a pod init with `monitor_binary` and pins its PID namespace at `pin`.
///
/// * `pin`: absolute path of a file to create (it must not exist; its parent must); the PID namespace is
///   bind-mounted onto it, so it can be handed to runc as the OCI `linux.namespaces[{type: pid, path}]` or to
///   `nsenter --pid=<pin>`. Putting it in the pod's `krio-net` namespace directory (e.g. `<ns dir>/pid`) gives it
///   that directory's shared propagation, and `krio_net::unpin_namespaces` then also removes it.
/// * `userns`: `None` for a PID namespace owned by the caller's user namespace; `Some(path)` (absolute; a
///   `/proc/<pid>/ns/user` or a bind mount of one, e.g. the pod's pin from `krio_net::pin_namespaces_in_userns`)
///   for one owned by that user namespace (CRI `userns_options` mode POD with pid mode POD: the pod's containers
///   join the user namespace first, and then can join only a PID namespace it owns). The init is then a member
///   of that user namespace too, with the caller's uid (unmapped there, so `nobody` inside); see the module
///   docs for why the pod cannot trace it.
///
/// Blocking (it waits for the short-lived launcher, a few milliseconds): call it from `spawn_blocking` in async
/// code. The launcher runs with stdin `/dev/null`, stdout = a close-on-exec sync pipe, stderr `/dev/null`, cwd
/// `/`, environment reduced to `PATH`; it closes every other inherited descriptor first thing, and the init gets
/// only `/dev/null` on 0-2, so no descriptor of the caller reaches the init. The init stays in the caller's
/// cgroups and mount namespace; move it into the pod cgroup if it should be accounted there.
///
/// Returns the init's host pid and start time ([`PodInit`]); keep both for [`stop_pod_init`].
///
/// Errors: [`MonitorError::InvalidConfig`] (`pin` or `userns` not absolute); [`MonitorError::Spawn`] if the
/// binary cannot start; [`MonitorError::PodInitFailed`] naming the failed step (e.g. `pin` when the file already
/// exists, `userns` when the user namespace cannot be entered, `mount`); [`MonitorError::PodInitNoStatus`] /
/// [`MonitorError::PodInitProtocol`] / [`MonitorError::PodInitIo`] for a broken launcher. On failure nothing is
/// left behind (the launcher kills the init, and the process that forked it, and removes the pin).
pub fn spawn_pod_init(
    monitor_binary: &Path,
    pin: &Path,
    userns: Option<&Path>,
) -> Result<PodInit, MonitorError> {
    for (field, path) in [("pin", Some(pin)), ("userns", userns)] {
        let Some(path) = path else { continue };
        if !path.is_absolute() || path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(MonitorError::InvalidConfig {
                field,
                reason: format!("{} must be an absolute path", path.display()),
            });
        }
    }
    let io = |what: &'static str| {
        move |source| MonitorError::PodInitIo {
            pid: 0,
            pin: pin.to_path_buf(),
            what,
            source,
        }
    };
    let mut args = vec![OsStr::new("pod-init"), pin.as_os_str()];
    if let Some(userns) = userns {
        args.extend([OsStr::new("--userns"), userns.as_os_str()]);
    }
    let msg: PodInitMessage = run_launcher(monitor_binary, &args, None, MAX_STATUS_LINE).map_err(
        |failure| match failure {
            LauncherFailure::Spawn(source) => MonitorError::Spawn {
                binary: monitor_binary.to_path_buf(),
                source,
            },
            LauncherFailure::Io { what, source } => io(what)(source),
            LauncherFailure::NoStatus(launcher_status) => MonitorError::PodInitNoStatus {
                pin: pin.to_path_buf(),
                launcher_status,
            },
            LauncherFailure::Protocol { line, source } => MonitorError::PodInitProtocol {
                pin: pin.to_path_buf(),
                line,
                source,
            },
        },
    )?;
    match msg {
        PodInitMessage::Ok { pid, start_time } => Ok(PodInit { pid, start_time }),
        PodInitMessage::Error { stage, message } => Err(MonitorError::PodInitFailed {
            pin: pin.to_path_buf(),
            stage,
            message,
        }),
    }
}

/// Stops a pod init: checks that `init.pid` still is that init, SIGKILLs it through a pidfd (the kernel then
/// kills every process of its PID namespace), waits until it and the namespace are gone, then unmounts
/// (`MNT_DETACH`, never following symlinks) and removes `pin`.
///
/// The pid is only signalled when `/proc/<pid>/stat` still shows `init.start_time` and, if `pin` is still a
/// namespace mount, `/proc/<pid>/ns/pid` is the namespace pinned there: a recycled pid is never killed.
///
/// Idempotent: an init that is already gone (or whose pid now names another process) and a missing or
/// unmounted pin are `Ok(())`. Blocking (up to 10 s waiting for the namespace to die): use `spawn_blocking`.
///
/// Errors: [`MonitorError::InvalidConfig`] (`pid` <= 0, `pin` not absolute); [`MonitorError::PodInitIo`] if
/// signalling, unmounting or removing fails; [`MonitorError::PodInitStopTimeout`] if the init outlives SIGKILL
/// for 10 s (the pin is left in place so the call can be retried).
pub fn stop_pod_init(init: &PodInit, pin: &Path) -> Result<(), MonitorError> {
    if init.pid <= 0 {
        return Err(MonitorError::InvalidConfig {
            field: "pid",
            reason: format!("{} is not a valid pid", init.pid),
        });
    }
    if !pin.is_absolute() {
        return Err(MonitorError::InvalidConfig {
            field: "pin",
            reason: format!("{} must be an absolute path", pin.display()),
        });
    }
    let io = |what: &'static str| {
        move |source| MonitorError::PodInitIo {
            pid: init.pid,
            pin: pin.to_path_buf(),
            what,
            source,
        }
    };
    if let Some(pidfd) = open_pidfd(init.pid).map_err(io("pidfd_open"))? {
        // The pidfd pins the process identity; check after opening it that the pid is still ours.
        if is_our_init(init, pin) {
            match rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => return Err(io("pidfd_send_signal(SIGKILL)")(e.into())),
            }
            wait_pidfd(&pidfd, init.pid)?;
        }
    }
    unmount_all(pin).map_err(io("unmounting the pin"))?;
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing the pin")(e)),
    }
}

/// Whether `init` is still running: `/proc/<pid>/stat` exists, shows `init.start_time`, and the process is not
/// a zombie. Use it to reconcile sandboxes after a daemon restart.
pub fn pod_init_running(init: &PodInit) -> bool {
    match read_stat(init.pid) {
        Some((state, start)) => start == init.start_time && state != 'Z' && state != 'X',
        None => false,
    }
}

/// `pidfd_open(pid)`; `Ok(None)` if no such process.
fn open_pidfd(pid: i32) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return Ok(None);
    };
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::SRCH) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether the process at `init.pid` is the recorded init (start time, and the pinned namespace if any).
fn is_our_init(init: &PodInit, pin: &Path) -> bool {
    match read_stat(init.pid) {
        Some((_, start)) if start == init.start_time => {}
        _ => return false,
    }
    if !is_nsfs(pin) {
        return true;
    }
    match (
        std::fs::metadata(pin),
        std::fs::metadata(format!("/proc/{}/ns/pid", init.pid)),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        // A zombie's namespace links are gone; the start time matched, so it is ours (and SIGKILL is harmless).
        (Ok(_), Err(_)) => true,
        _ => false,
    }
}

/// Waits until the pidfd reports the process exited (after its whole PID namespace was torn down).
fn wait_pidfd(pidfd: &std::os::fd::OwnedFd, pid: i32) -> Result<(), MonitorError> {
    let start = Instant::now();
    loop {
        let left = STOP_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(MonitorError::PodInitStopTimeout {
                pid,
                waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(MonitorError::PodInitIo {
                    pid,
                    pin: PathBuf::new(),
                    what: "polling the pidfd",
                    source: e.into(),
                })
            }
        }
    }
}

/// `(state, starttime)` from `/proc/<pid>/stat` (fields 3 and 22).
pub(crate) fn read_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3 (state); starttime is field 22, i.e. 19 further fields.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|st| st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Lazily unmounts everything stacked on `path`; "not a mount point" / "missing" end the loop.
fn unmount_all(path: &Path) -> std::io::Result<()> {
    for _ in 0..16 {
        match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Process side.

fn report(msg: &PodInitMessage) {
    let mut line = serde_json::to_vec(msg).unwrap_or_else(|_| {
        b"{\"status\":\"error\",\"stage\":\"report\",\"message\":\"serialising status\"}".to_vec()
    });
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
}

fn fail(stage: &str, message: impl Into<String>) -> i32 {
    let message = message.into();
    eprintln!("krio-monitor pod-init: {stage}: {message}");
    report(&PodInitMessage::Error {
        stage: stage.to_string(),
        message,
    });
    1
}

/// `krio-monitor pod-init <pin> [--userns <path>]`: the launcher (see the module docs). Inherited descriptors are
/// already closed.
pub(crate) fn launcher(pin: &str, userns: Option<&str>) -> i32 {
    let pin = PathBuf::from(pin);
    let userns = userns.map(PathBuf::from);
    for path in std::iter::once(&pin).chain(userns.as_ref()) {
        if !path.is_absolute() {
            return fail(
                "args",
                format!("{} must be an absolute path", path.display()),
            );
        }
    }
    if let Err(e) = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&pin)
    {
        return fail("pin", format!("creating {}: {e}", pin.display()));
    }
    let mut started = Started::default();
    let result = launch(&pin, userns.as_deref(), &mut started);
    match result {
        Ok((pid, start_time)) => {
            report(&PodInitMessage::Ok { pid, start_time });
            // Exit without waiting: the init is reparented to the host init / the nearest subreaper.
            0
        }
        Err((stage, message)) => {
            started.kill();
            let _ = unmount_all(&pin);
            let _ = std::fs::remove_file(&pin);
            fail(stage, message)
        }
    }
}

type LaunchError = (&'static str, String);

/// What the launcher started, to kill on failure.
#[derive(Default)]
struct Started {
    /// Our child: the init itself, or (with a user namespace) the process that forked it.
    child: Option<std::process::Child>,
    /// With a user namespace, the init's host pid once reported. It is the unreaped child of `child`, which waits
    /// for us, so the pid cannot name another process while `child` is running.
    forked_init: Option<i32>,
}

impl Started {
    fn kill(&mut self) {
        if let (Some(pid), Some(_)) = (self.forked_init, &self.child) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn launch(
    pin: &Path,
    userns: Option<&Path>,
    started: &mut Started,
) -> Result<(i32, u64), LaunchError> {
    // A new session (we are a child of the daemon, never a group leader), so the init is cut off from the
    // daemon's session and terminal job control.
    nix::unistd::setsid().map_err(|e| ("setsid", e.to_string()))?;
    if userns.is_none() {
        // Children created from now on are in a new PID namespace; the first one is its init.
        unshare(CloneFlags::CLONE_NEWPID).map_err(|e| ("unshare", format!("CLONE_NEWPID: {e}")))?;
    }
    // The init reports readiness (session, signal mask in place) with one line on this pipe.
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| ("spawn", format!("creating the ready pipe: {e}")))?;
    let spawned = {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(INIT_ARGV0).arg("pod-init-run").arg(pin);
        match userns {
            // Our child makes the namespaces and forks the init; it waits for EOF on its stdin (see below).
            Some(userns) => cmd.arg("--userns").arg(userns).stdin(Stdio::piped()),
            None => cmd.stdin(Stdio::null()),
        };
        cmd.stdout(Stdio::from(ready_w))
            .stderr(Stdio::null())
            .current_dir("/")
            .env_clear();
        cmd.spawn()
        // `cmd` drops here with our copy of the write end: EOF means "init gone".
    }
    .map_err(|e| ("spawn", format!("starting the init: {e}")))?;
    let child_pid = i32::try_from(spawned.id()).map_err(|e| ("spawn", e.to_string()));
    started.child = Some(spawned);
    let child_pid = child_pid?;
    let lines = wait_ready(&ready_r)?;
    let pid = match userns {
        None if lines == ["ready"] => child_pid,
        Some(_) => {
            let reported = lines
                .iter()
                .find_map(|l| l.strip_prefix("init ")?.parse().ok());
            started.forked_init = reported;
            match reported {
                Some(pid) if lines.len() == 2 && lines.iter().any(|l| l == "ready") => pid,
                _ => return Err(unexpected(&lines)),
            }
        }
        None => return Err(unexpected(&lines)),
    };
    let ns = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    mount(Some(&ns), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
        (
            "mount",
            format!("bind-mounting {} onto {}: {e}", ns.display(), pin.display()),
        )
    })?;
    let (_, start_time) = read_stat(pid).ok_or(("stat", format!("reading /proc/{pid}/stat")))?;
    if let Some(mut forker) = started.child.take() {
        if userns.is_some() {
            // EOF on its stdin lets the forking child exit (the init is then reparented, as for us); reap it.
            drop(forker.stdin.take());
            let _ = forker.wait();
        }
        // Otherwise release the init's handle without killing or waiting: dropping a Child does neither.
    }
    Ok((pid, start_time))
}

fn unexpected(lines: &[String]) -> LaunchError {
    (
        "ready",
        format!("unexpected messages from the init: {lines:?}"),
    )
}

/// Waits (up to [`READY_TIMEOUT`]) for the init's messages and then for the end of the pipe: whoever writes on it
/// (the init, and with a user namespace the process that forked it) closes its end only after `/dev/null` is on
/// its stdout, so when this returns the init holds nothing of ours. Returns the lines received (`ready`, and
/// `init <pid>` from the forking process); a line `error: <reason>` fails with that reason.
fn wait_ready(ready_r: &std::os::fd::OwnedFd) -> Result<Vec<String>, LaunchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(("ready", "the init did not report readiness in time".into()));
        }
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        let mut fds = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(("ready", format!("poll: {e}"))),
        }
        match nix::unistd::read(ready_r, &mut buf) {
            Ok(0) if got.is_empty() => {
                return Err(("ready", "the init exited before it was ready".into()))
            }
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(("ready", format!("read: {e}"))),
        }
        if got.len() > MAX_READY_MESSAGE {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if let Some(reason) = lines.iter().find_map(|l| l.strip_prefix("error: ")) {
        return Err(("userns", reason.to_string()));
    }
    Ok(lines)
}

/// `krio-pod-init pod-init-run <pin>`: PID 1 of the pod's PID namespace. Never returns unless misused.
pub(crate) fn init_main() -> i32 {
    if std::process::id() != 1 {
        eprintln!("krio-monitor pod-init-run: must be PID 1 of a new PID namespace");
        return 2;
    }
    run_init()
}

/// `krio-pod-init pod-init-run <pin> --userns <path>`: enters the user namespace at `<path>` (`setns`, which also
/// guarantees that this process has a single thread), makes a PID namespace there (`unshare(CLONE_NEWPID)`: it
/// is owned by that user namespace) and forks, without `exec`, the first process of that namespace, which runs as
/// its init. Writes `init <host pid>` (or `error: <reason>`) on stdout, puts `/dev/null` there and waits for EOF
/// on stdin before it exits, so the launcher can kill the init by pid until it lets go.
///
/// Why fork without exec: the init's memory then still belongs to the host's user namespace (an `execve` would
/// move it into the pod's), and once the init marks itself not dumpable nothing in the pod (not even a process
/// with `CAP_SYS_PTRACE` in the pod's user namespace) can trace it or read its `/proc/1/{root,cwd,fd,environ}`,
/// which lead to the host's filesystem.
pub(crate) fn init_in_userns_main(userns: &str) -> i32 {
    let forked = (|| {
        let ns = std::fs::File::open(userns).map_err(|e| format!("opening {userns}: {e}"))?;
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("setns({userns}, CLONE_NEWUSER): {e}"))?;
        // The child must inherit nothing but stdio.
        drop(ns);
        unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(CLONE_NEWPID): {e}"))?;
        crate::sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))
    })();
    let line = match forked {
        // The init. Its stdin is our pipe from the launcher: it takes /dev/null instead.
        Ok(None) => {
            if let Ok(null) = OpenOptions::new().read(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdin(&null);
            }
            if std::process::id() != 1 {
                return 2;
            }
            return run_init();
        }
        Ok(Some(pid)) => format!("init {pid}\n"),
        Err(ref e) => format!("error: {e}\n"),
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    if forked.is_err() {
        return 1;
    }
    let mut sink = [0u8; 64];
    loop {
        match nix::unistd::read(std::io::stdin(), &mut sink) {
            Ok(0) => return 0,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 0,
        }
    }
}

/// The init's body, as PID 1: never returns.
fn run_init() -> i32 {
    let _ = nix::unistd::setsid();
    let _ = nix::unistd::chdir("/");
    // Block every signal: as a namespace init the kernel already drops unhandled signals sent from inside the
    // namespace, and blocked ones from outside just stay pending. Only SIGKILL (and SIGSTOP) act on us.
    // SIGCHLD stays blocked too and is collected with sigwait below.
    let _ = SigSet::all().thread_block();
    let _ = nix::sys::prctl::set_name(c"krio-pod-init");
    // Not dumpable: tracing us, or reading our /proc/<pid>/{root,cwd,fd,environ,mem}, then needs CAP_SYS_PTRACE in
    // the user namespace our memory belongs to (the host's), whoever else shares our PID namespace.
    let _ = nix::sys::prctl::set_dumpable(false);
    // Keep the ready pipe on a private descriptor, put /dev/null on stdout, then report and close
    // the pipe: the launcher waits for the pipe's end, so it returns only once we hold nothing of
    // the caller's.
    let ready = nix::unistd::dup(std::io::stdout());
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    if let Ok(ready) = ready {
        let mut ready = std::fs::File::from(ready);
        let _ = ready.write_all(b"ready\n");
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(_) | Err(Errno::EINTR) => {}
            // No children: sleep until one (an orphan reparented to us) exits. A SIGCHLD that arrives between
            // waitpid and sigwait stays pending, so it is not lost.
            Err(Errno::ECHILD) => {
                if chld.wait().is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
