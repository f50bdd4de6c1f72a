//! `CheckpointContainer`. A checkpoint goes through the OCI runtime's `checkpoint` and
//! CRIU, so krio first asks `criu check` whether CRIU works on this host, and answers
//! `FailedPrecondition` with CRIU's own reason when it does not (Debian's CRIU 3.17.1 cannot
//! read the vDSO of the kernels this project runs on). Writing the checkpoint archive that
//! CRI-O and kubelet's checkpoint API use is not implemented yet: on a host where CRIU works,
//! the call answers `Unimplemented` saying so, rather than pretending.

use std::path::Path;
use std::time::Duration;

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};
use crate::{ids, Krio};

/// How long `criu check` may take.
const CRIU_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

impl Krio {
    /// CRI `CheckpointContainer`.
    ///
    /// Errors: `InvalidArgument` for a malformed id or a `location` that is not an absolute
    /// path; `NotFound` for an unknown container; `FailedPrecondition` unless the container is
    /// running, when `criu` is not installed, or when `criu check` fails (the message quotes
    /// its reason); `Unimplemented` when CRIU works (archives are not written yet).
    pub(crate) async fn checkpoint_container(
        &self,
        req: cri::CheckpointContainerRequest,
    ) -> Result<()> {
        ids::validate("container_id", &req.container_id)?;
        if !req.location.is_empty() && !Path::new(&req.location).is_absolute() {
            return Err(ServerError::invalid(
                "location",
                format!("{:?} is not an absolute path", req.location),
            ));
        }
        if req.timeout < 0 {
            return Err(ServerError::invalid("timeout", "negative"));
        }
        let rec = self.running_container(&req.container_id)?;
        criu_check().await?;
        Err(ServerError::Unimplemented(format!(
            "CRIU works on this host, but krio does not write checkpoint archives yet \
             (container {})",
            rec.id
        )))
    }
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
mod tests {
    use super::*;

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
