//! Connections on the CRI unix socket, made acceptable to the HTTP/2 server whatever
//! `:authority` the client sends.
//!
//! gRPC clients built on gRPC's C core (Python's `grpcio`, for one), grpc-java and some
//! others send the socket's path, or its percent-encoding, as the HTTP/2 `:authority` of
//! every request on a `unix:` channel. The `h2` crate under tonic checks `:authority` against
//! the URI grammar while it decodes the request headers, before any tower layer sees the
//! request, and answers `RST_STREAM` `PROTOCOL_ERROR` to a path. containerd (grpc-go) ignores
//! the authority on a unix socket, and so must krio: on a local socket it names nothing.
//!
//! [`UdsConnection`] sits between the socket and the HTTP/2 server and reads the client's
//! frames as they arrive. It decodes (HPACK, RFC 7541) the first request's header block:
//!
//! - if its `:authority` is a valid URI authority, or absent, the frames go on unchanged and
//!   the connection becomes a plain pass-through (gRPC clients use one authority per channel),
//!   so kubelet, crictl and other well-behaved clients pay one header decode per connection;
//! - otherwise every header block of the connection is decoded and encoded again with
//!   `:authority: localhost`, as literals that do not touch the server's HPACK dynamic table,
//!   so the server's table never depends on the client's. All other frames pass unchanged.
//!
//! The HTTP/2 framing it relies on is RFC 9113 §3.4 (preface), §4.1 (frame header), §6.2
//! (HEADERS: PADDED and PRIORITY flags) and §6.10 (CONTINUATION). Anything it does not
//! understand is passed on unchanged, for the server to judge.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Largest frame payload the server accepts by default (SETTINGS_MAX_FRAME_SIZE's initial
/// value); rewritten header blocks are split into frames no larger than this.
const MAX_FRAME: usize = 16_384;
/// Largest header block buffered for decoding (bytes); a larger one is passed on unchanged.
const MAX_BLOCK: usize = 1 << 20;
/// The authority put in place of one that is not a valid URI authority.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the connection preface.
    Preface,
    /// Before the first header block: frames are parsed, nothing is changed yet.
    Detect,
    /// Every header block is rewritten.
    Rewrite,
    /// Bytes go through untouched.
    Passthrough,
}

/// A server-side connection whose incoming HTTP/2 header blocks get a valid `:authority`.
///
/// Writes go straight to the inner stream; reads are parsed frame by frame until the first
/// header block shows whether the client's authority needs fixing (see the module docs).
/// Memory is bounded: at most one frame (16 MiB, the HTTP/2 maximum) or one header block
/// ([`MAX_BLOCK`]) is buffered.
pub struct UdsConnection<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the client, not yet handled.
    input: Vec<u8>,
    /// Bytes ready for the server.
    output: Vec<u8>,
    /// How much of `output` the server has read.
    output_pos: usize,
    decoder: Option<loona_hpack::Decoder<'static>>,
    eof: bool,
}

impl<S> std::fmt::Debug for UdsConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdsConnection")
            .field("mode", &self.mode)
            .field(
                "buffered",
                &(self.input.len() + self.output.len() - self.output_pos),
            )
            .finish()
    }
}

impl<S> UdsConnection<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        UdsConnection {
            inner,
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            output_pos: 0,
            decoder: None,
            eof: false,
        }
    }

    /// Whether header blocks on this connection are being rewritten (for tests and logs).
    pub fn rewriting(&self) -> bool {
        self.mode == Mode::Rewrite
    }

    /// Moves every complete unit of `input` to `output`, rewriting header blocks as the mode
    /// requires. Leaves incomplete frames in `input`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    self.output.append(&mut self.input);
                    return;
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.output.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Detect;
                }
                Mode::Detect | Mode::Rewrite => {
                    let Some(header) = frame_at(&self.input, 0) else {
                        return;
                    };
                    if header.len > (1 << 24) {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER + header.len {
                        return;
                    }
                    if header.kind != TYPE_HEADERS {
                        self.output
                            .extend(self.input.drain(..FRAME_HEADER + header.len));
                        continue;
                    }
                    match self.header_block() {
                        Block::Incomplete => return,
                        Block::Invalid => {
                            // Not ours to judge: the server answers the protocol error.
                            self.mode = Mode::Passthrough;
                        }
                        Block::Complete {
                            end,
                            stream_id,
                            end_stream,
                            fragment,
                        } => {
                            self.handle_block(end, stream_id, end_stream, &fragment);
                        }
                    }
                }
            }
        }
    }

    /// Finds the header block starting with the HEADERS frame at the front of `input`.
    fn header_block(&self) -> Block {
        let mut pos = 0;
        let mut fragment = Vec::new();
        let mut first = true;
        let mut stream_id = 0;
        let mut end_stream = false;
        loop {
            let Some(h) = frame_at(&self.input, pos) else {
                return Block::Incomplete;
            };
            if self.input.len() < pos + FRAME_HEADER + h.len {
                return if fragment.len() + h.len > MAX_BLOCK {
                    Block::Invalid
                } else {
                    Block::Incomplete
                };
            }
            let payload = &self.input[pos + FRAME_HEADER..pos + FRAME_HEADER + h.len];
            if first {
                stream_id = h.stream_id;
                end_stream = h.flags & FLAG_END_STREAM != 0;
                let Some(p) = headers_fragment(payload, h.flags) else {
                    return Block::Invalid;
                };
                fragment.extend_from_slice(p);
                first = false;
            } else {
                if h.kind != TYPE_CONTINUATION || h.stream_id != stream_id {
                    return Block::Invalid;
                }
                fragment.extend_from_slice(payload);
            }
            if fragment.len() > MAX_BLOCK {
                return Block::Invalid;
            }
            pos += FRAME_HEADER + h.len;
            if h.flags & FLAG_END_HEADERS != 0 {
                return Block::Complete {
                    end: pos,
                    stream_id,
                    end_stream,
                    fragment,
                };
            }
        }
    }

    /// Decodes one complete header block (`input[..end]`) and passes it on, rewritten or not.
    fn handle_block(&mut self, end: usize, stream_id: u32, end_stream: bool, fragment: &[u8]) {
        let decoder = self.decoder.get_or_insert_with(loona_hpack::Decoder::new);
        let headers = match decoder.decode(fragment) {
            Ok(h) => h,
            Err(_) => {
                // The server decodes it too and answers COMPRESSION_ERROR.
                self.mode = Mode::Passthrough;
                return;
            }
        };
        let bad_authority = headers
            .iter()
            .any(|(n, v)| n == b":authority" && !valid_authority(v));
        if self.mode == Mode::Detect && !bad_authority {
            self.output.extend(self.input.drain(..end));
            self.mode = Mode::Passthrough;
            self.decoder = None;
            return;
        }
        if self.mode == Mode::Detect {
            tracing::debug!("client sends an :authority that is not a URI authority; rewriting it");
        }
        self.mode = Mode::Rewrite;
        self.input.drain(..end);
        let mut block = Vec::with_capacity(fragment.len() + 64);
        for (name, value) in &headers {
            let value: &[u8] = if name == b":authority" && !valid_authority(value) {
                LOCAL_AUTHORITY
            } else {
                value
            };
            encode_literal(&mut block, name, value);
        }
        write_header_frames(&mut self.output, stream_id, end_stream, &block);
    }
}

enum Block {
    Incomplete,
    Invalid,
    Complete {
        /// Offset in `input` just past the block's last frame.
        end: usize,
        stream_id: u32,
        end_stream: bool,
        fragment: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

/// The frame header at `buf[pos..]`, if all nine bytes are there.
fn frame_at(buf: &[u8], pos: usize) -> Option<FrameHeader> {
    let h = buf.get(pos..pos + FRAME_HEADER)?;
    Some(FrameHeader {
        len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
        kind: h[3],
        flags: h[4],
        stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
    })
}

/// The header block fragment of a HEADERS payload, without padding and priority fields.
fn headers_fragment(payload: &[u8], flags: u8) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    if flags & FLAG_PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// Whether `v` parses as a URI authority, which is what the server demands.
fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// Appends an HPACK integer with an `n`-bit prefix whose high bits are `first` (RFC 7541
/// §5.1).
fn encode_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Appends "literal header field without indexing, new name" with raw (not Huffman) strings
/// (RFC 7541 §6.2.2): the server's dynamic table is never touched.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_int(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    encode_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

/// Appends `block` as a HEADERS frame followed by CONTINUATION frames as needed.
fn write_header_frames(out: &mut Vec<u8>, stream_id: u32, end_stream: bool, block: &[u8]) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut first = true;
    if block.is_empty() {
        // An empty block still needs its HEADERS frame.
        push_frame(
            out,
            TYPE_HEADERS,
            end_flags(end_stream, true),
            stream_id,
            &[],
        );
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let (kind, mut flags) = if first {
            (TYPE_HEADERS, end_flags(end_stream, false))
        } else {
            (TYPE_CONTINUATION, 0)
        };
        if last {
            flags |= FLAG_END_HEADERS;
        }
        push_frame(out, kind, flags, stream_id, chunk);
        first = false;
    }
}

fn end_flags(end_stream: bool, end_headers: bool) -> u8 {
    (if end_stream { FLAG_END_STREAM } else { 0 })
        | (if end_headers { FLAG_END_HEADERS } else { 0 })
}

fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

impl<S: AsyncRead + Unpin> AsyncRead for UdsConnection<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.output_pos < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.output_pos);
                buf.put_slice(&this.output[this.output_pos..this.output_pos + n]);
                this.output_pos += n;
                if this.output_pos == this.output.len() {
                    this.output.clear();
                    this.output_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Passthrough && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // Whatever is left is an incomplete frame: let the server see it.
                if this.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.output.append(&mut this.input);
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(rb.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UdsConnection<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for UdsConnection<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A HEADERS frame carrying `block`.
    fn headers(stream_id: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        push_frame(&mut v, TYPE_HEADERS, flags, stream_id, block);
        v
    }

    /// Literal with incremental indexing, indexed name (RFC 7541 §6.2.1), raw value.
    fn incr(name_index: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![0x40 | name_index, value.len() as u8];
        v.extend_from_slice(value);
        v
    }

    /// A request block as gRPC's C core writes it: :method POST (static 3), :scheme http
    /// (static 6), :path, :authority, content-type, te.
    fn request_block(authority: &[u8]) -> Vec<u8> {
        let mut b = vec![0x83, 0x86];
        b.extend(incr(4, b"/runtime.v1.RuntimeService/Version"));
        b.extend(incr(1, authority));
        b.extend(incr(31, b"application/grpc"));
        b
    }

    async fn through(input: Vec<u8>) -> (Vec<u8>, bool) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut conn = UdsConnection::new(server);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        conn.read_to_end(&mut out).await.unwrap();
        let rewriting = conn.rewriting();
        (out, rewriting)
    }

    fn decode_all(out: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(out.starts_with(PREFACE));
        let mut pos = PREFACE.len();
        let mut dec = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut pending = Vec::new();
        while let Some(h) = frame_at(out, pos) {
            let payload = &out[pos + FRAME_HEADER..pos + FRAME_HEADER + h.len];
            if h.kind == TYPE_HEADERS || h.kind == TYPE_CONTINUATION {
                pending.extend_from_slice(headers_fragment(payload, h.flags).unwrap());
                if h.flags & FLAG_END_HEADERS != 0 {
                    blocks.push(dec.decode(&pending).unwrap());
                    pending.clear();
                }
            }
            pos += FRAME_HEADER + h.len;
        }
        assert_eq!(pos, out.len());
        blocks
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
        &block.iter().find(|(n, _)| n == b":authority").unwrap().1
    }

    #[tokio::test]
    async fn a_valid_authority_passes_byte_for_byte() {
        let mut input = PREFACE.to_vec();
        push_frame(&mut input, 0x4, 0, 0, &[]); // SETTINGS
        input.extend(headers(1, FLAG_END_HEADERS, &request_block(b"localhost")));
        push_frame(&mut input, 0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"); // DATA
        let (out, rewriting) = through(input.clone()).await;
        assert_eq!(out, input);
        assert!(!rewriting);
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_on_every_request() {
        let mut input = PREFACE.to_vec();
        push_frame(&mut input, 0x4, 0, 0, &[]);
        input.extend(headers(
            1,
            FLAG_END_HEADERS,
            &request_block(b"/run/krio/krio.sock"),
        ));
        push_frame(&mut input, 0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0");
        // The second request refers to the client's dynamic table: 62 is the last entry
        // added (content-type), 63 the authority, 64 the path.
        input.extend(headers(
            3,
            FLAG_END_HEADERS,
            &[0x83, 0x86, 0xc0, 0xbf, 0xbe],
        ));
        let (out, rewriting) = through(input).await;
        assert!(rewriting);
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            assert_eq!(authority(b), b"localhost");
            assert!(b
                .iter()
                .any(|(n, v)| n == b":path" && v == b"/runtime.v1.RuntimeService/Version"));
        }
    }

    #[tokio::test]
    async fn padding_priority_and_continuation_are_understood() {
        let block = request_block(b"%2Frun%2Fkrio.sock");
        let (a, b) = block.split_at(10);
        let mut input = PREFACE.to_vec();
        // HEADERS with PADDED (3 bytes of padding) and PRIORITY, no END_HEADERS.
        let mut payload = vec![3];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        push_frame(
            &mut input,
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            1,
            &payload,
        );
        push_frame(&mut input, TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b);
        let (out, rewriting) = through(input).await;
        assert!(rewriting);
        let blocks = decode_all(&out);
        assert_eq!(authority(&blocks[0]), b"localhost");
    }

    #[tokio::test]
    async fn a_large_block_is_split_into_continuations() {
        let mut block = request_block(b"/s");
        // A 40 KB header value, encoded as a literal without indexing, new name.
        encode_literal(&mut block, b"x-big", &vec![b'a'; 40_000]);
        let mut input = PREFACE.to_vec();
        input.extend(headers(1, FLAG_END_HEADERS | FLAG_END_STREAM, &block));
        let (out, _) = through(input).await;
        let first = frame_at(&out, PREFACE.len()).unwrap();
        assert_eq!(first.kind, TYPE_HEADERS);
        assert_eq!(first.flags, FLAG_END_STREAM);
        let blocks = decode_all(&out);
        assert_eq!(blocks[0].last().unwrap().1.len(), 40_000);
    }

    #[tokio::test]
    async fn byte_by_byte_arrival_gives_the_same_result() {
        let mut input = PREFACE.to_vec();
        input.extend(headers(
            1,
            FLAG_END_HEADERS,
            &request_block(b"/run/krio/krio.sock"),
        ));
        let (mut client, server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for b in input {
                client.write_all(&[b]).await.unwrap();
            }
        });
        let mut conn = UdsConnection::new(server);
        let mut out = Vec::new();
        conn.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        assert_eq!(authority(&decode_all(&out)[0]), b"localhost");
    }

    #[tokio::test]
    async fn garbage_passes_unchanged() {
        let input = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        assert_eq!(through(input.clone()).await.0, input);
        let mut input = PREFACE.to_vec();
        input.extend(headers(
            1,
            FLAG_END_HEADERS,
            &[0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert_eq!(through(input.clone()).await.0, input);
    }

    #[test]
    fn hpack_integers_follow_rfc7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut v = Vec::new();
        encode_int(&mut v, 0, 5, 10);
        assert_eq!(v, [0x0a]);
        v.clear();
        encode_int(&mut v, 0, 5, 1337);
        assert_eq!(v, [0x1f, 0x9a, 0x0a]);
    }
}
