//! `ExecSync` and `ReopenContainerLog`.

use std::time::Duration;

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::state::ContainerState;
use crate::{ids, Krio};

/// The most bytes of stdout, and of stderr, an `ExecSync` reply carries: together they stay
/// under kubelet's 16 MiB message limit.
const EXEC_SYNC_STREAM_LIMIT: usize = 8 * 1024 * 1024 - 4096;

impl Krio {
    /// The current record of a running container.
    ///
    /// Errors: `NotFound` for an unknown id, `FailedPrecondition` unless it is running.
    pub(crate) fn running_container(&self, id: &str) -> Result<crate::state::ContainerRecord> {
        let c = self.containers.get("container_id", id)?;
        let mut rec = c.snapshot();
        self.refresh_exit(&mut rec);
        if rec.state() != ContainerState::Running {
            return Err(ServerError::FailedPrecondition(format!(
                "container {} is not running",
                rec.id()
            )));
        }
        Ok(rec)
    }

    /// CRI `ExecSync`: runs `cmd` in a running container and returns its stdout, stderr and
    /// exit code. `timeout` is in seconds; 0 means none. A command killed by the timeout
    /// reports exit code 137, as runc's SIGKILL does.
    ///
    /// Errors: `InvalidArgument` for a malformed id or an empty `cmd`; `NotFound` for an
    /// unknown container; `FailedPrecondition` unless it is running; `Internal` when the
    /// runtime fails to start the process.
    pub(crate) async fn exec_sync(
        &self,
        req: cri::ExecSyncRequest,
    ) -> Result<cri::ExecSyncResponse> {
        ids::validate("container_id", &req.container_id)?;
        if req.cmd.is_empty() || req.cmd[0].is_empty() {
            return Err(ServerError::invalid("cmd", "must name a command"));
        }
        let rec = self.running_container(&req.container_id)?;
        let runtime = self.runtime(rec.runtime_handler())?;
        // Output is read as it comes and cut at the limit while the command runs: kubelet
        // accepts gRPC messages up to 16 MiB, so each stream keeps at most half of that.
        let result = runtime
            .exec_limited(
                rec.id(),
                &krio_oci::ExecOptions {
                    args: req.cmd,
                    env: Vec::new(),
                    cwd: None,
                    timeout: (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64)),
                },
                EXEC_SYNC_STREAM_LIMIT,
            )
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => return Err(self.exec_failure(&rec, e)),
        };
        Ok(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    /// The error for an exec the runtime could not start. A container removed or stopped
    /// meanwhile makes runc fail with its own text (`lstat /proc/<pid>/ns/ipc: no such file`);
    /// the caller gets `NotFound` or `FailedPrecondition` for that instead of `Internal`.
    fn exec_failure(
        &self,
        rec: &crate::state::ContainerRecord,
        e: krio_oci::RuntimeError,
    ) -> ServerError {
        if matches!(e, krio_oci::RuntimeError::Timeout { .. }) {
            return e.into();
        }
        match self.containers.find("container_id", rec.id()) {
            Ok(None) => {
                return ServerError::NotFound {
                    kind: "container",
                    id: rec.id().to_string(),
                }
            }
            Ok(Some(c)) => {
                let mut now = c.snapshot();
                self.refresh_exit(&mut now);
                // A process in the middle of exiting has lost its namespaces before it shows
                // as a zombie: that is what runc tripped over.
                let dying = !std::path::Path::new(&format!("/proc/{}/ns/mnt", rec.pid())).exists();
                if now.state() != ContainerState::Running
                    || dying
                    || !super::container_stop::process_running(rec.pid())
                {
                    return ServerError::FailedPrecondition(format!(
                        "container {} is not running",
                        rec.id()
                    ));
                }
            }
            Err(_) => {}
        }
        if matches!(e, krio_oci::RuntimeError::NotFound { .. }) {
            return ServerError::NotFound {
                kind: "container",
                id: rec.id().to_string(),
            };
        }
        e.into()
    }

    /// CRI `ReopenContainerLog`: asks the container's monitor (SIGUSR1) to reopen `log_path`,
    /// after kubelet rotated it, and waits up to 5 s for the monitor's answer (its
    /// `log-reopen.status` file).
    ///
    /// Errors: `InvalidArgument` for a malformed id; `NotFound` for an unknown container;
    /// `FailedPrecondition` unless it is running, or when the monitor could not open the path
    /// as a regular file (a link, FIFO or directory there; it keeps the old file then);
    /// `DeadlineExceeded` when the monitor does not answer in time.
    pub(crate) async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        let rec = self.running_container(&req.container_id)?;
        if rec.log_path().is_empty() || rec.monitor_pid() <= 0 {
            return Ok(());
        }
        let status_file = krio_monitor::log_reopen_status_path(
            &self.container_run_dir(rec.id()).join("exit.json"),
        );
        match std::fs::remove_file(&status_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServerError::io("removing", &status_file, e)),
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.monitor_pid()),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .map_err(|e| ServerError::io("signalling monitor for", rec.log_path(), e.into()))?;
        if !super::container_stop::wait_exit_file(&status_file, Duration::from_secs(5)).await {
            // A monitor started by an older krio answers only by reopening: a regular file at
            // the path is its answer.
            if std::fs::symlink_metadata(rec.log_path()).is_ok_and(|m| m.is_file()) {
                return Ok(());
            }
            return Err(ServerError::DeadlineExceeded(format!(
                "log {} was not reopened within 5s",
                rec.log_path()
            )));
        }
        let answer = std::fs::read_to_string(&status_file)
            .map_err(|e| ServerError::io("reading", &status_file, e))?;
        match answer.trim_end().strip_prefix("error: ") {
            None => Ok(()),
            Some(reason) => Err(ServerError::FailedPrecondition(format!(
                "log_path {}: {reason}; the container keeps logging to the old file",
                rec.log_path()
            ))),
        }
    }
}

impl Krio {
    /// CRI `UpdateContainerResources`: applies new Linux resources (CPU shares, quota, period,
    /// cpuset, memory limit) to a created or running container through `runtime update`, and
    /// records them so `ContainerStatus.resources` shows them.
    ///
    /// Errors: `InvalidArgument` for a malformed id or negative values (naming the field);
    /// `NotFound` for an unknown container; `FailedPrecondition` when it has exited;
    /// `Internal` when the runtime refuses.
    pub(crate) async fn update_container_resources(
        &self,
        req: cri::UpdateContainerResourcesRequest,
    ) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        let c = self.containers.get("container_id", &req.container_id)?;
        let mut rec = c.record.lock().await;
        self.refresh_exit(&mut rec);
        if !matches!(
            rec.state(),
            ContainerState::Created | ContainerState::Running
        ) {
            return Err(ServerError::FailedPrecondition(format!(
                "container {} has exited",
                rec.id()
            )));
        }
        let Some(linux) = req.linux else {
            return Ok(());
        };
        let resources = krio_oci::resources(Some(&linux), None, krio_oci::host_uses_cgroup_v2())?;
        self.runtime(rec.runtime_handler())?
            .update(rec.id(), &resources)
            .await?;
        rec.update_resources(linux);
        self.commit_container(&c, &rec).await?;
        Ok(())
    }
}
