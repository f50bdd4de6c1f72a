//! `StartContainer`: `runtime start` on a created container.

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::state::{now_ns, ContainerState};
use crate::{ids, Krio};

impl Krio {
    /// CRI `StartContainer`.
    ///
    /// Errors: `InvalidArgument` for a malformed id, `NotFound` for an unknown one,
    /// `FailedPrecondition` unless the container is in the Created state, `Internal` when the
    /// runtime fails.
    pub(crate) async fn start_container(&self, req: cri::StartContainerRequest) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        let c = self.containers.get("container_id", &req.container_id)?;
        let mut rec = c.record.lock().await;
        self.refresh_exit(&mut rec);
        if rec.state != ContainerState::Created {
            return Err(ServerError::FailedPrecondition(format!(
                "container {} is {:?}, not Created",
                rec.id, rec.state
            )));
        }
        let runtime = self.runtime(&rec.runtime_handler)?;
        runtime.start(&rec.id).await?;
        rec.started_at = now_ns();
        rec.state = ContainerState::Running;
        // A very short-lived process may already have exited; the exit file says so.
        self.refresh_exit(&mut rec);
        self.commit_container(&c, &rec)?;
        self.emit(&rec, cri::ContainerEventType::ContainerStartedEvent);
        tracing::info!(container = %rec.id, "container started");
        Ok(())
    }
}
