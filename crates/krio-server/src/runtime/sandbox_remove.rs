//! `RemovePodSandbox`: stop the pod if needed, remove every container of it, delete its
//! directories and release its name. Idempotent; unknown ids succeed, as the CRI requires.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
            if let Err(e) = self.remove_pod_cgroup(&rec) {
                errors.push(e);
            }
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
    /// belong to kubelet), in every hierarchy it was made in: each v1 controller and the
    /// unified one of a hybrid host, or the root of a v2-only host. Whatever a runtime left below it (the
    /// cgroup of a runsc pod's root container, a container cgroup a runtime had not removed
    /// yet) goes too, deepest first: every container of the pod is gone by then, so nothing
    /// else owns them. A cgroup whose last processes are still exiting refuses `rmdir` with
    /// `EBUSY` for a moment: each `rmdir` is retried until [`POD_CGROUP_REMOVAL_TIMEOUT`] has
    /// passed. Absent directories are fine. Blocking: call it off the async workers.
    ///
    /// Errors: [`ServerError::Io`] naming the first directory that could not be removed (still
    /// busy at the deadline, or another failure than "absent"); the other hierarchies are still
    /// tried.
    pub(crate) fn remove_pod_cgroup(&self, rec: &SandboxRecord) -> Result<()> {
        if !self.owns_pod_cgroup(rec) {
            return Ok(());
        }
        let rel = rec.cgroup_parent().trim_start_matches('/');
        let root = Path::new(CGROUP_ROOT);
        // The hierarchies `create_pod_cgroup` made it in: the root of a v2-only host, else
        // every directory under the root (v1 controllers, a hybrid host's unified one).
        let dirs: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
            vec![root.join(rel)]
        } else {
            std::fs::read_dir(root)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path().join(rel))
                        .collect()
                })
                .unwrap_or_default()
        };
        let deadline = Instant::now() + POD_CGROUP_REMOVAL_TIMEOUT;
        let mut first_error = None;
        for dir in dirs {
            if let Err(e) = remove_cgroup_tree(&dir, deadline) {
                tracing::warn!(sandbox = %rec.id(), cgroup = %dir.display(), error = %e, "removing pod cgroup");
                first_error.get_or_insert(ServerError::io("removing pod cgroup", &dir, e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long [`Krio::remove_pod_cgroup`] keeps retrying an `rmdir` that fails with `EBUSY` (the
/// cgroup's last processes still exiting) before it reports the cgroup as left.
pub(crate) const POD_CGROUP_REMOVAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait between two `rmdir` attempts of a busy cgroup.
const BUSY_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// Removes cgroup directory `dir` and every cgroup below it, deepest first, with `rmdir` only
/// (a cgroup's control files are not files to delete; `rmdir` of a cgroup that still has
/// processes fails, so nothing running is touched). `EBUSY` is retried until `deadline`. An
/// absent `dir` is success.
///
/// Errors: the first `rmdir` (or directory listing) failure other than "absent", `EBUSY` once
/// `deadline` has passed.
fn remove_cgroup_tree(dir: &Path, deadline: Instant) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut result = Ok(());
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Err(err) = remove_cgroup_tree(&e.path(), deadline) {
                result = result.and(Err(err));
            }
        }
    }
    result?;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(BUSY_RETRY_INTERVAL);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_tree_is_removed_deepest_first_and_an_absent_one_is_fine() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("krio/pod-1");
        std::fs::create_dir_all(pod.join("c1/sub")).unwrap();
        std::fs::create_dir_all(pod.join("c2")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        remove_cgroup_tree(&pod, deadline).unwrap();
        assert!(!pod.exists());
        // The parent stays: it is not the pod's.
        assert!(root.path().join("krio").is_dir());
        remove_cgroup_tree(&pod, deadline).unwrap();
    }

    #[test]
    fn a_cgroup_that_cannot_go_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("pod-1");
        std::fs::create_dir_all(&pod).unwrap();
        // Outside cgroupfs a file in the directory makes rmdir fail (ENOTEMPTY): not EBUSY,
        // so it is reported at once.
        std::fs::write(pod.join("f"), b"").unwrap();
        let err = remove_cgroup_tree(&pod, Instant::now()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
        assert!(pod.is_dir());
    }
}
