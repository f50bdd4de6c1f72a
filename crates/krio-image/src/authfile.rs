//! Credentials from a Docker-style auth file (`~/.docker/config.json`, containers-auth.json(5)):
//! `{"auths": {"<registry>[/<namespace>...]": {"auth": base64("user:pass")} | {"username", "password"}
//! | {"identitytoken"} | {"registrytoken"}}}`. Credential helpers (`credsStore`, `credHelpers`)
//! are not run.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

use crate::error::ImageError;
use crate::reference::DEFAULT_DOMAIN;
use crate::registry::RegistryAuth;

/// Maximum accepted auth file size in bytes.
const MAX_AUTH_FILE_BYTES: u64 = 4 << 20;

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize, Default)]
struct RawEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// Parsed credentials, keyed by normalized `host[/namespace...]`.
#[derive(Debug, Default)]
pub(crate) struct AuthStore {
    entries: BTreeMap<String, RegistryAuth>,
}

/// `https://index.docker.io/v1/` → `docker.io`; `reg.io/ns/` → `reg.io/ns`.
fn normalize_key(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k)
        .trim_end_matches('/');
    let (host, rest) = k.split_once('/').unwrap_or((k, ""));
    let host = normalize_host(host);
    // Docker writes API paths (`/v1/`, `/v2/`) after the host; they are not namespaces.
    if rest.is_empty() || rest == "v1" || rest == "v2" {
        host
    } else {
        format!("{host}/{rest}")
    }
}

fn normalize_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_DOMAIN.to_string()
        }
        h => h.to_ascii_lowercase(),
    }
}

impl AuthStore {
    /// Reads `path`; a missing file is an empty store.
    ///
    /// Errors: [`ImageError::Io`] for unreadable files, [`ImageError::AuthFile`] for bad JSON,
    /// undecodable `auth` values or files over 4 MiB.
    pub(crate) fn load(path: &Path) -> Result<AuthStore, ImageError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AuthStore::default()),
            Err(e) => return Err(ImageError::io("stat", path, e)),
            Ok(m) if m.len() > MAX_AUTH_FILE_BYTES => {
                return Err(ImageError::AuthFile {
                    path: path.to_path_buf(),
                    reason: format!("larger than {MAX_AUTH_FILE_BYTES} bytes"),
                })
            }
            Ok(_) => {}
        }
        let data = match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AuthStore::default()),
            Err(e) => return Err(ImageError::io("read", path, e)),
            Ok(d) => d,
        };
        AuthStore::parse(path, &data)
    }

    /// Parses auth file bytes (`path` names the file in errors).
    pub(crate) fn parse(path: &Path, data: &[u8]) -> Result<AuthStore, ImageError> {
        let err = |reason: String| ImageError::AuthFile {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawFile = serde_json::from_slice(data).map_err(|e| err(e.to_string()))?;
        let mut entries = BTreeMap::new();
        for (key, e) in raw.auths {
            let field = format!("auths[{key:?}]");
            let auth = RegistryAuth {
                username: e.username,
                password: e.password,
                auth: e.auth.trim().to_string(),
                identity_token: e.identitytoken,
                registry_token: e.registrytoken,
            };
            if !auth.auth.is_empty() {
                let ok = base64::engine::general_purpose::STANDARD
                    .decode(&auth.auth)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .is_some_and(|s| s.contains(':'));
                if !ok {
                    return Err(err(format!(
                        "{field}.auth is not base64 of \"username:password\""
                    )));
                }
            }
            if auth == RegistryAuth::default() {
                continue;
            }
            entries.insert(normalize_key(&key), auth);
        }
        Ok(AuthStore { entries })
    }

    /// Credentials for repository `path` on registry `host`: the most specific of
    /// `host/path`, its parent namespaces, then `host`.
    pub(crate) fn lookup(&self, host: &str, path: &str) -> Option<RegistryAuth> {
        let host = normalize_host(host);
        let mut key = format!("{host}/{path}");
        loop {
            if let Some(a) = self.entries.get(&key) {
                return Some(a.clone());
            }
            match key.rfind('/') {
                Some(i) => key.truncate(i),
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn parses_and_looks_up() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "quay.io": {{"username": "qu", "password": "qp"}},
                "quay.io/team": {{"auth": "{}"}},
                "ghcr.io": {{"identitytoken": "refresh-me"}},
                "http://127.0.0.1:5000/v2/": {{"registrytoken": "rt"}},
                "empty.io": {{}}
            }}, "credsStore": "desktop"}}"#,
            b64("hub:secret"),
            b64("team:tp")
        );
        let s = AuthStore::parse(Path::new("/x/config.json"), json.as_bytes()).unwrap();
        let hub = s.lookup("docker.io", "library/busybox").unwrap();
        assert_eq!(hub.auth, b64("hub:secret"));
        assert_eq!(
            s.lookup("registry-1.docker.io", "a/b").unwrap().auth,
            hub.auth
        );
        let q = s.lookup("quay.io", "other/img").unwrap();
        assert_eq!((q.username.as_str(), q.password.as_str()), ("qu", "qp"));
        // The most specific namespace wins.
        assert_eq!(
            s.lookup("quay.io", "team/sub/img").unwrap().auth,
            b64("team:tp")
        );
        assert_eq!(
            s.lookup("ghcr.io", "x/y").unwrap().identity_token,
            "refresh-me"
        );
        assert_eq!(
            s.lookup("127.0.0.1:5000", "x").unwrap().registry_token,
            "rt"
        );
        assert!(s.lookup("empty.io", "x").is_none());
        assert!(s.lookup("quay.io.evil", "x").is_none());
        assert!(s.lookup("gcr.io", "x").is_none());
    }

    #[test]
    fn rejects_bad_files() {
        let p = Path::new("/x/config.json");
        for bad in [
            "not json",
            r#"{"auths": []}"#,
            r#"{"auths": {"a.io": {"auth": "!!!"}}}"#,
            &format!(
                r#"{{"auths": {{"a.io": {{"auth": "{}"}}}}}}"#,
                b64("nocolon")
            ),
        ] {
            match AuthStore::parse(p, bad.as_bytes()) {
                Err(ImageError::AuthFile { path, reason }) => {
                    assert_eq!(path, p);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Secrets never appear in errors.
        let e = AuthStore::parse(
            p,
            format!(
                r#"{{"auths": {{"a.io": {{"auth": "{}"}}}}}}"#,
                b64("nocolon")
            )
            .as_bytes(),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("nocolon"));
        // Missing file: no credentials.
        let s = AuthStore::load(Path::new("/nonexistent/krio/config.json")).unwrap();
        assert!(s.lookup("docker.io", "library/x").is_none());
    }
}
