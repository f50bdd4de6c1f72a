//! `krio-monitor exec-wait <pid-file> <runtime> <args...>`: runs `runtime args...` (a `runc exec --detach
//! --pid-file <pid-file> ...` command line) and then waits for the exec'd process itself, exiting with its
//! status.
//!
//! Why: without `--detach`, runc copies the process's stdout and stderr through pipes of its own and exits only
//! when they reach EOF, so a command that leaves a child in the background (`sleep 300 & echo started`) holds
//! the exec open for as long as that child lives. With `--detach`, the process gets our stdio directly and runc
//! exits once it has started; the process is then reparented to the nearest child subreaper, which is this
//! helper. Orphans of the process stay in the container's PID namespace and go to its init, not to us (a
//! subreaper only adopts orphans of its own PID namespace level).
//!
//! Exit status: the runtime's own status when it fails or writes no pid file (its error is on stderr, which is
//! the caller's), else the process's exit code, or `128 + signal` when a signal killed it (as `runc exec`
//! reports it).

use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Runs the helper; returns the exit code (see the module docs).
pub(crate) fn main(pid_file: &str, runtime: &str, args: &[String]) -> i32 {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("krio-monitor exec-wait: PR_SET_CHILD_SUBREAPER: {e}");
        return 125;
    }
    let mut cmd = Command::new(runtime);
    cmd.args(args);
    crate::sys::reset_signals_on_exec(&mut cmd);
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("krio-monitor exec-wait: starting {runtime}: {e}");
            return 125;
        }
    };
    if !status.success() {
        return status.code().unwrap_or(125);
    }
    let pid = match std::fs::read_to_string(Path::new(pid_file))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
    {
        Some(p) => p,
        None => {
            eprintln!("krio-monitor exec-wait: no pid in {pid_file}");
            return 125;
        }
    };
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                // Not our child: it exited (and was reaped by runc) before runc itself did, or it was never
                // reparented to us. Its status is lost.
                eprintln!("krio-monitor exec-wait: waiting for {pid}: {e}");
                return 125;
            }
        }
    }
}
