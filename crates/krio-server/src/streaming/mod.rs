//! The streaming server: `Exec`, `Attach` and `PortForward` answer with a URL on it, and the
//! client (kubelet, crictl, krioctl) then upgrades a request for that URL to SPDY/3.1 or
//! WebSocket, as kubelet's own streaming server does (`k8s.io/kubelet/pkg/cri/streaming`).
//!
//! Each URL carries a single-use random token that expires unused after one minute; an
//! unknown, used or expired token gets 404, and nothing is served without one. Paths are
//! `/exec/<token>`, `/attach/<token>` and `/portforward/<token>`, as kubelet's.

mod attach;
mod exec;
mod http;
mod portforward;

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use http::serve_streaming;

use crate::error::{Result, ServerError};

/// How long a minted token stays valid unused (kubelet's and CRI-O's one minute).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// The most requests waiting for their client at once; more are refused with
/// `FailedPrecondition` (kubelet's token cache holds 1000 too).
const MAX_PENDING: usize = 1000;

/// What a token was minted for: the validated CRI request.
#[derive(Debug, Clone)]
pub(crate) enum StreamRequest {
    /// An `ExecRequest`.
    Exec {
        container_id: String,
        cmd: Vec<String>,
        opts: krio_stream::remotecommand::StreamOptions,
    },
    /// An `AttachRequest`.
    Attach {
        container_id: String,
        opts: krio_stream::remotecommand::StreamOptions,
    },
    /// A `PortForwardRequest`.
    PortForward { sandbox_id: String, ports: Vec<u16> },
}

impl StreamRequest {
    fn path(&self) -> &'static str {
        match self {
            StreamRequest::Exec { .. } => "exec",
            StreamRequest::Attach { .. } => "attach",
            StreamRequest::PortForward { .. } => "portforward",
        }
    }
}

/// The tokens waiting for their client, and the server's base URL once it listens.
#[derive(Debug, Default)]
pub(crate) struct Streaming {
    pending: Mutex<HashMap<String, (Instant, StreamRequest)>>,
    base_url: OnceLock<String>,
}

impl Streaming {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, StreamRequest)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the URL prefix (`http://ip:port`) once the server is listening.
    pub(crate) fn set_base_url(&self, url: String) {
        let _ = self.base_url.set(url);
    }

    /// Mints a token for `req` and returns its URL.
    ///
    /// Errors: `FailedPrecondition` when the server is not listening or too many requests
    /// wait for their client; `Internal` when no random bytes can be read.
    pub(crate) fn mint(&self, req: StreamRequest) -> Result<String> {
        let base = self.base_url.get().ok_or_else(|| {
            ServerError::FailedPrecondition("the streaming server is not running".to_string())
        })?;
        let mut raw = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .map_err(|e| ServerError::io("reading", "/dev/urandom", e))?;
        let token = hex::encode(raw);
        let path = req.path();
        let now = Instant::now();
        let mut pending = self.pending();
        pending.retain(|_, (at, _)| now.duration_since(*at) < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(ServerError::FailedPrecondition(format!(
                "{MAX_PENDING} streaming requests are already waiting for their clients"
            )));
        }
        pending.insert(token.clone(), (now, req));
        Ok(format!("{base}/{path}/{token}"))
    }

    /// Takes the request behind `token` if it exists, is unused and younger than
    /// [`TOKEN_TTL`]; the token is spent either way.
    pub(crate) fn take(&self, token: &str) -> Option<StreamRequest> {
        let (at, req) = self.pending().remove(token)?;
        (at.elapsed() < TOKEN_TTL).then_some(req)
    }

    /// Makes `token` look minted `age` ago (tests of expiry).
    #[cfg(test)]
    fn age(&self, token: &str, age: Duration) {
        if let Some((at, _)) = self.pending().get_mut(token) {
            *at -= age;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> StreamRequest {
        StreamRequest::PortForward {
            sandbox_id: "x".into(),
            ports: vec![80],
        }
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let s = Streaming::default();
        assert!(s.mint(pf()).is_err(), "no URL before the server listens");
        s.set_base_url("http://127.0.0.1:1".into());
        let url = s.mint(pf()).unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(url.starts_with("http://127.0.0.1:1/portforward/"));
        assert_eq!(token.len(), 32);
        assert!(s.take(&token).is_some());
        assert!(s.take(&token).is_none(), "a used token is refused");
        let url = s.mint(pf()).unwrap();
        let token = url.rsplit('/').next().unwrap();
        s.age(token, TOKEN_TTL);
        assert!(s.take(token).is_none(), "an expired token is refused");
        assert!(s.take("nope").is_none());
        let a = s.mint(pf()).unwrap();
        let b = s.mint(pf()).unwrap();
        assert_ne!(a, b);
    }
}
