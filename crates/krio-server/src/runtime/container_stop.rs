//! `StopContainer`: the stop signal, then SIGKILL after the timeout. Idempotent: stopping an
//! exited or unknown container succeeds, as the CRI requires.

use std::time::Duration;

use krio_cri::v1 as cri;
use krio_oci::{DeleteOptions, KillOptions};

use crate::error::{Result, ServerError};
use crate::state::{Container, ContainerRecord, ContainerState};
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
    pub(crate) async fn stop_container_obj(&self, c: &Container, mode: StopMode) -> Result<()> {
        let mut rec = c.record.lock().await;
        self.refresh_exit(&mut rec);
        if matches!(rec.state, ContainerState::Exited | ContainerState::Unknown) {
            return Ok(());
        }
        let runtime = self.runtime(&rec.runtime_handler)?;
        let exit_file = self.container_run_dir(&rec.id).join("exit.json");
        if let StopMode::Graceful(timeout) = mode {
            let signal = stop_signal(&rec);
            match runtime
                .kill(&rec.id, &KillOptions { signal, all: false })
                .await
            {
                Ok(()) => {
                    if wait_exit(&exit_file, &rec, timeout).await {
                        return self.finish_stop(c, &mut rec);
                    }
                }
                Err(e) => tracing::debug!(container = %rec.id, error = %e, "stop signal failed"),
            }
        }
        if let Err(e) = runtime
            .kill(
                &rec.id,
                &KillOptions {
                    signal: libc::SIGKILL,
                    all: true,
                },
            )
            .await
        {
            // The process may have exited between the check and the kill.
            if !exit_file.exists() && rec.state == ContainerState::Running {
                return Err(e.into());
            }
        }
        if !wait_exit(&exit_file, &rec, KILL_GRACE).await {
            if rec.state == ContainerState::Created {
                // A created container's init waits in the runtime; delete reaps it.
                runtime
                    .delete(&rec.id, &DeleteOptions { force: true })
                    .await?;
                if wait_exit(&exit_file, &rec, KILL_GRACE).await {
                    return self.finish_stop(c, &mut rec);
                }
            }
            return Err(ServerError::DeadlineExceeded(format!(
                "container {} did not exit {}s after SIGKILL",
                rec.id,
                KILL_GRACE.as_secs()
            )));
        }
        self.finish_stop(c, &mut rec)
    }

    fn finish_stop(&self, c: &Container, rec: &mut ContainerRecord) -> Result<()> {
        self.refresh_exit(rec);
        self.commit_container(c, rec)?;
        tracing::info!(container = %rec.id, exit_code = rec.exit_code, "container stopped");
        Ok(())
    }

    /// Moves a Created/Running record to Exited when the monitor's exit file exists. Returns
    /// whether the record changed.
    pub(crate) fn refresh_exit(&self, rec: &mut ContainerRecord) -> bool {
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return false;
        }
        let path = self.container_run_dir(&rec.id).join("exit.json");
        match krio_monitor::read_exit_file(&path) {
            Ok(Some(exit)) => {
                rec.state = ContainerState::Exited;
                rec.exit_code = exit.exit_code;
                rec.finished_at = exit.finished_at_ns;
                if rec.started_at == 0 {
                    rec.started_at = rec.finished_at;
                }
                let oom = exit.oom_killed
                    || (exit.exit_code == 128 + libc::SIGKILL && oom_killed(&rec.cgroups_path));
                rec.reason = if oom {
                    "OOMKilled"
                } else if exit.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string();
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(container = %rec.id, error = %e, "unreadable exit file");
                false
            }
        }
    }
}

/// The container's stop signal: the CRI `config.stop_signal` when set (not
/// `RUNTIME_DEFAULT`), else the image's `StopSignal`, else SIGTERM.
pub(crate) fn stop_signal(rec: &ContainerRecord) -> i32 {
    super::signals::number(rec.config.stop_signal)
        .or_else(|| rec.stop_signal.as_deref().and_then(parse_signal))
        .unwrap_or(libc::SIGTERM)
}

/// Parses `SIGTERM`, `TERM` or `15`.
fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim_start_matches("SIG");
    let sig = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    };
    Some(sig)
}

/// Waits for the container's exit: true when the monitor wrote the exit file within
/// `timeout`. When the monitor itself is gone (killed, OOM) and so is the container's init,
/// nobody will write it: krio records the exit with code 255 ("unknown") itself, so the
/// container can still be stopped and removed.
async fn wait_exit(exit_file: &std::path::Path, rec: &ContainerRecord, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(2);
    loop {
        if exit_file.exists() {
            return true;
        }
        if rec.monitor_pid > 0 && !process_running(rec.monitor_pid) && !process_running(rec.pid) {
            // The monitor may have written the file just before exiting.
            if exit_file.exists() {
                return true;
            }
            tracing::warn!(container = %rec.id, "monitor gone without an exit status; recording 255");
            let status = krio_monitor::ExitStatus {
                exit_code: 255,
                signal: None,
                finished_at_ns: crate::state::now_ns(),
                oom_killed: false,
            };
            return krio_monitor::write_exit_file(exit_file, &status).is_ok();
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
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
