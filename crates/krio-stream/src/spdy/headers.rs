//! SPDY/3 header blocks: the name/value encoding of SPDY/3 section 2.6.10 and its zlib
//! compression with the protocol's preset dictionary (section 2.6.10.1).
//!
//! Each direction of a session has one compression context that lives as long as the session:
//! every header block is compressed with a sync flush, so the peer can decode it at once and the
//! next block may refer back to it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;

/// Header names of the SPDY/3 dictionary, each entered as a 32-bit big-endian length followed
/// by the name, in the order the specification lists them.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The raw text that ends the SPDY/3 dictionary (status codes, reason phrases, dates and
/// common values), entered without length prefixes.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 zlib dictionary (1423 bytes), built from its words and tail.
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for w in DICTIONARY_WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// A decoded header block: (name, value) pairs in order. Names are lowercase on the wire
/// (SPDY/3 section 2.6.10); a value holding several values separated by NUL bytes is split
/// into one pair per value.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (compared without regard to ASCII case).
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The most bytes a decompressed header block may have: a bound on what a peer can make us hold.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Encodes `h` as an uncompressed SPDY/3 name/value block: a 32-bit pair count, then per pair
/// a 32-bit length and the lowercased name, a 32-bit length and the value. Pairs that share a
/// name are joined into one value separated by NUL bytes, as the specification requires.
pub fn encode_block(h: &[(String, String)]) -> Vec<u8> {
    let mut merged: Vec<(String, Vec<u8>)> = Vec::new();
    for (n, v) in h {
        let n = n.to_ascii_lowercase();
        match merged.iter_mut().find(|(m, _)| *m == n) {
            Some((_, val)) => {
                val.push(0);
                val.extend_from_slice(v.as_bytes());
            }
            None => merged.push((n, v.as_bytes().to_vec())),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(merged.len() as u32).to_be_bytes());
    for (n, v) in merged {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(&v);
    }
    out
}

/// Decodes an uncompressed name/value block.
///
/// Errors: [`SpdyError::Protocol`] when a length runs past the block, a name is empty or
/// a name or value is not UTF-8.
pub fn decode_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let bad = |what: &str| SpdyError::Protocol(format!("header block: {what}"));
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let end = pos
            .checked_add(n)
            .filter(|e| *e <= b.len())
            .ok_or_else(|| bad("truncated"))?;
        let s = &b[pos..end];
        pos = end;
        Ok(s)
    };
    let be32 = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = be32(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let nlen = be32(take(4)?);
        let name = std::str::from_utf8(take(nlen)?).map_err(|_| bad("name is not UTF-8"))?;
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        let name = name.to_string();
        let vlen = be32(take(4)?);
        let value = std::str::from_utf8(take(vlen)?).map_err(|_| bad("value is not UTF-8"))?;
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Ok(out)
}

/// The compressing side of one direction of a session.
pub struct HeaderCompressor {
    z: Compress,
    primed: bool,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor").finish_non_exhaustive()
    }
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self {
            z: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl HeaderCompressor {
    /// Compresses one header block with a sync flush.
    ///
    /// Errors: [`SpdyError::Compression`] when zlib fails.
    pub fn compress(&mut self, h: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        if !self.primed {
            self.z
                .set_dictionary(&dictionary())
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            self.primed = true;
        }
        let input = encode_block(h);
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            consumed += (self.z.total_in() - before) as usize;
            // A sync flush is complete when all input is taken and zlib left spare room.
            if consumed == input.len() && out.capacity() > out.len() {
                break;
            }
        }
        Ok(out)
    }
}

/// The decompressing side of one direction of a session.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor").finish_non_exhaustive()
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }
}

impl HeaderDecompressor {
    /// Decompresses and decodes one header block.
    ///
    /// Errors: [`SpdyError::Compression`] for bad zlib data or a block over
    /// [`MAX_HEADER_BLOCK`] bytes; [`SpdyError::Protocol`] for a malformed block.
    pub fn decompress(&mut self, data: &[u8]) -> Result<Headers, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(data.len() * 4 + 64);
        let mut consumed = 0usize;
        loop {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Compression("header block too large".into()));
            }
            if out.capacity() - out.len() < 256 {
                out.reserve(1024);
            }
            let before = self.z.total_in();
            let result = self
                .z
                .decompress_vec(&data[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.z.total_in() - before) as usize;
            let status = match result {
                Ok(s) => s,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&dictionary())
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            };
            match status {
                Status::StreamEnd => break,
                _ if consumed == data.len() && out.capacity() > out.len() => break,
                _ => {}
            }
        }
        decode_block(&out)
    }
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

    #[test]
    fn dictionary_has_the_specified_shape() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\x00\x00\x00\x07options");
        assert!(d.ends_with(b",*,enq=0."));
        // zlib's Adler-32 of the dictionary is the DICTID a peer's stream names.
        let (mut a, mut b) = (1u32, 0u32);
        for x in &d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        let mut z = Compress::new(Compression::default(), true);
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
        assert_eq!(z.set_dictionary(&d).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn block_encoding_matches_the_specification() {
        let block = encode_block(&h(&[
            ("streamType", "error"),
            ("Port", "80"),
            ("port", "81"),
        ]));
        let want: &[u8] = b"\x00\x00\x00\x02\
\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error\
\x00\x00\x00\x04port\x00\x00\x00\x0580\x0081";
        assert_eq!(block, want);
        assert_eq!(
            decode_block(want).unwrap(),
            h(&[("streamtype", "error"), ("port", "80"), ("port", "81")])
        );
    }

    #[test]
    fn malformed_blocks_are_errors() {
        for bad in [
            &b"\x00\x00\x00\x01"[..],
            b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x00\x00\x00\x01\x00\x00\x00\x09abc",
            b"\x00\x00\x00\x01\xff\xff\xff\xffabc",
        ] {
            assert!(decode_block(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compressed_blocks_round_trip_and_share_context() {
        let mut c = HeaderCompressor::default();
        let mut d = HeaderDecompressor::default();
        let first = h(&[("streamtype", "stdout"), (":status", "200")]);
        let a = c.compress(&first).unwrap();
        // A zlib header that names a preset dictionary: FDICT (0x20) set in the flags byte.
        assert_eq!(a[0] & 0x0f, 8);
        assert_ne!(a[1] & 0x20, 0);
        assert_eq!(d.decompress(&a).unwrap(), first);
        let second = h(&[("streamtype", "stderr")]);
        let b = c.compress(&second).unwrap();
        // The second block carries no zlib header: it continues the first one's stream.
        assert_ne!(&b[..2], &a[..2]);
        assert_eq!(d.decompress(&b).unwrap(), second);
    }

    #[test]
    fn a_known_stream_decodes() {
        // Built with zlib from the dictionary by hand: a stored (uncompressed) deflate block
        // holding the 14-byte name/value block {"a": "b"} after the 6-byte zlib header that
        // names the dictionary, ending with a sync-flush marker.
        let raw = encode_block(&h(&[("a", "b")]));
        assert_eq!(raw.len(), 14);
        let mut z = Vec::new();
        let d = dictionary();
        let (mut s1, mut s2) = (1u32, 0u32);
        for x in &d {
            s1 = (s1 + u32::from(*x)) % 65521;
            s2 = (s2 + s1) % 65521;
        }
        // CMF 0x78 (deflate, 32K window); FLG with FDICT set and FCHECK making it a multiple of 31.
        let cmf = 0x78u16;
        let mut flg = 0x20u16;
        flg += 31 - ((cmf << 8) | flg) % 31;
        z.push(cmf as u8);
        z.push(flg as u8);
        z.extend_from_slice(&((s2 << 16) | s1).to_be_bytes());
        // Stored block, not final: BFINAL=0, BTYPE=00, then LEN and NLEN (little-endian).
        z.push(0x00);
        z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
        z.extend_from_slice(&raw);
        let mut dec = HeaderDecompressor::default();
        assert_eq!(dec.decompress(&z).unwrap(), h(&[("a", "b")]));
    }
}
