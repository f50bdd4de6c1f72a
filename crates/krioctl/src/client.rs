//! Connecting to a CRI endpoint over a unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// A bad `--runtime-endpoint` / `--image-endpoint` value or a failed connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint uses a scheme other than `unix://` (or is empty).
    #[error(
        "endpoint {endpoint:?} is not supported: use unix:///path/to/socket or /path/to/socket"
    )]
    Unsupported {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The socket could not be reached.
    #[error("connecting to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The transport error (its source chain is included in the message).
        source: TransportError,
    },
    /// Connecting took longer than the timeout.
    #[error("connecting to {}: timed out after {after:?}", path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout that elapsed.
        after: Duration,
    },
}

/// A tonic transport error, displayed with its whole source chain (tonic's own
/// message is only "transport error").
#[derive(Debug, thiserror::Error)]
#[error("{chain}")]
pub struct TransportError {
    chain: String,
    #[source]
    source: tonic::transport::Error,
}

impl From<tonic::transport::Error> for TransportError {
    fn from(source: tonic::transport::Error) -> Self {
        let mut chain = source.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(&source);
        let mut last = String::new();
        while let Some(e) = cur {
            let msg = e.to_string();
            // Layers often repeat their source's text; show each message once.
            if msg != last && !chain.ends_with(&msg) {
                chain.push_str(": ");
                chain.push_str(&msg);
            }
            last = msg;
            cur = e.source();
        }
        TransportError { chain, source }
    }
}

/// Turns an endpoint into a socket path: `unix:///run/x.sock` and
/// `/run/x.sock` both give `/run/x.sock` (crictl accepts both).
///
/// Errors: [`ConnectError::Unsupported`] for other schemes (tcp, npipe) and
/// relative or empty paths.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ConnectError> {
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if endpoint.contains("://") {
        return Err(ConnectError::Unsupported {
            endpoint: endpoint.to_string(),
        });
    } else {
        endpoint
    };
    if !path.starts_with('/') {
        return Err(ConnectError::Unsupported {
            endpoint: endpoint.to_string(),
        });
    }
    Ok(PathBuf::from(path))
}

/// Opens a gRPC channel (HTTP/2) to the unix socket at `path`, failing after
/// `timeout`.
///
/// Errors: [`ConnectError::Connect`] (socket missing, refused, ...) or
/// [`ConnectError::Timeout`].
pub async fn connect(path: &Path, timeout: Duration) -> Result<Channel, ConnectError> {
    let sock = path.to_path_buf();
    let endpoint = Endpoint::from_static("http://[::]:0").connect_timeout(timeout);
    let fut = endpoint.connect_with_connector(service_fn(move |_: Uri| {
        let sock = sock.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(sock).await?)) }
    }));
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(ConnectError::Connect {
            path: path.to_path_buf(),
            source: e.into(),
        }),
        Err(_) => Err(ConnectError::Timeout {
            path: path.to_path_buf(),
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/krio/krio.sock").unwrap(),
            PathBuf::from("/run/krio/krio.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1234").is_err());
        assert!(socket_path("relative.sock").is_err());
        assert!(socket_path("unix://relative").is_err());
        assert!(socket_path("").is_err());
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = connect(&dir.path().join("none.sock"), Duration::from_secs(2))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConnectError::Connect { .. }), "{msg}");
        assert!(msg.contains("none.sock"), "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
    }
}
