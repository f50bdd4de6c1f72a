//! Configuration, status and error types shared by the daemon side ([`crate::spawn`]) and the monitor process.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default longest log line payload before it is split into `P` records (bytes).
pub const DEFAULT_MAX_LOG_LINE: usize = 16 * 1024;

/// Default time allowed for `runtime create` (seconds).
pub const DEFAULT_CREATE_TIMEOUT_SECS: u64 = 120;

/// The file beside `exit_file` (`log-reopen.status`) where a monitor writes, atomically, the outcome of each
/// log reopen it was asked for with SIGUSR1: `ok\n`, or `error: <reason>\n` when the log path could not be
/// opened as a regular file (the monitor then keeps writing to the old file). The daemon removes it before
/// signalling and waits for it (CRI `ReopenContainerLog`).
pub fn log_reopen_status_path(exit_file: &Path) -> PathBuf {
    exit_file.with_file_name("log-reopen.status")
}

/// The file beside `exit_file` (`start.status`) where a monitor created with
/// [`MonitorConfig::start_on_signal`] writes, atomically, the outcome of the `runtime start` it was asked for with
/// SIGUSR2: `ok\n`, or `error: <reason>\n`. The daemon removes it before signalling and waits for it (CRI
/// `StartContainer` of a container that joins its pod's runtime sandbox).
pub fn start_status_path(exit_file: &Path) -> PathBuf {
    exit_file.with_file_name("start.status")
}

/// What the daemon tells a monitor. Sent as one JSON document on the monitor's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// Container id (passed to `runtime create`); 1..=128 bytes of `[A-Za-z0-9_.-]`, starting alphanumeric.
    pub id: String,
    /// Absolute OCI bundle directory (holds `config.json`).
    pub bundle: PathBuf,
    /// Absolute path of the OCI runtime binary (runc).
    pub runtime_binary: PathBuf,
    /// Absolute runtime state directory (`runc --root`).
    pub runtime_root: PathBuf,
    /// Global options of the runtime, put after `--root` before every verb (runsc's `--platform=ptrace`).
    #[serde(default)]
    pub runtime_args: Vec<String>,
    /// Absolute CRI log file (`ContainerConfig.log_path` joined to the sandbox `log_directory`); `None` discards
    /// the container's output.
    pub log_path: Option<PathBuf>,
    /// Absolute pod log directory (`PodSandboxConfig.log_directory`) that `log_path` lies below. When set, only
    /// this directory is opened as given and every component of `log_path` below it is walked without following
    /// links (see [`crate::logfile::open_log_file`]); when `None`, only the log file's own directory is.
    #[serde(default)]
    pub log_directory: Option<PathBuf>,
    /// Absolute path where the monitor writes the [`ExitStatus`] JSON (atomically) when the container exits.
    pub exit_file: PathBuf,
    /// Absolute path of the runtime's `--pid-file` (container init pid).
    pub pid_file: PathBuf,
    /// Absolute path for the runtime's own log during `create` (`runc --log ... --log-format json`); `None`:
    /// `<bundle>/runtime-create.log`. Its error messages are reported when create fails.
    #[serde(default)]
    pub runtime_log: Option<PathBuf>,
    /// Seconds allowed for `runtime create` before it is killed and reported as failed.
    #[serde(default = "default_create_timeout")]
    pub create_timeout_secs: u64,
    /// Longest log line payload before splitting into `P` records (bytes, >= 1).
    #[serde(default = "default_max_line")]
    pub max_log_line: usize,
    /// Pass `--no-pivot` to `runtime create` (runc: `MS_MOVE` + `chroot` instead of `pivot_root`).
    #[serde(default)]
    pub no_pivot: bool,
    /// Largest size of the CRI log file in bytes; 0 means no limit. A batch of records that would take the
    /// file past it truncates the file to zero first (the newest output is kept, the oldest dropped: conmon's
    /// `--log-size-max`), so the file never holds more than this many bytes. See
    /// [`crate::logwriter::CriLogWriter::set_max_size`].
    #[serde(default)]
    pub max_log_size: u64,
    /// The spec has `process.terminal` (CRI `ContainerConfig.tty`): the monitor passes the runtime a
    /// console socket, holds the terminal's master, logs its output as `stdout` and applies resizes.
    #[serde(default)]
    pub tty: bool,
    /// CRI `ContainerConfig.stdin`: the monitor keeps the container's stdin (a pipe, or the terminal)
    /// open and feeds it from attach sessions; otherwise stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// CRI `ContainerConfig.stdin_once`: the container's stdin is closed once the first attach session
    /// that had stdin ends (see [`crate::attach`]).
    #[serde(default)]
    pub stdin_once: bool,
    /// Absolute path of the attach socket ([`crate::attach::attach_socket_path`] of the run directory);
    /// `None` serves no attach.
    #[serde(default)]
    pub attach_socket: Option<PathBuf>,
    /// A CRIU image directory (a checkpoint's `checkpoint/`): when set, the monitor runs
    /// `runtime restore --detach --image-path <dir> --work-path <bundle>` instead of
    /// `runtime create`, so the container's processes come back running from the checkpoint.
    #[serde(default)]
    pub restore_from: Option<PathBuf>,
    /// The container joins a runtime sandbox that another container started (runsc's
    /// `io.kubernetes.cri.container-type=container`): its processes live in that sandbox, not
    /// under the monitor, and the runtime hands the container the stdio of `runtime start`, not
    /// of `create`. So the monitor keeps the container's stdio after `create`, runs
    /// `runtime start` itself when it receives SIGUSR2 (answering in [`start_status_path`]),
    /// then learns the exit from `runtime wait <id>` (runsc's JSON `{"exitStatus": N}`). A
    /// SIGTERM before the start ends the monitor with the exit of a killed container (137): the
    /// daemon sends it after deleting a container that was never started.
    #[serde(default)]
    pub start_on_signal: bool,
}

fn default_create_timeout() -> u64 {
    DEFAULT_CREATE_TIMEOUT_SECS
}

fn default_max_line() -> usize {
    DEFAULT_MAX_LOG_LINE
}

impl MonitorConfig {
    /// A config with the defaults for the optional fields.
    pub fn new(
        id: impl Into<String>,
        bundle: impl Into<PathBuf>,
        runtime_binary: impl Into<PathBuf>,
        runtime_root: impl Into<PathBuf>,
        log_path: Option<PathBuf>,
        exit_file: impl Into<PathBuf>,
        pid_file: impl Into<PathBuf>,
    ) -> Self {
        MonitorConfig {
            id: id.into(),
            bundle: bundle.into(),
            runtime_binary: runtime_binary.into(),
            runtime_root: runtime_root.into(),
            runtime_args: Vec::new(),
            log_path,
            log_directory: None,
            exit_file: exit_file.into(),
            pid_file: pid_file.into(),
            runtime_log: None,
            create_timeout_secs: DEFAULT_CREATE_TIMEOUT_SECS,
            max_log_line: DEFAULT_MAX_LOG_LINE,
            no_pivot: false,
            max_log_size: 0,
            tty: false,
            stdin: false,
            stdin_once: false,
            attach_socket: None,
            restore_from: None,
            start_on_signal: false,
        }
    }

    /// Where the monitor reports the outcome of each log reopen (SIGUSR1): see [`log_reopen_status_path`].
    pub fn log_reopen_status_file(&self) -> PathBuf {
        log_reopen_status_path(&self.exit_file)
    }

    /// Where the monitor reports the outcome of the start it was asked for (SIGUSR2): see
    /// [`start_status_path`].
    pub fn start_status_file(&self) -> PathBuf {
        start_status_path(&self.exit_file)
    }

    /// The runtime log path actually used (see [`MonitorConfig::runtime_log`]).
    pub fn runtime_log_path(&self) -> PathBuf {
        self.runtime_log
            .clone()
            .unwrap_or_else(|| self.bundle.join("runtime-create.log"))
    }

    /// Checks the id and that every path is absolute and NUL-free.
    ///
    /// Errors: [`MonitorError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), MonitorError> {
        let bad = |field: &'static str, reason: String| {
            Err(MonitorError::InvalidConfig { field, reason })
        };
        let id = self.id.as_bytes();
        if id.is_empty()
            || id.len() > 128
            || !id[0].is_ascii_alphanumeric()
            || !id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return bad("id", format!("{:?} is not a valid container id", self.id));
        }
        let paths: [(&'static str, Option<&Path>); 9] = [
            ("bundle", Some(&self.bundle)),
            ("runtime_binary", Some(&self.runtime_binary)),
            ("runtime_root", Some(&self.runtime_root)),
            ("log_path", self.log_path.as_deref()),
            ("log_directory", self.log_directory.as_deref()),
            ("exit_file", Some(&self.exit_file)),
            ("pid_file", Some(&self.pid_file)),
            ("runtime_log", self.runtime_log.as_deref()),
            ("attach_socket", self.attach_socket.as_deref()),
        ];
        for (field, p) in paths {
            if let Some(p) = p {
                if !p.is_absolute() || p.as_os_str().as_encoded_bytes().contains(&0) {
                    return bad(field, format!("{} must be an absolute path", p.display()));
                }
            }
        }
        if let Some(a) = self
            .runtime_args
            .iter()
            .find(|a| !a.starts_with('-') || a.contains('\0'))
        {
            return bad("runtime_args", format!("{a:?} is not an option"));
        }
        if self.max_log_line == 0 {
            return bad("max_log_line", "must be at least 1".into());
        }
        Ok(())
    }
}

/// How the container exited; the content of [`MonitorConfig::exit_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; `128 + n` when killed by signal `n` (so SIGKILL gives 137), as the CRI / shells report it.
    pub exit_code: i32,
    /// The terminating signal, if any.
    pub signal: Option<i32>,
    /// When the monitor reaped the container's init: nanoseconds since the Unix epoch (CRI `finished_at`).
    pub finished_at_ns: i64,
    /// Whether the container was OOM-killed (not detected yet: always `false`).
    pub oom_killed: bool,
}

/// What [`crate::spawn`] returns once the container is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    /// Pid of the long-lived monitor process (session leader, child subreaper).
    pub monitor_pid: i32,
    /// Host pid of the container's init (from the runtime's pid file).
    pub container_pid: i32,
}

/// The one-line JSON message a monitor writes on its sync pipe (its stdout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SyncMessage {
    /// The container is created (runtime `create` succeeded).
    Ok {
        /// The monitor's pid.
        monitor_pid: i32,
        /// The container init's pid.
        container_pid: i32,
    },
    /// Setting up or creating the container failed; the monitor exits.
    Error {
        /// Which step failed (`config`, `log`, `pipes`, `create`, `pid_file`, ...).
        stage: String,
        /// Description of the failure.
        message: String,
        /// The runtime's error output (its `--log` error messages and stderr), when the runtime ran.
        #[serde(default)]
        runtime_stderr: String,
    },
}

/// Errors of the daemon-side API.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A [`MonitorConfig`] field is invalid.
    #[error("invalid monitor config field {field}: {reason}")]
    InvalidConfig {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Creating the sync pipe or starting the monitor binary failed.
    #[error("spawning monitor {binary}: {source}")]
    Spawn {
        /// The monitor binary.
        binary: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the monitor (writing the config, reading the sync pipe) failed.
    #[error("monitor for {id}: {what}: {source}")]
    Io {
        /// Container id.
        id: String,
        /// What was being done.
        what: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The monitor exited without reporting a status.
    #[error("monitor for {id} exited ({launcher_status}) without reporting a status")]
    NoStatus {
        /// Container id.
        id: String,
        /// Exit status of the launcher process.
        launcher_status: std::process::ExitStatus,
    },
    /// The monitor's status line is not valid JSON.
    #[error("monitor for {id}: bad status line {line:?}: {source}")]
    Protocol {
        /// Container id.
        id: String,
        /// The raw line.
        line: String,
        /// JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The monitor reported a failure (e.g. `runc create` failed).
    #[error(
        "monitor for {id}: {stage} failed: {message}{}",
        stderr_suffix(message, runtime_stderr)
    )]
    CreateFailed {
        /// Container id.
        id: String,
        /// Failed step.
        stage: String,
        /// Message.
        message: String,
        /// The runtime's error output.
        runtime_stderr: String,
    },
    /// Reading the exit file failed.
    #[error("reading exit file {path}: {source}")]
    ExitFile {
        /// The exit file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The `krio-monitor pod-init` launcher reported a failure (the pin was removed again).
    #[error("starting pod init for pin {pin}: {stage} failed: {message}")]
    PodInitFailed {
        /// The requested pin path.
        pin: PathBuf,
        /// Failed step (see [`PodInitMessage::Error`]).
        stage: String,
        /// Message.
        message: String,
    },
    /// The pod-init launcher exited without reporting a status.
    #[error(
        "pod init launcher for pin {pin} exited ({launcher_status}) without reporting a status"
    )]
    PodInitNoStatus {
        /// The requested pin path.
        pin: PathBuf,
        /// Exit status of the launcher process.
        launcher_status: std::process::ExitStatus,
    },
    /// The pod-init launcher's status line is not valid JSON.
    #[error("pod init launcher for pin {pin}: bad status line {line:?}: {source}")]
    PodInitProtocol {
        /// The requested pin path.
        pin: PathBuf,
        /// The raw line.
        line: String,
        /// JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A system call while starting, checking or stopping a pod init failed.
    #[error("pod init (pid {pid}, pin {pin}): {what}: {source}")]
    PodInitIo {
        /// The init's pid (0 when not known yet).
        pid: i32,
        /// The pin path.
        pin: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The pod init did not die within the stop timeout after SIGKILL.
    #[error("pod init (pid {pid}) still running {waited_ms} ms after SIGKILL")]
    PodInitStopTimeout {
        /// The init's pid.
        pid: i32,
        /// How long we waited (milliseconds).
        waited_ms: u64,
    },
    /// The exit file is not valid JSON.
    #[error("parsing exit file {path}: {source}")]
    ExitFileParse {
        /// The exit file.
        path: PathBuf,
        /// JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// A running pod init: PID 1 of a pod-level PID namespace (CRI `NamespaceMode::POD` for `pid`, i.e.
/// `shareProcessNamespace`), started by [`crate::spawn_pod_init`].
///
/// Persist both fields with the sandbox: [`crate::stop_pod_init`] and [`crate::pod_init_running`] use them to make
/// sure a pid still names this init (and not a recycled pid) before signalling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInit {
    /// Host pid of the init (it is pid 1 inside its own PID namespace).
    pub pid: i32,
    /// The init's start time: field 22 (`starttime`) of `/proc/<pid>/stat`, in clock ticks since boot.
    pub start_time: u64,
}

/// The one-line JSON message the `krio-monitor pod-init` launcher writes on its stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PodInitMessage {
    /// The init runs and its PID namespace is pinned.
    Ok {
        /// Host pid of the init.
        pid: i32,
        /// Its `/proc/<pid>/stat` start time (clock ticks since boot).
        start_time: u64,
    },
    /// Starting the init failed; everything done was undone.
    Error {
        /// Which step failed (`args`, `pin`, `setsid`, `unshare`, `spawn`, `ready`, `mount`, `stat`).
        stage: String,
        /// Description of the failure.
        message: String,
    },
}

/// The runtime's stderr as a suffix of an error message, unless it is empty or the message
/// already carries it (runc logs the same text to its log file and to stderr).
fn stderr_suffix(message: &str, runtime_stderr: &str) -> String {
    let stderr = runtime_stderr.trim();
    if stderr.is_empty() || message.contains(stderr) {
        String::new()
    } else {
        format!(": {stderr}")
    }
}
