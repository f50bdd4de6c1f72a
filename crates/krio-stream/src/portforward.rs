//! Port-forward streams (kubelet's `portforward` server and client-go's `portforward`).
//!
//! Over SPDY (`portforward.k8s.io`) the client opens, per forwarded connection, an error
//! stream and a data stream that share a `requestID` and name the `port`. Over WebSocket
//! the ports come from the `port` query parameters and port `i` uses channel `2i` for data and
//! `2i+1` for errors; the first message the server sends on each channel starts with the port
//! as two little-endian bytes.

/// The SPDY protocol name.
pub const PROTOCOL_V1: &str = "portforward.k8s.io";
/// WebSocket protocols accepted for port-forward, in order of preference.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", PROTOCOL_V1];
/// The stream header naming the port.
pub const PORT_HEADER: &str = "port";
/// The stream header pairing a data stream with its error stream.
pub const REQUEST_ID_HEADER: &str = "requestID";
/// `streamType` of the data stream.
pub const STREAM_TYPE_DATA: &str = "data";
/// `streamType` of the error stream.
pub const STREAM_TYPE_ERROR: &str = "error";

/// Parses a port header or query value: 1 to 65535.
pub fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// The prefix of the server's first message on a WebSocket port-forward channel.
pub fn port_prefix(port: u16) -> [u8; 2] {
    port.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("8080"), Some(8080));
        assert_eq!(parse_port("0"), None);
        assert_eq!(parse_port("70000"), None);
        assert_eq!(parse_port("x"), None);
        assert_eq!(port_prefix(0x1f90), [0x90, 0x1f]);
    }
}

/// Server side: forwarding over SPDY and WebSocket, with a caller-supplied connector that
/// reaches a port inside the pod.
pub mod server {
    use std::collections::HashMap;
    use std::future::Future;
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;

    use super::{parse_port, port_prefix, REQUEST_ID_HEADER, STREAM_TYPE_DATA, STREAM_TYPE_ERROR};
    use crate::conn::{plumb_ws, WsOut};
    use crate::remotecommand::STREAM_TYPE_HEADER;
    use crate::spdy::{header, Role, Session, Stream};

    /// Copies a TCP connection both ways with a client channel until the pod's side ends.
    /// `from_client` ends when the client closes its side; `to_client` sends our side.
    async fn splice<W, Fut>(tcp: TcpStream, mut from_client: mpsc::Receiver<Bytes>, to_client: W)
    where
        W: Fn(Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let (mut rd, mut wr) = tcp.into_split();
        let upstream = async move {
            while let Some(chunk) = from_client.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        };
        let downstream = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if !to_client(Bytes::copy_from_slice(&buf[..n])).await {
                            return;
                        }
                    }
                }
            }
        };
        // As kubelet does: the pod closing its side ends the forward; the client closing its
        // side only half-closes the connection to the pod.
        tokio::select! {
            _ = downstream => {}
            _ = async { upstream.await; std::future::pending::<()>().await } => {}
        }
    }

    fn reader_channel(mut s: crate::spdy::StreamReader) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(c) = s.read().await {
                if tx.send(c).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    async fn forward_spdy<C, F>(error: Stream, data: Stream, port: u16, connect: Arc<C>)
    where
        C: Fn(u16) -> F + Send + Sync + 'static,
        F: Future<Output = std::io::Result<TcpStream>> + Send,
    {
        match connect(port).await {
            Err(e) => {
                let msg = format!("error forwarding port {port} to pod: {e}");
                let _ = error.writer.write(Bytes::from(msg)).await;
                let _ = error.writer.close().await;
                data.writer.reset().await;
            }
            Ok(tcp) => {
                let w = data.writer.clone();
                splice(tcp, reader_channel(data.reader), move |b| {
                    let w = w.clone();
                    async move { w.write(b).await.is_ok() }
                })
                .await;
                let _ = data.writer.close().await;
                let _ = error.writer.close().await;
            }
        }
    }

    /// Serves `portforward.k8s.io` over an upgraded SPDY connection until the client leaves.
    /// Each pair of streams (error and data, sharing a `requestID`) is one connection to the
    /// port its `port` header names, made by `connect`; a failure to connect is reported as
    /// text on the pair's error stream.
    pub async fn serve_spdy<IO, C, F>(io: IO, connect: C)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
        C: Fn(u16) -> F + Send + Sync + 'static,
        F: Future<Output = std::io::Result<TcpStream>> + Send + 'static,
    {
        let connect = Arc::new(connect);
        let (session, mut incoming) = Session::new(io, Role::Server);
        let mut waiting: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
        while let Some(s) = incoming.recv().await {
            let kind = header(&s.headers, STREAM_TYPE_HEADER).map(str::to_string);
            let rid = header(&s.headers, REQUEST_ID_HEADER).map(str::to_string);
            let port = header(&s.headers, super::PORT_HEADER).and_then(parse_port);
            let (Some(kind), Some(rid), Some(port)) = (kind, rid, port) else {
                s.writer.reset().await;
                continue;
            };
            let entry = waiting.entry(rid.clone()).or_default();
            match kind.as_str() {
                STREAM_TYPE_ERROR if entry.0.is_none() => entry.0 = Some(s),
                STREAM_TYPE_DATA if entry.1.is_none() => entry.1 = Some(s),
                _ => {
                    s.writer.reset().await;
                    continue;
                }
            }
            if !matches!(waiting.get(&rid), Some((Some(_), Some(_)))) {
                continue;
            }
            if let Some((Some(error), Some(data))) = waiting.remove(&rid) {
                tokio::spawn(forward_spdy(error, data, port, connect.clone()));
            }
        }
        session.shutdown().await;
    }

    /// Serves port-forward over an upgraded WebSocket connection: port `i` of `ports` uses
    /// channel `2i` for data and `2i+1` for errors, the first message on each starting with
    /// the port (two bytes, little-endian). One connection per port is made with `connect`;
    /// the session ends when all of them have ended.
    pub async fn serve_websocket<IO, C, F>(io: IO, ports: &[u16], connect: C)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        C: Fn(u16) -> F + Send + Sync + 'static,
        F: Future<Output = std::io::Result<TcpStream>> + Send + 'static,
    {
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let mut readers = HashMap::new();
        let mut inputs = Vec::new();
        for i in 0..ports.len() {
            let (tx, rx) = mpsc::channel(4);
            readers.insert((2 * i) as u8, tx);
            inputs.push(rx);
        }
        let (tx, _gone) = plumb_ws(ws, readers, false);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (port, input)) in ports.iter().copied().zip(inputs).enumerate() {
            let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
            for ch in [data_ch, err_ch] {
                let _ = tx
                    .send(WsOut::Data(ch, Bytes::copy_from_slice(&port_prefix(port))))
                    .await;
            }
            let tx = tx.clone();
            let conn = connect(port);
            tasks.spawn(async move {
                match conn.await {
                    Err(e) => {
                        let msg = format!("error forwarding port {port} to pod: {e}");
                        let _ = tx.send(WsOut::Data(err_ch, Bytes::from(msg))).await;
                    }
                    Ok(tcp) => {
                        splice(tcp, input, move |b| {
                            let tx = tx.clone();
                            async move { tx.send(WsOut::Data(data_ch, b)).await.is_ok() }
                        })
                        .await
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let _ = tx.send(WsOut::Close).await;
    }
}

/// Client side: carrying one local connection to a port of the pod.
pub mod client {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;

    use super::{PORT_HEADER, REQUEST_ID_HEADER, STREAM_TYPE_DATA, STREAM_TYPE_ERROR};
    use crate::conn::{plumb_ws, WsOut};
    use crate::remotecommand::STREAM_TYPE_HEADER;
    use crate::spdy::{Role, Session};

    /// A SPDY port-forward session; each [`SpdyForwarder::forward`] is one connection.
    #[derive(Debug)]
    pub struct SpdyForwarder {
        session: Session,
        next_request: AtomicU64,
    }

    async fn copy_local_to(
        mut rd: tokio::net::tcp::OwnedReadHalf,
        tx: impl Fn(Bytes) -> futures::future::BoxFuture<'static, bool>,
    ) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !tx(Bytes::copy_from_slice(&buf[..n])).await {
                        return;
                    }
                }
            }
        }
    }

    impl SpdyForwarder {
        /// Starts a session on an upgraded connection (`portforward.k8s.io`).
        pub fn new<IO>(io: IO) -> Self
        where
            IO: AsyncRead + AsyncWrite + Send + 'static,
        {
            let (session, _incoming) = Session::new(io, Role::Client);
            SpdyForwarder {
                session,
                next_request: AtomicU64::new(0),
            }
        }

        /// Carries `local` to `port` in the pod until both sides are done.
        ///
        /// Errors: the server's message from the error stream (e.g. connection refused in the
        /// pod), or a message when the session is gone.
        pub async fn forward(&self, port: u16, local: TcpStream) -> Result<(), String> {
            let id = self.next_request.fetch_add(1, Ordering::SeqCst).to_string();
            let headers = |kind: &str| {
                vec![
                    (STREAM_TYPE_HEADER.to_string(), kind.to_string()),
                    (PORT_HEADER.to_string(), port.to_string()),
                    (REQUEST_ID_HEADER.to_string(), id.clone()),
                ]
            };
            let closed = |_| "the port-forward session is closed".to_string();
            let mut error = self
                .session
                .open(headers(STREAM_TYPE_ERROR))
                .await
                .map_err(closed)?;
            let _ = error.writer.close().await;
            let mut data = self
                .session
                .open(headers(STREAM_TYPE_DATA))
                .await
                .map_err(closed)?;
            let errors = tokio::spawn(async move {
                let mut msg = Vec::new();
                while let Some(c) = error.reader.read().await {
                    msg.extend_from_slice(&c);
                }
                msg
            });
            let (rd, mut wr) = local.into_split();
            let w = data.writer.clone();
            let up = async move {
                copy_local_to(rd, move |b| {
                    let w = w.clone();
                    Box::pin(async move { w.write(b).await.is_ok() })
                })
                .await;
                let _ = data.writer.close().await;
            };
            let down = async move {
                while let Some(c) = data.reader.read().await {
                    if wr.write_all(&c).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            };
            tokio::join!(up, down);
            let msg = errors.await.unwrap_or_default();
            if msg.is_empty() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&msg).into_owned())
            }
        }
    }

    /// Carries `local` to the single port of a WebSocket port-forward session (channels 0 and
    /// 1), stripping the port prefix the server puts on each channel's first message.
    ///
    /// Errors: the server's message from the error channel.
    pub async fn forward_websocket<IO>(io: IO, local: TcpStream) -> Result<(), String>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        let (data_tx, mut data_rx) = mpsc::channel(4);
        let (err_tx, mut err_rx) = mpsc::channel(4);
        let readers = HashMap::from([(0u8, data_tx), (1u8, err_tx)]);
        let (tx, _gone) = plumb_ws(ws, readers, false);
        let errors = tokio::spawn(async move {
            let mut msg = Vec::new();
            let mut prefix = 2usize;
            while let Some(c) = err_rx.recv().await {
                let skip = prefix.min(c.len());
                prefix -= skip;
                msg.extend_from_slice(&c[skip..]);
            }
            msg
        });
        let (rd, mut wr) = local.into_split();
        let t = tx.clone();
        let up = copy_local_to(rd, move |b| {
            let t = t.clone();
            Box::pin(async move { t.send(WsOut::Data(0, b)).await.is_ok() })
        });
        let down = async move {
            let mut prefix = 2usize;
            while let Some(c) = data_rx.recv().await {
                let skip = prefix.min(c.len());
                prefix -= skip;
                if wr.write_all(&c[skip..]).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        // The server closes the connection when the pod side ends; our upload may still be
        // blocked on a quiet local socket, so the download decides.
        tokio::select! {
            _ = down => {}
            _ = async { up.await; std::future::pending::<()>().await } => {}
        }
        let _ = tx.send(WsOut::Close).await;
        let msg = errors.await.unwrap_or_default();
        if msg.is_empty() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&msg).into_owned())
        }
    }
}
