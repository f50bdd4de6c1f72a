//! SPDY/3.1, as Kubernetes uses it for streaming (draft-mbelshe-httpbis-spdy-00 with the
//! SPDY/3.1 session window): frames, header blocks and sessions.

pub mod frame;
pub mod headers;
pub mod session;

pub use headers::{header, Headers};
pub use session::{Role, Session, Stream, StreamReader, StreamWriter};

/// The value of the `Upgrade` header that asks for SPDY.
pub const UPGRADE: &str = "SPDY/3.1";

/// Errors of the SPDY layer.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The peer broke the protocol.
    #[error("spdy protocol error: {0}")]
    Protocol(String),
    /// Header (de)compression failed.
    #[error("spdy header compression: {0}")]
    Compression(String),
    /// The stream was reset or the session ended.
    #[error("spdy stream closed")]
    Closed,
    /// Reading or writing the connection failed.
    #[error("spdy connection: {0}")]
    Io(#[from] std::io::Error),
}
