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
    pub(super) fn running_container(&self, id: &str) -> Result<crate::state::ContainerRecord> {
        let c = self.containers.get("container_id", id)?;
        let mut rec = c.snapshot();
        self.refresh_exit(&mut rec);
        if rec.state != ContainerState::Running {
            return Err(ServerError::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
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
        let runtime = self.runtime(&rec.runtime_handler)?;
        let out = runtime
            .exec(
                &rec.id,
                &krio_oci::ExecOptions {
                    args: req.cmd,
                    env: Vec::new(),
                    cwd: None,
                    timeout: (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64)),
                },
            )
            .await?;
        let (mut stdout, mut stderr) = (out.stdout, out.stderr);
        // kubelet accepts gRPC messages up to 16 MiB: keep each stream within half of that.
        stdout.truncate(EXEC_SYNC_STREAM_LIMIT);
        stderr.truncate(EXEC_SYNC_STREAM_LIMIT);
        Ok(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code: out.exit_code,
        })
    }

    /// CRI `ReopenContainerLog`: asks the container's monitor (SIGUSR1) to reopen `log_path`,
    /// after kubelet rotated it, and waits up to 5 s for the new file to appear.
    ///
    /// Errors: `InvalidArgument` for a malformed id; `NotFound` for an unknown container;
    /// `FailedPrecondition` unless it is running; `DeadlineExceeded` when the monitor does not
    /// reopen in time.
    pub(crate) async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        let rec = self.running_container(&req.container_id)?;
        if rec.log_path.is_empty() || rec.monitor_pid <= 0 {
            return Ok(());
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.monitor_pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .map_err(|e| ServerError::io("signalling monitor for", &rec.log_path, e.into()))?;
        let path = std::path::PathBuf::from(&rec.log_path);
        if super::container_stop::wait_exit_file(&path, Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(ServerError::DeadlineExceeded(format!(
                "log {} was not reopened within 5s",
                rec.log_path
            )))
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
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Err(ServerError::FailedPrecondition(format!(
                "container {} has exited",
                rec.id
            )));
        }
        let Some(linux) = req.linux else {
            return Ok(());
        };
        let resources = krio_oci::resources(Some(&linux), None, krio_oci::host_uses_cgroup_v2())?;
        self.runtime(&rec.runtime_handler)?
            .update(&rec.id, &resources)
            .await?;
        rec.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(linux);
        self.commit_container(&c, &rec)?;
        Ok(())
    }
}
