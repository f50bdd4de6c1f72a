//! `CreateContainer` from a checkpoint archive (CRI-O's restore): when `config.image.image`
//! is an absolute path, it names a checkpoint archive written by `CheckpointContainer`
//! (krio's or CRI-O's; kubelet's checkpoint API hands them out). The archive is unpacked
//! into a scratch directory under krio's root and checked ([`checkpoint_archive::unpack`]:
//! member names and types, `config.dump`, `spec.dump`, `deleted.files`, `bind.mounts`, a CRIU
//! image in `checkpoint/`) and matched against the request ([`Krio::restored_config`]), then
//! `criu check` must pass, before anything else is made.
//!
//! The container is then created from the checkpoint's image with
//! [`Krio::restored_config`]: `rootfs-diff.tar` is unpacked into its new writable layer,
//! `deleted.files` removed through the overlay, and the CRIU image moved to its data
//! directory; no monitor runs yet. StartContainer spawns the monitor with `runtime restore`
//! ([`krio_monitor::MonitorConfig::restore_from`]), which brings the processes back running.
//! The scratch directory is removed on every path.

use std::path::{Path, PathBuf};

use krio_cri::v1 as cri;

use crate::checkpoint_archive::{self, Unpacked};
use crate::error::{Result, ServerError};
use crate::{ids, Krio};

/// The request field that names the archive.
pub(crate) const FIELD: &str = "config.image.image";

/// Whether `image` (CRI `ImageSpec.image`) names a checkpoint archive rather than an image:
/// an absolute path (image references never start with `/`).
pub(crate) fn is_archive(image: &str) -> bool {
    image.starts_with('/')
}

/// Where restores unpack archives: `<root>/restore-scratch/<random>`.
pub(crate) fn scratch_root(root: &Path) -> PathBuf {
    root.join("restore-scratch")
}

/// Mount destinations of a checkpoint's spec that a restore sets up afresh rather than
/// asking the request for (CRI-O's list, with `/etc/hosts`, which krio bind-mounts from the
/// pod like the hostname and resolv.conf).
const RENEWED_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/dev/shm",
    "/etc/resolv.conf",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/passwd",
    "/etc/group",
    "/run/secrets",
    "/run/.containerenv",
];

impl Krio {
    /// The config of a container restored from `u`, as CRI-O builds it: the request's
    /// metadata, labels, annotations, mounts, log path, stdin and Linux settings; the image of
    /// `config.dump` (`rootfsImageName` when present here, else `rootfsImageRef`); the
    /// process (command, environment, working directory) of `spec.dump`, which CRIU's
    /// restore must find unchanged. Every bind mount of the checkpoint (but those of
    /// [`RENEWED_MOUNTS`]) must be in the request's mounts, so an archive can never mount a
    /// host path the request did not ask for.
    ///
    /// Errors: `InvalidArgument` naming `config.mounts` with the destinations the request
    /// lacks; `FailedPrecondition` for a checkpoint of a container with a terminal (not
    /// restored by krio).
    pub(crate) fn restored_config(
        &self,
        req: &cri::ContainerConfig,
        u: &Unpacked,
    ) -> Result<cri::ContainerConfig> {
        let process = u.spec.process().clone().unwrap_or_default();
        if process.terminal() == Some(true) {
            return Err(ServerError::FailedPrecondition(
                "the checkpoint is of a container with a terminal, which krio does not restore"
                    .to_string(),
            ));
        }
        let missing: Vec<String> = u
            .spec
            .mounts()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|m| m.typ().as_deref() == Some("bind"))
            .map(|m| m.destination().to_string_lossy().into_owned())
            .filter(|d| !RENEWED_MOUNTS.contains(&d.as_str()))
            .filter(|d| !req.mounts.iter().any(|m| &m.container_path == d))
            // `bind.mounts` says what the source was (a file or a directory).
            .map(
                |d| match u.bind_mounts.iter().find(|b| b.destination == d) {
                    Some(b) => format!("{d} (a {})", b.file_type),
                    None => d,
                },
            )
            .collect();
        if !missing.is_empty() {
            return Err(ServerError::invalid(
                "config.mounts",
                format!(
                    "the checkpoint expects bind mounts at {} (the request must name them)",
                    missing.join(", ")
                ),
            ));
        }
        let c = &u.config;
        let image = if !c.rootfs_image_name.is_empty()
            && (c.rootfs_image_ref.is_empty() || self.resolve_image(&c.rootfs_image_name).is_some())
        {
            c.rootfs_image_name.clone()
        } else {
            c.rootfs_image_ref.clone()
        };
        let mut out = req.clone();
        out.image = Some(cri::ImageSpec {
            image,
            ..Default::default()
        });
        out.command = process.args().clone().unwrap_or_default();
        out.args = Vec::new();
        out.working_dir = process.cwd().to_string_lossy().into_owned();
        out.envs = process
            .env()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                cri::KeyValue {
                    key: k.to_string(),
                    value: v.as_bytes().to_vec(),
                }
            })
            .collect();
        out.tty = false;
        crate::validate::container_config(&out)?;
        Ok(out)
    }

    /// Unpacks and checks the checkpoint archive at `archive` into a fresh scratch directory.
    /// Returns the unpacked archive; the caller removes its `dir` ([`remove_scratch`]). On
    /// error nothing is left behind.
    ///
    /// Errors: `NotFound` when no file is at `archive`; `InvalidArgument` naming
    /// `config.image.image` for an archive that is malformed or unsafe.
    pub(crate) async fn unpack_checkpoint(&self, archive: &str) -> Result<Unpacked> {
        let path = PathBuf::from(archive);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(ServerError::NotFound {
                kind: "checkpoint archive",
                id: archive.to_string(),
            });
        }
        let scratch = scratch_root(&self.cfg.root).join(&ids::new_id()?[..16]);
        let unpacked = crate::blocking(|| {
            std::fs::create_dir_all(&scratch)
                .map_err(|e| ServerError::io("creating directory", &scratch, e))?;
            checkpoint_archive::unpack(&path, &scratch, FIELD)
        });
        if unpacked.is_err() {
            remove_scratch(&scratch);
        }
        unpacked
    }
}

/// Removes a restore's scratch directory (logged when it fails).
pub(crate) fn remove_scratch(dir: &Path) {
    crate::blocking(|| match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %dir.display(), error = %e, "removing restore scratch directory");
        }
        _ => {}
    })
}
