//! SPDY/3.1 frames (draft-mbelshe-httpbis-spdy-00 section 2.2 and 2.6, with the session-level
//! flow control of SPDY/3.1): the 8-byte common header, control frames and data frames.
//!
//! Header blocks stay compressed here; [`super::headers`] (de)compresses them, because the
//! compression context belongs to the session, not to a frame.

use super::SpdyError;

/// The protocol version this framing speaks.
pub const VERSION: u16 = 3;
/// The largest frame payload accepted (bytes); the length field allows 16 MiB, but nothing in
/// Kubernetes streaming needs more and a bound keeps a peer from making us buffer it.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// FLAG_FIN on data frames, SYN_STREAM, SYN_REPLY and HEADERS: the sender's half is closed.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM: the receiver may not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// SETTINGS id of SETTINGS_INITIAL_WINDOW_SIZE (section 2.6.4).
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes (section 2.6.3) used here.
pub mod rst {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM: a frame for a stream that is not active.
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL: the sender no longer wants the stream.
    pub const CANCEL: u32 = 5;
    /// STREAM_IN_USE: a SYN_STREAM reused an id.
    pub const STREAM_IN_USE: u32 = 8;
}

/// One frame. `headers` fields hold the compressed header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A data frame: `stream_id` (31 bits), flags, payload.
    Data {
        /// Stream id.
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// The payload.
        data: bytes::Bytes,
    },
    /// SYN_STREAM (type 1).
    SynStream {
        /// New stream's id (odd from clients, even from servers).
        stream_id: u32,
        /// Associated stream id, 0 for none.
        associated_to: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// [`FLAG_FIN`], [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        /// Compressed header block.
        headers: Vec<u8>,
    },
    /// SYN_REPLY (type 2).
    SynReply {
        /// Stream id.
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// Compressed header block.
        headers: Vec<u8>,
    },
    /// RST_STREAM (type 3).
    RstStream {
        /// Stream id.
        stream_id: u32,
        /// Status code, see [`rst`].
        status: u32,
    },
    /// SETTINGS (type 4): (flags, id, value) entries.
    Settings {
        /// Frame flags (0x01 = CLEAR_SETTINGS).
        flags: u8,
        /// Entries: per-entry flags, 24-bit id, 32-bit value.
        entries: Vec<(u8, u32, u32)>,
    },
    /// PING (type 6).
    Ping {
        /// The ping id (odd from clients, even from servers).
        id: u32,
    },
    /// GOAWAY (type 7).
    GoAway {
        /// The last stream id the sender acted on.
        last_good_stream_id: u32,
        /// 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR.
        status: u32,
    },
    /// HEADERS (type 8).
    Headers {
        /// Stream id.
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// Compressed header block.
        headers: Vec<u8>,
    },
    /// WINDOW_UPDATE (type 9); stream 0 updates the session window (SPDY/3.1).
    WindowUpdate {
        /// Stream id, or 0 for the session.
        stream_id: u32,
        /// Bytes added to the window (1 to 2^31-1).
        delta: u32,
    },
    /// A control frame of a type this implementation does not know; the specification says
    /// to ignore it.
    Unknown {
        /// The frame type.
        kind: u16,
    },
}

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Frame {
    /// Encodes the frame with its 8-byte header.
    ///
    /// Errors: [`SpdyError::Protocol`] when the payload exceeds the 24-bit length field.
    pub fn encode(&self) -> Result<Vec<u8>, SpdyError> {
        let control = |kind: u16, flags: u8, payload: &[u8]| -> Result<Vec<u8>, SpdyError> {
            let len = payload.len();
            if len >= 1 << 24 {
                return Err(SpdyError::Protocol("frame too large".into()));
            }
            let mut out = Vec::with_capacity(8 + len);
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            out.extend_from_slice(payload);
            Ok(out)
        };
        match self {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() >= 1 << 24 {
                    return Err(SpdyError::Protocol("frame too large".into()));
                }
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                Ok(out)
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut p = Vec::with_capacity(10 + headers.len());
                p.extend_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
                p.extend_from_slice(&(associated_to & STREAM_ID_MASK).to_be_bytes());
                p.push((priority & 7) << 5);
                p.push(0); // slot
                p.extend_from_slice(headers);
                control(1, *flags, &p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = Vec::with_capacity(4 + headers.len());
                p.extend_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
                p.extend_from_slice(headers);
                control(2, *flags, &p)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = (stream_id & STREAM_ID_MASK).to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(3, 0, &p)
            }
            Frame::Settings { flags, entries } => {
                let mut p = (entries.len() as u32).to_be_bytes().to_vec();
                for (f, id, value) in entries {
                    p.push(*f);
                    p.extend_from_slice(&id.to_be_bytes()[1..]);
                    p.extend_from_slice(&value.to_be_bytes());
                }
                control(4, *flags, &p)
            }
            Frame::Ping { id } => control(6, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut p = (last_good_stream_id & STREAM_ID_MASK)
                    .to_be_bytes()
                    .to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(7, 0, &p)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = (stream_id & STREAM_ID_MASK).to_be_bytes().to_vec();
                p.extend_from_slice(headers);
                control(8, *flags, &p)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = (stream_id & STREAM_ID_MASK).to_be_bytes().to_vec();
                p.extend_from_slice(&(delta & STREAM_ID_MASK).to_be_bytes());
                control(9, 0, &p)
            }
            Frame::Unknown { kind } => control(*kind, 0, &[]),
        }
    }

    /// Decodes one frame from the start of `buf`. Returns the frame and the bytes it used, or
    /// `None` when `buf` does not yet hold a whole frame.
    ///
    /// Errors: [`SpdyError::Protocol`] for a wrong version, a payload over [`MAX_PAYLOAD`]
    /// or a control frame too short for its type.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if len > MAX_PAYLOAD {
            return Err(SpdyError::Protocol(format!(
                "frame of {len} bytes is too large"
            )));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let flags = buf[4];
        let p = &buf[8..8 + len];
        let short = |what: &str| SpdyError::Protocol(format!("{what} frame too short"));
        if buf[0] & 0x80 == 0 {
            let frame = Frame::Data {
                stream_id: be32(&buf[..4]) & STREAM_ID_MASK,
                flags,
                data: bytes::Bytes::copy_from_slice(p),
            };
            return Ok(Some((frame, 8 + len)));
        }
        let version = u16::from_be_bytes([buf[0], buf[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Protocol(format!(
                "SPDY version {version} unsupported"
            )));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let frame = match kind {
            1 => {
                if p.len() < 10 {
                    return Err(short("SYN_STREAM"));
                }
                Frame::SynStream {
                    stream_id: be32(p) & STREAM_ID_MASK,
                    associated_to: be32(&p[4..]) & STREAM_ID_MASK,
                    priority: p[8] >> 5,
                    flags,
                    headers: p[10..].to_vec(),
                }
            }
            2 => {
                if p.len() < 4 {
                    return Err(short("SYN_REPLY"));
                }
                Frame::SynReply {
                    stream_id: be32(p) & STREAM_ID_MASK,
                    flags,
                    headers: p[4..].to_vec(),
                }
            }
            3 => {
                if p.len() < 8 {
                    return Err(short("RST_STREAM"));
                }
                Frame::RstStream {
                    stream_id: be32(p) & STREAM_ID_MASK,
                    status: be32(&p[4..]),
                }
            }
            4 => {
                if p.len() < 4 {
                    return Err(short("SETTINGS"));
                }
                let n = be32(p) as usize;
                if p.len() < 4 + n.saturating_mul(8) {
                    return Err(short("SETTINGS"));
                }
                let entries = (0..n)
                    .map(|i| {
                        let e = &p[4 + 8 * i..12 + 8 * i];
                        (e[0], be32(e) & 0x00ff_ffff, be32(&e[4..]))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            6 => {
                if p.len() < 4 {
                    return Err(short("PING"));
                }
                Frame::Ping { id: be32(p) }
            }
            7 => {
                if p.len() < 4 {
                    return Err(short("GOAWAY"));
                }
                Frame::GoAway {
                    last_good_stream_id: be32(p) & STREAM_ID_MASK,
                    // SPDY/2 peers send no status; treat it as OK.
                    status: if p.len() >= 8 { be32(&p[4..]) } else { 0 },
                }
            }
            8 => {
                if p.len() < 4 {
                    return Err(short("HEADERS"));
                }
                Frame::Headers {
                    stream_id: be32(p) & STREAM_ID_MASK,
                    flags,
                    headers: p[4..].to_vec(),
                }
            }
            9 => {
                if p.len() < 8 {
                    return Err(short("WINDOW_UPDATE"));
                }
                Frame::WindowUpdate {
                    stream_id: be32(p) & STREAM_ID_MASK,
                    delta: be32(&p[4..]) & STREAM_ID_MASK,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some((frame, 8 + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame, want: &[u8]) {
        let enc = f.encode().unwrap();
        assert_eq!(enc, want, "{f:?}");
        let (dec, used) = Frame::decode(&enc).unwrap().unwrap();
        assert_eq!(used, want.len());
        assert_eq!(dec, f);
        // Any prefix is incomplete, never an error.
        for cut in 0..want.len() {
            assert!(Frame::decode(&want[..cut]).unwrap().is_none());
        }
    }

    #[test]
    fn data_frame_bytes() {
        round_trip(
            Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: bytes::Bytes::from_static(b"hi"),
            },
            b"\x00\x00\x00\x05\x01\x00\x00\x02hi",
        );
    }

    #[test]
    fn syn_stream_bytes() {
        // Control bit + version 3, type 1, flags FIN, length 10 + 3, stream 1, no associated
        // stream, priority 0 (top 3 bits), slot 0, then the header block.
        round_trip(
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: vec![0xaa, 0xbb, 0xcc],
            },
            b"\x80\x03\x00\x01\x01\x00\x00\x0d\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xaa\xbb\xcc",
        );
        round_trip(
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                flags: FLAG_UNIDIRECTIONAL,
                headers: vec![],
            },
            b"\x80\x03\x00\x01\x02\x00\x00\x0a\x00\x00\x00\x03\x00\x00\x00\x01\xe0\x00",
        );
    }

    #[test]
    fn control_frame_bytes() {
        round_trip(
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![0x01],
            },
            b"\x80\x03\x00\x02\x00\x00\x00\x05\x00\x00\x00\x01\x01",
        );
        round_trip(
            Frame::RstStream {
                stream_id: 7,
                status: rst::CANCEL,
            },
            b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00\x05",
        );
        round_trip(
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 65536)],
            },
            b"\x80\x03\x00\x04\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x07\x00\x01\x00\x00",
        );
        round_trip(
            Frame::Ping { id: 2 },
            b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x02",
        );
        round_trip(
            Frame::GoAway {
                last_good_stream_id: 9,
                status: 0,
            },
            b"\x80\x03\x00\x07\x00\x00\x00\x08\x00\x00\x00\x09\x00\x00\x00\x00",
        );
        round_trip(
            Frame::Headers {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: vec![],
            },
            b"\x80\x03\x00\x08\x01\x00\x00\x04\x00\x00\x00\x01",
        );
        round_trip(
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 0x10000,
            },
            b"\x80\x03\x00\x09\x00\x00\x00\x08\x00\x00\x00\x00\x00\x01\x00\x00",
        );
    }

    #[test]
    fn reserved_bits_are_ignored_and_bad_frames_refused() {
        let (f, _) =
            Frame::decode(b"\x80\x03\x00\x03\x00\x00\x00\x08\x80\x00\x00\x07\x00\x00\x00\x05")
                .unwrap()
                .unwrap();
        assert_eq!(
            f,
            Frame::RstStream {
                stream_id: 7,
                status: 5
            }
        );
        // SPDY/2 control frames, short payloads and oversized lengths are errors.
        assert!(Frame::decode(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01").is_err());
        assert!(Frame::decode(b"\x80\x03\x00\x06\x00\x00\x00\x02\x00\x01").is_err());
        assert!(Frame::decode(b"\x80\x03\x00\x01\x00\x00\x00\x04\x00\x00\x00\x01").is_err());
        assert!(Frame::decode(b"\x00\x00\x00\x01\x00\xff\xff\xff").is_err());
        // Unknown control types are kept, to be ignored.
        let (f, used) = Frame::decode(b"\x80\x03\x00\x0a\x00\x00\x00\x02\xab\xcd")
            .unwrap()
            .unwrap();
        assert_eq!((f, used), (Frame::Unknown { kind: 10 }, 10));
    }
}
