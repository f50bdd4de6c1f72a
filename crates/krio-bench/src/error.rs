//! Typed errors of the benchmark driver.

use std::path::PathBuf;

/// Every failure the driver can report, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The CRI endpoint string is not `unix:///abs/path` or `/abs/path`.
    #[error("invalid CRI endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connecting the gRPC channel over the unix socket failed.
    #[error("connecting to CRI endpoint {endpoint}: {source}")]
    Connect {
        /// The socket path.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// A CRI call returned a non-OK gRPC status.
    #[error("CRI {call} failed ({context}): {code:?}: {message}")]
    Rpc {
        /// The CRI method name, e.g. `RunPodSandbox`.
        call: &'static str,
        /// Which object the call was about (pod name, container id, image).
        context: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message from the runtime.
        message: String,
    },
    /// A started container never reported `CONTAINER_RUNNING`.
    #[error("container {container_id} not RUNNING after {waited_ms} ms (last state {state})")]
    NotRunning {
        /// The container id returned by CreateContainer.
        container_id: String,
        /// How long the driver polled ContainerStatus, in milliseconds.
        waited_ms: u64,
        /// The last `ContainerState` seen, as its protobuf name.
        state: String,
    },
    /// A file (usually under /proc) could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `writing`, `creating`).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A /proc file did not have the expected format.
    #[error("parsing {path}: {reason}")]
    ProcParse {
        /// The /proc file.
        path: PathBuf,
        /// What was unexpected.
        reason: String,
    },
    /// No process listens on the given unix socket.
    #[error("no process listens on unix socket {socket}")]
    NoListener {
        /// The socket path that was looked up in /proc/net/unix.
        socket: PathBuf,
    },
    /// JSON (de)serialization of a results file failed.
    #[error("JSON {path}: {source}")]
    Json {
        /// The results file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A parameter given to a workload is out of range.
    #[error("invalid parameter {field}: {reason}")]
    InvalidParam {
        /// The parameter (CLI flag / struct field) name.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// Drawing the plot failed.
    #[error("plotting {path}: {reason}")]
    Plot {
        /// The SVG being written.
        path: PathBuf,
        /// The plotters error, rendered.
        reason: String,
    },
    /// A streaming session (Exec/Attach URL upgraded to SPDY or WebSocket) failed or ended wrong.
    #[error("streaming {call} ({context}): {reason}")]
    Stream {
        /// The CRI call whose URL was streamed (`Exec`, `Attach`).
        call: &'static str,
        /// Which container.
        context: String,
        /// What went wrong (upgrade refusal, unexpected output, exit status).
        reason: String,
    },
    /// A step of the floor (runc, CNI plugin, namespace pin, mount) failed.
    #[error("floor step {step} ({context}): {reason}")]
    Floor {
        /// The step: `netns`, `mount`, `cni ADD`, `cni DEL`, `runc create`, `runc start`, `runc delete`.
        step: &'static str,
        /// Which floor pod.
        context: String,
        /// The error or the tool's output.
        reason: String,
    },
    /// A condition awaited with a deadline did not happen.
    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long, milliseconds.
        waited_ms: u64,
    },
    /// A spawned measurement task panicked or was cancelled.
    #[error("benchmark task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl BenchError {
    /// Builds [`BenchError::Rpc`] from a tonic status.
    pub fn rpc(call: &'static str, context: impl Into<String>, status: tonic::Status) -> Self {
        BenchError::Rpc {
            call,
            context: context.into(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// Builds [`BenchError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
