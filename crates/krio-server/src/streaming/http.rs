//! The streaming server's HTTP/1.1 side: listening (optionally TLS), token lookup and the
//! protocol upgrade to SPDY or WebSocket.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use krio_stream::{portforward as pf, remotecommand as rc};
use tokio::net::TcpListener;

use super::StreamRequest;
use crate::Krio;

/// How long the server waits for a SPDY client to open the streams it asked for (kubelet's
/// `StreamCreationTimeout` default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The transport a request asked for, with the negotiated protocol.
enum Upgrade {
    Spdy(String),
    WebSocket { protocol: String, key: String },
}

/// Binds the streaming server on `stream_address:stream_port` (TLS when a certificate is
/// configured), records its URL for `Exec`/`PortForward`, and serves until `shutdown`
/// completes. Returns the bound address.
///
/// Errors: the bind error, or a certificate/key that cannot be read or used.
pub async fn serve_streaming(
    krio: Arc<Krio>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let cfg = krio.config();
    let ip: std::net::IpAddr = cfg
        .stream_address
        .parse()
        .map_err(|_| std::io::Error::other(format!("stream_address {:?}", cfg.stream_address)))?;
    let tls = if cfg.stream_tls_cert.as_os_str().is_empty() {
        None
    } else {
        Some(tls_acceptor(&cfg.stream_tls_cert, &cfg.stream_tls_key)?)
    };
    let listener = TcpListener::bind(SocketAddr::new(ip, cfg.stream_port)).await?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    krio.streaming.set_base_url(format!("{scheme}://{addr}"));
    tracing::info!(%addr, tls = tls.is_some(), "streaming server listening");
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let (tcp, _) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server: accept");
                        continue;
                    }
                },
            };
            let krio = krio.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(s) => serve_conn(krio, s).await,
                        Err(e) => tracing::debug!(error = %e, "streaming server: TLS handshake"),
                    },
                    None => serve_conn(krio, tcp).await,
                }
            });
        }
    });
    Ok(addr)
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("{}: {e}", what.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| std::io::Error::other(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| bad(cert, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_conn<IO>(krio: Arc<Krio>, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let krio = krio.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(krio, req)) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "streaming server: connection");
    }
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r
}

fn header_values<'a>(h: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    h.get_all(name).iter().filter_map(|v| v.to_str().ok())
}

fn wants_upgrade(h: &HeaderMap, proto: &str) -> bool {
    header_values(h, UPGRADE.as_str())
        .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(proto)))
}

/// Chooses the transport and protocol as kubelet does, or the error answer.
fn negotiate(
    h: &HeaderMap,
    spdy_protocols: &[&str],
    ws_protocols: &[&str],
    ws_default: Option<&str>,
) -> Result<Upgrade, Box<Response<Full<Bytes>>>> {
    if wants_upgrade(h, "websocket") {
        let key = h
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Box::new(plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")))?;
        let offered = rc::offered(header_values(h, "sec-websocket-protocol"));
        let protocol = match rc::negotiate(&offered, ws_protocols) {
            Some(p) => p.to_string(),
            None if offered.is_empty() && ws_default.is_some() => String::new(),
            None => {
                return Err(Box::new(plain(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unable to negotiate a WebSocket protocol: client offers {offered:?}, server supports {ws_protocols:?}"
                    ),
                )))
            }
        };
        return Ok(Upgrade::WebSocket {
            protocol,
            key: key.to_string(),
        });
    }
    if wants_upgrade(h, krio_stream::spdy::UPGRADE) {
        let offered = rc::offered(header_values(h, rc::PROTOCOL_HEADER));
        if offered.is_empty() {
            // Clients from before protocol negotiation speak the first version.
            return Ok(Upgrade::Spdy(
                spdy_protocols
                    .last()
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
        return match rc::negotiate(&offered, spdy_protocols) {
            Some(p) => Ok(Upgrade::Spdy(p.to_string())),
            None => {
                let mut r = plain(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {spdy_protocols:?}"
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&spdy_protocols.join(", ")) {
                    r.headers_mut().insert(rc::ACCEPTED_PROTOCOLS_HEADER, v);
                }
                Err(Box::new(r))
            }
        };
    }
    Err(Box::new(plain(
        StatusCode::BAD_REQUEST,
        "an upgrade to SPDY/3.1 or websocket is required",
    )))
}

fn switching(upgrade: &Upgrade) -> Response<Full<Bytes>> {
    let mut r = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match upgrade {
        Upgrade::Spdy(p) => {
            h.insert(
                UPGRADE,
                HeaderValue::from_static(krio_stream::spdy::UPGRADE),
            );
            if let Ok(v) = HeaderValue::from_str(p) {
                h.insert(rc::PROTOCOL_HEADER, v);
            }
        }
        Upgrade::WebSocket { protocol, key } => {
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(&krio_stream::ws::accept_key(key.as_bytes())) {
                h.insert("sec-websocket-accept", v);
            }
            if !protocol.is_empty() {
                if let Ok(v) = HeaderValue::from_str(protocol) {
                    h.insert("sec-websocket-protocol", v);
                }
            }
        }
    }
    r
}

fn handle(krio: Arc<Krio>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET or POST");
    }
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // The token is spent by any request that names it, as kubelet's cache does.
    let Some(stream_req) = krio.streaming.take(token) else {
        return plain(StatusCode::NOT_FOUND, "unknown, used or expired token");
    };
    if stream_req.path() != kind {
        return plain(StatusCode::NOT_FOUND, "unknown, used or expired token");
    }
    let upgrade = match &stream_req {
        StreamRequest::Exec { .. } | StreamRequest::Attach { .. } => negotiate(
            req.headers(),
            rc::SPDY_PROTOCOLS,
            rc::WEBSOCKET_PROTOCOLS,
            None,
        ),
        StreamRequest::PortForward { .. } => negotiate(
            req.headers(),
            &[pf::PROTOCOL_V1],
            pf::WEBSOCKET_PROTOCOLS,
            Some(""),
        ),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let response = switching(&upgrade);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "streaming server: upgrade failed");
                return;
            }
        };
        match stream_req {
            StreamRequest::Exec {
                container_id,
                cmd,
                opts,
            } => {
                let Some(session) = remotecommand_session(io, upgrade, opts).await else {
                    return;
                };
                super::exec::run(&krio, &container_id, cmd, opts, session).await;
            }
            StreamRequest::Attach { container_id, opts } => {
                let Some(session) = remotecommand_session(io, upgrade, opts).await else {
                    return;
                };
                super::attach::run(&krio, &container_id, opts, session).await;
            }
            StreamRequest::PortForward { sandbox_id, ports } => match upgrade {
                Upgrade::Spdy(_) => super::portforward::serve_spdy(&krio, &sandbox_id, io).await,
                Upgrade::WebSocket { .. } => {
                    super::portforward::serve_websocket(&krio, &sandbox_id, &ports, io).await
                }
            },
        }
    });
    response
}

/// Sets up the exec or attach streams on an upgraded connection; `None` (logged) when the
/// client never opened them.
async fn remotecommand_session<IO>(
    io: IO,
    upgrade: Upgrade,
    opts: rc::StreamOptions,
) -> Option<krio_stream::conn::ServerSession>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match upgrade {
        Upgrade::Spdy(p) => {
            match krio_stream::conn::ServerSession::accept_spdy(
                io,
                &p,
                opts,
                STREAM_CREATION_TIMEOUT,
            )
            .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, "stream setup");
                    None
                }
            }
        }
        Upgrade::WebSocket { protocol, .. } => {
            Some(krio_stream::conn::ServerSession::accept_websocket(io, &protocol, opts).await)
        }
    }
}
