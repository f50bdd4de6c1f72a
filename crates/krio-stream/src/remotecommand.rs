//! Exec and attach streams (`k8s.io/apimachinery/pkg/util/remotecommand` and kubelet's
//! `remotecommand` server): protocol names and their negotiation, the roles of streams and
//! channels, resize events, and what the error stream carries when the command ends.

use serde::{Deserialize, Serialize};

/// The header in which a SPDY client offers protocols and the server names its choice.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// The header in which a refusal lists the protocols the server accepts.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";
/// The SPDY stream header naming a stream's role (`streamType`).
pub const STREAM_TYPE_HEADER: &str = "streamType";

/// Version 1 (no resize; the error stream carries text).
pub const V1: &str = "channel.k8s.io";
/// Version 2 (fixes stdin handling; the error stream carries text).
pub const V2: &str = "v2.channel.k8s.io";
/// Version 3 (adds the resize stream).
pub const V3: &str = "v3.channel.k8s.io";
/// Version 4 (the error stream carries a `Status` object with the exit code).
pub const V4: &str = "v4.channel.k8s.io";
/// Version 5, WebSocket only (adds the close signal that half-closes stdin).
pub const V5: &str = "v5.channel.k8s.io";

/// Protocols served over SPDY, in the server's order of preference.
pub const SPDY_PROTOCOLS: &[&str] = &[V4, V3, V2, V1];
/// Protocols served over WebSocket, in the server's order of preference.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &[V5, V4];

/// Splits the values of a protocol header (each may list several, comma-separated).
pub fn offered<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Picks the first protocol the client offers that the server supports, as kubelet's
/// `httpstream.Handshake` does. `None` when nothing matches.
pub fn negotiate<'s>(client: &[String], server: &[&'s str]) -> Option<&'s str> {
    client
        .iter()
        .find_map(|c| server.iter().find(|s| **s == c.as_str()).copied())
}

/// The role of a stream (SPDY `streamType` header) or channel (WebSocket channel number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// The client's input to the process (channel 0).
    Stdin,
    /// The process's standard output, or the terminal with a tty (channel 1).
    Stdout,
    /// The process's standard error (channel 2).
    Stderr,
    /// The outcome of the command (channel 3).
    Error,
    /// Terminal size changes (channel 4).
    Resize,
}

impl StreamKind {
    /// The `streamType` header value.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Stdin => "stdin",
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
            StreamKind::Error => "error",
            StreamKind::Resize => "resize",
        }
    }

    /// Parses a `streamType` header value.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "stdin" => StreamKind::Stdin,
            "stdout" => StreamKind::Stdout,
            "stderr" => StreamKind::Stderr,
            "error" => StreamKind::Error,
            "resize" => StreamKind::Resize,
            _ => return None,
        })
    }

    /// The WebSocket channel number.
    pub fn channel(self) -> u8 {
        match self {
            StreamKind::Stdin => 0,
            StreamKind::Stdout => 1,
            StreamKind::Stderr => 2,
            StreamKind::Error => 3,
            StreamKind::Resize => 4,
        }
    }

    /// The kind of WebSocket channel `n`.
    pub fn from_channel(n: u8) -> Option<Self> {
        Some(match n {
            0 => StreamKind::Stdin,
            1 => StreamKind::Stdout,
            2 => StreamKind::Stderr,
            3 => StreamKind::Error,
            4 => StreamKind::Resize,
            _ => return None,
        })
    }
}

/// Which standard streams a session carries (from the CRI `ExecRequest`/`AttachRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    /// The client sends input.
    pub stdin: bool,
    /// The client wants standard output.
    pub stdout: bool,
    /// The client wants standard error (never together with `tty`).
    pub stderr: bool,
    /// One terminal carries input and output; the client may resize it.
    pub tty: bool,
}

impl StreamOptions {
    /// The SPDY streams a client opens for these options under `protocol`: kubelet's server
    /// waits for exactly these.
    pub fn expected(&self, protocol: &str) -> Vec<StreamKind> {
        let mut v = vec![StreamKind::Error];
        if self.stdin {
            v.push(StreamKind::Stdin);
        }
        if self.stdout {
            v.push(StreamKind::Stdout);
        }
        if self.stderr {
            v.push(StreamKind::Stderr);
        }
        if self.tty && supports_resize(protocol) {
            v.push(StreamKind::Resize);
        }
        v
    }
}

/// Whether `protocol` has a resize stream (v3 and later).
pub fn supports_resize(protocol: &str) -> bool {
    matches!(protocol, V3 | V4 | V5)
}

/// A terminal size, as the resize stream carries it (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits the resize stream, a sequence of JSON objects, into sizes. Holds at most
/// [`ResizeDecoder::LIMIT`] bytes of an incomplete object.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    /// The most bytes buffered for one object.
    pub const LIMIT: usize = 4096;

    /// Adds received bytes and returns the sizes completed by them.
    ///
    /// Errors: a message when the data is not a sequence of size objects or an object
    /// exceeds [`ResizeDecoder::LIMIT`].
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, String> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    out.push(size);
                    used = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(format!("resize stream: {e}")),
                None => {
                    used = it.byte_offset();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        if self.buf.len() > Self::LIMIT {
            return Err("resize stream: object too large".into());
        }
        Ok(out)
    }
}

/// How a command ended, for the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code (0 is success).
    Exited(i32),
    /// It could not be run or failed otherwise.
    Failed(String),
}

/// The bytes written to the error stream for `outcome` under `protocol`, or `None` when
/// nothing is written (success under v1 to v3). `command` names it in messages.
///
/// v4 and v5 carry a `metav1.Status`: `Success`, or `Failure` with reason `NonZeroExitCode`
/// and a cause `ExitCode` whose message is the code, which is how kubectl and crictl learn it;
/// earlier versions carry the failure message as text.
pub fn error_stream_bytes(
    protocol: &str,
    command: &[String],
    outcome: &Outcome,
) -> Option<Vec<u8>> {
    let message = match outcome {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => Some(format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        )),
        Outcome::Failed(m) => Some(m.clone()),
    };
    if !matches!(protocol, V4 | V5) {
        return message.map(String::into_bytes);
    }
    let status = match (outcome, message) {
        (_, None) => serde_json::json!({"metadata": {}, "status": "Success"}),
        (Outcome::Exited(code), Some(m)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": m,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        (Outcome::Failed(_), Some(m)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": m,
            "reason": "InternalError",
            "details": {"causes": [{"message": m}]},
            "code": 500,
        }),
    };
    Some(status.to_string().into_bytes())
}

/// Reads what a server wrote on the error stream back into an [`Outcome`] (the client side).
/// Empty means success; v4/v5 status objects give the exit code; anything else is a failure.
pub fn parse_error_stream(protocol: &str, data: &[u8]) -> Outcome {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Outcome::Exited(0);
    }
    if matches!(protocol, V4 | V5) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
            if v["status"] == "Success" {
                return Outcome::Exited(0);
            }
            if v["reason"] == "NonZeroExitCode" {
                let code = v["details"]["causes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["reason"] == "ExitCode")
                    .and_then(|c| c["message"].as_str())
                    .and_then(|m| m.parse().ok());
                if let Some(code) = code {
                    return Outcome::Exited(code);
                }
            }
            if let Some(m) = v["message"].as_str() {
                return Outcome::Failed(m.to_string());
            }
        }
    }
    Outcome::Failed(String::from_utf8_lossy(data).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_client_order() {
        let c = offered(["v4.channel.k8s.io, v3.channel.k8s.io", "channel.k8s.io"]);
        assert_eq!(negotiate(&c, SPDY_PROTOCOLS), Some(V4));
        let c = offered(["v2.channel.k8s.io", "v4.channel.k8s.io"]);
        assert_eq!(negotiate(&c, SPDY_PROTOCOLS), Some(V2));
        assert_eq!(negotiate(&offered(["v9"]), SPDY_PROTOCOLS), None);
        assert_eq!(
            negotiate(&offered(["v5.channel.k8s.io"]), SPDY_PROTOCOLS),
            None
        );
        assert_eq!(
            negotiate(&offered(["v5.channel.k8s.io"]), WEBSOCKET_PROTOCOLS),
            Some(V5)
        );
    }

    #[test]
    fn expected_streams() {
        let o = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        assert_eq!(
            o.expected(V4),
            [
                StreamKind::Error,
                StreamKind::Stdin,
                StreamKind::Stdout,
                StreamKind::Resize
            ]
        );
        assert_eq!(o.expected(V2).len(), 3);
    }

    #[test]
    fn resize_objects_split_across_reads() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(b"{\"Width\":80,").unwrap(), []);
        let got = d
            .push(b"\"Height\":24}\n{\"Width\":100,\"Height\":50}{\"Wid")
            .unwrap();
        assert_eq!(
            got,
            [
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert_eq!(
            d.push(b"th\":1,\"Height\":2}").unwrap(),
            [TerminalSize {
                width: 1,
                height: 2
            }]
        );
        assert!(d.push(b"[1]").is_err());
        let mut d = ResizeDecoder::default();
        assert!(d.push(&[b' '; 10]).unwrap().is_empty());
        let mut d = ResizeDecoder::default();
        assert!(d
            .push(&[b"{\"Width\":".as_slice(), &vec![b'1'; 5000]].concat())
            .is_err());
    }

    #[test]
    fn error_stream_status() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(error_stream_bytes(V3, &cmd, &Outcome::Exited(0)), None);
        let ok = error_stream_bytes(V4, &cmd, &Outcome::Exited(0)).unwrap();
        assert_eq!(ok, br#"{"metadata":{},"status":"Success"}"#);
        assert_eq!(parse_error_stream(V4, &ok), Outcome::Exited(0));
        let three = error_stream_bytes(V4, &cmd, &Outcome::Exited(3)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&three).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(parse_error_stream(V5, &three), Outcome::Exited(3));
        let text = error_stream_bytes(V2, &cmd, &Outcome::Exited(3)).unwrap();
        assert!(String::from_utf8(text.clone())
            .unwrap()
            .contains("exit code 3"));
        assert!(matches!(parse_error_stream(V2, &text), Outcome::Failed(_)));
        let failed = error_stream_bytes(V4, &cmd, &Outcome::Failed("no such file".into())).unwrap();
        assert_eq!(
            parse_error_stream(V4, &failed),
            Outcome::Failed("no such file".into())
        );
    }
}
