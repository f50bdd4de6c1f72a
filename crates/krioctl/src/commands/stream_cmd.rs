//! `exec` (streamed), `attach` and `port-forward`: the CRI call returns a URL on the runtime's
//! streaming server, which krioctl upgrades to SPDY or WebSocket as crictl does.

use std::io::IsTerminal;

use bytes::Bytes;
use krio_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use krio_stream::client::{upgrade, Transport as Wire};
use krio_stream::conn::{resize_message, ClientSession};
use krio_stream::remotecommand::{self as rc, Outcome, StreamOptions, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::containers::resolve_container;
use super::pods::resolve_pod;
use super::Ctx;
use crate::cli::{AttachArgs, ExecArgs, PortForwardArgs, Transport};
use crate::error::Error;

fn wire(t: Transport) -> Wire {
    match t {
        Transport::Spdy => Wire::Spdy,
        Transport::Websocket => Wire::WebSocket,
    }
}

fn stream_err(e: impl std::fmt::Display) -> Error {
    Error::Stream(e.to_string())
}

/// The size of krioctl's terminal, else `COLUMNS` x `LINES` from the environment.
fn local_size() -> Option<TerminalSize> {
    if let Ok(ws) = rustix::termios::tcgetwinsize(rustix::stdio::stdout()) {
        if ws.ws_col > 0 && ws.ws_row > 0 {
            return Some(TerminalSize {
                width: ws.ws_col,
                height: ws.ws_row,
            });
        }
    }
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u16>().ok());
    Some(TerminalSize {
        width: env("COLUMNS")?,
        height: env("LINES")?,
    })
}

/// Puts the local terminal in raw mode while it lives (with `-t` on a terminal).
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> Self {
        let fd = rustix::stdio::stdin();
        let Ok(orig) = rustix::termios::tcgetattr(fd) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                rustix::stdio::stdin(),
                rustix::termios::OptionalActions::Now,
                orig,
            );
        }
    }
}

/// `krioctl exec [-i] [-t] [--transport spdy|websocket] CONTAINER CMD...`: streams the
/// command's stdio and returns its exit code.
pub async fn exec(ctx: &mut Ctx, a: ExecArgs) -> Result<i32, Error> {
    let id = resolve_container(ctx, &a.container).await?;
    let mut rt = ctx.rt().await?;
    let opts = StreamOptions {
        stdin: a.interactive,
        stdout: true,
        stderr: !a.tty,
        tty: a.tty,
    };
    let req = ExecRequest {
        container_id: id,
        cmd: a.cmd.clone(),
        tty: opts.tty,
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let timeout = ctx.lifecycle_timeout();
    let resp = ctx
        .call(
            "Exec",
            timeout,
            req,
            move |r| async move { rt.exec(r).await },
        )
        .await?;
    let session = open_session(&resp.url, a.transport, opts, &ctx.stream_tls).await?;
    let _raw = (a.tty && a.interactive && std::io::stdin().is_terminal()).then(RawMode::enter);
    run_session(session, a.tty).await
}

/// Upgrades a streaming URL and opens the remote-command streams `opts` calls for.
async fn open_session(
    url: &str,
    transport: Transport,
    opts: StreamOptions,
    tls: &krio_stream::client::TlsOptions,
) -> Result<ClientSession, Error> {
    let (offers, transport) = match transport {
        Transport::Spdy => (rc::SPDY_PROTOCOLS, Wire::Spdy),
        Transport::Websocket => (rc::WEBSOCKET_PROTOCOLS, Wire::WebSocket),
    };
    let (io, protocol) = upgrade(url, transport, offers, tls)
        .await
        .map_err(stream_err)?;
    Ok(match transport {
        Wire::Spdy => ClientSession::connect_spdy(io, &protocol, opts)
            .await
            .map_err(stream_err)?,
        Wire::WebSocket => ClientSession::connect_websocket(io, &protocol, opts).await,
    })
}

/// `krioctl attach [-i] [-t] [--transport spdy|websocket] CONTAINER`: joins the container's
/// main process (its output from now on, its stdin with -i) until it exits or krioctl is
/// interrupted.
pub async fn attach(ctx: &mut Ctx, a: AttachArgs) -> Result<i32, Error> {
    let id = resolve_container(ctx, &a.container).await?;
    let mut rt = ctx.rt().await?;
    let opts = StreamOptions {
        stdin: a.interactive,
        stdout: true,
        stderr: !a.tty,
        tty: a.tty,
    };
    let req = AttachRequest {
        container_id: id,
        stdin: opts.stdin,
        tty: opts.tty,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let timeout = ctx.lifecycle_timeout();
    let resp = ctx
        .call("Attach", timeout, req, move |r| async move {
            rt.attach(r).await
        })
        .await?;
    let session = open_session(&resp.url, a.transport, opts, &ctx.stream_tls).await?;
    let _raw = (a.tty && a.interactive && std::io::stdin().is_terminal()).then(RawMode::enter);
    run_session(session, a.tty).await
}

async fn run_session(mut s: ClientSession, tty: bool) -> Result<i32, Error> {
    if let Some(resize) = s.resize.clone() {
        if let Some(size) = local_size() {
            let _ = resize.write(resize_message(size)).await;
        }
        if tty {
            tokio::spawn(async move {
                let Ok(mut winch) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while winch.recv().await.is_some() {
                    if let Some(size) = local_size() {
                        if resize.write(resize_message(size)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }
    if let Some(stdin) = s.stdin.clone() {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdin
                            .write(Bytes::copy_from_slice(&buf[..n]))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            stdin.close().await;
        });
    }
    let out = s.stdout.take().map(|mut rx| {
        tokio::spawn(async move {
            let mut o = tokio::io::stdout();
            while let Some(c) = rx.recv().await {
                if o.write_all(&c).await.is_err() {
                    break;
                }
                let _ = o.flush().await;
            }
        })
    });
    let err = s.stderr.take().map(|mut rx| {
        tokio::spawn(async move {
            let mut o = tokio::io::stderr();
            while let Some(c) = rx.recv().await {
                if o.write_all(&c).await.is_err() {
                    break;
                }
                // tokio writes stdio on a blocking thread: without a flush, the last write
                // may still be pending when krioctl exits, and the process's last error
                // line is lost.
                let _ = o.flush().await;
            }
        })
    });
    let mut status = Vec::new();
    while let Some(c) = s.error.recv().await {
        status.extend_from_slice(&c);
    }
    for t in [out, err].into_iter().flatten() {
        let _ = t.await;
    }
    s.close().await;
    match rc::parse_error_stream(&s.protocol, &status) {
        Outcome::Exited(code) => Ok(code),
        Outcome::Failed(m) => Err(Error::Stream(m)),
    }
}

fn parse_forward(spec: &str) -> Result<(u16, u16), Error> {
    let bad = || Error::invalid("PORT", format!("{spec:?} is not [LOCAL_PORT:]REMOTE_PORT"));
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (l.parse::<u16>().map_err(|_| bad())?, r),
        None => (0, spec),
    };
    let remote = remote
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(bad)?;
    Ok((local, remote))
}

/// `krioctl port-forward [--transport spdy|websocket] POD [LOCAL:]REMOTE...`: listens on
/// each local port and carries every connection to the remote port inside the pod, until
/// interrupted.
pub async fn port_forward(ctx: &mut Ctx, a: PortForwardArgs) -> Result<i32, Error> {
    let pod = resolve_pod(ctx, &a.pod).await?;
    let forwards = a
        .ports
        .iter()
        .map(|p| parse_forward(p))
        .collect::<Result<Vec<_>, _>>()?;
    let remote_ports: Vec<i32> = forwards.iter().map(|(_, r)| i32::from(*r)).collect();
    let mut listeners = Vec::new();
    for (local, remote) in &forwards {
        let l = tokio::net::TcpListener::bind((a.address, *local))
            .await
            .map_err(|e| stream_err(format!("listening on {}:{local}: {e}", a.address)))?;
        let addr = l.local_addr().map_err(stream_err)?;
        println!("Forwarding from {addr} -> {remote}");
        listeners.push((l, *remote));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let rt = ctx.rt().await?;
    let timeout = ctx.lifecycle_timeout();
    let tls = ctx.stream_tls.clone();
    let url_for = move |ports: Vec<i32>| {
        let pod = pod.clone();
        let mut rt = rt.clone();
        async move {
            let req = PortForwardRequest {
                pod_sandbox_id: pod,
                port: ports,
            };
            tokio::time::timeout(timeout, rt.port_forward(req))
                .await
                .map_err(|_| stream_err("PortForward: no answer in time"))?
                .map(|r| r.into_inner().url)
                .map_err(|status| Error::Rpc {
                    op: "PortForward",
                    status,
                })
        }
    };
    match a.transport {
        Transport::Spdy => {
            // One session carries every connection, as kubectl does.
            let url = url_for(remote_ports).await?;
            let (io, _) = upgrade(
                &url,
                wire(a.transport),
                &[krio_stream::portforward::PROTOCOL_V1],
                &tls,
            )
            .await
            .map_err(stream_err)?;
            let fwd = std::sync::Arc::new(krio_stream::portforward::client::SpdyForwarder::new(io));
            let mut tasks = tokio::task::JoinSet::new();
            for (l, remote) in listeners {
                let fwd = fwd.clone();
                tasks.spawn(async move {
                    while let Ok((conn, _)) = l.accept().await {
                        let fwd = fwd.clone();
                        tokio::spawn(async move {
                            if let Err(e) = fwd.forward(remote, conn).await {
                                eprintln!("krioctl: port {remote}: {e}");
                            }
                        });
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
        Transport::Websocket => {
            // A WebSocket session carries one connection per port: each gets its own URL.
            let mut tasks = tokio::task::JoinSet::new();
            for (l, remote) in listeners {
                let url_for = url_for.clone();
                let tls = tls.clone();
                tasks.spawn(async move {
                    while let Ok((conn, _)) = l.accept().await {
                        let url_for = url_for.clone();
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let r = async {
                                let url = url_for(vec![i32::from(remote)]).await?;
                                let (io, _) = upgrade(
                                    &url,
                                    Wire::WebSocket,
                                    krio_stream::portforward::WEBSOCKET_PROTOCOLS,
                                    &tls,
                                )
                                .await
                                .map_err(stream_err)?;
                                krio_stream::portforward::client::forward_websocket(io, conn)
                                    .await
                                    .map_err(Error::Stream)
                            }
                            .await;
                            if let Err(e) = r {
                                eprintln!("krioctl: port {remote}: {e}");
                            }
                        });
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_specs() {
        assert_eq!(parse_forward("8080").unwrap(), (0, 8080));
        assert_eq!(parse_forward("9000:80").unwrap(), (9000, 80));
        assert!(parse_forward("0").is_err());
        assert!(parse_forward("a:80").is_err());
        assert!(parse_forward("80:").is_err());
    }
}
