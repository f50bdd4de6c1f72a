//! Minimal plain-HTTP client for the OCI distribution API (distribution-spec v1.0 "Push" and "Pull"),
//! enough to push and verify the test images on a local registry such as Debian's `docker-registry`.
//!
//! No TLS and no authentication: meant for `127.0.0.1:PORT` registries started by `scripts/registry.sh`.

use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use crate::catalog::TestImage;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{media_types, Artifact, Image};

/// Upper bound on a manifest/index body read back from the registry, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Timeout of one whole HTTP request (connect + transfer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A manifest fetched back from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// `Content-Type` the registry answered with.
    pub media_type: String,
    /// `Docker-Content-Digest` header, if sent.
    pub header_digest: Option<String>,
    /// Body bytes.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`.
    pub digest: Digest,
}

/// Result of pushing one test image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// `registry/repository:tag`.
    pub reference: String,
    /// Digest of the top-level manifest or index.
    pub digest: Digest,
    /// Media type of the top-level manifest or index.
    pub media_type: &'static str,
    /// Blobs uploaded (not already present).
    pub uploaded_blobs: usize,
    /// Blobs skipped because HEAD found them.
    pub existing_blobs: usize,
}

/// Checks a repository name against distribution-spec's `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/...)*`
/// (simplified: lowercase alphanumerics separated by single `.`, `_`, `__`, or runs of `-`, components by `/`).
///
/// # Errors
/// [`Error::InvalidReference`] with field `repository`.
pub fn validate_repository(repo: &str) -> Result<()> {
    let bad = |reason| Error::InvalidReference {
        field: "repository",
        value: repo.to_owned(),
        reason,
    };
    if repo.is_empty() || repo.len() > 255 {
        return Err(bad("must be 1..=255 characters"));
    }
    for comp in repo.split('/') {
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(bad("each path component must start and end with [a-z0-9]"));
        }
        if !b
            .iter()
            .all(|&c| alnum(c) || matches!(c, b'.' | b'_' | b'-'))
        {
            return Err(bad("only [a-z0-9._-] and `/` allowed"));
        }
        if comp.contains("..") || comp.contains("___") || comp.contains("._") || comp.contains("_.")
        {
            return Err(bad("bad separator sequence"));
        }
    }
    Ok(())
}

/// Checks a manifest reference: a tag `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` or a valid digest.
///
/// # Errors
/// [`Error::InvalidReference`] with field `tag`, or [`Error::InvalidDigest`].
pub fn validate_reference(reference: &str) -> Result<()> {
    if reference.contains(':') {
        return Digest::parse(reference).map(|_| ());
    }
    let b = reference.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidReference {
            field: "tag",
            value: reference.to_owned(),
            reason: "must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
        })
    }
}

/// A registry endpoint spoken to over plain HTTP.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    host: String,
    base: String,
    agent: ureq::Agent,
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn body_snippet(resp: &mut Response<Body>) -> String {
    let mut s = resp
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    s.truncate(1024);
    s.trim().to_owned()
}

impl RegistryClient {
    /// Creates a client for `registry`, given as `host:port` (e.g. `127.0.0.1:5000`) or `http://host:port`.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] (field `registry`) if it is empty, uses `https://`, or has a path.
    pub fn new(registry: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidReference {
            field: "registry",
            value: registry.to_owned(),
            reason,
        };
        if registry.starts_with("https://") {
            return Err(bad("only plain http registries are supported"));
        }
        let host = registry.strip_prefix("http://").unwrap_or(registry);
        let host = host.trim_end_matches('/');
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(bad("must be host[:port] without path"));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(RegistryClient {
            host: host.to_owned(),
            base: format!("http://{host}"),
            agent,
        })
    }

    /// The `host:port` part, as used in image references.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn http_err<'a>(method: &'static str, url: &'a str) -> impl FnOnce(ureq::Error) -> Error + 'a {
        move |source| Error::Http {
            method,
            url: url.to_owned(),
            source: Box::new(source),
        }
    }

    fn expect(
        method: &'static str,
        url: &str,
        resp: &mut Response<Body>,
        ok: &[u16],
        expected: &'static str,
    ) -> Result<()> {
        let status = resp.status().as_u16();
        if ok.contains(&status) {
            return Ok(());
        }
        Err(Error::UnexpectedStatus {
            method,
            url: url.to_owned(),
            expected,
            status,
            body: body_snippet(resp),
        })
    }

    /// `GET /v2/`: checks the registry speaks the distribution API.
    ///
    /// # Errors
    /// [`Error::Http`] if unreachable; [`Error::UnexpectedStatus`] unless 200.
    pub fn ping(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(Self::http_err("GET", &url))?;
        Self::expect("GET", &url, &mut resp, &[200], "200")
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: the blob's size in bytes if present, `None` on 404.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] for a bad repository; [`Error::Http`]; [`Error::UnexpectedStatus`] for
    /// anything but 200/404.
    pub fn blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        validate_repository(repo)?;
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let mut resp = self
            .agent
            .head(&url)
            .call()
            .map_err(Self::http_err("HEAD", &url))?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        Self::expect("HEAD", &url, &mut resp, &[200], "200 or 404")?;
        let len = header(&resp, "content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| Error::MissingHeader {
                method: "HEAD",
                url: url.clone(),
                header: "Content-Length",
            })?;
        Ok(Some(len))
    }

    /// Uploads `data` as blob `digest` unless a HEAD finds it already: `POST /v2/<repo>/blobs/uploads/`
    /// (202 + `Location`), then a monolithic `PUT <location>?digest=<digest>` (201). Returns whether it
    /// uploaded. The digest is checked against `data` first and against the registry's answer after.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if `digest` is not the SHA-256 of `data` or the registry reports another digest;
    /// [`Error::Http`], [`Error::UnexpectedStatus`], [`Error::MissingHeader`].
    pub fn push_blob(&self, repo: &str, digest: &Digest, data: &[u8]) -> Result<bool> {
        let actual = Digest::of(data);
        if &actual != digest {
            return Err(Error::Mismatch {
                what: format!("blob content for {repo}"),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if let Some(size) = self.blob_size(repo, digest)? {
            if size == data.len() as u64 {
                return Ok(false);
            }
        }
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let mut resp = self
            .agent
            .post(&url)
            .send_empty()
            .map_err(Self::http_err("POST", &url))?;
        Self::expect("POST", &url, &mut resp, &[202], "202")?;
        let loc = header(&resp, "location").ok_or_else(|| Error::MissingHeader {
            method: "POST",
            url: url.clone(),
            header: "Location",
        })?;
        let loc = if loc.starts_with("http://") || loc.starts_with("https://") {
            loc
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            return Err(Error::MissingHeader {
                method: "POST",
                url,
                header: "Location (not absolute)",
            });
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put_url = format!("{loc}{sep}digest={}", digest.as_str().replace(':', "%3A"));
        let mut resp = self
            .agent
            .put(&put_url)
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .map_err(Self::http_err("PUT", &put_url))?;
        Self::expect("PUT", &put_url, &mut resp, &[201], "201")?;
        if let Some(h) = header(&resp, "docker-content-digest") {
            if h != digest.as_str() {
                return Err(Error::Mismatch {
                    what: format!("uploaded blob digest in {repo}"),
                    expected: digest.to_string(),
                    actual: h,
                });
            }
        }
        Ok(true)
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `Content-Type: media_type`. Returns the digest of
    /// `bytes`, after checking the registry's `Docker-Content-Digest` answer matches it.
    ///
    /// # Errors
    /// [`Error::InvalidReference`]/[`Error::InvalidDigest`] for bad names; [`Error::Http`];
    /// [`Error::UnexpectedStatus`] unless 201; [`Error::Mismatch`] on a different digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        validate_repository(repo)?;
        validate_reference(reference)?;
        let digest = Digest::of(bytes);
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let mut resp = self
            .agent
            .put(&url)
            .header("Content-Type", media_type)
            .send(bytes)
            .map_err(Self::http_err("PUT", &url))?;
        Self::expect("PUT", &url, &mut resp, &[201], "201")?;
        if let Some(h) = header(&resp, "docker-content-digest") {
            if h != digest.as_str() {
                return Err(Error::Mismatch {
                    what: format!("manifest digest of {repo}:{reference}"),
                    expected: digest.to_string(),
                    actual: h,
                });
            }
        }
        Ok(digest)
    }

    /// `GET /v2/<repo>/manifests/<reference>` accepting every manifest/index media type.
    ///
    /// # Errors
    /// [`Error::InvalidReference`]; [`Error::Http`]; [`Error::UnexpectedStatus`] unless 200;
    /// [`Error::MissingHeader`] without `Content-Type`.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        validate_repository(repo)?;
        validate_reference(reference)?;
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .header("Accept", media_types::ALL_MANIFESTS.join(", "))
            .call()
            .map_err(Self::http_err("GET", &url))?;
        Self::expect("GET", &url, &mut resp, &[200], "200")?;
        let media_type = header(&resp, "content-type").ok_or_else(|| Error::MissingHeader {
            method: "GET",
            url: url.clone(),
            header: "Content-Type",
        })?;
        let header_digest = header(&resp, "docker-content-digest");
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST_BYTES)
            .read_to_vec()
            .map_err(Self::http_err("GET", &url))?;
        Ok(FetchedManifest {
            media_type,
            header_digest,
            digest: Digest::of(&bytes),
            bytes,
        })
    }

    /// `DELETE /v2/<repo>/manifests/<digest>` (the registry must have deletes enabled, as
    /// `scripts/registry.sh` configures). Returns `false` if it was not there (404).
    ///
    /// # Errors
    /// [`Error::Http`]; [`Error::UnexpectedStatus`] unless 202/404.
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        validate_repository(repo)?;
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.base);
        let mut resp = self
            .agent
            .delete(&url)
            .call()
            .map_err(Self::http_err("DELETE", &url))?;
        if resp.status().as_u16() == 404 {
            return Ok(false);
        }
        Self::expect("DELETE", &url, &mut resp, &[202], "202 or 404")?;
        Ok(true)
    }

    fn push_image_blobs(&self, repo: &str, img: &Image, counts: &mut (usize, usize)) -> Result<()> {
        for (d, data) in img.blobs() {
            if self.push_blob(repo, d, data)? {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        Ok(())
    }

    /// Pushes an artifact under `repo:tag`: all blobs, then (for an index) each child manifest by digest,
    /// then the top-level manifest by tag. Returns (top digest, uploaded blobs, existing blobs).
    ///
    /// # Errors
    /// As [`RegistryClient::push_blob`] and [`RegistryClient::push_manifest`].
    pub fn push_artifact(
        &self,
        repo: &str,
        tag: &str,
        artifact: &Artifact,
    ) -> Result<(Digest, usize, usize)> {
        validate_repository(repo)?;
        validate_reference(tag)?;
        let mut counts = (0, 0);
        match artifact {
            Artifact::Image(img) => self.push_image_blobs(repo, img, &mut counts)?,
            Artifact::Index(idx) => {
                for img in &idx.images {
                    self.push_image_blobs(repo, img, &mut counts)?;
                    self.push_manifest(
                        repo,
                        img.manifest_digest.as_str(),
                        img.media_type(),
                        &img.manifest,
                    )?;
                }
            }
        }
        let d = self.push_manifest(repo, tag, artifact.media_type(), artifact.manifest_bytes())?;
        Ok((d, counts.0, counts.1))
    }

    /// Fetches `repo:tag` back and checks it is byte-identical to `artifact` (digest, `Content-Type`,
    /// `Docker-Content-Digest`), that every referenced blob exists with the right size, and for an index
    /// that every child manifest can be fetched by digest with the right media type.
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming what differs; HTTP errors as for [`RegistryClient::get_manifest`].
    pub fn verify_artifact(&self, repo: &str, tag: &str, artifact: &Artifact) -> Result<()> {
        self.verify_manifest(repo, tag, artifact.media_type(), artifact.digest())?;
        for img in artifact.images() {
            if let Artifact::Index(_) = artifact {
                self.verify_manifest(
                    repo,
                    img.manifest_digest.as_str(),
                    img.media_type(),
                    &img.manifest_digest,
                )?;
            }
            for (d, data) in img.blobs() {
                let size = self.blob_size(repo, d)?;
                if size != Some(data.len() as u64) {
                    return Err(Error::Mismatch {
                        what: format!("size of blob {d} in {repo}"),
                        expected: data.len().to_string(),
                        actual: format!("{size:?}"),
                    });
                }
            }
        }
        Ok(())
    }

    fn verify_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        digest: &Digest,
    ) -> Result<()> {
        let got = self.get_manifest(repo, reference)?;
        let what = |w: &str| format!("{w} of {repo}:{reference}");
        if &got.digest != digest {
            return Err(Error::Mismatch {
                what: what("manifest digest"),
                expected: digest.to_string(),
                actual: got.digest.to_string(),
            });
        }
        if got.header_digest.as_deref() != Some(digest.as_str()) {
            return Err(Error::Mismatch {
                what: what("Docker-Content-Digest header"),
                expected: digest.to_string(),
                actual: format!("{:?}", got.header_digest),
            });
        }
        if got.media_type != media_type {
            return Err(Error::Mismatch {
                what: what("Content-Type"),
                expected: media_type.to_owned(),
                actual: got.media_type,
            });
        }
        Ok(())
    }

    /// Pushes a catalogue image and verifies it ([`RegistryClient::push_artifact`] then
    /// [`RegistryClient::verify_artifact`]).
    ///
    /// # Errors
    /// As those two.
    pub fn push_test_image(&self, image: &TestImage) -> Result<PushedImage> {
        let (digest, uploaded_blobs, existing_blobs) =
            self.push_artifact(&image.repository, image.tag, &image.artifact)?;
        self.verify_artifact(&image.repository, image.tag, &image.artifact)?;
        Ok(PushedImage {
            reference: image.reference(&self.host),
            digest,
            media_type: image.artifact.media_type(),
            uploaded_blobs,
            existing_blobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "krio-test/busybox",
            "a",
            "a/b/c",
            "a_b",
            "a__b",
            "a--b",
            "a.b",
        ] {
            validate_repository(ok).unwrap();
        }
        for bad in ["", "A", "a/", "/a", "a//b", "-a", "a..b", "a b", "a:b"] {
            assert!(validate_repository(bad).is_err(), "{bad:?}");
        }
        validate_reference("latest").unwrap();
        validate_reference(&format!("sha256:{}", "0".repeat(64))).unwrap();
        for bad in ["", ".x", "a/b", "sha256:00", &"x".repeat(129)] {
            assert!(validate_reference(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn registry_address() {
        assert_eq!(
            RegistryClient::new("127.0.0.1:5000").unwrap().host(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            RegistryClient::new("http://127.0.0.1:5000/")
                .unwrap()
                .host(),
            "127.0.0.1:5000"
        );
        assert!(RegistryClient::new("https://x").is_err());
        assert!(RegistryClient::new("x/y").is_err());
        assert!(RegistryClient::new("").is_err());
    }
}
