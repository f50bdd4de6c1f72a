//! `StopContainer`: the stop signal, then SIGKILL after the timeout. Idempotent: stopping an
//! exited or unknown container succeeds, as the CRI requires.

use std::time::Duration;

use krio_cri::v1 as cri;
use krio_oci::{DeleteOptions, KillOptions};

use crate::error::{Result, ServerError};
use crate::state::{Container, ContainerRecord, ContainerState, Exit, ExitReason};
use crate::{ids, Krio};

/// How long to wait for a process to die after SIGKILL before giving up with an error.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How a container is stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StopMode {
    /// Stop signal, wait up to the timeout, then SIGKILL.
    Graceful(Duration),
    /// SIGKILL at once (pod teardown, removal).
    Kill,
}

impl Krio {
    /// CRI `StopContainer` with `timeout` in seconds (0 kills at once).
    ///
    /// Errors: `InvalidArgument` for a malformed id; `DeadlineExceeded` when the process
    /// survives SIGKILL; `Internal` when the runtime fails.
    pub(crate) async fn stop_container(&self, req: cri::StopContainerRequest) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        let Some(c) = self.containers.find("container_id", &req.container_id)? else {
            return Ok(());
        };
        let mode = if req.timeout > 0 {
            StopMode::Graceful(Duration::from_secs(req.timeout as u64))
        } else {
            StopMode::Kill
        };
        self.stop_container_obj(&c, mode).await
    }

    /// Stops one container object; used by `StopContainer` and pod teardown.
    ///
    /// A stop publishes its deadline before it waits for the container's lock, and a stop in
    /// progress kills as soon as the earliest published deadline passes: a second stop with a
    /// shorter timeout (kubelet's force delete) shortens the first instead of queueing behind
    /// it, as containerd does.
    pub(crate) async fn stop_container_obj(&self, c: &Container, mode: StopMode) -> Result<()> {
        let now = tokio::time::Instant::now();
        let own_deadline = match mode {
            StopMode::Graceful(timeout) => now + timeout,
            StopMode::Kill => now,
        };
        c.shorten_stop(own_deadline);
        let result = self.stop_locked(c, mode, own_deadline).await;
        c.clear_stop_deadline();
        result
    }

    async fn stop_locked(
        &self,
        c: &Container,
        mode: StopMode,
        own_deadline: tokio::time::Instant,
    ) -> Result<()> {
        let mut rec = c.record.lock().await;
        self.refresh_exit(&mut rec);
        if matches!(
            rec.state(),
            ContainerState::Exited | ContainerState::Unknown
        ) {
            return Ok(());
        }
        if rec.restore_pending() {
            // Created from a checkpoint and never started: nothing runs.
            rec.mark_not_restored(crate::state::now_ns())?;
            return self.finish_stop(c, &mut rec).await;
        }
        let runtime = self.runtime(rec.runtime_handler())?;
        let exit_file = self.container_run_dir(rec.id()).join("exit.json");
        if rec.subcontainer() && rec.state() == ContainerState::Created {
            // Nothing of it runs yet: delete it in the runtime, then tell its monitor, which
            // records the exit of a killed container.
            runtime
                .delete(rec.id(), &DeleteOptions { force: true })
                .await?;
            if rec.monitor_pid() > 0 && process_running(rec.monitor_pid()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(rec.monitor_pid()),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let grace = tokio::time::Instant::now() + KILL_GRACE;
            if wait_exit(&exit_file, &rec, || grace).await {
                return self.finish_stop(c, &mut rec).await;
            }
            return Err(ServerError::DeadlineExceeded(format!(
                "container {}: its monitor recorded no exit {}s after the delete",
                rec.id(),
                KILL_GRACE.as_secs()
            )));
        }
        let graceful = matches!(mode, StopMode::Graceful(_))
            && c.stop_deadline()
                .map_or(own_deadline, |d| d.min(own_deadline))
                > tokio::time::Instant::now();
        if graceful {
            let signal = stop_signal(&rec);
            match runtime
                .kill(rec.id(), &KillOptions { signal, all: false })
                .await
            {
                Ok(()) => {
                    let deadline = || {
                        c.stop_deadline()
                            .map_or(own_deadline, |d| d.min(own_deadline))
                    };
                    if wait_exit(&exit_file, &rec, deadline).await {
                        return self.finish_stop(c, &mut rec).await;
                    }
                }
                Err(e) => tracing::debug!(container = %rec.id(), error = %e, "stop signal failed"),
            }
        }
        if let Err(e) = runtime
            .kill(
                rec.id(),
                &KillOptions {
                    signal: libc::SIGKILL,
                    all: true,
                },
            )
            .await
        {
            // The process may have exited between the check and the kill.
            if !exit_file.exists() && rec.state() == ContainerState::Running {
                return Err(e.into());
            }
        }
        crate::state::kill_point("StopContainer:signal-sent");
        let grace = tokio::time::Instant::now() + KILL_GRACE;
        if !wait_exit(&exit_file, &rec, || grace).await {
            if rec.state() == ContainerState::Created {
                // A created container's init waits in the runtime; delete reaps it.
                runtime
                    .delete(rec.id(), &DeleteOptions { force: true })
                    .await?;
                let grace = tokio::time::Instant::now() + KILL_GRACE;
                if wait_exit(&exit_file, &rec, || grace).await {
                    return self.finish_stop(c, &mut rec).await;
                }
            }
            return Err(ServerError::DeadlineExceeded(format!(
                "container {} did not exit {}s after SIGKILL",
                rec.id(),
                KILL_GRACE.as_secs()
            )));
        }
        self.finish_stop(c, &mut rec).await
    }

    async fn finish_stop(&self, c: &Container, rec: &mut ContainerRecord) -> Result<()> {
        self.refresh_exit(rec);
        crate::state::kill_point("StopContainer:exited");
        self.commit_container(c, rec).await?;
        tracing::info!(
            container = %rec.id(),
            exit_code = rec.exit().map(|e| e.code),
            "container stopped"
        );
        Ok(())
    }

    /// Moves a Created/Running record to Exited when the monitor's exit file exists. Returns
    /// whether the record changed.
    pub(crate) fn refresh_exit(&self, rec: &mut ContainerRecord) -> bool {
        refresh_exit_in(&self.container_run_dir(rec.id()), rec)
    }
}

/// [`Krio::refresh_exit`] for a container whose bundle directory is `run_dir`: moves a
/// Created/Running record to Exited when the monitor's exit file exists, or when the monitor
/// is gone without writing one (see [`record_monitor_loss`]). Returns whether the record
/// changed.
pub(crate) fn refresh_exit_in(run_dir: &std::path::Path, rec: &mut ContainerRecord) -> bool {
    if !matches!(
        rec.state(),
        ContainerState::Created | ContainerState::Running
    ) {
        return false;
    }
    let path = run_dir.join("exit.json");
    let mut read = krio_monitor::read_exit_file(&path);
    if matches!(read, Ok(None)) && rec.monitor_pid() > 0 && !process_running(rec.monitor_pid()) {
        // The monitor is gone; it may have written the file just before exiting.
        read = krio_monitor::read_exit_file(&path);
        if matches!(read, Ok(None)) {
            record_monitor_loss(run_dir, rec);
            read = krio_monitor::read_exit_file(&path);
        }
    }
    match read {
        Ok(Some(exit)) => {
            let oom = exit.oom_killed
                || (exit.exit_code == 128 + libc::SIGKILL && oom_killed(rec.cgroups_path()));
            let lost = run_dir.join(MONITOR_LOST).exists();
            let reason = if lost {
                ExitReason::MonitorLost
            } else if oom {
                ExitReason::OOMKilled
            } else if exit.exit_code == 0 {
                ExitReason::Completed
            } else {
                ExitReason::Error
            };
            let message = if lost {
                format!(
                    "krio-monitor (pid {}) died without recording the container's exit; \
                     the container's processes were killed",
                    rec.monitor_pid()
                )
            } else {
                String::new()
            };
            let exit = Exit {
                code: exit.exit_code,
                finished_at: exit.finished_at_ns,
                reason,
                message,
            };
            match rec.mark_exited(exit) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "recording the exit");
                    false
                }
            }
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(container = %rec.id(), error = %e, "unreadable exit file");
            false
        }
    }
}

/// The signal that stops the container gracefully: the one recorded at create (the CRI
/// `stop_signal`, else the image's `StopSignal`; see [`recorded_stop_signal`]), else SIGTERM.
fn stop_signal(rec: &ContainerRecord) -> i32 {
    rec.stop_signal()
        .and_then(parse_signal)
        .unwrap_or(libc::SIGTERM)
}

/// What `CreateContainer` records as the container's stop signal: the CRI config's
/// `stop_signal` when it names one (it overrides the image, as in containerd and CRI-O), else
/// the image config's `StopSignal`; `None` means SIGTERM.
///
/// `requested` is the CRI `Signal` enum name from `ContainerConfig.stop_signal`
/// (`RUNTIME_DEFAULT`, or `None`, when unset).
///
/// An image `StopSignal` that names no signal is ignored with a warning (SIGTERM is used), so
/// an odd image still runs, as with Docker's default.
///
/// Errors: `InvalidArgument` naming `config.stop_signal` for a name that is no signal.
pub(crate) fn recorded_stop_signal(
    requested: Option<&str>,
    image: Option<&str>,
) -> Result<Option<String>> {
    if let Some(v) = requested.filter(|s| !s.is_empty() && *s != "RUNTIME_DEFAULT") {
        if parse_signal(v).is_none() {
            return Err(ServerError::invalid(
                "config.stop_signal",
                format!("{} is not a signal", crate::validate::quote(v)),
            ));
        }
        return Ok(Some(v.to_string()));
    }
    match image {
        Some(v) if parse_signal(v).is_some() => Ok(Some(v.to_string())),
        Some(v) => {
            tracing::warn!(
                stop_signal = %crate::validate::quote(v),
                "the image's StopSignal is not a signal; using SIGTERM"
            );
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Standard signal names without the `SIG` prefix, and their numbers on Linux.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal as the OCI image spec writes `StopSignal` (`SIGTERM`, `TERM`, `15`,
/// `SIGRTMIN+3`, `RTMAX-1`; case-sensitive names as Docker and containerd accept them) or as
/// the CRI `Signal` enum names it (`SIGRTMINPLUS3`, `SIGRTMAXMINUS1`).
pub(crate) fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |off: &str, sep: &str, word: &str| -> Option<i32> {
        if off.is_empty() {
            return Some(0);
        }
        off.strip_prefix(sep)
            .or_else(|| off.strip_prefix(word))?
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
    };
    if let Some(off) = name.strip_prefix("RTMIN") {
        let n = offset(off, "+", "PLUS")?;
        return (rtmin + n <= rtmax).then_some(rtmin + n);
    }
    if let Some(off) = name.strip_prefix("RTMAX") {
        let n = offset(off, "-", "MINUS")?;
        return (rtmax - n >= rtmin).then_some(rtmax - n);
    }
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sig)| *sig)
}

/// The CRI `Signal` enum value for a signal as [`parse_signal`] reads it; `RUNTIME_DEFAULT`
/// (0) for `None` or a signal the enum has no name for.
pub(crate) fn cri_signal(s: Option<&str>) -> i32 {
    let Some(n) = s.and_then(parse_signal) else {
        return cri::Signal::RuntimeDefault as i32;
    };
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let name = if (rtmin..=rtmax).contains(&n) {
        if n - rtmin <= rtmax - n {
            match n - rtmin {
                0 => "SIGRTMIN".to_string(),
                k => format!("SIGRTMINPLUS{k}"),
            }
        } else {
            match rtmax - n {
                0 => "SIGRTMAX".to_string(),
                k => format!("SIGRTMAXMINUS{k}"),
            }
        }
    } else {
        match SIGNALS.iter().find(|(_, sig)| *sig == n) {
            Some((name, _)) => format!("SIG{name}"),
            None => return cri::Signal::RuntimeDefault as i32,
        }
    };
    cri::Signal::from_str_name(&name).map_or(cri::Signal::RuntimeDefault as i32, |s| s as i32)
}

/// Waits for the container's exit: true when the monitor wrote the exit file before
/// `deadline()` (read again at every poll, so a later stop can bring it forward). When the
/// monitor itself is gone (killed, OOM) and so is the container's init, nobody will write it:
/// krio records the exit with code 255 ("unknown") itself, so the container can still be
/// stopped and removed.
async fn wait_exit(
    exit_file: &std::path::Path,
    rec: &ContainerRecord,
    deadline: impl Fn() -> tokio::time::Instant,
) -> bool {
    let mut delay = Duration::from_millis(2);
    loop {
        if exit_file.exists() {
            return true;
        }
        if rec.monitor_pid() > 0
            && !process_running(rec.monitor_pid())
            && !process_running(rec.pid())
        {
            // The monitor may have written the file just before exiting.
            if exit_file.exists() {
                return true;
            }
            return exit_file
                .parent()
                .is_some_and(|dir| record_monitor_loss(dir, rec));
        }
        if tokio::time::Instant::now() >= deadline() {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// The marker beside `exit.json` saying krio wrote the exit itself because the monitor died
/// without writing one (reported as reason `MonitorLost`).
const MONITOR_LOST: &str = "monitor-lost";

/// Records the exit of a container whose monitor died without writing its exit file (killed,
/// OOM): every process left in the container's cgroup is SIGKILLed (the cgroup is the
/// container's own, so a recycled pid is never hit), then the [`MONITOR_LOST`] marker and an
/// exit file with code 255 and the current time are written in `run_dir`, so every reader
/// sees the same exit. Returns whether the exit file was written.
fn record_monitor_loss(run_dir: &std::path::Path, rec: &ContainerRecord) -> bool {
    tracing::warn!(
        container = %rec.id(),
        monitor_pid = rec.monitor_pid(),
        "monitor gone without an exit status; killing the container and recording 255"
    );
    super::events::kill_cgroup_processes(rec.cgroups_path());
    if rec.pid() > 0 && process_running(rec.pid()) && process_in_cgroup(rec.pid(), rec.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.pid()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Err(e) = std::fs::write(run_dir.join(MONITOR_LOST), b"") {
        tracing::warn!(container = %rec.id(), error = %e, "writing the monitor-lost marker");
    }
    let status = krio_monitor::ExitStatus {
        exit_code: 255,
        signal: None,
        finished_at_ns: crate::state::now_ns(),
        oom_killed: false,
    };
    match krio_monitor::write_exit_file(&run_dir.join("exit.json"), &status) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(container = %rec.id(), error = %e, "recording the exit of a container whose monitor is gone");
            false
        }
    }
}

/// Whether process `pid` is in a cgroup whose path names container `id`.
fn process_in_cgroup(pid: i32, id: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| t.contains(id))
}

/// Whether `pid` names a live (not zombie) process.
pub(crate) fn process_running(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z") | Some("X") | None
        ),
        Err(_) => false,
    }
}

/// Polls for the exit file until `timeout`; true when it appeared.
pub(crate) async fn wait_exit_file(path: &std::path::Path, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(2);
    loop {
        if path.exists() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Whether the kernel's OOM killer killed a process of the cgroup (`oom_kill` in the memory
/// controller's `memory.oom_control` on cgroup v1, `memory.events` on v2). The cgroup stays
/// until the runtime deletes the container, so this works for a container that just exited.
fn oom_killed(cgroups_path: &str) -> bool {
    if cgroups_path.is_empty() {
        return false;
    }
    let rel = cgroups_path.trim_start_matches('/');
    let base = std::path::Path::new("/sys/fs/cgroup");
    let candidates = [
        base.join("memory").join(rel).join("memory.oom_control"),
        base.join(rel).join("memory.events"),
    ];
    candidates.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_as_images_write_them() {
        for (s, want) in [
            ("SIGTERM", Some(libc::SIGTERM)),
            ("TERM", Some(libc::SIGTERM)),
            ("SIGUSR1", Some(libc::SIGUSR1)),
            ("10", Some(10)),
            ("SIGRTMIN+3", Some(libc::SIGRTMIN() + 3)),
            ("RTMAX-1", Some(libc::SIGRTMAX() - 1)),
            ("SIGWINCH", Some(libc::SIGWINCH)),
            ("0", None),
            ("65", None),
            ("SIGNOPE", None),
            ("sigterm", None),
            ("SIGRTMIN+99", None),
            ("SIGRTMINPLUS3", Some(libc::SIGRTMIN() + 3)),
            ("SIGRTMAXMINUS2", Some(libc::SIGRTMAX() - 2)),
            ("IOT", Some(libc::SIGABRT)),
        ] {
            assert_eq!(parse_signal(s), want, "{s}");
        }
    }

    #[test]
    fn every_cri_signal_name_round_trips() {
        let mut seen = 0;
        for v in 1..=200 {
            let Ok(sig) = cri::Signal::try_from(v) else {
                continue;
            };
            seen += 1;
            let name = sig.as_str_name();
            let n = parse_signal(name);
            assert!(n.is_some(), "{name}");
            // Aliases (SIGCLD, SIGIOT, SIGPOLL) come back under their canonical name.
            let back = cri::Signal::try_from(cri_signal(Some(name))).unwrap();
            assert_eq!(parse_signal(back.as_str_name()), n, "{name}");
        }
        assert!(seen > 60, "{seen}");
        assert_eq!(cri_signal(None), 0);
        assert_eq!(cri_signal(Some("TERM")), cri::Signal::Sigterm as i32);
        assert_eq!(cri_signal(Some("10")), cri::Signal::Sigusr1 as i32);
    }

    #[test]
    fn the_cri_stop_signal_overrides_the_images() {
        let r = |cri, image| recorded_stop_signal(cri, image).unwrap();
        assert_eq!(r(None, None), None);
        assert_eq!(r(None, Some("SIGUSR1")).as_deref(), Some("SIGUSR1"));
        assert_eq!(
            r(Some("SIGINT"), Some("SIGUSR1")).as_deref(),
            Some("SIGINT")
        );
        assert_eq!(
            r(Some("RUNTIME_DEFAULT"), Some("SIGUSR1")).as_deref(),
            Some("SIGUSR1")
        );
        let e = recorded_stop_signal(Some("SIGNOPE"), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("config.stop_signal"), "{e}");
        assert_eq!(r(None, Some("bogus")), None);
    }
}
