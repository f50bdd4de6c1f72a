//! The channel framing Kubernetes uses over WebSocket (`k8s.io/apimachinery/pkg/util/httpstream/wsstream`):
//! every binary message starts with a channel number, the rest is that channel's data. In
//! `v5.channel.k8s.io` a message `[255, n]` closes channel `n` (the client half-closes stdin).

/// The channel number of the v5 close signal.
pub const CLOSE_CHANNEL: u8 = 255;

/// One message on the wire: `channel` followed by `data`.
pub fn encode(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + data.len());
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// A decoded binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// Data for a channel.
    Data(u8, &'a [u8]),
    /// The peer closed its side of a channel (v5).
    Close(u8),
}

/// Decodes one binary message; `None` for an empty message. `close_signal` says whether the
/// protocol has v5's close signal (otherwise channel 255 is plain data).
pub fn decode(msg: &[u8], close_signal: bool) -> Option<Message<'_>> {
    let (&ch, rest) = msg.split_first()?;
    if close_signal && ch == CLOSE_CHANNEL {
        return rest.first().map(|&n| Message::Close(n));
    }
    Some(Message::Data(ch, rest))
}

/// The `Sec-WebSocket-Accept` value answering a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)
}

/// Picks the subprotocol for a WebSocket upgrade: the first of the client's offered
/// protocols (`Sec-WebSocket-Protocol`, comma-separated) that `server` supports.
pub fn negotiate<'s>(offered: &[String], server: &[&'s str]) -> Option<&'s str> {
    crate::remotecommand::negotiate(offered, server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(encode(1, b"hi"), b"\x01hi");
        assert_eq!(decode(b"\x01hi", true), Some(Message::Data(1, b"hi")));
        assert_eq!(decode(b"\xff\x00", true), Some(Message::Close(0)));
        assert_eq!(
            decode(b"\xff\x00", false),
            Some(Message::Data(255, b"\x00"))
        );
        assert_eq!(decode(b"", true), None);
        assert_eq!(decode(b"\xff", true), None);
        // RFC 6455's example key.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
