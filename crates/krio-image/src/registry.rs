//! A minimal client for the OCI distribution API (`/v2/`): token (bearer) and basic auth,
//! manifests, streaming blobs. Plain HTTP for loopback and configured insecure hosts.

use base64::Engine as _;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Endpoint, RegistryConfig};
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
    /// Tries per request (at least 1).
    attempts: u32,
    /// Delay before the 2nd try (doubling).
    backoff: Duration,
    /// No-progress limit (zero = none).
    progress_timeout: Duration,
}

/// Longest wait between two tries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The outcome of one try of a request.
enum Attempt {
    /// A response that is final (success or a non-transient status).
    Done(Response),
    /// A transient failure: what happened, the server's `Retry-After`, whether it was a stall.
    Transient {
        detail: String,
        retry_after: Option<Duration>,
        stalled: bool,
    },
}

/// `Retry-After` in seconds (HTTP dates are ignored), capped at [`MAX_RETRY_DELAY`].
fn retry_after(resp: &Response) -> Option<Duration> {
    header_str(resp.headers(), "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_DELAY))
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
        cfg: &RegistryConfig,
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
            attempts: cfg.attempts(),
            backoff: cfg.retry_backoff,
            progress_timeout: cfg.progress_timeout,
        }
    }

    /// Awaits `fut` for at most the progress timeout; `None` when it elapsed.
    pub(crate) async fn within_progress<T>(
        &self,
        fut: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        if self.progress_timeout.is_zero() {
            return Some(fut.await);
        }
        tokio::time::timeout(self.progress_timeout, fut).await.ok()
    }

    /// The [`ImageError::Stalled`] error for `what`.
    pub(crate) fn stalled(&self, what: &str) -> ImageError {
        ImageError::Stalled {
            registry: self.endpoint.base.clone(),
            what: what.to_string(),
            seconds: self.progress_timeout.as_secs(),
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
            registry: self.endpoint.host.clone(),
            reference: self.reference.to_string(),
            detail,
        }
    }

    fn current_authz(&self) -> Option<String> {
        self.authz.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends a GET-like request (`what` names it in errors), retrying transient failures
    /// (transport errors, no response within the progress timeout, HTTP 429 and 5xx) with
    /// exponential backoff, up to `attempts` tries.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ImageError> {
        let mut delay = self.backoff;
        let mut attempt = 1;
        loop {
            match self.send_attempt(&build).await? {
                Attempt::Done(resp) => return Ok(resp),
                Attempt::Transient {
                    detail,
                    retry_after,
                    stalled,
                } => {
                    if attempt >= self.attempts {
                        if stalled {
                            return Err(self.stalled(what));
                        }
                        return Err(self.reg_err(format!(
                            "{what}: {detail} (gave up after {attempt} attempts)"
                        )));
                    }
                    let wait = retry_after.unwrap_or(delay).min(MAX_RETRY_DELAY);
                    tracing::warn!(registry = %self.endpoint.base, %what, %detail, attempt, retry_in_ms = wait.as_millis() as u64, "transient registry failure, retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    attempt += 1;
                }
            }
        }
    }

    /// One try: sends the request, answering one auth challenge if the registry asks for it.
    async fn send_attempt(
        &self,
        build: &impl Fn() -> RequestBuilder,
    ) -> Result<Attempt, ImageError> {
        let mut tried_challenge = false;
        loop {
            let mut rb = build();
            if let Some(h) = self.current_authz() {
                rb = rb.header(AUTHORIZATION, h);
            }
            let resp = match self.within_progress(rb.send()).await {
                None => {
                    return Ok(Attempt::Transient {
                        detail: format!("no response within {}s", self.progress_timeout.as_secs()),
                        retry_after: None,
                        stalled: true,
                    })
                }
                Some(Err(e)) if e.is_builder() => {
                    return Err(self.reg_err(format!("request failed: {e}")))
                }
                Some(Err(e)) => {
                    return Ok(Attempt::Transient {
                        detail: format!("request failed: {e}"),
                        retry_after: None,
                        stalled: false,
                    })
                }
                Some(Ok(r)) => r,
            };
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                let ra = retry_after(&resp);
                return Ok(Attempt::Transient {
                    detail: format!("status {status}{}", registry_error_text(resp).await),
                    retry_after: ra,
                    stalled: false,
                });
            }
            if status != StatusCode::UNAUTHORIZED || tried_challenge {
                if status == StatusCode::UNAUTHORIZED {
                    return Err(self.unauthorized(format!(
                        "status 401 after authenticating{}",
                        registry_error_text(resp).await
                    )));
                }
                return Ok(Attempt::Done(resp));
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
                    .unwrap_or_else(|| format!("repository:{}:pull", self.endpoint.path));
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
            self.endpoint.base, self.endpoint.path
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
        let what = format!("manifest {tag_or_digest}");
        let resp = self
            .send(&what, || {
                self.http.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .status_error(resp, &format!("manifest {tag_or_digest}"))
                .await);
        }
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str());
        let header_digest = header_str(resp.headers(), "docker-content-digest");
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
        let resp = self.send(what, || self.http.get(&url)).await?;
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
        while let Some(chunk) = self
            .within_progress(resp.chunk())
            .await
            .ok_or_else(|| self.stalled(what))?
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
#[path = "registry/tests.rs"]
mod tests;
