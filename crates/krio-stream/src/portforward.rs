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
