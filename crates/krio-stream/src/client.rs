//! The client side of the upgrade: connecting to a streaming URL and switching the
//! connection to SPDY/3.1 or WebSocket (what crictl and kubectl do before the streams).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::remotecommand::PROTOCOL_HEADER;

/// The transport to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version` offers.
    Spdy,
    /// `Upgrade: websocket` with `Sec-WebSocket-Protocol` offers.
    WebSocket,
}

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The URL is not `http://host:port/path` or `https://host:port/path`.
    #[error("unsupported streaming URL {0:?}")]
    Url(String),
    /// The TLS settings cannot be used (unreadable CA file, no way to verify the server).
    #[error("streaming TLS: {0}")]
    Tls(String),
    /// Connecting or talking to the server failed.
    #[error("streaming connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with something other than 101 Switching Protocols.
    #[error("streaming server answered {status}: {body}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// The 101 answer is not a valid upgrade.
    #[error("bad upgrade answer: {0}")]
    BadAnswer(String),
}

/// The HTTP status of an upgrade answer; useful to tell 404 (unknown, used or expired token)
/// from other refusals.
impl UpgradeError {
    /// The HTTP status of a refusal, if the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpgradeError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How an `https` streaming URL's server is checked. Runtimes serve their streaming endpoint
/// with a certificate of their own (often self-signed), so there is no default trust store:
/// name the CA that signed it, or skip verification as crictl does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities trusted for the streaming server.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (crictl's behaviour; the connection is encrypted but the
    /// server is not authenticated).
    pub insecure_skip_verify: bool,
}

/// An upgraded connection, plain or TLS.
pub trait StreamIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> StreamIo for T {}

/// Accepts every server certificate, still checking the handshake signatures.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector(tls: &TlsOptions) -> Result<tokio_rustls::TlsConnector, UpgradeError> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| UpgradeError::Tls(e.to_string()))?;
    let config = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth()
    } else {
        let Some(ca) = &tls.ca_file else {
            return Err(UpgradeError::Tls(
                "an https streaming URL needs a CA file to verify the server, or verification skipped explicitly".into(),
            ));
        };
        let bad = |e: &dyn std::fmt::Display| UpgradeError::Tls(format!("{}: {e}", ca.display()));
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"no certificate in the file"));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Connects to `url` (`http://` or `https://`, checked as `tls` says) and upgrades the
/// connection, offering `protocols` in order. Returns the upgraded connection and the protocol
/// the server chose (empty if it named none).
///
/// Errors: [`UpgradeError`].
pub async fn upgrade(
    url: &str,
    transport: Transport,
    protocols: &[&str],
    tls: &TlsOptions,
) -> Result<(Box<dyn StreamIo>, String), UpgradeError> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(UpgradeError::Url(url.to_string()));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    if !secure {
        return handshake(Box::new(tcp), authority, path, transport, protocols).await;
    }
    let connector = tls_connector(tls)?;
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| UpgradeError::Url(url.to_string()))?;
    let stream = connector.connect(name, tcp).await?;
    handshake(Box::new(stream), authority, path, transport, protocols).await
}

/// The HTTP/1.1 upgrade request and answer on a connected stream.
async fn handshake(
    mut tcp: Box<dyn StreamIo>,
    authority: &str,
    path: &str,
    transport: Transport,
    protocols: &[&str],
) -> Result<(Box<dyn StreamIo>, String), UpgradeError> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\n");
    let ws_key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    match transport {
        Transport::Spdy => {
            req.push_str("Upgrade: SPDY/3.1\r\n");
            for p in protocols {
                req.push_str(&format!("{PROTOCOL_HEADER}: {p}\r\n"));
            }
        }
        Transport::WebSocket => {
            req.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
            req.push_str(&format!("Sec-WebSocket-Key: {ws_key}\r\n"));
            if !protocols.is_empty() {
                req.push_str(&format!(
                    "Sec-WebSocket-Protocol: {}\r\n",
                    protocols.join(", ")
                ));
            }
        }
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await?;
    tcp.flush().await?;
    // Read the answer's head a byte at a time, so nothing after it is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(UpgradeError::BadAnswer("answer head too large".into()));
        }
        let b = tcp.read_u8().await?;
        head.push(b);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| UpgradeError::BadAnswer(text.clone()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if status != 101 {
        let len: usize = get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0)
            .min(64 * 1024);
        let mut body = vec![0u8; len];
        let _ = tcp.read_exact(&mut body).await;
        return Err(UpgradeError::Refused {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let protocol = match transport {
        Transport::Spdy => get(&PROTOCOL_HEADER.to_ascii_lowercase()).unwrap_or_default(),
        Transport::WebSocket => {
            let want = crate::ws::accept_key(ws_key.as_bytes());
            if get("sec-websocket-accept").as_deref() != Some(want.as_str()) {
                return Err(UpgradeError::BadAnswer("wrong Sec-WebSocket-Accept".into()));
            }
            get("sec-websocket-protocol").unwrap_or_default()
        }
    };
    if !protocol.is_empty() && !protocols.contains(&protocol.as_str()) {
        return Err(UpgradeError::BadAnswer(format!(
            "server chose {protocol:?}, which was not offered"
        )));
    }
    Ok((tcp, protocol))
}
