//! `RemovePodSandbox`: stop the pod if needed, remove every container of it, delete its
//! directories and release its name. Idempotent; unknown ids succeed, as the CRI requires.

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::state::SandboxRecord;
use crate::{ids, Krio};

impl Krio {
    /// CRI `RemovePodSandbox`.
    ///
    /// Errors: `InvalidArgument` for an empty or malformed id; `Internal` listing every step
    /// that failed. The sandbox stays listed (NotReady) when a step failed, so a retry can
    /// finish the job.
    pub(crate) async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> Result<()> {
        ids::validate("pod_sandbox_id", &req.pod_sandbox_id)?;
        let Some(sandbox) = self.sandboxes.find("pod_sandbox_id", &req.pod_sandbox_id)? else {
            return Ok(());
        };
        // Exclusively, for the whole removal: no container of the pod is created or started
        // meanwhile.
        let _gate = sandbox.gate.write().await;
        let mut errors = Vec::new();
        if let Err(e) = self.stop_sandbox(&sandbox).await {
            errors.push(e);
        }
        for c in self.containers.all() {
            if c.sandbox_id == sandbox.id {
                if let Err(e) = self.remove_container_obj(&c).await {
                    errors.push(e);
                }
            }
        }
        if !errors.is_empty() {
            return ServerError::collect(errors);
        }
        crate::state::kill_point("RemovePodSandbox:containers-removed");
        let rec = sandbox.record.lock().await;
        // Cgroup and directory removal are blocking work, kept off the async workers.
        crate::blocking(|| {
            self.remove_pod_cgroup(&rec);
            for dir in [
                self.sandbox_run_dir(rec.id()),
                self.cfg.root.join("sandboxes").join(rec.id()),
            ] {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => errors.push(ServerError::io("removing directory", &dir, e)),
                }
            }
        });
        crate::state::kill_point("RemovePodSandbox:cgroup-and-dirs-removed");
        if errors.is_empty() {
            self.sandboxes.remove(rec.id());
            let name = SandboxRecord::reserved_name(rec.config());
            self.sandboxes.release(&name, rec.id());
            self.pending_sandboxes.forget(&name, rec.id());
            self.stats_cache
                .forget(&super::stats::pod_cpu_key(rec.id()));
            tracing::info!(sandbox = %rec.id(), "sandbox removed");
        }
        ServerError::collect(errors)
    }

    /// Whether krio made the pod cgroup (the pod named no `cgroup_parent`): kubelet creates and
    /// removes the cgroups it names itself.
    pub(crate) fn owns_pod_cgroup(&self, rec: &SandboxRecord) -> bool {
        rec.cgroup_parent()
            .starts_with(&format!("{}/pod-", self.cfg.cgroup_parent))
    }

    /// Removes the pod cgroup krio made under its own `cgroup_parent` (kubelet-given parents
    /// belong to kubelet). Every v1 controller hierarchy and the unified one are tried;
    /// absent directories are fine.
    pub(crate) fn remove_pod_cgroup(&self, rec: &SandboxRecord) {
        if !self.owns_pod_cgroup(rec) {
            return;
        }
        let rel = rec.cgroup_parent().trim_start_matches('/');
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path().join(rel));
            }
        }
        let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(rel));
    }
}
