//! [`OciRuntime`]: a typed async wrapper around the OCI runtime binary (runc's command line).
//!
//! Every verb runs `<binary> --root <root> <verb> [options] <id> ...` with stdin `/dev/null` (or the payload for
//! `update`), stdout and stderr captured, `kill_on_drop`, and a per-call timeout. The binary is injectable: point
//! it at any executable (unit tests use a shell script that records its arguments). `create` is not here: the
//! per-container monitor runs it so that it owns the container's stdio.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::events::StatsEvent;

/// Default timeout of one runtime invocation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Maximum captured stdout/stderr per invocation (bytes); the rest is discarded.
const MAX_OUTPUT: usize = 16 << 20;

/// The `PATH` given to the OCI runtime: the daemon's own `PATH` (the operator sets it in the service
/// unit), else the conventional system one.
///
/// The runtime gets nothing else from the daemon's environment: a variable there is not a request. In
/// particular `NOTIFY_SOCKET` (set by systemd for krio's own readiness) makes `runc create` and
/// `runc start` proxy sd_notify for the container and fail when its socket directory is missing; a
/// container that wants `NOTIFY_SOCKET` names it in its own CRI `envs`, as with CRI-O.
pub fn runtime_env_path() -> OsString {
    std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from(crate::DEFAULT_PATH_ENV.trim_start_matches("PATH=")))
}

/// Errors of [`OciRuntime`] calls. Each names the verb and container id.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container id is not acceptable (see [`validate_container_id`]).
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// The runtime binary could not be started.
    #[error("runtime {verb}: spawning {binary}: {source}")]
    Spawn {
        /// The verb (`start`, `kill`, ...).
        verb: &'static str,
        /// The binary path.
        binary: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// I/O with the runtime process failed (writing stdin, waiting, temp files).
    #[error("runtime {verb} {id}: {source}")]
    Io {
        /// The verb.
        verb: &'static str,
        /// Container id.
        id: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime did not finish in time and was killed.
    #[error("runtime {verb} {id}: timed out after {after:?}")]
    Timeout {
        /// The verb.
        verb: &'static str,
        /// Container id.
        id: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The runtime reports that the container does not exist.
    #[error("runtime {verb} {id}: container does not exist")]
    NotFound {
        /// The verb.
        verb: &'static str,
        /// Container id.
        id: String,
    },
    /// The runtime exited unsuccessfully.
    #[error("runtime {verb} {id} failed ({status}): {}", stderr.trim())]
    Failed {
        /// The verb.
        verb: &'static str,
        /// Container id.
        id: String,
        /// Exit status of the runtime process.
        status: std::process::ExitStatus,
        /// Captured stdout (lossy UTF-8).
        stdout: String,
        /// Captured stderr (lossy UTF-8).
        stderr: String,
    },
    /// The runtime's JSON output could not be parsed.
    #[error("runtime {verb} {id}: parsing output {output:?}: {source}")]
    Parse {
        /// The verb.
        verb: &'static str,
        /// Container id.
        id: String,
        /// The raw stdout.
        output: String,
        /// JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Validates a container id before it reaches a command line: 1..=128 bytes of `[A-Za-z0-9_.-]`, starting with
/// an ASCII letter or digit (so it can never be read as an option, nor be `.`/`..`).
///
/// Errors: [`RuntimeError::InvalidId`].
pub fn validate_container_id(id: &str) -> Result<(), RuntimeError> {
    let bad = |reason| {
        Err(RuntimeError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() || id.len() > 128 {
        return bad("length must be 1..=128");
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only [A-Za-z0-9_.-] allowed");
    }
    Ok(())
}

/// Container status as reported by `runc state` (OCI runtime spec "State").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeStatus {
    /// Being created.
    Creating,
    /// Created, init waiting for `start`.
    Created,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Init exited.
    Stopped,
    /// A value this crate does not know.
    #[serde(other)]
    Unknown,
}

/// `runc state` / `runc list` output for one container (OCI "State" plus runc extras).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RuntimeState {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init (0 once stopped).
    #[serde(default)]
    pub pid: i32,
    /// Status.
    pub status: RuntimeStatus,
    /// Bundle directory.
    #[serde(default)]
    pub bundle: PathBuf,
    /// Rootfs path (runc extra).
    #[serde(default)]
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 (runc extra).
    #[serde(default)]
    pub created: String,
    /// Spec annotations.
    #[serde(default)]
    pub annotations: Option<std::collections::HashMap<String, String>>,
}

/// Options of [`OciRuntime::kill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillOptions {
    /// Signal number (e.g. 15, 9).
    pub signal: i32,
    /// `--all`: signal every process of the container, not just init.
    pub all: bool,
}

/// Options of [`OciRuntime::delete`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `--force`: kill a running container (SIGKILL) before deleting it.
    pub force: bool,
}

/// Options of [`OciRuntime::exec`] (CRI `ExecSync`). The process inherits the container's capabilities,
/// `noNewPrivileges`, user and environment from its `config.json` (runc exec semantics without `--process`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// Command and arguments (non-empty).
    pub args: Vec<String>,
    /// Extra `KEY=VALUE` environment entries.
    pub env: Vec<String>,
    /// Working directory override (absolute).
    pub cwd: Option<String>,
    /// Time limit; on expiry the exec'd process is SIGKILLed and [`RuntimeError::Timeout`] returned.
    pub timeout: Option<Duration>,
}

/// Result of [`OciRuntime::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code of the process (`128 + signal` if killed by a signal).
    pub exit_code: i32,
    /// Captured stdout (at most 16 MiB).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most 16 MiB).
    pub stderr: Vec<u8>,
}

/// The OCI runtime binary plus its state directory (`--root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRuntime {
    binary: PathBuf,
    root: PathBuf,
    args: Vec<String>,
    tty_by_process: bool,
    timeout: Duration,
    exec_helper: Option<PathBuf>,
}

/// Captured result of one invocation.
struct RawOutput {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl OciRuntime {
    /// A runtime using `binary` (e.g. `/usr/sbin/runc`) with state under `root` and [`DEFAULT_TIMEOUT`].
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        OciRuntime {
            binary: binary.into(),
            root: root.into(),
            args: Vec::new(),
            tty_by_process: false,
            timeout: DEFAULT_TIMEOUT,
            exec_helper: None,
        }
    }

    /// Runs [`OciRuntime::exec`] through `krio-monitor exec-wait` (`monitor` is the krio-monitor binary): the
    /// runtime then runs `exec --detach`, hands the process our pipes directly and exits, and the helper, a
    /// child subreaper, waits for the process and exits with its status. Without it, runc copies the output
    /// itself and does not exit before every holder of the pipes (a background child of the command) closed
    /// them.
    pub fn with_exec_helper(mut self, monitor: impl Into<PathBuf>) -> Self {
        self.exec_helper = Some(monitor.into());
        self
    }

    /// Global options given to every invocation right after `--root <root>`, before the verb (runsc's
    /// `--platform=ptrace`). The caller checks that each is an option (starts with `-`).
    pub fn with_args(mut self, args: Vec<String>) -> Self {
        self.args = args;
        self
    }

    /// Asks for a terminal in [`OciRuntime::exec_streaming`] through a `--process` file (the
    /// container's `process` with the command, `terminal: true` and the size) instead of
    /// `--tty`, for runtimes whose `exec` has no `--tty` (runsc).
    pub fn with_tty_by_process(mut self, on: bool) -> Self {
        self.tty_by_process = on;
        self
    }

    /// Whether [`OciRuntime::with_tty_by_process`] is on.
    pub fn tty_by_process(&self) -> bool {
        self.tty_by_process
    }

    /// The global options of [`OciRuntime::with_args`].
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Replaces the per-invocation timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The runtime binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The runtime state directory (`--root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The base command `<binary> --root <root> <args...>` with stdin null and stdout/stderr piped,
    /// `kill_on_drop`, an environment of `PATH` alone (see [`runtime_env_path`]), and the child's
    /// signal state reset (no signal blocked or ignored: see
    /// [`krio_monitor::reset_signals_on_exec`]; `posix_spawn` in glibc would otherwise leave
    /// glibc's internal signal 32 ignored, which the runtime passes on to `exec`'d processes).
    /// Exposed for verbs this wrapper does not cover.
    pub fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.binary);
        krio_monitor::reset_signals_on_exec(c.as_std_mut());
        c.env_clear()
            .env("PATH", runtime_env_path())
            .arg("--root")
            .arg(&self.root)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// The `info` span of one invocation of the runtime binary, a child of the current span:
    /// named `<binary's file name> <verb>` for OpenTelemetry (`runc start`), with the verb and
    /// the container id (empty for `list`) as fields.
    pub fn call_span(&self, verb: &str, id: &str) -> tracing::Span {
        let binary = self
            .binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::info_span!(
            "runtime",
            otel.name = %format_args!("{binary} {verb}"),
            verb,
            id
        )
    }

    async fn run(
        &self,
        verb: &'static str,
        id: &str,
        args: Vec<OsString>,
        stdin: Option<Vec<u8>>,
    ) -> Result<RawOutput, RuntimeError> {
        let span = self.call_span(verb, id);
        self.run_unspanned(verb, id, args, stdin, self.timeout)
            .instrument(span)
            .await
    }

    async fn run_unspanned(
        &self,
        verb: &'static str,
        id: &str,
        args: Vec<OsString>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<RawOutput, RuntimeError> {
        let mut cmd = self.command();
        cmd.arg(verb).args(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            verb,
            binary: self.binary.clone(),
            source,
        })?;
        let io = |source| RuntimeError::Io {
            verb,
            id: id.to_string(),
            source,
        };
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(&data).await.map_err(io)?;
            drop(pipe);
        }
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(io)?,
            Err(_) => {
                return Err(RuntimeError::Timeout {
                    verb,
                    id: id.to_string(),
                    after: timeout,
                })
            }
        };
        let raw = RawOutput {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        };
        if raw.status.success() {
            Ok(raw)
        } else {
            Err(failure(verb, id, raw))
        }
    }

    /// `start <id>`: runs the user process of a created container (OCI "start").
    ///
    /// Errors: [`RuntimeError`] (`NotFound` if there is no such container, `Failed` e.g. if it is not `created`).
    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        validate_container_id(id)?;
        self.run("start", id, vec![id.into()], None).await.map(drop)
    }

    /// `kill [--all] <id> <signal>` (OCI "kill").
    ///
    /// Errors: [`RuntimeError`]; `NotFound` if the container does not exist.
    pub async fn kill(&self, id: &str, opts: &KillOptions) -> Result<(), RuntimeError> {
        validate_container_id(id)?;
        let mut args: Vec<OsString> = Vec::new();
        if opts.all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(opts.signal.to_string().into());
        self.run("kill", id, args, None).await.map(drop)
    }

    /// `delete [--force] <id>` (OCI "delete"): removes runtime state and the container's cgroup.
    ///
    /// Errors: [`RuntimeError`]; `NotFound` if the container does not exist (callers wanting idempotence can
    /// treat it as success).
    pub async fn delete(&self, id: &str, opts: &DeleteOptions) -> Result<(), RuntimeError> {
        validate_container_id(id)?;
        let mut args: Vec<OsString> = Vec::new();
        if opts.force {
            args.push("--force".into());
        }
        args.push(id.into());
        self.run("delete", id, args, None).await.map(drop)
    }

    /// `state <id>` (OCI "state").
    ///
    /// Errors: [`RuntimeError`]; `NotFound` if the container does not exist; `Parse` for unexpected output.
    pub async fn state(&self, id: &str) -> Result<RuntimeState, RuntimeError> {
        validate_container_id(id)?;
        let out = self.run("state", id, vec![id.into()], None).await?;
        parse_json("state", id, &out.stdout)
    }

    /// `list --format json`: every container under `--root` (runc prints `null` when there are none).
    ///
    /// Errors: [`RuntimeError`].
    pub async fn list(&self) -> Result<Vec<RuntimeState>, RuntimeError> {
        let out = self
            .run("list", "", vec!["--format".into(), "json".into()], None)
            .await?;
        let v: Option<Vec<RuntimeState>> = parse_json("list", "", &out.stdout)?;
        Ok(v.unwrap_or_default())
    }

    /// `events --stats <id>`: the runtime's one-shot statistics event of the container (see [`StatsEvent`] for
    /// what runsc's figures mean). Unlike the other verbs it runs with its own `timeout` (statistics are
    /// sampled often and must not wait for the runtime's long default); the runtime is killed when it expires.
    ///
    /// Errors: [`RuntimeError`]; `Timeout` after `timeout`, `Failed` when the runtime cannot find the container
    /// (runsc: exit 128, "loading sandbox"), `Parse` for output that is not one event.
    pub async fn events_stats(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<StatsEvent, RuntimeError> {
        validate_container_id(id)?;
        let out = self
            .run_unspanned(
                "events",
                id,
                vec!["--stats".into(), id.into()],
                None,
                timeout,
            )
            .instrument(self.call_span("events", id))
            .await?;
        parse_json("events", id, &out.stdout)
    }

    /// `pause <id>`: freezes the container's cgroup.
    ///
    /// Errors: [`RuntimeError`].
    pub async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        validate_container_id(id)?;
        self.run("pause", id, vec![id.into()], None).await.map(drop)
    }

    /// `checkpoint --image-path <image_path> --work-path <work_path> [--leave-running] <id>`:
    /// dumps the container's processes with CRIU into `image_path` (an existing, empty
    /// directory); CRIU's `dump.log` and `stats-dump` go to `work_path`. With `leave_running`
    /// the container keeps running afterwards (what kubelet's forensic checkpoint asks for).
    ///
    /// Errors: [`RuntimeError`] (`Failed` with CRIU's reason on stderr; `Timeout` after the
    /// runtime's timeout, see [`OciRuntime::with_timeout`]).
    pub async fn checkpoint(
        &self,
        id: &str,
        image_path: &Path,
        work_path: &Path,
        leave_running: bool,
    ) -> Result<(), RuntimeError> {
        validate_container_id(id)?;
        let mut args: Vec<OsString> = vec![
            "--image-path".into(),
            image_path.into(),
            "--work-path".into(),
            work_path.into(),
        ];
        if leave_running {
            args.push("--leave-running".into());
        }
        args.push(id.into());
        self.run("checkpoint", id, args, None).await.map(drop)
    }

    /// `resume <id>`: thaws a paused container.
    ///
    /// Errors: [`RuntimeError`].
    pub async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        validate_container_id(id)?;
        self.run("resume", id, vec![id.into()], None)
            .await
            .map(drop)
    }

    /// `update --resources - <id>` with the OCI `LinuxResources` JSON on stdin (CRI `UpdateContainerResources`).
    ///
    /// Errors: [`RuntimeError`].
    pub async fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError> {
        validate_container_id(id)?;
        let data = serde_json::to_vec(resources).map_err(|e| RuntimeError::Io {
            verb: "update",
            id: id.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        self.run(
            "update",
            id,
            vec!["--resources".into(), "-".into(), id.into()],
            Some(data),
        )
        .await
        .map(drop)
    }

    /// `exec --pid-file <tmp> [--env K=V]... [--cwd D] <id> <args...>`: runs a process in the container and
    /// captures its output (CRI `ExecSync`), at most 16 MiB of each stream: [`OciRuntime::exec_limited`] with
    /// that limit.
    ///
    /// Errors: as [`OciRuntime::exec_limited`].
    pub async fn exec(&self, id: &str, opts: &ExecOptions) -> Result<ExecOutput, RuntimeError> {
        self.exec_limited(id, opts, MAX_OUTPUT).await
    }

    /// As [`OciRuntime::exec`], keeping at most `limit` bytes of each of stdout and stderr.
    ///
    /// Output is read as it comes: the first `limit` bytes of each stream are kept and the rest is read and
    /// discarded while the process runs, so memory stays bounded whatever it prints. A non-zero exit of the
    /// process is NOT an error: it is returned in [`ExecOutput::exit_code`]. Once the runtime has exited (with
    /// the process), the pipes are drained for at most [`EXEC_DRAIN`] and then abandoned: a child the command
    /// left running in the background may hold them open forever. On timeout the exec'd process and every
    /// descendant of it are killed (frozen with SIGSTOP while they are collected, so none can fork away, then
    /// SIGKILLed).
    ///
    /// Errors: [`RuntimeError`] (`Io` if `args` is empty or the temp pid file cannot be created, `Timeout`,
    /// `NotFound`/`Failed` when the runtime could not start the process).
    pub async fn exec_limited(
        &self,
        id: &str,
        opts: &ExecOptions,
        limit: usize,
    ) -> Result<ExecOutput, RuntimeError> {
        validate_container_id(id)?;
        let io = |source| RuntimeError::Io {
            verb: "exec",
            id: id.to_string(),
            source,
        };
        if opts.args.is_empty() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "exec needs a command",
            )));
        }
        let pid_dir = tempfile_dir(&self.root).map_err(io)?;
        let pid_file = pid_dir.join("exec.pid");
        let mut cmd = match &self.exec_helper {
            Some(helper) => {
                let mut c = tokio::process::Command::new(helper);
                krio_monitor::reset_signals_on_exec(c.as_std_mut());
                c.arg("exec-wait")
                    .arg(&pid_file)
                    .arg(&self.binary)
                    .arg("--root")
                    .arg(&self.root)
                    .args(&self.args)
                    .arg("exec")
                    .arg("--detach")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                c
            }
            None => {
                let mut c = self.command();
                c.arg("exec");
                c
            }
        };
        cmd.arg("--pid-file").arg(&pid_file);
        for e in &opts.env {
            cmd.arg("--env").arg(e);
        }
        if let Some(cwd) = &opts.cwd {
            cmd.arg("--cwd").arg(cwd);
        }
        cmd.arg(id).args(&opts.args);
        let result = self
            .exec_inner(cmd, id, &pid_file, opts.timeout, limit)
            .instrument(self.call_span("exec", id))
            .await;
        let _ = std::fs::remove_dir_all(&pid_dir);
        result
    }

    /// Removes the scratch directories of `exec` calls (`<root>.exec/<pid>-...`) that no longer have a live
    /// owner: those left by a daemon killed during an exec. Directories of this process are kept. Returns how
    /// many were removed.
    ///
    /// Errors: reading `<root>.exec` (a missing directory is not an error).
    pub fn clean_exec_scratch(&self) -> std::io::Result<usize> {
        let base = self.root.with_extension("exec");
        let entries = match std::fs::read_dir(&base) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let me = std::process::id().to_string();
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let owner = name.to_string_lossy();
            let owner = owner.split('-').next().unwrap_or("");
            let alive = owner == me
                || (owner.parse::<i32>().is_ok_and(|p| p > 0)
                    && Path::new("/proc").join(owner).exists()
                    && std::fs::read_link(Path::new("/proc").join(owner).join("exe"))
                        .ok()
                        .zip(std::env::current_exe().ok())
                        .is_some_and(|(a, b)| a == b));
            if !alive && std::fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn exec_inner(
        &self,
        mut cmd: tokio::process::Command,
        id: &str,
        pid_file: &Path,
        timeout: Option<Duration>,
        limit: usize,
    ) -> Result<ExecOutput, RuntimeError> {
        let io = |source| RuntimeError::Io {
            verb: "exec",
            id: id.to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            verb: "exec",
            binary: self.binary.clone(),
            source,
        })?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stdout = tokio::spawn(read_bounded(child.stdout.take(), limit, stop_rx.clone()));
        let stderr = tokio::spawn(read_bounded(child.stderr.take(), limit, stop_rx));
        let status = match timeout {
            None => child.wait().await.map_err(io)?,
            Some(t) => match tokio::time::timeout(t, child.wait()).await {
                Ok(r) => r.map_err(io)?,
                Err(_) => {
                    if let Some(pid) = std::fs::read_to_string(pid_file)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok())
                    {
                        kill_process_tree(pid);
                    }
                    // Give runc a moment to reap and exit; `kill_on_drop` kills it otherwise.
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    let _ = stop_tx.send(true);
                    return Err(RuntimeError::Timeout {
                        verb: "exec",
                        id: id.to_string(),
                        after: t,
                    });
                }
            },
        };
        // The process has exited; what it wrote is in the pipes. Read it, but do not wait for
        // EOF beyond the drain time: a background child may hold the pipes open.
        let drain = async {
            let _ = tokio::time::sleep(EXEC_DRAIN).await;
            let _ = stop_tx.send(true);
        };
        let ((out, err), ()) = tokio::join!(async { (stdout.await, stderr.await) }, async {
            tokio::select! {
                () = drain => {}
                () = stop_tx.closed() => {}
            }
        });
        let join = |r: Result<Vec<u8>, tokio::task::JoinError>| {
            r.map_err(|e| io(std::io::Error::other(e.to_string())))
        };
        let (stdout, stderr) = (join(out)?, join(err)?);
        // runc exec exits with the process's status; runc's own failures (e.g. container not running) are also
        // exit status 1 with an error on stderr, which is indistinguishable without the pid file: no pid file
        // means the process never started.
        if !status.success() && !pid_file.exists() {
            return Err(failure(
                "exec",
                id,
                RawOutput {
                    status,
                    stdout,
                    stderr,
                },
            ));
        }
        let exit_code = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => -1,
        };
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }
}

/// How long an exec's output pipes are still read after the runtime exited (it exits right after the exec'd
/// process): long enough to take what is already in the pipes, short enough that a background child holding
/// them open does not hold the reply.
pub const EXEC_DRAIN: Duration = Duration::from_millis(250);

/// Reads `pipe` until EOF or until `stop` turns true, keeping the first `limit` bytes and discarding the rest.
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    limit: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            r = pipe.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = limit.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            },
            changed = stop.changed() => {
                if changed.is_err() {
                    // The sender is gone without asking to stop: read on until EOF.
                    while let Ok(n) = pipe.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let room = limit.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                    break;
                }
            }
        }
    }
    kept
}

/// SIGKILLs process `pid` and all its descendants. They are first frozen with SIGSTOP, rescanning `/proc`
/// until no new descendant appears, so none can fork a child that escapes the kill; then all get SIGKILL.
pub fn kill_process_tree(pid: i32) {
    use rustix::process::{kill_process, Pid, Signal};
    let Some(root) = Pid::from_raw(pid) else {
        return;
    };
    let mut tree: Vec<i32> = vec![pid];
    let _ = kill_process(root, Signal::STOP);
    for _ in 0..50 {
        let parents = parent_map();
        let mut grew = false;
        let mut i = 0;
        while i < tree.len() {
            let p = tree[i];
            for (&child, &parent) in &parents {
                if parent == p && !tree.contains(&child) {
                    tree.push(child);
                    if let Some(c) = Pid::from_raw(child) {
                        let _ = kill_process(c, Signal::STOP);
                    }
                    grew = true;
                }
            }
            i += 1;
        }
        if !grew {
            break;
        }
    }
    for p in tree.iter().filter_map(|p| Pid::from_raw(*p)) {
        let _ = kill_process(p, Signal::KILL);
    }
}

/// pid -> parent pid of every process, from `/proc/<pid>/stat`.
fn parent_map() -> std::collections::BTreeMap<i32, i32> {
    let mut map = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        {
            map.insert(pid, ppid);
        }
    }
    map
}

/// A fresh private directory under `<root>.exec/` (beside the runtime's root, never inside it,
/// where the runtime would take it for a container) for an exec pid file.
pub(crate) fn tempfile_dir(root: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = root.with_extension("exec");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&base)?;
    for n in 0..1000u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("{}-{nanos}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free exec temp dir",
    ))
}

fn failure(verb: &'static str, id: &str, raw: RawOutput) -> RuntimeError {
    let stderr = String::from_utf8_lossy(&raw.stderr).into_owned();
    if stderr.contains("container does not exist") {
        return RuntimeError::NotFound {
            verb,
            id: id.to_string(),
        };
    }
    RuntimeError::Failed {
        verb,
        id: id.to_string(),
        status: raw.status,
        stdout: String::from_utf8_lossy(&raw.stdout).into_owned(),
        stderr,
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    verb: &'static str,
    id: &str,
    data: &[u8],
) -> Result<T, RuntimeError> {
    serde_json::from_slice(data).map_err(|source| RuntimeError::Parse {
        verb,
        id: id.to_string(),
        output: String::from_utf8_lossy(data).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_testutil::write_executable;

    /// A fake runtime: records its argv (one per line) in `<dir>/argv`, prints `$FAKE_STDOUT`, exits
    /// `$FAKE_RC`, and writes stdin to `<dir>/stdin`.
    fn fake(dir: &Path, stdout: &str, stderr: &str, rc: i32) -> PathBuf {
        let p = dir.join("fake-runc");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/argv\ncat > {d}/stdin\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {rc}\n",
            d = dir.display()
        );
        write_executable(&p, script);
        p
    }

    fn argv(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("argv"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn global_args_come_after_root_and_before_the_verb() {
        let dir = tempfile::tempdir().unwrap();
        let rt = OciRuntime::new(fake(dir.path(), "", "", 0), "/run/krio-runsc")
            .with_args(vec!["--platform=ptrace".into(), "--network=host".into()]);
        rt.kill(
            "c1",
            &KillOptions {
                signal: 15,
                all: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            argv(dir.path()),
            [
                "--root",
                "/run/krio-runsc",
                "--platform=ptrace",
                "--network=host",
                "kill",
                "c1",
                "15"
            ]
        );
    }

    #[tokio::test]
    async fn verbs_build_expected_argv() {
        let dir = tempfile::tempdir().unwrap();
        let rt = OciRuntime::new(fake(dir.path(), "", "", 0), "/run/krio-runc");
        rt.start("c1").await.unwrap();
        assert_eq!(
            argv(dir.path()),
            ["--root", "/run/krio-runc", "start", "c1"]
        );
        rt.kill(
            "c1",
            &KillOptions {
                signal: 9,
                all: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            argv(dir.path()),
            ["--root", "/run/krio-runc", "kill", "--all", "c1", "9"]
        );
        rt.kill(
            "c1",
            &KillOptions {
                signal: 15,
                all: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(argv(dir.path())[2..], ["kill", "c1", "15"]);
        rt.delete("c1", &DeleteOptions { force: true })
            .await
            .unwrap();
        assert_eq!(argv(dir.path())[2..], ["delete", "--force", "c1"]);
        rt.pause("c1").await.unwrap();
        rt.resume("c1").await.unwrap();
        assert_eq!(argv(dir.path())[2..], ["resume", "c1"]);
        let res = oci_spec::runtime::LinuxResources::default();
        rt.update("c1", &res).await.unwrap();
        assert_eq!(argv(dir.path())[2..], ["update", "--resources", "-", "c1"]);
        let stdin: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("stdin")).unwrap()).unwrap();
        assert!(stdin.is_object());
    }

    #[tokio::test]
    async fn state_parses() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"ociVersion":"1.0.2","id":"c1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2024-01-01T00:00:00Z","owner":""}"#;
        let rt = OciRuntime::new(fake(dir.path(), json, "", 0), "/r");
        let st = rt.state("c1").await.unwrap();
        assert_eq!((st.pid, st.status), (42, RuntimeStatus::Running));
        let rt = OciRuntime::new(fake(dir.path(), "not json", "", 0), "/r");
        assert!(matches!(
            rt.state("c1").await,
            Err(RuntimeError::Parse { .. })
        ));
        let rt = OciRuntime::new(fake(dir.path(), "null", "", 0), "/r");
        assert!(rt.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn events_stats_runs_with_its_own_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"type":"stats","id":"c1","data":{"cpu":{"usage":{"total":42}}}}"#;
        let rt = OciRuntime::new(fake(dir.path(), json, "", 0), "/r")
            .with_args(vec!["--platform=ptrace".into()]);
        let e = rt.events_stats("c1", Duration::from_secs(5)).await.unwrap();
        assert_eq!(e.cpu_total_ns(), Some(42));
        assert_eq!(
            argv(dir.path()),
            [
                "--root",
                "/r",
                "--platform=ptrace",
                "events",
                "--stats",
                "c1"
            ]
        );
        // What runsc 20221219 prints for a container it does not know.
        let rt = OciRuntime::new(
            fake(dir.path(), "", "loading sandbox: file does not exist", 128),
            "/r",
        );
        assert!(matches!(
            rt.events_stats("c1", Duration::from_secs(5)).await,
            Err(RuntimeError::Failed { verb: "events", .. })
        ));
        // The deadline is the call's own, not the runtime's (60 s here).
        let slow = dir.path().join("slow");
        write_executable(&slow, "#!/bin/sh\nsleep 5\n");
        let t = std::time::Instant::now();
        let rt = OciRuntime::new(&slow, "/r");
        assert!(matches!(
            rt.events_stats("c1", Duration::from_millis(200)).await,
            Err(RuntimeError::Timeout { verb: "events", .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn failures_carry_context() {
        let dir = tempfile::tempdir().unwrap();
        let rt = OciRuntime::new(fake(dir.path(), "out", "boom", 3), "/r");
        match rt.start("c1").await {
            Err(RuntimeError::Failed {
                verb,
                id,
                status,
                stdout,
                stderr,
            }) => {
                assert_eq!(
                    (
                        verb,
                        id.as_str(),
                        status.code(),
                        stdout.as_str(),
                        stderr.as_str()
                    ),
                    ("start", "c1", Some(3), "out", "boom")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let rt = OciRuntime::new(
            fake(
                dir.path(),
                "",
                "level=error msg=\"container does not exist\"",
                1,
            ),
            "/r",
        );
        assert!(matches!(
            rt.delete("c1", &DeleteOptions::default()).await,
            Err(RuntimeError::NotFound { verb: "delete", .. })
        ));
        let rt = OciRuntime::new("/nonexistent/runc", "/r");
        assert!(matches!(
            rt.start("c1").await,
            Err(RuntimeError::Spawn { .. })
        ));
        let slow = dir.path().join("slow");
        write_executable(&slow, "#!/bin/sh\nsleep 5\n");
        let rt = OciRuntime::new(&slow, "/r").with_timeout(Duration::from_millis(200));
        assert!(matches!(
            rt.start("c1").await,
            Err(RuntimeError::Timeout { .. })
        ));
    }

    #[tokio::test]
    async fn ids_are_validated() {
        let rt = OciRuntime::new("/bin/true", "/r");
        for id in ["", "-rf", "../x", "a/b", "a b", ".", &"x".repeat(129)] {
            assert!(
                matches!(rt.start(id).await, Err(RuntimeError::InvalidId { .. })),
                "{id:?}"
            );
        }
        validate_container_id("abc-1.2_3").unwrap();
    }
}
