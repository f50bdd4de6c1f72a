//! `UpdatePodSandboxResources`: kubelet tells the runtime the pod-level resources after it
//! has resized the pod's cgroup (in-place pod resize). Best effort, as the CRI says: krio
//! records them in the sandbox record, where `PodSandboxStatus` (verbose info) and later
//! calls see them; the pod cgroup itself is kubelet's to resize.

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::{ids, Krio};

impl Krio {
    /// CRI `UpdatePodSandboxResources`: replaces the recorded `linux.overhead` and
    /// `linux.resources` of the sandbox's config with those given (an unset field leaves the
    /// recorded value as it is), and persists the record.
    ///
    /// Errors: `InvalidArgument` for a malformed id; `NotFound` for an unknown sandbox;
    /// `FailedPrecondition` when the sandbox is not ready.
    pub(crate) async fn update_pod_sandbox_resources(
        &self,
        req: cri::UpdatePodSandboxResourcesRequest,
    ) -> Result<()> {
        ids::validate("pod_sandbox_id", &req.pod_sandbox_id)?;
        let sandbox = self.sandboxes.get("pod_sandbox_id", &req.pod_sandbox_id)?;
        let mut rec = sandbox.record.lock().await;
        if rec.state() != crate::state::SandboxState::Ready {
            return Err(ServerError::FailedPrecondition(format!(
                "sandbox {} is not ready",
                rec.id()
            )));
        }
        if req.overhead.is_none() && req.resources.is_none() {
            return Ok(());
        }
        rec.update_resources(req.overhead, req.resources);
        self.commit_sandbox(&sandbox, &rec).await?;
        tracing::info!(sandbox = %rec.id(), "pod-level resources recorded");
        Ok(())
    }
}
