//! The client side of the upgrade: connecting to a streaming URL and switching the
//! connection to SPDY/3.1 or WebSocket (what crictl and kubectl do before the streams).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::remotecommand::PROTOCOL_HEADER;

/// The transport to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version` offers.
    Spdy,
    /// `Upgrade: websocket` with `Sec-WebSocket-Protocol` offers.
    WebSocket,
}

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The URL is not `http://host:port/path` (https is not supported by this client).
    #[error("unsupported streaming URL {0:?}")]
    Url(String),
    /// Connecting or talking to the server failed.
    #[error("streaming connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with something other than 101 Switching Protocols.
    #[error("streaming server answered {status}: {body}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// The 101 answer is not a valid upgrade.
    #[error("bad upgrade answer: {0}")]
    BadAnswer(String),
}

/// The HTTP status of an upgrade answer; useful to tell 404 (unknown, used or expired token)
/// from other refusals.
impl UpgradeError {
    /// The HTTP status of a refusal, if the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpgradeError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Connects to `url` and upgrades the connection, offering `protocols` in order. Returns the
/// upgraded connection and the protocol the server chose (empty if it named none).
///
/// Errors: [`UpgradeError`].
pub async fn upgrade(
    url: &str,
    transport: Transport,
    protocols: &[&str],
) -> Result<(TcpStream, String), UpgradeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| UpgradeError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n");
    let ws_key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    match transport {
        Transport::Spdy => {
            req.push_str("Upgrade: SPDY/3.1\r\n");
            for p in protocols {
                req.push_str(&format!("{PROTOCOL_HEADER}: {p}\r\n"));
            }
        }
        Transport::WebSocket => {
            req.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
            req.push_str(&format!("Sec-WebSocket-Key: {ws_key}\r\n"));
            if !protocols.is_empty() {
                req.push_str(&format!(
                    "Sec-WebSocket-Protocol: {}\r\n",
                    protocols.join(", ")
                ));
            }
        }
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await?;
    // Read the answer's head a byte at a time, so nothing after it is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(UpgradeError::BadAnswer("answer head too large".into()));
        }
        let b = tcp.read_u8().await?;
        head.push(b);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| UpgradeError::BadAnswer(text.clone()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if status != 101 {
        let len: usize = get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0)
            .min(64 * 1024);
        let mut body = vec![0u8; len];
        let _ = tcp.read_exact(&mut body).await;
        return Err(UpgradeError::Refused {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let protocol = match transport {
        Transport::Spdy => get(&PROTOCOL_HEADER.to_ascii_lowercase()).unwrap_or_default(),
        Transport::WebSocket => {
            let want = crate::ws::accept_key(ws_key.as_bytes());
            if get("sec-websocket-accept").as_deref() != Some(want.as_str()) {
                return Err(UpgradeError::BadAnswer("wrong Sec-WebSocket-Accept".into()));
            }
            get("sec-websocket-protocol").unwrap_or_default()
        }
    };
    if !protocol.is_empty() && !protocols.contains(&protocol.as_str()) {
        return Err(UpgradeError::BadAnswer(format!(
            "server chose {protocol:?}, which was not offered"
        )));
    }
    Ok((tcp, protocol))
}
