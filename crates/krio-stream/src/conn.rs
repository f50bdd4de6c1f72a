//! Exec and attach sessions over either transport, server side and client side: the
//! upgraded connection becomes a set of byte channels (stdin, stdout, stderr, error, resize)
//! whatever the protocol, so the code behind them never sees SPDY or WebSocket.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role as WsRole};
use tokio_tungstenite::WebSocketStream;

use crate::remotecommand::{
    error_stream_bytes, Outcome, ResizeDecoder, StreamKind, StreamOptions, TerminalSize,
    STREAM_TYPE_HEADER, V5,
};
use crate::spdy::{self, header, Role, Session, StreamWriter};
use crate::ws;

/// Errors setting up a session.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The client did not open the streams the options call for in time.
    #[error("timed out waiting for the client's streams")]
    Timeout,
    /// The peer sent something the protocol does not allow.
    #[error("{0}")]
    Protocol(String),
    /// The connection ended.
    #[error("connection closed")]
    Closed,
}

pub(crate) enum WsOut {
    Data(u8, Bytes),
    CloseChannel(u8),
    Close,
}

/// An outgoing byte channel on either transport. Cloning gives another handle to it.
#[derive(Clone)]
pub struct Sink(SinkInner);

#[derive(Clone)]
enum SinkInner {
    Spdy(StreamWriter),
    Ws {
        tx: mpsc::Sender<WsOut>,
        channel: u8,
        close_signal: bool,
    },
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

impl Sink {
    /// Sends `data`.
    ///
    /// Errors: [`ConnError::Closed`] when the stream or connection is gone.
    pub async fn write(&self, data: Bytes) -> Result<(), ConnError> {
        match &self.0 {
            SinkInner::Spdy(w) => w.write(data).await.map_err(|_| ConnError::Closed),
            SinkInner::Ws { tx, channel, .. } => tx
                .send(WsOut::Data(*channel, data))
                .await
                .map_err(|_| ConnError::Closed),
        }
    }

    /// Closes this direction: SPDY FIN, or the v5 close signal (nothing under v4, which has
    /// no way to say it).
    pub async fn close(&self) {
        match &self.0 {
            SinkInner::Spdy(w) => {
                let _ = w.close().await;
            }
            SinkInner::Ws {
                tx,
                channel,
                close_signal,
            } => {
                if *close_signal {
                    let _ = tx.send(WsOut::CloseChannel(*channel)).await;
                }
            }
        }
    }
}

enum Closer {
    Spdy(Session),
    Ws(mpsc::Sender<WsOut>),
}

impl Closer {
    async fn close(&self) {
        match self {
            Closer::Spdy(s) => s.shutdown().await,
            Closer::Ws(tx) => {
                let _ = tx.send(WsOut::Close).await;
            }
        }
    }
}

/// Runs a WebSocket connection: a writer task fed by the returned sender, and a reader task
/// that hands each channel's data to `readers` (a v5 close signal or the end of the
/// connection ends that channel). The watch turns true when the connection is gone.
pub(crate) fn plumb_ws<IO>(
    ws: WebSocketStream<IO>,
    mut readers: HashMap<u8, mpsc::Sender<Bytes>>,
    close_signal: bool,
) -> (mpsc::Sender<WsOut>, watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<WsOut>(64);
    let (gone_tx, gone_rx) = watch::channel(false);
    let gone_w = gone_tx.clone();
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let msg = match out {
                WsOut::Data(ch, data) => Message::Binary(ws::encode(ch, &data).into()),
                WsOut::CloseChannel(ch) => Message::Binary(vec![ws::CLOSE_CHANNEL, ch].into()),
                WsOut::Close => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                            reason: "".into(),
                        })))
                        .await;
                    break;
                }
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
        let _ = gone_w.send(true);
    });
    tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match ws::decode(&data, close_signal) {
                Some(ws::Message::Data(ch, d)) => {
                    if let Some(r) = readers.get(&ch) {
                        if !d.is_empty() && r.send(Bytes::copy_from_slice(d)).await.is_err() {
                            readers.remove(&ch);
                        }
                    }
                }
                Some(ws::Message::Close(ch)) => {
                    readers.remove(&ch);
                }
                None => {}
            }
        }
        drop(readers);
        let _ = gone_tx.send(true);
    });
    (tx, gone_rx)
}

fn resize_task(mut raw: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut dec = ResizeDecoder::default();
        while let Some(chunk) = raw.recv().await {
            match dec.push(&chunk) {
                Ok(sizes) => {
                    for s in sizes {
                        if tx.send(s).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "dropping the resize stream");
                    return;
                }
            }
        }
    });
    rx
}

fn spdy_reader_task(mut r: spdy::StreamReader) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(chunk) = r.read().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The server side of an exec or attach session.
pub struct ServerSession {
    /// The negotiated protocol.
    pub protocol: String,
    /// What the client types; ends when the client closes stdin or goes away.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// The process's output (the terminal's with a tty).
    pub stdout: Option<Sink>,
    /// The process's standard error.
    pub stderr: Option<Sink>,
    /// Terminal size changes.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    error: Sink,
    closer: Closer,
    gone: watch::Receiver<bool>,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// Serves SPDY on an upgraded connection and waits (up to `timeout`) for the streams that
    /// `opts` calls for under `protocol`, as kubelet's server does.
    ///
    /// Errors: [`ConnError::Timeout`]; [`ConnError::Protocol`] for a stream of an unknown or
    /// repeated type; [`ConnError::Closed`] when the client leaves first.
    pub async fn accept_spdy<IO>(
        io: IO,
        protocol: &str,
        opts: StreamOptions,
        timeout: Duration,
    ) -> Result<Self, ConnError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (session, mut incoming) = Session::new(io, Role::Server);
        let expected = opts.expected(protocol);
        let mut got: HashMap<StreamKind, spdy::Stream> = HashMap::new();
        let collect = async {
            while got.len() < expected.len() {
                let s = incoming.recv().await.ok_or(ConnError::Closed)?;
                let kind = header(&s.headers, STREAM_TYPE_HEADER)
                    .and_then(StreamKind::from_name)
                    .filter(|k| expected.contains(k))
                    .ok_or_else(|| {
                        ConnError::Protocol(format!(
                            "unexpected stream type {:?}",
                            header(&s.headers, STREAM_TYPE_HEADER)
                        ))
                    })?;
                if got.insert(kind, s).is_some() {
                    return Err(ConnError::Protocol(format!(
                        "stream type {} opened twice",
                        kind.name()
                    )));
                }
            }
            Ok(())
        };
        let r = tokio::time::timeout(timeout, collect).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                session.shutdown().await;
                return Err(e);
            }
            Err(_) => {
                session.shutdown().await;
                return Err(ConnError::Timeout);
            }
        }
        // Later streams are not part of the protocol: refuse them.
        tokio::spawn(async move {
            while let Some(s) = incoming.recv().await {
                s.writer.reset().await;
            }
        });
        let mut take = |k| got.remove(&k);
        let error = take(StreamKind::Error).ok_or(ConnError::Closed)?;
        let stdin = take(StreamKind::Stdin).map(|s| spdy_reader_task(s.reader));
        let stdout = take(StreamKind::Stdout).map(|s| Sink(SinkInner::Spdy(s.writer)));
        let stderr = take(StreamKind::Stderr).map(|s| Sink(SinkInner::Spdy(s.writer)));
        let resize = take(StreamKind::Resize).map(|s| resize_task(spdy_reader_task(s.reader)));
        let (gone_tx, gone) = watch::channel(false);
        let watcher = session.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = watcher.closed() => { let _ = gone_tx.send(true); }
                _ = gone_tx.closed() => {}
            }
        });
        Ok(ServerSession {
            protocol: protocol.to_string(),
            stdin,
            stdout,
            stderr,
            resize,
            error: Sink(SinkInner::Spdy(error.writer)),
            closer: Closer::Spdy(session),
            gone,
        })
    }

    /// Serves the WebSocket channel protocol on an upgraded connection (the 101 answer is
    /// already sent). As kubelet's server does, an empty message on the lowest channel the
    /// server writes tells the client the session is ready.
    pub async fn accept_websocket<IO>(io: IO, protocol: &str, opts: StreamOptions) -> Self
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
        let close_signal = protocol == V5;
        let mut readers = HashMap::new();
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        if opts.stdin {
            readers.insert(StreamKind::Stdin.channel(), stdin_tx);
        }
        let (resize_tx, resize_rx) = mpsc::channel(4);
        if opts.tty {
            readers.insert(StreamKind::Resize.channel(), resize_tx);
        }
        let (tx, gone) = plumb_ws(ws, readers, close_signal);
        let sink = |k: StreamKind| {
            Sink(SinkInner::Ws {
                tx: tx.clone(),
                channel: k.channel(),
                close_signal,
            })
        };
        let first = if opts.stdout {
            StreamKind::Stdout
        } else if opts.stderr {
            StreamKind::Stderr
        } else {
            StreamKind::Error
        };
        let _ = tx.send(WsOut::Data(first.channel(), Bytes::new())).await;
        ServerSession {
            protocol: protocol.to_string(),
            stdin: opts.stdin.then_some(stdin_rx),
            stdout: opts.stdout.then(|| sink(StreamKind::Stdout)),
            stderr: opts.stderr.then(|| sink(StreamKind::Stderr)),
            resize: opts.tty.then(|| resize_task(resize_rx)),
            error: sink(StreamKind::Error),
            closer: Closer::Ws(tx.clone()),
            gone,
        }
    }

    /// A receiver that turns true once the client's connection is gone.
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.gone.clone()
    }

    /// Ends the session: reports `outcome` on the error stream in the protocol's format,
    /// closes the output streams and the connection. `command` names the command in messages.
    pub async fn finish(self, command: &[String], outcome: &Outcome) {
        for s in [&self.stdout, &self.stderr].into_iter().flatten() {
            if let SinkInner::Spdy(_) = s.0 {
                s.close().await;
            }
        }
        if let Some(bytes) = error_stream_bytes(&self.protocol, command, outcome) {
            let _ = self.error.write(Bytes::from(bytes)).await;
        }
        if let SinkInner::Spdy(_) = self.error.0 {
            self.error.close().await;
        }
        self.closer.close().await;
    }
}

/// The client side of an exec or attach session (krioctl's).
pub struct ClientSession {
    /// The negotiated protocol.
    pub protocol: String,
    /// Input to the process.
    pub stdin: Option<Sink>,
    /// The process's output.
    pub stdout: Option<mpsc::Receiver<Bytes>>,
    /// The process's standard error.
    pub stderr: Option<mpsc::Receiver<Bytes>>,
    /// Where terminal sizes go (JSON objects on the resize stream).
    pub resize: Option<Sink>,
    /// What the server reports when the command ends.
    pub error: mpsc::Receiver<Bytes>,
    closer: Closer,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// Opens the streams `opts` calls for over an upgraded SPDY connection: error first, then
    /// stdin, stdout, stderr and resize, as client-go does.
    ///
    /// Errors: [`ConnError::Closed`] when the server refuses a stream or goes away.
    pub async fn connect_spdy<IO>(
        io: IO,
        protocol: &str,
        opts: StreamOptions,
    ) -> Result<Self, ConnError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (session, _incoming) = Session::new(io, Role::Client);
        let mut streams = HashMap::new();
        for kind in opts.expected(protocol) {
            let s = session
                .open(vec![(
                    STREAM_TYPE_HEADER.to_string(),
                    kind.name().to_string(),
                )])
                .await
                .map_err(|_| ConnError::Closed)?;
            streams.insert(kind, s);
        }
        let mut take = |k| streams.remove(&k);
        let error = take(StreamKind::Error).ok_or(ConnError::Closed)?;
        // Our side of the error stream carries nothing.
        let _ = error.writer.close().await;
        let out = |s: Option<spdy::Stream>| {
            s.map(|s| {
                let w = s.writer.clone();
                tokio::spawn(async move {
                    let _ = w.close().await;
                });
                spdy_reader_task(s.reader)
            })
        };
        Ok(ClientSession {
            protocol: protocol.to_string(),
            stdin: take(StreamKind::Stdin).map(|s| Sink(SinkInner::Spdy(s.writer))),
            stdout: out(take(StreamKind::Stdout)),
            stderr: out(take(StreamKind::Stderr)),
            resize: take(StreamKind::Resize).map(|s| Sink(SinkInner::Spdy(s.writer))),
            error: spdy_reader_task(error.reader),
            closer: Closer::Spdy(session),
        })
    }

    /// Runs the channel protocol over an upgraded WebSocket connection.
    pub async fn connect_websocket<IO>(io: IO, protocol: &str, opts: StreamOptions) -> Self
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws = WebSocketStream::from_raw_socket(io, WsRole::Client, None).await;
        let close_signal = protocol == V5;
        let mut readers = HashMap::new();
        let mut rx_for = |k: StreamKind, on: bool| {
            let (tx, rx) = mpsc::channel(4);
            if on {
                readers.insert(k.channel(), tx);
                Some(rx)
            } else {
                None
            }
        };
        let stdout = rx_for(StreamKind::Stdout, opts.stdout);
        let stderr = rx_for(StreamKind::Stderr, opts.stderr);
        let error = rx_for(StreamKind::Error, true);
        let (tx, _gone) = plumb_ws(ws, readers, close_signal);
        let sink = |k: StreamKind| {
            Sink(SinkInner::Ws {
                tx: tx.clone(),
                channel: k.channel(),
                close_signal,
            })
        };
        ClientSession {
            protocol: protocol.to_string(),
            stdin: opts.stdin.then(|| sink(StreamKind::Stdin)),
            stdout,
            stderr,
            resize: opts.tty.then(|| sink(StreamKind::Resize)),
            error: error.unwrap_or_else(|| mpsc::channel(1).1),
            closer: Closer::Ws(tx.clone()),
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.closer.close().await;
    }
}

/// Encodes a terminal size for the resize stream.
pub fn resize_message(size: TerminalSize) -> Bytes {
    Bytes::from(serde_json::to_vec(&size).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotecommand::{parse_error_stream, V4};

    async fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<u8> {
        let mut v = Vec::new();
        while let Some(c) = rx.recv().await {
            v.extend_from_slice(&c);
        }
        v
    }

    /// The server echoes stdin to stdout, writes "e" to stderr and ends with exit code 3.
    async fn echo_server(mut s: ServerSession) {
        let mut input = s.stdin.take().unwrap();
        let got = drain(&mut input).await;
        s.stdout
            .as_ref()
            .unwrap()
            .write(Bytes::from(got))
            .await
            .unwrap();
        s.stderr
            .as_ref()
            .unwrap()
            .write(Bytes::from_static(b"e"))
            .await
            .unwrap();
        s.finish(&["cat".to_string()], &Outcome::Exited(3)).await;
    }

    async fn echo_client(mut c: ClientSession) {
        let stdin = c.stdin.clone().unwrap();
        stdin.write(Bytes::from_static(b"ping")).await.unwrap();
        stdin.close().await;
        assert_eq!(drain(c.stdout.as_mut().unwrap()).await, b"ping");
        assert_eq!(drain(c.stderr.as_mut().unwrap()).await, b"e");
        let status = drain(&mut c.error).await;
        assert_eq!(parse_error_stream(&c.protocol, &status), Outcome::Exited(3));
    }

    const OPTS: StreamOptions = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };

    #[tokio::test]
    async fn spdy_session_end_to_end() {
        let (a, b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let s = ServerSession::accept_spdy(b, V4, OPTS, Duration::from_secs(5))
                .await
                .unwrap();
            echo_server(s).await;
        });
        let c = ClientSession::connect_spdy(a, V4, OPTS).await.unwrap();
        echo_client(c).await;
        server.await.unwrap();
    }

    #[tokio::test]
    async fn websocket_v5_session_end_to_end() {
        let (a, b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            echo_server(ServerSession::accept_websocket(b, V5, OPTS).await).await;
        });
        let c = ClientSession::connect_websocket(a, V5, OPTS).await;
        echo_client(c).await;
        server.await.unwrap();
    }

    #[tokio::test]
    async fn spdy_setup_times_out_without_the_streams() {
        let (a, b) = tokio::io::duplex(4096);
        let (_client, _incoming) = Session::new(a, Role::Client);
        let r = ServerSession::accept_spdy(b, V4, OPTS, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(ConnError::Timeout)));
    }

    #[tokio::test]
    async fn a_client_leaving_is_seen() {
        let (a, b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            ServerSession::accept_spdy(b, V4, OPTS, Duration::from_secs(5))
                .await
                .unwrap()
        });
        let c = ClientSession::connect_spdy(a, V4, OPTS).await.unwrap();
        let s = server.await.unwrap();
        let mut gone = s.gone();
        assert!(!*gone.borrow());
        c.close().await;
        tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g))
            .await
            .unwrap()
            .unwrap();
    }
}
