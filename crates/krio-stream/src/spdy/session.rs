//! A SPDY/3.1 session over any byte stream: one task reads frames, one writes them, and each
//! stream is a pair of handles ([`StreamReader`], [`StreamWriter`]).
//!
//! Flow control: every data frame received is acknowledged with WINDOW_UPDATE frames for the
//! stream and the session once it has been handed to the stream's reader, and the reader's
//! queue is bounded, so a fast peer is slowed by TCP instead of growing our memory. Send
//! windows are not enforced: Kubernetes' SPDY peers (moby/spdystream) never send
//! WINDOW_UPDATE, so a sender that waited for one would stall after the first 64 KiB.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::{rst, Frame, FLAG_FIN};
use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};
use super::SpdyError;

/// Which end of the connection this is: clients open odd-numbered streams, servers even.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that sent the HTTP upgrade request.
    Client,
    /// The end that answered it.
    Server,
}

/// The most bytes one data frame carries when we send.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// Data frames queued per stream before the session stops reading from the peer.
const STREAM_QUEUE: usize = 16;

enum Out {
    Frame(Frame),
    /// A frame whose header block is compressed by the writer, in write order.
    WithHeaders {
        kind: HeaderFrame,
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    Shutdown,
}

#[derive(Clone, Copy)]
enum HeaderFrame {
    SynStream,
    SynReply,
}

struct Slot {
    /// Set once we sent FIN; with `remote_fin` the stream is closed and forgotten.
    local_fin: bool,
    /// Set once the peer sent FIN.
    remote_fin: bool,
    data: Option<mpsc::Sender<Bytes>>,
    reply: Option<oneshot::Sender<Result<Headers, SpdyError>>>,
    reset: Arc<AtomicBool>,
}

struct Inner {
    role: Role,
    out: mpsc::Sender<Out>,
    streams: Streams,
    next_id: AtomicU32,
    closed: watch::Sender<bool>,
}

type Streams = Arc<Mutex<HashMap<u32, Slot>>>;

fn lock(s: &Streams) -> std::sync::MutexGuard<'_, HashMap<u32, Slot>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Slot>> {
        lock(&self.streams)
    }
}

/// Records that we closed our half of `id`; a stream closed both ways is forgotten.
fn local_fin(streams: &Streams, id: u32) {
    let mut map = lock(streams);
    if let Some(slot) = map.get_mut(&id) {
        if slot.remote_fin {
            map.remove(&id);
        } else {
            slot.local_fin = true;
        }
    }
}

/// A SPDY session. Cloning gives another handle to the same session.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.inner.role)
            .finish_non_exhaustive()
    }
}

/// A stream opened by the peer or by us.
#[derive(Debug)]
pub struct Stream {
    /// The stream id.
    pub id: u32,
    /// The headers of its SYN_STREAM.
    pub headers: Headers,
    /// Reads what the peer sends on it.
    pub reader: StreamReader,
    /// Sends on it.
    pub writer: StreamWriter,
}

/// The receiving half of a stream.
#[derive(Debug)]
pub struct StreamReader {
    rx: mpsc::Receiver<Bytes>,
}

impl StreamReader {
    /// The next chunk the peer sent, or `None` once it closed its half (FIN), reset the stream
    /// or the session ended.
    pub async fn read(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }
}

/// The sending half of a stream; cloning gives another handle to it.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
    reset: Arc<AtomicBool>,
}

impl StreamWriter {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends `data` in frames of at most 32 KiB.
    ///
    /// Errors: [`SpdyError::Closed`] when the stream was reset or the session ended.
    pub async fn write(&self, mut data: Bytes) -> Result<(), SpdyError> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA_FRAME));
            self.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Closes our half of the stream (an empty data frame with FLAG_FIN).
    ///
    /// Errors: [`SpdyError::Closed`] when the stream was reset or the session ended.
    pub async fn close(&self) -> Result<(), SpdyError> {
        self.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Resets the stream (RST_STREAM with CANCEL).
    pub async fn reset(&self) {
        if !self.reset.swap(true, Ordering::SeqCst) {
            let _ = self
                .out
                .send(Out::Frame(Frame::RstStream {
                    stream_id: self.id,
                    status: rst::CANCEL,
                }))
                .await;
        }
    }

    async fn send(&self, f: Frame) -> Result<(), SpdyError> {
        if self.reset.load(Ordering::SeqCst) {
            return Err(SpdyError::Closed);
        }
        self.out
            .send(Out::Frame(f))
            .await
            .map_err(|_| SpdyError::Closed)
    }
}

impl Session {
    /// Starts a session over `io` (already upgraded). Returns the session and the queue of
    /// streams the peer opens; the server side answers each SYN_STREAM with a SYN_REPLY at once,
    /// as Kubernetes' servers do.
    pub fn new<IO>(io: IO, role: Role) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (incoming_tx, incoming_rx) = mpsc::channel(16);
        let inner = Arc::new(Inner {
            role,
            out: out_tx,
            streams: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU32::new(if role == Role::Client { 1 } else { 2 }),
            closed: watch::channel(false).0,
        });
        tokio::spawn(write_loop(wr, out_rx, inner.streams.clone()));
        tokio::spawn(read_loop(rd, inner.clone(), incoming_tx));
        (Session { inner }, incoming_rx)
    }

    /// Opens a stream with `headers` and waits for the peer's SYN_REPLY.
    ///
    /// Errors: [`SpdyError::Closed`] when the session ended or the peer reset the stream.
    pub async fn open(&self, headers: Headers) -> Result<Stream, SpdyError> {
        let id = self.inner.next_id.fetch_add(2, Ordering::SeqCst);
        if id > 0x7fff_ffff {
            return Err(SpdyError::Protocol("stream ids exhausted".into()));
        }
        let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
        let (reply_tx, reply_rx) = oneshot::channel();
        let reset = Arc::new(AtomicBool::new(false));
        self.inner.streams().insert(
            id,
            Slot {
                local_fin: false,
                remote_fin: false,
                data: Some(data_tx),
                reply: Some(reply_tx),
                reset: reset.clone(),
            },
        );
        self.inner
            .out
            .send(Out::WithHeaders {
                kind: HeaderFrame::SynStream,
                stream_id: id,
                flags: 0,
                headers: headers.clone(),
            })
            .await
            .map_err(|_| SpdyError::Closed)?;
        reply_rx.await.map_err(|_| SpdyError::Closed)??;
        Ok(Stream {
            id,
            headers,
            reader: StreamReader { rx: data_rx },
            writer: StreamWriter {
                id,
                out: self.inner.out.clone(),
                reset,
            },
        })
    }

    /// Waits until the session has ended (the peer closed the connection, it failed, or it
    /// sent GOAWAY).
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Sends GOAWAY, flushes what is queued and closes our side of the connection.
    pub async fn shutdown(&self) {
        let _ = self.inner.out.send(Out::Shutdown).await;
    }
}

async fn write_loop<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Out>, streams: Streams) {
    tokio::pin!(wr);
    let mut z = HeaderCompressor::default();
    let mut last_peer = 0u32;
    while let Some(out) = rx.recv().await {
        let frame = match out {
            Out::Frame(f) => f,
            Out::WithHeaders {
                kind,
                stream_id,
                flags,
                headers,
            } => {
                let block = match z.compress(&headers) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "spdy: compressing headers");
                        break;
                    }
                };
                last_peer = last_peer.max(stream_id);
                match kind {
                    HeaderFrame::SynStream => Frame::SynStream {
                        stream_id,
                        associated_to: 0,
                        priority: 0,
                        flags,
                        headers: block,
                    },
                    HeaderFrame::SynReply => Frame::SynReply {
                        stream_id,
                        flags,
                        headers: block,
                    },
                }
            }
            Out::Shutdown => {
                if let Ok(b) = (Frame::GoAway {
                    last_good_stream_id: last_peer,
                    status: 0,
                })
                .encode()
                {
                    let _ = wr.write_all(&b).await;
                }
                break;
            }
        };
        match &frame {
            Frame::Data {
                stream_id, flags, ..
            }
            | Frame::SynStream {
                stream_id, flags, ..
            }
            | Frame::SynReply {
                stream_id, flags, ..
            } if flags & FLAG_FIN != 0 => local_fin(&streams, *stream_id),
            Frame::RstStream { stream_id, .. } => {
                lock(&streams).remove(stream_id);
            }
            _ => {}
        }
        let bytes = match frame.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "spdy: encoding frame");
                break;
            }
        };
        if wr.write_all(&bytes).await.is_err() {
            break;
        }
        if rx.is_empty() && wr.flush().await.is_err() {
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead>(rd: R, inner: Arc<Inner>, incoming: mpsc::Sender<Stream>) {
    tokio::pin!(rd);
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    let mut z = HeaderDecompressor::default();
    let mut last_peer_id = 0u32;
    let mut incoming = Some(incoming);
    let result: Result<(), SpdyError> = async {
        loop {
            let (frame, used) = loop {
                if let Some(x) = Frame::decode(&buf)? {
                    break x;
                }
                if rd.read_buf(&mut buf).await.map_err(SpdyError::Io)? == 0 {
                    return Ok(());
                }
            };
            let _ = buf.split_to(used);
            match frame {
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let tx = inner.streams().get(&stream_id).and_then(|s| s.data.clone());
                    let len = data.len() as u32;
                    match tx {
                        // A reader that went away just drops what comes.
                        Some(tx) if !data.is_empty() => {
                            let _ = tx.send(data).await;
                        }
                        Some(_) => {}
                        None if !inner.streams().contains_key(&stream_id) => {
                            send(
                                &inner,
                                Frame::RstStream {
                                    stream_id,
                                    status: rst::INVALID_STREAM,
                                },
                            )
                            .await;
                        }
                        None => {}
                    }
                    if len > 0 {
                        send(
                            &inner,
                            Frame::WindowUpdate {
                                stream_id,
                                delta: len,
                            },
                        )
                        .await;
                        send(
                            &inner,
                            Frame::WindowUpdate {
                                stream_id: 0,
                                delta: len,
                            },
                        )
                        .await;
                    }
                    if flags & FLAG_FIN != 0 {
                        remote_fin(&inner, stream_id);
                    }
                }
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    let headers = z.decompress(&headers)?;
                    let peer_parity = if inner.role == Role::Server { 1 } else { 0 };
                    if stream_id % 2 != peer_parity || stream_id <= last_peer_id {
                        send(
                            &inner,
                            Frame::RstStream {
                                stream_id,
                                status: if inner.streams().contains_key(&stream_id) {
                                    rst::STREAM_IN_USE
                                } else {
                                    rst::PROTOCOL_ERROR
                                },
                            },
                        )
                        .await;
                        continue;
                    }
                    last_peer_id = stream_id;
                    let Some(queue) = incoming.as_ref() else {
                        send(
                            &inner,
                            Frame::RstStream {
                                stream_id,
                                status: rst::REFUSED_STREAM,
                            },
                        )
                        .await;
                        continue;
                    };
                    let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
                    let reset = Arc::new(AtomicBool::new(false));
                    inner.streams().insert(
                        stream_id,
                        Slot {
                            local_fin: false,
                            remote_fin: flags & FLAG_FIN != 0,
                            data: (flags & FLAG_FIN == 0).then_some(data_tx),
                            reply: None,
                            reset: reset.clone(),
                        },
                    );
                    let _ = inner
                        .out
                        .send(Out::WithHeaders {
                            kind: HeaderFrame::SynReply,
                            stream_id,
                            flags: 0,
                            headers: Vec::new(),
                        })
                        .await;
                    let stream = Stream {
                        id: stream_id,
                        headers,
                        reader: StreamReader { rx: data_rx },
                        writer: StreamWriter {
                            id: stream_id,
                            out: inner.out.clone(),
                            reset,
                        },
                    };
                    if queue.send(stream).await.is_err() {
                        incoming = None;
                    }
                }
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                } => {
                    let headers = z.decompress(&headers)?;
                    if let Some(reply) = inner
                        .streams()
                        .get_mut(&stream_id)
                        .and_then(|s| s.reply.take())
                    {
                        let _ = reply.send(Ok(headers));
                    }
                    if flags & FLAG_FIN != 0 {
                        remote_fin(&inner, stream_id);
                    }
                }
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                } => {
                    // Decoded only to keep the compression context in step.
                    z.decompress(&headers)?;
                    if flags & FLAG_FIN != 0 {
                        remote_fin(&inner, stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    if let Some(slot) = inner.streams().remove(&stream_id) {
                        slot.reset.store(true, Ordering::SeqCst);
                        if let Some(reply) = slot.reply {
                            let _ = reply.send(Err(SpdyError::Closed));
                        }
                    }
                }
                Frame::Ping { id } => {
                    // Answer the peer's pings (ids of the other parity); ours are never sent.
                    let ours = if inner.role == Role::Client { 1 } else { 0 };
                    if id % 2 != ours {
                        send(&inner, Frame::Ping { id }).await;
                    }
                }
                Frame::GoAway { .. } => {
                    // No new streams from the peer; the existing ones run to their end.
                    incoming = None;
                }
                Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "spdy session ended");
        let _ = inner
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: last_peer_id,
                status: 1,
            }))
            .await;
    }
    // The connection is gone: every stream's reader sees its end, writers fail.
    for (_, slot) in inner.streams().drain() {
        slot.reset.store(true, Ordering::SeqCst);
        if let Some(reply) = slot.reply {
            let _ = reply.send(Err(SpdyError::Closed));
        }
    }
    let _ = inner.closed.send(true);
    let _ = inner.out.send(Out::Shutdown).await;
}

fn remote_fin(inner: &Inner, stream_id: u32) {
    let mut map = inner.streams();
    if let Some(slot) = map.get_mut(&stream_id) {
        slot.data = None;
        slot.remote_fin = true;
        if slot.local_fin {
            map.remove(&stream_id);
        }
    }
}

async fn send(inner: &Inner, f: Frame) {
    let _ = inner.out.send(Out::Frame(f)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn client_and_server_exchange_data() {
        let (a, b) = tokio::io::duplex(1024);
        let (client, _none) = Session::new(a, Role::Client);
        let (server, mut incoming) = Session::new(b, Role::Server);
        let srv = tokio::spawn(async move {
            let mut s = incoming.recv().await.unwrap();
            assert_eq!(
                super::super::headers::header(&s.headers, "streamType"),
                Some("stdin")
            );
            let mut got = Vec::new();
            while let Some(chunk) = s.reader.read().await {
                got.extend_from_slice(&chunk);
            }
            s.writer.write(Bytes::from(got)).await.unwrap();
            s.writer.close().await.unwrap();
            server
        });
        let mut s = client.open(h(&[("streamType", "stdin")])).await.unwrap();
        assert_eq!(s.id, 1);
        let big = Bytes::from(vec![7u8; 200_000]);
        s.writer.write(big.clone()).await.unwrap();
        s.writer.close().await.unwrap();
        let mut back = Vec::new();
        while let Some(chunk) = s.reader.read().await {
            back.extend_from_slice(&chunk);
        }
        assert_eq!(back, big);
        let server = srv.await.unwrap();
        // Closed both ways, the stream is forgotten on both ends.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !(client.inner.streams().is_empty() && server.inner.streams().is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "streams kept after both FINs"
            );
            tokio::task::yield_now().await;
        }
        client.shutdown().await;
        tokio::time::timeout(std::time::Duration::from_secs(5), server.closed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reset_and_disconnect_end_readers() {
        let (a, b) = tokio::io::duplex(1024);
        let (client, _none) = Session::new(a, Role::Client);
        let (_server, mut incoming) = Session::new(b, Role::Server);
        let mut s = client.open(h(&[("streamType", "data")])).await.unwrap();
        let srv_stream = incoming.recv().await.unwrap();
        srv_stream.writer.reset().await;
        assert!(s.reader.read().await.is_none());
        let mut s2 = client.open(h(&[("streamType", "error")])).await.unwrap();
        drop(incoming);
        drop(_server);
        drop(srv_stream);
        client.shutdown().await;
        assert!(s2.reader.read().await.is_none());
    }
}
