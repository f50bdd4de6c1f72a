//! Port-forward behind the streaming server: connections to `127.0.0.1:<port>` made inside
//! the pod's network namespace by a short-lived thread that entered it with `setns`, so no
//! `socat` or `nsenter` binary is needed. A socket keeps the namespace it was made in, so the
//! thread ends as soon as the connection is up. Host-network pods connect from the daemon's
//! own namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::state::SandboxState;
use crate::Krio;

/// How long a connection attempt inside the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `127.0.0.1:port` in the network namespace pinned at `netns` (the host's when
/// `None`).
///
/// Errors: the namespace cannot be entered, or the connection is refused or times out.
async fn connect_in(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Some(netns) = netns else {
        return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("krio-portfwd".into())
        .spawn(move || {
            let r = (|| -> std::io::Result<std::net::TcpStream> {
                let ns = std::fs::File::open(&netns)?;
                // Only this thread moves; it ends right after, never returning to a pool.
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })();
            let _ = tx.send(r);
        })?;
    let std_stream = rx
        .await
        .map_err(|_| std::io::Error::other("port-forward thread died"))??;
    TcpStream::from_std(std_stream)
}

fn pod_netns(krio: &Krio, sandbox_id: &str) -> std::io::Result<Option<PathBuf>> {
    let s = krio
        .sandboxes
        .get("pod_sandbox_id", sandbox_id)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
    let rec = s.snapshot();
    if rec.state() != SandboxState::Ready {
        return Err(std::io::Error::other(format!(
            "sandbox {sandbox_id} is not ready"
        )));
    }
    Ok(rec.netns().map(PathBuf::from))
}

fn connector(
    krio: &Krio,
    sandbox_id: &str,
) -> impl Fn(
    u16,
)
    -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send>>
       + Send
       + Sync
       + 'static {
    let netns = pod_netns(krio, sandbox_id);
    let netns = netns.map_err(|e| e.to_string());
    move |port| {
        let netns = netns.clone();
        Box::pin(async move {
            let netns = netns.map_err(std::io::Error::other)?;
            connect_in(netns, port).await
        })
    }
}

/// Serves a SPDY port-forward session for the pod `sandbox_id`.
pub(super) async fn serve_spdy<IO>(krio: &Krio, sandbox_id: &str, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    krio_stream::portforward::server::serve_spdy(io, connector(krio, sandbox_id)).await;
}

/// Serves a WebSocket port-forward session for the pod `sandbox_id` and `ports`.
pub(super) async fn serve_websocket<IO>(krio: &Krio, sandbox_id: &str, ports: &[u16], io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    krio_stream::portforward::server::serve_websocket(io, ports, connector(krio, sandbox_id)).await;
}
