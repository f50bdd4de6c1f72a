//! A minimal client for the OCI distribution API (`/v2/`): token (bearer) and basic auth,
//! manifests, streaming blobs. Plain HTTP for loopback and configured insecure hosts.

use base64::Engine as _;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::digest::Digest;
use crate::error::ImageError;
use crate::manifest::MANIFEST_ACCEPT;
use crate::reference::Reference;

/// Registry credentials for one pull; mirrors CRI `AuthConfig` (empty strings mean "unset").
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User name (with `password`).
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// base64 of `username:password` (used when `username` is empty).
    #[serde(default)]
    pub auth: String,
    /// An OAuth2 refresh token, exchanged at the token realm (`grant_type=refresh_token`).
    #[serde(default)]
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    #[serde(default)]
    pub registry_token: String,
}

impl std::fmt::Debug for RegistryAuth {
    /// Never prints secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &(!self.password.is_empty()).then_some("<set>"))
            .field("auth", &(!self.auth.is_empty()).then_some("<set>"))
            .field(
                "identity_token",
                &(!self.identity_token.is_empty()).then_some("<set>"),
            )
            .field(
                "registry_token",
                &(!self.registry_token.is_empty()).then_some("<set>"),
            )
            .finish()
    }
}

impl RegistryAuth {
    /// `(user, password)` from `username`/`password` or the decoded `auth` field.
    fn basic(&self) -> Option<(String, String)> {
        if !self.username.is_empty() {
            return Some((self.username.clone(), self.password.clone()));
        }
        if !self.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .ok()?;
            let s = String::from_utf8(raw).ok()?;
            let (u, p) = s.split_once(':')?;
            return Some((u.to_string(), p.to_string()));
        }
        None
    }
}

/// How registries are reached.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Registry hosts (`host[:port]`, as written in references) reached over plain HTTP.
    /// Loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) always use plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Mirrors per registry host (`docker.io` → [`http://127.0.0.1:5000`, ...]): endpoint URLs
    /// (`scheme://host[:port]`) tried in order before the registry itself.
    #[serde(default)]
    pub mirrors: HashMap<String, Vec<String>>,
    /// Maximum number of layer downloads running at once per pull (0 = default 3).
    #[serde(default)]
    pub max_concurrent_downloads: usize,
}

/// True for registry hosts on the loopback interface.
pub fn is_loopback_host(domain: &str) -> bool {
    let host = if let Some(rest) = domain.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        domain.split(':').next().unwrap_or("")
    };
    if host == "localhost" {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// One place content can be fetched from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port]` without trailing slash.
    pub base: String,
    /// True for a configured mirror.
    pub mirror: bool,
}

impl RegistryConfig {
    /// Endpoints for `domain`, mirrors first.
    pub(crate) fn endpoints(&self, domain: &str) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(domain)
            .into_iter()
            .flatten()
            .map(|m| Endpoint {
                base: m.trim_end_matches('/').to_string(),
                mirror: true,
            })
            .collect();
        let plain = is_loopback_host(domain) || self.insecure.iter().any(|h| h == domain);
        let host = if domain == "docker.io" {
            "registry-1.docker.io"
        } else {
            domain
        };
        out.push(Endpoint {
            base: format!("{}://{host}", if plain { "http" } else { "https" }),
            mirror: false,
        });
        out
    }
}

/// Shared HTTP machinery (connection pool).
pub(crate) fn http_client() -> Result<reqwest::Client, ImageError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("krio/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .map_err(|e| ImageError::Registry {
            registry: "-".into(),
            detail: format!("building HTTP client: {e}"),
        })
}

/// A fetched manifest.
pub(crate) struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub digest: Digest,
}

/// One pull's conversation with one registry endpoint (auth state is cached per session).
pub(crate) struct Session {
    http: reqwest::Client,
    reference: Reference,
    endpoint: Endpoint,
    auth: Option<RegistryAuth>,
    /// The Authorization header value that worked last.
    authz: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct RegistryErrors {
    #[serde(default)]
    errors: Vec<RegistryErrorEntry>,
}

#[derive(Deserialize)]
struct RegistryErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

/// Parses a `WWW-Authenticate` challenge: scheme and `key="value"` parameters.
pub(crate) fn parse_challenge(h: &str) -> Option<(String, HashMap<String, String>)> {
    let h = h.trim();
    let (scheme, rest) = match h.split_once(' ') {
        Some((s, r)) => (s, r),
        None => (h, ""),
    };
    let mut params = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                // Push whole UTF-8 chars: find the char boundary.
                let ch = rest[i..].chars().next()?;
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = rest[vs..i].trim().to_string();
        }
        params.insert(key, val);
    }
    Some((scheme.to_ascii_lowercase(), params))
}

impl Session {
    pub(crate) fn new(
        http: reqwest::Client,
        reference: Reference,
        endpoint: Endpoint,
        auth: Option<&RegistryAuth>,
    ) -> Session {
        let initial = auth
            .filter(|a| !a.registry_token.is_empty())
            .map(|a| format!("Bearer {}", a.registry_token));
        Session {
            http,
            reference,
            endpoint,
            auth: auth.cloned(),
            authz: Mutex::new(initial),
        }
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn reg_err(&self, detail: String) -> ImageError {
        ImageError::Registry {
            registry: self.endpoint.base.clone(),
            detail,
        }
    }

    fn unauthorized(&self, detail: String) -> ImageError {
        ImageError::Unauthorized {
            registry: self.reference.domain().to_string(),
            reference: self.reference.to_string(),
            detail,
        }
    }

    fn current_authz(&self) -> Option<String> {
        self.authz.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends a request, answering one auth challenge if the registry asks for it.
    async fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, ImageError> {
        let mut tried_challenge = false;
        loop {
            let mut rb = build();
            if let Some(h) = self.current_authz() {
                rb = rb.header(AUTHORIZATION, h);
            }
            let resp = rb
                .send()
                .await
                .map_err(|e| self.reg_err(format!("request failed: {e}")))?;
            if resp.status() != StatusCode::UNAUTHORIZED || tried_challenge {
                if resp.status() == StatusCode::UNAUTHORIZED {
                    return Err(self.unauthorized(format!(
                        "status 401 after authenticating{}",
                        registry_error_text(resp).await
                    )));
                }
                return Ok(resp);
            }
            tried_challenge = true;
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| self.unauthorized("status 401 without a challenge".into()))?;
            let header = self.answer_challenge(&challenge).await?;
            *self.authz.lock().unwrap_or_else(|e| e.into_inner()) = Some(header);
        }
    }

    async fn answer_challenge(&self, challenge: &str) -> Result<String, ImageError> {
        let (scheme, params) = parse_challenge(challenge)
            .ok_or_else(|| self.unauthorized(format!("unparsable challenge {challenge:?}")))?;
        let basic = self.auth.as_ref().and_then(|a| a.basic());
        match scheme.as_str() {
            "basic" => {
                let (u, p) = basic.ok_or_else(|| {
                    self.unauthorized(
                        "registry requires basic auth and no credentials were given".into(),
                    )
                })?;
                Ok(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ))
            }
            "bearer" => {
                let realm = params
                    .get("realm")
                    .filter(|r| r.starts_with("https://") || r.starts_with("http://"))
                    .ok_or_else(|| {
                        self.unauthorized(format!(
                            "bearer challenge without a usable realm: {challenge:?}"
                        ))
                    })?;
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.path()));
                let service = params.get("service").cloned().unwrap_or_default();
                let identity = self
                    .auth
                    .as_ref()
                    .map(|a| a.identity_token.clone())
                    .filter(|t| !t.is_empty());
                let req = if let Some(refresh) = identity {
                    let form = [
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh.as_str()),
                        ("service", service.as_str()),
                        ("scope", scope.as_str()),
                        ("client_id", "krio"),
                    ];
                    self.http.post(realm).form(&form)
                } else {
                    let mut q: Vec<(&str, &str)> = vec![("scope", scope.as_str())];
                    if !service.is_empty() {
                        q.push(("service", service.as_str()));
                    }
                    let mut rb = self.http.get(realm).query(&q);
                    if let Some((u, p)) = &basic {
                        rb = rb.basic_auth(u, Some(p));
                    }
                    rb
                };
                let resp = req
                    .send()
                    .await
                    .map_err(|e| self.reg_err(format!("token request to {realm}: {e}")))?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(
                        self.unauthorized(format!("token server {realm} answered {status}"))
                    );
                }
                if !status.is_success() {
                    return Err(self.reg_err(format!("token server {realm} answered {status}")));
                }
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| self.reg_err(format!("reading token from {realm}: {e}")))?;
                let tok: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| self.reg_err(format!("token from {realm} is not JSON: {e}")))?;
                let t = if tok.token.is_empty() {
                    tok.access_token
                } else {
                    tok.token
                };
                if t.is_empty() {
                    return Err(self.reg_err(format!("token server {realm} returned no token")));
                }
                Ok(format!("Bearer {t}"))
            }
            other => Err(self.unauthorized(format!("unsupported auth scheme {other:?}"))),
        }
    }

    fn url(&self, kind: &str, what: &str) -> String {
        format!(
            "{}/v2/{}/{kind}/{what}",
            self.endpoint.base,
            self.reference.path()
        )
    }

    /// Maps a non-success status to an error; `what` names the object.
    async fn status_error(&self, resp: Response, what: &str) -> ImageError {
        let status = resp.status();
        let text = registry_error_text(resp).await;
        match status {
            StatusCode::NOT_FOUND => ImageError::NotFound {
                reference: self.reference.to_string(),
                detail: Some(format!("{what}: {status}{text}")),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.unauthorized(format!("{what}: {status}{text}"))
            }
            _ => self.reg_err(format!("{what}: {status}{text}")),
        }
    }

    /// GETs a manifest by tag or digest; the bytes are limited to `MAX_MANIFEST_BYTES` and the
    /// digest is computed from them (and checked against a by-digest request and the
    /// `Docker-Content-Digest` header when it is sha256).
    pub(crate) async fn get_manifest(
        &self,
        tag_or_digest: &str,
    ) -> Result<FetchedManifest, ImageError> {
        let url = self.url("manifests", tag_or_digest);
        let resp = self
            .send(|| self.http.get(&url).header(ACCEPT, MANIFEST_ACCEPT))
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .status_error(resp, &format!("manifest {tag_or_digest}"))
                .await);
        }
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str());
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let what = format!("manifest {tag_or_digest}");
        let bytes = self
            .read_limited(resp, crate::manifest::MAX_MANIFEST_BYTES, &what)
            .await?;
        let expected = if tag_or_digest.contains(':') {
            Some(Digest::parse(tag_or_digest, "manifest reference")?)
        } else {
            None
        };
        let digest = match &expected {
            Some(e) => {
                let mut h = e.hasher();
                h.update(&bytes);
                let got = h.finish();
                e.verify(&got, &what)?;
                got
            }
            None => Digest::sha256_of(&bytes),
        };
        if let Some(hd) = header_digest.filter(|h| h.starts_with("sha256:")) {
            if expected.is_none() && hd != digest.as_str() {
                return Err(ImageError::DigestMismatch {
                    what: format!("{what} (Docker-Content-Digest header)"),
                    expected: hd,
                    actual: digest.to_string(),
                });
            }
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// GETs a small blob fully into memory (config), verifying size and digest.
    pub(crate) async fn get_small_blob(
        &self,
        digest: &Digest,
        size: u64,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, ImageError> {
        if size > limit {
            return Err(ImageError::SizeMismatch {
                what: format!("{what} (limit)"),
                expected: limit,
                actual: size,
            });
        }
        let resp = self.open_blob(digest, what).await?;
        let bytes = self.read_limited(resp, size, what).await?;
        if bytes.len() as u64 != size {
            return Err(ImageError::SizeMismatch {
                what: what.to_string(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        let mut h = digest.hasher();
        h.update(&bytes);
        digest.verify(&h.finish(), what)?;
        Ok(bytes)
    }

    /// Starts a blob download; the caller streams `Response::chunk()`.
    pub(crate) async fn open_blob(
        &self,
        digest: &Digest,
        what: &str,
    ) -> Result<Response, ImageError> {
        let url = self.url("blobs", digest.as_str());
        let resp = self.send(|| self.http.get(&url)).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, what).await);
        }
        Ok(resp)
    }

    async fn read_limited(
        &self,
        mut resp: Response,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.reg_err(format!("reading {what}: {e}")))?
        {
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(ImageError::SizeMismatch {
                    what: what.to_string(),
                    expected: limit,
                    actual: out.len() as u64 + chunk.len() as u64,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A transport/status error text for a failed blob chunk read.
    pub(crate) fn stream_error(&self, what: &str, e: reqwest::Error) -> ImageError {
        self.reg_err(format!("reading {what}: {e}"))
    }
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `" (CODE: message; ...)"` from a registry error body, or empty.
async fn registry_error_text(resp: Response) -> String {
    let Ok(body) = resp.bytes().await else {
        return String::new();
    };
    match serde_json::from_slice::<RegistryErrors>(&body) {
        Ok(e) if !e.errors.is_empty() => format!(
            " ({})",
            e.errors
                .iter()
                .map(|x| format!("{}: {}", x.code, x.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:samalba/my-app:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
        let (s, p) = parse_challenge("Bearer realm=https://x/t, service=y").unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://x/t");
        assert_eq!(p["service"], "y");
    }

    #[test]
    fn endpoints_and_loopback() {
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("127.0.0.1:5020"));
        assert!(is_loopback_host("127.1.2.3"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("quay.io"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
        let mut c = RegistryConfig::default();
        assert_eq!(
            c.endpoints("docker.io")[0].base,
            "https://registry-1.docker.io"
        );
        assert_eq!(
            c.endpoints("127.0.0.1:5020")[0].base,
            "http://127.0.0.1:5020"
        );
        c.insecure.push("reg.local:80".into());
        c.mirrors
            .insert("docker.io".into(), vec!["http://127.0.0.1:5000/".into()]);
        assert_eq!(c.endpoints("reg.local:80")[0].base, "http://reg.local:80");
        let e = c.endpoints("docker.io");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].base, "http://127.0.0.1:5000");
        assert!(e[0].mirror);
    }

    #[test]
    fn auth_decoding() {
        let a = RegistryAuth {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:q"),
            ..Default::default()
        };
        assert_eq!(a.basic(), Some(("u".into(), "p:q".into())));
        let a = RegistryAuth {
            username: "x".into(),
            password: "secret".into(),
            ..Default::default()
        };
        assert_eq!(a.basic(), Some(("x".into(), "secret".into())));
        assert!(!format!("{a:?}").contains("secret"));
        assert_eq!(RegistryAuth::default().basic(), None);
    }

    /// A fake token-auth registry (unit-test only; real registries are used by the
    /// integration tests). Answers one request per connection.
    async fn fake_registry() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let a2 = addr.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    return;
                };
                let addr = a2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = c.read(&mut tmp).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let body_start = head.find("\r\n\r\n").unwrap() + 4;
                    let line = head.lines().next().unwrap_or("").to_string();
                    let authz = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("authorization")
                                .then(|| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    let basic_up = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode("u:p")
                    );
                    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
                    let (status, extra, body): (&str, String, String) = if line
                        .starts_with("GET /token")
                    {
                        if authz == basic_up {
                            ("200 OK", String::new(), r#"{"token":"tok-basic"}"#.into())
                        } else if authz.is_empty()
                            && line.contains("scope=repository%3Aanon%2Fr%3Apull")
                        {
                            (
                                "200 OK",
                                String::new(),
                                r#"{"access_token":"tok-anon"}"#.into(),
                            )
                        } else {
                            ("401 Unauthorized", String::new(), String::new())
                        }
                    } else if line.starts_with("POST /token") {
                        let body = &buf[body_start.min(buf.len())..];
                        let form = String::from_utf8_lossy(body);
                        if form.contains("grant_type=refresh_token")
                            && form.contains("refresh_token=rt")
                        {
                            ("200 OK", String::new(), r#"{"token":"tok-refresh"}"#.into())
                        } else {
                            ("401 Unauthorized", String::new(), String::new())
                        }
                    } else if line.starts_with("GET /v2/basic/") {
                        if authz == basic_up {
                            (
                                "200 OK",
                                "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"
                                    .into(),
                                manifest.into(),
                            )
                        } else {
                            (
                                "401 Unauthorized",
                                "WWW-Authenticate: Basic realm=\"fake\"\r\n".into(),
                                String::new(),
                            )
                        }
                    } else if line.starts_with("GET /v2/") {
                        if [
                            "Bearer tok-basic",
                            "Bearer tok-anon",
                            "Bearer tok-refresh",
                            "Bearer given",
                        ]
                        .contains(&authz.as_str())
                        {
                            if line.contains("/manifests/missing") {
                                ("404 Not Found", String::new(), r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#.into())
                            } else {
                                (
                                    "200 OK",
                                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"
                                        .into(),
                                    manifest.into(),
                                )
                            }
                        } else {
                            let repo = line.split('/').nth(2).unwrap_or("").to_string()
                                + "/"
                                + line.split('/').nth(3).unwrap_or("");
                            (
                                "401 Unauthorized",
                                format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\",scope=\"repository:{repo}:pull\"\r\n"),
                                String::new(),
                            )
                        }
                    } else {
                        ("404 Not Found", String::new(), String::new())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                        body.len()
                    );
                    let _ = c.write_all(resp.as_bytes()).await;
                    let _ = c.shutdown().await;
                });
            }
        });
        addr
    }

    fn session(addr: &str, path: &str, auth: Option<&RegistryAuth>) -> Session {
        let r = Reference::parse(&format!("{addr}/{path}:t")).unwrap();
        let ep = RegistryConfig::default().endpoints(r.domain()).remove(0);
        Session::new(http_client().unwrap(), r, ep, auth)
    }

    #[tokio::test]
    async fn token_and_basic_auth_flows() {
        let addr = fake_registry().await;
        let up = RegistryAuth {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        // bearer via basic credentials at the token realm
        let m = session(&addr, "priv/r", Some(&up))
            .get_manifest("t")
            .await
            .unwrap();
        assert_eq!(m.digest, Digest::sha256_of(&m.bytes));
        // anonymous token
        session(&addr, "anon/r", None)
            .get_manifest("t")
            .await
            .unwrap();
        // refused: no credentials for a private repo
        assert!(matches!(
            session(&addr, "priv/r", None).get_manifest("t").await,
            Err(ImageError::Unauthorized { .. })
        ));
        // base64 `auth` field
        let enc = RegistryAuth {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p"),
            ..Default::default()
        };
        session(&addr, "priv/r", Some(&enc))
            .get_manifest("t")
            .await
            .unwrap();
        // identity token (OAuth2 refresh token grant)
        let idt = RegistryAuth {
            identity_token: "rt".into(),
            ..Default::default()
        };
        session(&addr, "priv/r", Some(&idt))
            .get_manifest("t")
            .await
            .unwrap();
        // registry token used as is
        let rt = RegistryAuth {
            registry_token: "given".into(),
            ..Default::default()
        };
        session(&addr, "priv/r", Some(&rt))
            .get_manifest("t")
            .await
            .unwrap();
        // basic challenge
        session(&addr, "basic/r", Some(&up))
            .get_manifest("t")
            .await
            .unwrap();
        assert!(matches!(
            session(&addr, "basic/r", None).get_manifest("t").await,
            Err(ImageError::Unauthorized { .. })
        ));
        // missing manifest after auth -> NotFound naming the reference and registry code
        match session(&addr, "priv/r", Some(&up))
            .get_manifest("missing")
            .await
        {
            Err(ImageError::NotFound { reference, detail }) => {
                assert!(reference.ends_with("priv/r:t"));
                assert!(detail.unwrap().contains("MANIFEST_UNKNOWN"));
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("found"),
        }
    }
}
