//! `CheckpointContainer`: a checkpoint of a running container, through the OCI runtime's
//! `checkpoint` and CRIU, written as the archive CRI-O and kubelet's checkpoint API use
//! ([`crate::checkpoint_archive`]).
//!
//! krio first asks `criu check` whether CRIU works on this host and answers
//! `FailedPrecondition` with CRIU's own reason when it does not (Debian's CRIU 3.17.1 cannot
//! read the vDSO of the kernels this project runs on), before anything is made. Otherwise:
//! the container is paused (so the files in the archive match the processes), `runtime
//! checkpoint --leave-running` dumps it into a staging directory under its run directory,
//! `config.dump`, `spec.dump`, `bind.mounts`, `rootfs-diff.tar`, `deleted.files` and the log
//! are added there, the archive is written to a temp file beside `location` and renamed over
//! it, the container is resumed and the staging directory removed, whatever happened.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use krio_cri::v1 as cri;

use crate::checkpoint_archive as archive;
use crate::error::{Result, ServerError};
use crate::state::ContainerRecord;
use crate::{ids, Krio};

/// How long `criu check` may take.
const CRIU_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `runtime checkpoint` may take when the request sets no `timeout`.
const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// **Test-only hook.** When `KRIO_TEST_CHECKPOINT_WITHOUT_CRIU=1`, `CheckpointContainer`
/// skips `criu check` and the runtime's checkpoint and writes the archive with an *empty*
/// `checkpoint/` directory (no CRIU image), so the archive writer can be tested end to end
/// on a host without a working CRIU. Such an archive says what it is: a restore refuses it
/// (`checkpoint/` has no `inventory.img`). A restore (CreateContainer from an archive) skips
/// `criu check` too, so its steps up to `runtime restore` can be tested; that step still
/// needs CRIU and fails without it. Ignored unless set to `1`.
pub const TEST_CHECKPOINT_WITHOUT_CRIU_ENV: &str = "KRIO_TEST_CHECKPOINT_WITHOUT_CRIU";

pub(crate) fn test_without_criu() -> bool {
    std::env::var(TEST_CHECKPOINT_WITHOUT_CRIU_ENV).is_ok_and(|v| v == "1")
}

impl Krio {
    /// CRI `CheckpointContainer`: writes a checkpoint archive of the running container
    /// `container_id` at `location` (an absolute path whose directory exists). `timeout` is
    /// in seconds (0: ten minutes); it bounds the runtime's checkpoint, and an archive is not
    /// begun once it has passed. An existing regular file at `location` is replaced, as
    /// CRI-O replaces it (kubelet names each checkpoint with its time); the replacement is
    /// logged, and anything else there (a directory, a link, a device) is refused.
    ///
    /// Errors: `InvalidArgument` for a malformed id, a negative `timeout`, or a `location`
    /// that is empty, relative, in a directory that does not exist, or names something other
    /// than a regular file; `NotFound` for an unknown container; `FailedPrecondition` unless
    /// the container is running, when `criu` is not installed, or when `criu check` fails
    /// (the message quotes its reason); `DeadlineExceeded` when `timeout` passes;
    /// `Internal` when the runtime or a write fails. On every error nothing is left at
    /// `location` (a file that was there stays as it was) nor in the staging directory.
    pub(crate) async fn checkpoint_container(
        &self,
        req: cri::CheckpointContainerRequest,
    ) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        if req.timeout < 0 {
            return Err(ServerError::invalid("timeout", "must not be negative"));
        }
        let rec = self.running_container(&req.container_id)?;
        let location = check_location(&req.location)?;
        let without_criu = test_without_criu();
        if without_criu {
            tracing::warn!(
                container = %rec.id(),
                "{TEST_CHECKPOINT_WITHOUT_CRIU_ENV}: writing an archive without a CRIU image"
            );
        } else {
            criu_check().await?;
        }
        let limit = match req.timeout {
            0 => DEFAULT_CHECKPOINT_TIMEOUT,
            t => Duration::from_secs(t as u64),
        };
        let deadline = Instant::now() + limit;
        let staging = self
            .container_run_dir(rec.id())
            .join(format!("checkpoint-{}", &ids::new_id()?[..16]));
        let result = self
            .checkpoint_into(&rec, &staging, &location, deadline, without_criu)
            .await;
        let cleanup = staging.clone();
        let removed =
            tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&cleanup) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await;
        if let Ok(Err(e)) | Err(e) = removed.map_err(std::io::Error::other) {
            tracing::warn!(container = %rec.id(), path = %staging.display(), error = %e,
                "removing checkpoint staging directory");
        }
        let size = result?;
        tracing::info!(container = %rec.id(), location = %location.display(), bytes = size,
            "container checkpointed");
        Ok(())
    }

    /// The steps between the checks and the cleanup: pause, dump, write, resume. Returns the
    /// archive's size in bytes.
    async fn checkpoint_into(
        &self,
        rec: &ContainerRecord,
        staging: &Path,
        location: &Path,
        deadline: Instant,
        without_criu: bool,
    ) -> Result<u64> {
        let runtime = self.runtime(rec.runtime_handler())?.clone();
        let image_dir = staging.join(archive::CHECKPOINT_DIR);
        crate::blocking(|| {
            std::fs::create_dir_all(&image_dir)
                .map_err(|e| ServerError::io("creating directory", &image_dir, e))
        })?;
        // Paused, so the files written below are those of the dumped processes (CRIU leaves
        // a frozen cgroup frozen).
        runtime.pause(rec.id()).await?;
        let result = async {
            if !without_criu {
                let left = deadline.saturating_duration_since(Instant::now());
                runtime
                    .clone()
                    .with_timeout(left)
                    .checkpoint(rec.id(), &image_dir, staging, true)
                    .await
                    .map_err(|e| match e {
                        krio_oci::RuntimeError::Timeout { .. } => {
                            ServerError::DeadlineExceeded(format!(
                                "checkpoint of container {} did not finish in time",
                                rec.id()
                            ))
                        }
                        e => e.into(),
                    })?;
            }
            if Instant::now() >= deadline {
                return Err(ServerError::DeadlineExceeded(format!(
                    "checkpoint of container {} reached its timeout before its archive was written",
                    rec.id()
                )));
            }
            crate::blocking(|| self.write_checkpoint_files(rec, staging))?;
            crate::blocking(|| archive::write_archive(staging, location))
        }
        .await;
        if let Err(e) = runtime.resume(rec.id()).await {
            tracing::warn!(container = %rec.id(), error = %e, "resuming after checkpoint");
        }
        result
    }

    /// Writes `config.dump`, `spec.dump`, `bind.mounts`, `rootfs-diff.tar`, `deleted.files`
    /// and the log copy into `staging`.
    fn write_checkpoint_files(&self, rec: &ContainerRecord, staging: &Path) -> Result<()> {
        let run_dir = self.container_run_dir(rec.id());
        let spec_path = run_dir.join("config.json");
        let spec_bytes =
            std::fs::read(&spec_path).map_err(|e| ServerError::io("reading", &spec_path, e))?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&spec_bytes)
            .map_err(|e| ServerError::io("parsing", &spec_path, std::io::Error::other(e)))?;
        let sandbox_config = self
            .sandboxes
            .find("pod_sandbox_id", rec.sandbox_id())?
            .map(|s| s.snapshot().config().clone())
            .unwrap_or_default();
        let config = archive::ConfigDump {
            id: rec.id().to_string(),
            name: super::container_remove::container_name(rec.config(), &sandbox_config),
            rootfs_image: rec.image_ref().to_string(),
            rootfs_image_ref: rec.image_id().to_string(),
            rootfs_image_name: rec.image_digest_ref().to_string(),
            runtime: if rec.runtime_handler().is_empty() {
                self.cfg.default_runtime.clone()
            } else {
                rec.runtime_handler().to_string()
            },
            created_time: archive::rfc3339(rec.created_at()),
            checkpointed_time: archive::rfc3339(crate::state::now_ns()),
            restored_time: archive::zero_time(),
            restored: false,
        };
        let write_json = |name: &str, v: &dyn erased::Json| -> Result<()> {
            let p = staging.join(name);
            std::fs::write(&p, v.bytes()?).map_err(|e| ServerError::io("writing", &p, e))
        };
        write_json(archive::CONFIG_DUMP, &config)?;
        let p = staging.join(archive::SPEC_DUMP);
        std::fs::write(&p, &spec_bytes).map_err(|e| ServerError::io("writing", &p, e))?;
        let binds = archive::bind_mounts(&spec)?;
        if !binds.is_empty() {
            write_json(archive::BIND_MOUNTS, &binds)?;
        }
        let image = self
            .resolve_image(rec.image_id())
            .ok_or_else(|| ServerError::NotFound {
                kind: "image",
                id: rec.image_id().to_string(),
            })?;
        let lowers = self.images.layer_dirs(&image)?;
        let skip: Vec<String> = spec
            .mounts()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        let diff = staging.join(archive::ROOTFS_DIFF);
        let f = std::fs::File::create(&diff).map_err(|e| ServerError::io("creating", &diff, e))?;
        let upper = self.container_data_dir(rec.id()).join("upper");
        let deleted =
            archive::write_rootfs_diff(&upper, &lowers, &skip, std::io::BufWriter::new(f))?;
        write_json(archive::DELETED_FILES, &deleted)?;
        if !rec.log_path().is_empty() {
            let dest = staging.join(archive::LOG_FILE);
            match std::fs::copy(rec.log_path(), &dest) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ServerError::io("copying log", rec.log_path(), e)),
            }
        }
        Ok(())
    }
}

/// JSON encoding through a trait object, so one closure writes values of several types.
mod erased {
    use crate::error::{Result, ServerError};

    pub(super) trait Json {
        fn bytes(&self) -> Result<Vec<u8>>;
    }

    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Result<Vec<u8>> {
            serde_json::to_vec_pretty(self).map_err(|e| {
                ServerError::io("encoding", "checkpoint metadata", std::io::Error::other(e))
            })
        }
    }
}

/// Checks CRI `CheckpointContainerRequest.location`: an absolute path, whose directory
/// exists, naming nothing or a regular file (which is replaced, and logged).
///
/// Errors: `InvalidArgument` naming `location`.
fn check_location(location: &str) -> Result<PathBuf> {
    let bad = |why: &str| {
        ServerError::invalid(
            "location",
            format!("{} {why}", crate::validate::quote(location)),
        )
    };
    if location.is_empty() {
        return Err(ServerError::invalid(
            "location",
            "is required (krio writes checkpoints as archives)",
        ));
    }
    let path = Path::new(location);
    if !path.is_absolute() || location.contains('\0') {
        return Err(bad("is not an absolute path"));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad("must not contain '..'"));
    }
    let (Some(parent), Some(_)) = (path.parent(), path.file_name()) else {
        return Err(bad("names no file"));
    };
    if !parent.is_dir() {
        return Err(bad("is in a directory that does not exist"));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(&format!("cannot be inspected: {e}"))),
        Ok(m) if m.is_file() => {
            tracing::warn!(
                location,
                bytes = m.len(),
                "checkpoint archive replaces an existing file, as CRI-O does"
            );
        }
        Ok(_) => return Err(bad("exists and is not a regular file")),
    }
    Ok(path.to_path_buf())
}

/// Runs `criu check`; `FailedPrecondition` naming the reason when CRIU is missing or fails.
pub(crate) async fn criu_check() -> Result<()> {
    let run = tokio::process::Command::new("criu")
        .arg("check")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(CRIU_CHECK_TIMEOUT, run).await {
        Err(_) => {
            return Err(ServerError::FailedPrecondition(format!(
                "checkpoint needs CRIU, and `criu check` did not finish within {}s",
                CRIU_CHECK_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ServerError::FailedPrecondition(
                "checkpoint needs CRIU, and `criu` is not installed".into(),
            ))
        }
        Ok(Err(e)) => {
            return Err(ServerError::FailedPrecondition(format!(
                "checkpoint needs CRIU, and `criu check` could not run: {e}"
            )))
        }
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    Err(ServerError::FailedPrecondition(format!(
        "checkpoint needs CRIU, and `criu check` fails on this host ({}): {}",
        out.status,
        criu_reason(
            &String::from_utf8_lossy(&out.stderr),
            &String::from_utf8_lossy(&out.stdout)
        )
    )))
}

/// The lines of `criu check`'s output that say what is wrong (its `Error` lines), at most
/// five, joined with "; "; else its last line.
fn criu_reason(stderr: &str, stdout: &str) -> String {
    let all: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = all
        .iter()
        .copied()
        .filter(|l| l.contains("Error") || l.contains("error"))
        .take(5)
        .collect();
    if !errors.is_empty() {
        return errors.join("; ");
    }
    all.last().copied().unwrap_or("no output").to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // test code
mod tests {
    use super::*;

    #[test]
    fn location_must_be_a_file_path_in_an_existing_directory() {
        let d = tempfile::tempdir().unwrap();
        let field = |e: ServerError| match e {
            ServerError::InvalidArgument { field, reason } => format!("{field}: {reason}"),
            e => panic!("{e:?}"),
        };
        for (loc, want) in [
            (String::new(), "is required"),
            ("rel.tar".to_string(), "absolute"),
            ("/nonexistent-dir/x.tar".to_string(), "does not exist"),
            (format!("{}/../x.tar", d.path().display()), "'..'"),
            (d.path().display().to_string(), "not a regular file"),
        ] {
            let msg = field(check_location(&loc).unwrap_err());
            assert!(
                msg.starts_with("location: ") && msg.contains(want),
                "{loc}: {msg}"
            );
        }
        let p = d.path().join("x.tar");
        assert_eq!(check_location(p.to_str().unwrap()).unwrap(), p);
        // An existing file is replaced (as CRI-O does); a link is not followed nor replaced.
        std::fs::write(&p, b"old").unwrap();
        assert_eq!(check_location(p.to_str().unwrap()).unwrap(), p);
        let l = d.path().join("link.tar");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        let msg = field(check_location(l.to_str().unwrap()).unwrap_err());
        assert!(msg.contains("not a regular file"), "{msg}");
    }

    #[test]
    fn reason_prefers_error_lines() {
        let stderr = "Warn  (criu/kerndat.c:1): something\n\
                      Error (criu/vdso.c:9): vdso: Failed to read the vDSO\n\
                      Looks like something is wrong\n";
        assert_eq!(
            criu_reason(stderr, ""),
            "Error (criu/vdso.c:9): vdso: Failed to read the vDSO"
        );
        assert_eq!(criu_reason("", "Looks bad\n"), "Looks bad");
        assert_eq!(criu_reason("", ""), "no output");
    }
}
