//! `StopPodSandbox`: kill every container of the pod, tear down the network, unpin the
//! namespaces. Idempotent; unknown ids succeed, as the CRI requires ("must not return an error
//! if all relevant resources have already been reclaimed"). containerd 1.6 answers NotFound
//! here; krio follows the CRI text instead.

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::runtime::StopMode;
use crate::state::Sandbox;
use crate::{ids, Krio};

impl Krio {
    /// CRI `StopPodSandbox`.
    ///
    /// Errors: `InvalidArgument` for an empty or malformed id; `Internal` listing every
    /// teardown step that failed (the others still ran).
    pub(crate) async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> Result<()> {
        ids::validate("pod_sandbox_id", &req.pod_sandbox_id)?;
        let Some(sandbox) = self.sandboxes.find("pod_sandbox_id", &req.pod_sandbox_id)? else {
            return Ok(());
        };
        let _gate = sandbox.gate.write().await;
        self.stop_sandbox(&sandbox).await
    }

    /// Stops `sandbox`: containers first (forcibly, as the CRI asks), then the network. The
    /// caller holds the pod's gate exclusively, so no create or start of a container of the
    /// pod runs meanwhile.
    pub(crate) async fn stop_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        let mut errors = Vec::new();
        for c in self.containers.all() {
            if c.sandbox_id == sandbox.id {
                if let Err(e) = self.stop_container_obj(&c, StopMode::Kill).await {
                    errors.push(e);
                }
            }
        }
        let mut rec = sandbox.record.lock().await;
        crate::state::kill_point("StopPodSandbox:containers-stopped");
        errors.extend(self.teardown_sandbox_network(&rec).await);
        crate::state::kill_point("StopPodSandbox:network-down");
        if rec.mark_not_ready() {
            if let Err(e) = self.commit_sandbox(sandbox, &rec).await {
                errors.push(e);
            }
        }
        tracing::info!(sandbox = %rec.id(), failures = errors.len(), "sandbox stopped");
        ServerError::collect(errors)
    }
}
