//! Daemon side: start a monitor and wait for its status.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use serde::de::DeserializeOwned;

use crate::types::{ExitStatus, MonitorConfig, MonitorError, Spawned, SyncMessage};

/// Longest status line accepted from a monitor (bytes).
const MAX_STATUS_LINE: u64 = 1 << 20;

/// Starts a monitor for `config` using `monitor_binary` and waits until it reports that the container is
/// created (the runtime's `create` returned and the pid file was read).
///
/// Blocking: it waits for the runtime's `create` (bounded by [`MonitorConfig::create_timeout_secs`] inside the
/// monitor); from async code call it via `tokio::task::spawn_blocking`.
///
/// The monitor binary runs with stdin = a pipe carrying the config JSON, stdout = the sync pipe (close-on-exec
/// on the daemon side, so no other child inherits it), stderr = `/dev/null`, cwd `/`, and an environment reduced
/// to `PATH`. The monitor closes every other inherited descriptor first thing, so no daemon descriptor reaches
/// it, the runtime or the container; it detaches (re-exec + `setsid`) so that it is not the daemon's child and
/// survives daemon restarts. Only the short-lived launcher is reaped here.
///
/// Errors: [`MonitorError::InvalidConfig`]; [`MonitorError::Spawn`] if the binary cannot start;
/// [`MonitorError::CreateFailed`] with the runtime's error output if `create` failed;
/// [`MonitorError::NoStatus`] / [`MonitorError::Protocol`] / [`MonitorError::Io`] for a broken monitor.
pub fn spawn(config: &MonitorConfig, monitor_binary: &Path) -> Result<Spawned, MonitorError> {
    config.validate()?;
    let id = config.id.clone();
    let io = |what: &'static str| {
        let id = id.clone();
        move |source| MonitorError::Io { id, what, source }
    };
    let payload = serde_json::to_vec(config).map_err(|e| MonitorError::Io {
        id: id.clone(),
        what: "serialising config",
        source: std::io::Error::other(e),
    })?;
    let msg: SyncMessage = run_launcher(monitor_binary, &[], Some(&payload), MAX_STATUS_LINE)
        .map_err(|failure| match failure {
            LauncherFailure::Spawn(source) => MonitorError::Spawn {
                binary: monitor_binary.to_path_buf(),
                source,
            },
            LauncherFailure::Io { what, source } => io(what)(source),
            LauncherFailure::NoStatus(launcher_status) => MonitorError::NoStatus {
                id: id.clone(),
                launcher_status,
            },
            LauncherFailure::Protocol { line, source } => MonitorError::Protocol {
                id: id.clone(),
                line,
                source,
            },
        })?;
    match msg {
        SyncMessage::Ok {
            monitor_pid,
            container_pid,
        } => Ok(Spawned {
            monitor_pid,
            container_pid,
        }),
        SyncMessage::Error {
            stage,
            message,
            runtime_stderr,
        } => Err(MonitorError::CreateFailed {
            id,
            stage,
            message,
            runtime_stderr,
        }),
    }
}

/// Why [`run_launcher`] got no status message; each caller maps it onto its own [`MonitorError`] variants.
#[derive(Debug)]
pub(crate) enum LauncherFailure {
    /// The sync pipe could not be created or the binary could not start.
    Spawn(std::io::Error),
    /// Writing stdin, waiting for the launcher or reading the sync pipe failed (`what` names the step).
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    /// The launcher exited without writing a status line.
    NoStatus(std::process::ExitStatus),
    /// The status line (kept untrimmed) is not a valid message.
    Protocol {
        line: String,
        source: serde_json::Error,
    },
}

/// Runs `monitor_binary args...` as a short-lived launcher and parses the one JSON line it writes on its stdout
/// (the sync pipe) into `M`.
///
/// The launcher runs with stdin = a pipe carrying `payload` (or `/dev/null` when `None`), stdout = the sync
/// pipe (close-on-exec on our side, so no other child inherits it), stderr `/dev/null`, cwd `/`, and an
/// environment reduced to `PATH`. The launcher itself is reaped before the pipe is read; at most `max_line`
/// bytes of the status line are read.
pub(crate) fn run_launcher<M: DeserializeOwned>(
    monitor_binary: &Path,
    args: &[&OsStr],
    payload: Option<&[u8]>,
    max_line: u64,
) -> Result<M, LauncherFailure> {
    let io = |what: &'static str| move |source| LauncherFailure::Io { what, source };
    let (sync_r, sync_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| LauncherFailure::Spawn(std::io::Error::from(e)))?;
    let child = {
        let mut cmd = Command::new(monitor_binary);
        cmd.args(args)
            .stdin(if payload.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::from(sync_w))
            .stderr(Stdio::null())
            .current_dir("/")
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        cmd.spawn()
        // `cmd` drops here, closing our copy of the sync pipe's write end, so EOF means "launcher gone".
    };
    let mut child = child.map_err(LauncherFailure::Spawn)?;
    if let (Some(payload), Some(mut stdin)) = (payload, child.stdin.take()) {
        if let Err(e) = stdin.write_all(payload) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io("writing config")(e));
        }
    }
    let launcher_status = child.wait().map_err(io("waiting for the launcher"))?;
    let mut line = String::new();
    BufReader::new(std::fs::File::from(sync_r).take(max_line))
        .read_line(&mut line)
        .map_err(io("reading the sync pipe"))?;
    if line.trim().is_empty() {
        return Err(LauncherFailure::NoStatus(launcher_status));
    }
    serde_json::from_str(line.trim()).map_err(|source| LauncherFailure::Protocol { line, source })
}

/// Reads a monitor's exit file: `Ok(None)` if it does not exist yet (container still running, or the monitor
/// died), else the [`ExitStatus`]. The file is written atomically, so a present file is always complete.
///
/// Errors: [`MonitorError::ExitFile`] for I/O errors other than "not found", [`MonitorError::ExitFileParse`] for
/// malformed content.
pub fn read_exit_file(path: &Path) -> Result<Option<ExitStatus>, MonitorError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MonitorError::ExitFile {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|source| MonitorError::ExitFileParse {
            path: path.to_path_buf(),
            source,
        })
}
