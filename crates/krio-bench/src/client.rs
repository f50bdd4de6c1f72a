//! CRI v1 client over a unix socket.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use krio_cri::v1::image_service_client::ImageServiceClient;
use krio_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{BenchError, Result};

/// Largest gRPC message accepted (bytes); ListContainers with hundreds of containers stays far below.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Both CRI services on one HTTP/2 connection, as the kubelet uses them.
///
/// Cloning is cheap and shares the connection (tonic `Channel`).
#[derive(Clone, Debug)]
pub struct CriClient {
    /// `runtime.v1.RuntimeService`.
    pub runtime: RuntimeServiceClient<Channel>,
    /// `runtime.v1.ImageService`.
    pub image: ImageServiceClient<Channel>,
    socket: PathBuf,
}

/// Turns `unix:///abs/path` or `/abs/path` into the socket path.
///
/// # Errors
/// [`BenchError::InvalidEndpoint`] for any other scheme or a relative path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if endpoint.contains("://") && !endpoint.starts_with("unix://") {
        return Err(BenchError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: "only unix:// endpoints are supported",
        });
    }
    if !path.starts_with('/') {
        return Err(BenchError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: "socket path must be absolute",
        });
    }
    Ok(PathBuf::from(path))
}

impl CriClient {
    /// Connects to the CRI endpoint (`unix:///path` or `/path`).
    ///
    /// # Errors
    /// [`BenchError::InvalidEndpoint`] for a bad endpoint string, [`BenchError::Connect`] if the socket
    /// cannot be reached.
    pub async fn connect(endpoint: &str) -> Result<Self> {
        let socket = socket_path(endpoint)?;
        let target = socket.clone();
        // The URI is ignored by the connector; tonic needs a syntactically valid one.
        let channel =
            Endpoint::from_static("http://[::]:50051")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let target = target.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(target).await?))
                    }
                }))
                .await
                .map_err(|source| BenchError::Connect {
                    endpoint: socket.display().to_string(),
                    source,
                })?;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            image: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
            socket,
        })
    }

    /// The unix socket this client talks to.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        assert_eq!(
            socket_path("/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
        assert!(socket_path("unix://rel.sock").is_err());
        assert!(socket_path("rel.sock").is_err());
    }
}
