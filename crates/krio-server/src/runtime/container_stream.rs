//! `Exec`, `Attach` and `PortForward`: validate the request and answer with a URL on the
//! streaming server (see `streaming/`).

use krio_cri::v1 as cri;
use krio_stream::remotecommand::StreamOptions;

use crate::error::{Result, ServerError};
use crate::state::SandboxState;
use crate::streaming::StreamRequest;
use crate::{ids, Krio};

impl Krio {
    /// CRI `Exec`: checks the request and the container, and returns the URL where the
    /// client streams the command's stdio (single use, valid for one minute).
    ///
    /// Errors: `InvalidArgument` for a malformed id, an empty `cmd`, none of
    /// `stdin`/`stdout`/`stderr`, or `tty` with `stderr` (the CRI forbids it: a terminal has
    /// one output); `NotFound` for an unknown container; `FailedPrecondition` unless it is
    /// running or when the streaming server is not serving.
    pub(crate) async fn exec(&self, req: cri::ExecRequest) -> Result<cri::ExecResponse> {
        ids::validate("container_id", &req.container_id)?;
        if req.cmd.is_empty() || req.cmd[0].is_empty() {
            return Err(ServerError::invalid("cmd", "must name a command"));
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(ServerError::invalid(
                "stdin",
                "one of stdin, stdout or stderr must be set",
            ));
        }
        if req.tty && req.stderr {
            return Err(ServerError::invalid(
                "stderr",
                "must be false when tty is set (a terminal has one output stream)",
            ));
        }
        let rec = self.running_container(&req.container_id)?;
        let url = self.streaming.mint(StreamRequest::Exec {
            container_id: rec.id().to_string(),
            cmd: req.cmd,
            opts: StreamOptions {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            },
        })?;
        Ok(cri::ExecResponse { url })
    }

    /// CRI `Attach`: checks the request and the container, and returns the URL where the
    /// client attaches to the container's main process (single use, valid for one minute).
    /// The session goes through the container's monitor: its output (the terminal's with a
    /// tty) from then on, its stdin when the container was created with `stdin`, terminal
    /// resizes when it has a `tty`.
    ///
    /// Errors: `InvalidArgument` for a malformed id, none of `stdin`/`stdout`/`stderr`, or
    /// `tty` with `stderr`; `NotFound` for an unknown container; `FailedPrecondition` unless it
    /// is running, for `stdin` on a container created without it, or when the streaming
    /// server is not serving.
    pub(crate) async fn attach(&self, req: cri::AttachRequest) -> Result<cri::AttachResponse> {
        ids::validate("container_id", &req.container_id)?;
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(ServerError::invalid(
                "stdin",
                "one of stdin, stdout or stderr must be set",
            ));
        }
        if req.tty && req.stderr {
            return Err(ServerError::invalid(
                "stderr",
                "must be false when tty is set (a terminal has one output stream)",
            ));
        }
        let rec = self.running_container(&req.container_id)?;
        if req.stdin && !rec.config().stdin {
            return Err(ServerError::FailedPrecondition(format!(
                "stdin: container {} was created without stdin",
                rec.id()
            )));
        }
        let url = self.streaming.mint(StreamRequest::Attach {
            container_id: rec.id().to_string(),
            opts: StreamOptions {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            },
        })?;
        Ok(cri::AttachResponse { url })
    }

    /// CRI `PortForward`: checks the pod and the ports, and returns the URL where the client
    /// forwards connections to ports inside the pod's network namespace.
    ///
    /// Errors: `InvalidArgument` for a malformed id or a port outside 1-65535; `NotFound` for
    /// an unknown sandbox; `FailedPrecondition` when it is not ready or the streaming server is
    /// not serving.
    pub(crate) async fn port_forward(
        &self,
        req: cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse> {
        ids::validate("pod_sandbox_id", &req.pod_sandbox_id)?;
        let mut ports = Vec::with_capacity(req.port.len());
        for p in &req.port {
            match u16::try_from(*p) {
                Ok(p) if p > 0 => ports.push(p),
                _ => {
                    return Err(ServerError::invalid(
                        "port",
                        format!("{p} is not a port (1-65535)"),
                    ))
                }
            }
        }
        let s = self.sandboxes.get("pod_sandbox_id", &req.pod_sandbox_id)?;
        let rec = s.snapshot();
        if rec.state() != SandboxState::Ready {
            return Err(ServerError::FailedPrecondition(format!(
                "sandbox {} is not ready",
                rec.id()
            )));
        }
        let url = self.streaming.mint(StreamRequest::PortForward {
            sandbox_id: rec.id().to_string(),
            ports,
        })?;
        Ok(cri::PortForwardResponse { url })
    }
}
