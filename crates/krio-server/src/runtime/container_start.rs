//! `StartContainer`: `runtime start` on a created container, or, for one created from a
//! checkpoint archive, its monitor running `runtime restore`.

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::state::now_ns;
use crate::{ids, Krio};

impl Krio {
    /// CRI `StartContainer`.
    ///
    /// Errors: `InvalidArgument` for a malformed id, `NotFound` for an unknown one,
    /// `FailedPrecondition` unless the container is in the Created state and its pod Ready, `Internal` when the
    /// runtime fails (for a restore, `runtime restore` with CRIU's reason; the container then
    /// stays as it was, or Exited when the monitor recorded the failure).
    pub(crate) async fn start_container(
        self: &std::sync::Arc<Self>,
        req: cri::StartContainerRequest,
    ) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        let c = self.containers.get("container_id", &req.container_id)?;
        // The pod's gate, shared: a stop of the pod waits for this start, or runs first and
        // this start finds the pod not ready (and the container stopped).
        let sandbox = self
            .sandboxes
            .find("pod_sandbox_id", &c.sandbox_id)?
            .ok_or_else(|| {
                ServerError::FailedPrecondition(format!(
                    "sandbox {} of container {} is gone",
                    c.sandbox_id, c.id
                ))
            })?;
        let _gate = sandbox.gate.read().await;
        sandbox.ensure_ready()?;
        let mut rec = c.record.lock().await;
        self.refresh_exit(&mut rec);
        rec.check_start()?;
        if let Some(image) = rec.restore_from().map(std::path::Path::to_path_buf) {
            // Created from a checkpoint: the monitor restores the processes, running.
            let log_directory = sandbox.snapshot().config().log_directory.clone();
            self.spawn_monitor(&mut rec, &log_directory, Some(image))
                .await?;
            rec.mark_started(now_ns())?;
            self.refresh_exit(&mut rec);
            self.commit_container(&c, &rec).await?;
            self.emit(&rec, cri::ContainerEventType::ContainerStartedEvent);
            drop(rec);
            self.watch_exit(c.clone());
            self.release_rro_staging(&c.id);
            tracing::info!(container = %c.id, "container restored from its checkpoint");
            return Ok(());
        }
        if rec.subcontainer() {
            self.start_in_runtime_sandbox(&rec).await?;
        } else {
            let runtime = self.runtime(rec.runtime_handler())?;
            runtime.start(rec.id()).await?;
        }
        crate::state::kill_point("StartContainer:runtime-started");
        // Whatever still needed the recursive read-only staging has it bound now.
        self.release_rro_staging(rec.id());
        rec.mark_started(now_ns())?;
        // A very short-lived process may already have exited; the exit file says so.
        self.refresh_exit(&mut rec);
        self.commit_container(&c, &rec).await?;
        self.emit(&rec, cri::ContainerEventType::ContainerStartedEvent);
        tracing::info!(container = %rec.id(), "container started");
        Ok(())
    }

    /// Starts a container that joins its pod's runtime sandbox: its monitor runs
    /// `runtime start` (so the container gets the monitor's stdio) when sent SIGUSR2, and
    /// answers in `start.status` beside the exit file.
    ///
    /// Errors: `Internal` naming the runtime's error, or when the monitor does not answer
    /// within the runtime's create timeout plus 10 s.
    async fn start_in_runtime_sandbox(&self, rec: &crate::state::ContainerRecord) -> Result<()> {
        let run_dir = self.container_run_dir(rec.id());
        let status_file = krio_monitor::start_status_path(&run_dir.join("exit.json"));
        match std::fs::remove_file(&status_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServerError::io("removing", &status_file, e)),
        }
        if rec.monitor_pid() <= 0 || !super::process_running(rec.monitor_pid()) {
            return Err(ServerError::FailedPrecondition(format!(
                "container {}: its monitor (pid {}) is gone",
                rec.id(),
                rec.monitor_pid()
            )));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.monitor_pid()),
            nix::sys::signal::Signal::SIGUSR2,
        )
        .map_err(|e| ServerError::io("signalling the monitor of", &run_dir, e.into()))?;
        let timeout =
            std::time::Duration::from_secs(krio_monitor::DEFAULT_CREATE_TIMEOUT_SECS + 10);
        if !super::container_stop::wait_exit_file(&status_file, timeout).await {
            return Err(ServerError::Internal(format!(
                "container {}: the monitor did not report the start within {}s",
                rec.id(),
                timeout.as_secs()
            )));
        }
        let answer = std::fs::read_to_string(&status_file)
            .map_err(|e| ServerError::io("reading", &status_file, e))?;
        match answer.trim_end().strip_prefix("error: ") {
            None => Ok(()),
            Some(e) => Err(ServerError::Internal(format!(
                "starting container {} in its pod's runtime sandbox: {e}",
                rec.id()
            ))),
        }
    }
}
