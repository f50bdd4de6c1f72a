//! `StartContainer`: `runtime start` on a created container, or, for one created from a
//! checkpoint archive, its monitor running `runtime restore`.

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::state::{now_ns, ContainerState};
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
        if rec.state != ContainerState::Created {
            return Err(ServerError::FailedPrecondition(format!(
                "container {} is {:?}, not Created",
                rec.id, rec.state
            )));
        }
        if let Some(image) = rec.restore_from.clone() {
            // Created from a checkpoint: the monitor restores the processes, running.
            let log_directory = sandbox.snapshot().config.log_directory;
            self.spawn_monitor(&mut rec, &log_directory, Some(image))
                .await?;
            rec.restore_from = None;
            rec.started_at = now_ns();
            rec.state = ContainerState::Running;
            self.refresh_exit(&mut rec);
            self.commit_container(&c, &rec).await?;
            self.emit(&rec, cri::ContainerEventType::ContainerStartedEvent);
            drop(rec);
            self.watch_exit(c.clone());
            tracing::info!(container = %c.id, "container restored from its checkpoint");
            return Ok(());
        }
        let runtime = self.runtime(&rec.runtime_handler)?;
        runtime.start(&rec.id).await?;
        crate::state::kill_point("StartContainer:runtime-started");
        rec.started_at = now_ns();
        rec.state = ContainerState::Running;
        // A very short-lived process may already have exited; the exit file says so.
        self.refresh_exit(&mut rec);
        self.commit_container(&c, &rec).await?;
        self.emit(&rec, cri::ContainerEventType::ContainerStartedEvent);
        tracing::info!(container = %rec.id, "container started");
        Ok(())
    }
}
