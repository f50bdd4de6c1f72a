//! `RemoveContainer`: kill if needed, `runtime delete`, unmount the rootfs, delete the
//! container's directories, release its name. Idempotent; unknown ids succeed, as the CRI
//! requires. The log file stays: kubelet owns log rotation and removal.

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::runtime::StopMode;
use crate::state::{Container, ContainerRecord};
use crate::{ids, rootfs, Krio};

impl Krio {
    /// CRI `RemoveContainer`.
    ///
    /// Errors: `InvalidArgument` for a malformed id; `Internal` listing every teardown step
    /// that failed (the container stays listed so a retry can finish).
    pub(crate) async fn remove_container(&self, req: cri::RemoveContainerRequest) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        let Some(c) = self.containers.find("container_id", &req.container_id)? else {
            return Ok(());
        };
        self.remove_container_obj(&c).await
    }

    /// Removes one container object; used by `RemoveContainer` and `RemovePodSandbox`.
    pub(crate) async fn remove_container_obj(&self, c: &Container) -> Result<()> {
        self.stop_container_obj(c, StopMode::Kill).await?;
        let rec = c.record.lock().await;
        self.teardown_container(&rec).await?;
        crate::state::kill_point("RemoveContainer:torn-down");
        self.containers.remove(rec.id());
        self.stats_cache.forget(rec.id());
        if let Some(sb) = self.sandboxes.find("pod_sandbox_id", rec.sandbox_id())? {
            let name = container_name(rec.config(), sb.snapshot().config());
            self.containers.release(&name, rec.id());
            // A create whose caller gave up leaves its result for a retry; a removed
            // container must never be handed to a later create of the same name.
            self.pending_containers.forget(&name, rec.id());
        }
        self.emit(&rec, cri::ContainerEventType::ContainerDeletedEvent);
        tracing::info!(container = %rec.id(), "container removed");
        Ok(())
    }

    /// Undoes everything `CreateContainer` may have done, whatever state it reached:
    /// `runtime delete --force`, unmount, delete the run and data directories. Every step
    /// runs; all failures are reported. Idempotent.
    pub(crate) async fn teardown_container(&self, rec: &ContainerRecord) -> Result<()> {
        let mut errors = Vec::new();
        if let Ok(runtime) = self.runtime(rec.runtime_handler()) {
            if let Err(e) = runtime
                .delete(rec.id(), &krio_oci::DeleteOptions { force: true })
                .await
            {
                if !matches!(e, krio_oci::RuntimeError::NotFound { .. }) {
                    errors.push(ServerError::from(e));
                }
            }
        }
        if rec.monitor_pid() > 0 {
            // The monitor exits once the container's init is gone; give it a moment so it
            // is not killed in the middle of writing the exit file.
            let exit = self.container_run_dir(rec.id()).join("exit.json");
            super::container_stop::wait_exit_file(&exit, std::time::Duration::from_secs(2)).await;
        }
        let run_dir = self.container_run_dir(rec.id());
        let data_dir = self.container_data_dir(rec.id());
        // Unmounts and directory removal are blocking work, kept off the async workers.
        crate::blocking(|| remove_container_files(&run_dir, &data_dir, &mut errors));
        ServerError::collect(errors)
    }
}

/// The reserved container name: `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`,
/// as containerd and CRI-O build it.
pub(crate) fn container_name(c: &cri::ContainerConfig, pod: &cri::PodSandboxConfig) -> String {
    let pod = pod.metadata.clone().unwrap_or_default();
    let meta = c.metadata.clone().unwrap_or_default();
    format!(
        "{}_{}_{}_{}_{}",
        meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
    )
}

/// Unmounts a container's rootfs and staged read-only sources, then (only when both worked)
/// deletes its run and data directories; failures are added to `errors`.
fn remove_container_files(
    run_dir: &std::path::Path,
    data_dir: &std::path::Path,
    errors: &mut Vec<ServerError>,
) {
    if let Err(e) = rootfs::unmount(&run_dir.join("rootfs")) {
        errors.push(e);
    }
    // Staged recursive read-only sources are host directories: never delete through them.
    // So are image volumes' read-only layer mounts (deleting through them would fail anyway),
    // and the id-mapped image layers a create killed halfway may have left.
    for dir in [
        rootfs::rro_staging_dir(run_dir),
        rootfs::image_volume_dir(run_dir),
        rootfs::idmap_staging_dir(run_dir),
        rootfs::idmap_volume_dir(run_dir),
    ] {
        if let Err(e) = rootfs::unmount_staging(&dir) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        for dir in [run_dir.to_path_buf(), data_dir.to_path_buf()] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(ServerError::io("removing directory", &dir, e)),
            }
        }
    }
}
