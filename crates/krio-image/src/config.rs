//! How registries are reached: [`RegistryConfig`], loaded from containers-registries.conf(5)
//! version 2 (plus `registries.conf.d/*.conf` drop-ins, containers-registries.conf.d(5)).
//!
//! Resolution of one pull:
//! 1. [`RegistryConfig::candidates`]: a short name (`busybox`) becomes the fully-qualified
//!    references to try: the `[aliases]` entry if there is one, else one per
//!    `unqualified-search-registries` entry in order, else `docker.io` (as kubelet/containerd).
//! 2. [`RegistryConfig::sources`]: the `[[registry]]` table with the longest matching `prefix`
//!    (`*.example.com` wildcards match any subdomain) decides: `blocked` refuses the pull,
//!    its mirrors (`[[registry.mirror]]`) are tried in order, then its `location` (the matched
//!    prefix rewritten), each reached over plain HTTP when `insecure`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ImageError;
use crate::reference::{split_short_name, validate_domain, Reference};

/// The default main configuration file (containers-registries.conf(5)).
pub const DEFAULT_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
/// Default [`RegistryConfig::progress_timeout`]: 60 s.
pub const DEFAULT_PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`RegistryConfig::max_attempts`]: 3 tries per request.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default [`RegistryConfig::retry_backoff`]: 500 ms before the 2nd try, doubling after.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// `pull-from-mirror` of a `[[registry.mirror]]` table: which references the mirror serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFromMirror {
    /// Every reference (`all`, the default).
    #[default]
    All,
    /// Only references with a digest (`digest-only`).
    DigestOnly,
    /// Only references without a digest (`tag-only`).
    TagOnly,
}

/// One `[[registry.mirror]]` table (containers-registries.conf(5) "Remapping and mirroring").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryMirror {
    /// `host[:port][/namespace...]` replacing the matched prefix (no scheme, no trailing `/`).
    pub location: String,
    /// Reach the mirror over plain HTTP.
    #[serde(default)]
    pub insecure: bool,
    /// Which references may use this mirror.
    #[serde(default)]
    pub pull_from_mirror: PullFromMirror,
}

/// One `[[registry]]` table, normalized (containers-registries.conf(5) "NAMESPACED SETTINGS").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryTable {
    /// `host[:port][/namespace...][/repo][(:tag|@digest)]` or `*.domain`; defaults to
    /// `location` when the file omits it.
    pub prefix: String,
    /// Where the prefix-rooted namespace really lives; empty only for a wildcard prefix
    /// (then references are used as written).
    #[serde(default)]
    pub location: String,
    /// Reach `location` over plain HTTP.
    #[serde(default)]
    pub insecure: bool,
    /// Refuse pulls of matching references ([`ImageError::Blocked`]).
    #[serde(default)]
    pub blocked: bool,
    /// Use the mirrors only for references with a digest (`mirror-by-digest-only`).
    #[serde(default)]
    pub mirror_by_digest_only: bool,
    /// Mirrors, tried in order before `location`.
    #[serde(default)]
    pub mirrors: Vec<RegistryMirror>,
}

/// How registries are reached (and how patient a pull is).
///
/// Build it with [`RegistryConfig::load`] (registries.conf) or by hand; `Default` is "no
/// registries.conf": short names go to `docker.io`, TLS everywhere except loopback.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Registry hosts (`host[:port]`, as written in references) reached over plain HTTP.
    /// Loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) always use plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Extra mirrors per registry host (`docker.io` → [`http://127.0.0.1:5000`, ...]): endpoint
    /// URLs (`scheme://host[:port]`) serving the same repository paths, tried in order before
    /// everything registries.conf gives.
    #[serde(default)]
    pub mirrors: HashMap<String, Vec<String>>,
    /// Maximum number of layer downloads running at once per pull (0 = default 3).
    #[serde(default)]
    pub max_concurrent_downloads: usize,
    /// `[[registry]]` tables (registries.conf v2), after drop-in merging.
    #[serde(default)]
    pub registries: Vec<RegistryTable>,
    /// `unqualified-search-registries`: `host[:port]` list tried in order for short names
    /// without an alias. Empty = `docker.io` only.
    #[serde(default)]
    pub unqualified_search_registries: Vec<String>,
    /// `[aliases]`: short name (no tag/digest, e.g. `busybox`, `ns/img`) → fully-qualified
    /// repository (`quay.io/ns/img`); the short name's tag/digest is appended.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// A Docker-style auth file (`config.json`: `{"auths": {"host[/ns]": {...}}}`, also
    /// containers-auth.json(5)); read at each pull and used when the CRI request carries no
    /// `AuthConfig`. `None` = no credentials.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// A blob, manifest or config download that receives no bytes for this long is cancelled
    /// ([`ImageError::Stalled`]); also bounds the wait for response headers. Zero disables.
    #[serde(default = "default_progress_timeout")]
    pub progress_timeout: Duration,
    /// Tries per manifest / blob request on transient failures (connection errors, timeouts,
    /// HTTP 429 and 5xx); 0 means [`DEFAULT_MAX_ATTEMPTS`].
    #[serde(default)]
    pub max_attempts: u32,
    /// Delay before the 2nd try; doubles for each further try (capped at 30 s); HTTP 429/503
    /// `Retry-After` (seconds, at most 30) takes precedence.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: Duration,
}

fn default_progress_timeout() -> Duration {
    DEFAULT_PROGRESS_TIMEOUT
}

fn default_retry_backoff() -> Duration {
    DEFAULT_RETRY_BACKOFF
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure: Vec::new(),
            mirrors: HashMap::new(),
            max_concurrent_downloads: 0,
            registries: Vec::new(),
            unqualified_search_registries: Vec::new(),
            aliases: BTreeMap::new(),
            auth_file: None,
            progress_timeout: DEFAULT_PROGRESS_TIMEOUT,
            max_attempts: 0,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
        }
    }
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
    /// The registry host as configured (`docker.io`, `mirror.local:5000`), for credentials.
    pub host: String,
    /// The repository path at this endpoint (after any location rewrite).
    pub path: String,
    /// True for a mirror.
    pub mirror: bool,
}

// ---- registries.conf parsing ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RawRegistry>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    short_name_mode: Option<String>,
    /// Version 1 (`[registries.search]`, `[registries.insecure]`, `[registries.block]`).
    registries: Option<RawV1>,
}

#[derive(Deserialize, Default)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize, Default)]
struct RawV1List {
    #[serde(default)]
    registries: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: Option<String>,
}

/// Validates a `prefix` / `location` value: no scheme, trailing `/` removed, valid host;
/// `*.domain` only where `wildcard_ok`.
fn normalize_location(value: &str, wildcard_ok: bool) -> Result<String, String> {
    let v = value.trim().trim_end_matches('/');
    if v.is_empty() {
        return Err("is empty".into());
    }
    if v.contains("://") {
        return Err(format!(
            "{v:?}: URI schemes are not supported (write host[:port][/path])"
        ));
    }
    if let Some(domain) = v.strip_prefix("*.") {
        if !wildcard_ok {
            return Err(format!("{v:?}: wildcards are only allowed in prefix"));
        }
        if domain.contains(['/', ':', '@', '*']) {
            return Err(format!(
                "{v:?}: a wildcard prefix must have the form *.example.com"
            ));
        }
        validate_domain(domain).map_err(|e| format!("{v:?}: {e}"))?;
        return Ok(v.to_string());
    }
    if v.contains('*') {
        return Err(format!("{v:?}: '*' is only allowed as a leading \"*.\""));
    }
    let host_end = v.find('/').unwrap_or(v.len());
    validate_domain(&v[..host_end]).map_err(|e| format!("{v:?}: {e}"))?;
    Ok(v.to_string())
}

impl RegistryConfig {
    /// Loads containers-registries.conf(5) version 2 from `path` (normally
    /// [`DEFAULT_REGISTRIES_CONF`]) and then every `*.conf` file in `<dir of path>/registries.conf.d/`
    /// in lexical order (containers-registries.conf.d(5)). A missing file or directory counts as
    /// empty, so a host without registries.conf gets [`RegistryConfig::default`].
    ///
    /// Merging: a later file's `unqualified-search-registries` replaces the earlier list; a
    /// `[[registry]]` with the same `prefix` replaces the earlier table, others are appended;
    /// `[aliases]` entries override per name and an empty value erases the alias. The version 1
    /// lists (`[registries.search]`, `[registries.insecure]`, `[registries.block]`) are also read.
    /// `extra_insecure` hosts (`host[:port]`, e.g. from krio's own config) are reached over plain
    /// HTTP in addition to the `insecure` tables.
    ///
    /// Errors: [`ImageError::RegistriesConf`] naming the file and field for bad TOML or values
    /// (schemes in locations, bad hosts, wildcard misuse, qualified alias names, unknown
    /// `pull-from-mirror`...); [`ImageError::Io`] when a file exists but cannot be read.
    pub fn load(path: &Path, extra_insecure: &[String]) -> Result<RegistryConfig, ImageError> {
        let mut cfg = RegistryConfig {
            insecure: extra_insecure.to_vec(),
            ..Default::default()
        };
        let mut files = vec![path.to_path_buf()];
        let dropin = path
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .join("registries.conf.d");
        match std::fs::read_dir(&dropin) {
            Ok(rd) => {
                let mut names = Vec::new();
                for e in rd {
                    let e = e.map_err(|e| ImageError::io("read directory", &dropin, e))?;
                    let p = e.path();
                    let is_conf = p.extension().is_some_and(|x| x == "conf");
                    if is_conf && p.is_file() {
                        names.push(p);
                    }
                }
                names.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
                files.extend(names);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {}
            Err(e) => return Err(ImageError::io("read directory", &dropin, e)),
        }
        for f in files {
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ImageError::io("read", &f, e)),
            };
            cfg.merge_toml(&f, &text)?;
        }
        Ok(cfg)
    }

    /// Merges one registries.conf file's `text` (from `origin`, used in errors) over `self`
    /// with the drop-in rules of [`RegistryConfig::load`].
    ///
    /// Errors: [`ImageError::RegistriesConf`].
    pub fn merge_toml(&mut self, origin: &Path, text: &str) -> Result<(), ImageError> {
        let err = |reason: String| ImageError::RegistriesConf {
            path: origin.to_path_buf(),
            reason,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if let Some(mode) = raw.short_name_mode.as_deref() {
            if !matches!(mode, "" | "enforcing" | "permissive" | "disabled") {
                return Err(err(format!(
                    "short-name-mode {mode:?}: expected enforcing, permissive or disabled"
                )));
            }
        }
        let mut tables = Vec::new();
        if let Some(v1) = raw.registries {
            if let Some(s) = v1.search {
                let mut list = self.unqualified_search_registries.clone();
                list.extend(s.registries);
                self.set_search(&err, "registries.search.registries", list)?;
            }
            for (list, blocked) in [(v1.insecure, false), (v1.block, true)] {
                for host in list.map(|l| l.registries).unwrap_or_default() {
                    let loc = normalize_location(&host, false)
                        .map_err(|e| err(format!("registries.*.registries entry {e}")))?;
                    tables.push(RegistryTable {
                        prefix: loc.clone(),
                        location: loc,
                        insecure: !blocked,
                        blocked,
                        ..Default::default()
                    });
                }
            }
        }
        if let Some(list) = raw.unqualified_search_registries {
            self.set_search(&err, "unqualified-search-registries", list)?;
        }
        for (i, r) in raw.registry.into_iter().enumerate() {
            let field = format!("registry[{i}]");
            if r.prefix.trim().is_empty() && r.location.trim().is_empty() {
                return Err(err(format!("{field}: both prefix and location are unset")));
            }
            let prefix = if r.prefix.trim().is_empty() {
                normalize_location(&r.location, false)
            } else {
                normalize_location(&r.prefix, true)
            }
            .map_err(|e| err(format!("{field}.prefix {e}")))?;
            let location = if r.location.trim().is_empty() {
                if prefix.starts_with("*.") {
                    String::new()
                } else {
                    prefix.clone()
                }
            } else {
                normalize_location(&r.location, false)
                    .map_err(|e| err(format!("{field}.location {e}")))?
            };
            let mut mirrors = Vec::new();
            for (j, m) in r.mirror.into_iter().enumerate() {
                let mfield = format!("{field}.mirror[{j}]");
                let location = normalize_location(&m.location, false)
                    .map_err(|e| err(format!("{mfield}.location {e}")))?;
                let pull_from_mirror = match m.pull_from_mirror.as_deref() {
                    None | Some("") | Some("all") => PullFromMirror::All,
                    Some("digest-only") => PullFromMirror::DigestOnly,
                    Some("tag-only") => PullFromMirror::TagOnly,
                    Some(other) => {
                        return Err(err(format!(
                            "{mfield}.pull-from-mirror {other:?}: expected all, digest-only or tag-only"
                        )))
                    }
                };
                if r.mirror_by_digest_only && m.pull_from_mirror.is_some() {
                    return Err(err(format!(
                        "{mfield}: pull-from-mirror cannot be combined with {field}.mirror-by-digest-only"
                    )));
                }
                mirrors.push(RegistryMirror {
                    location,
                    insecure: m.insecure,
                    pull_from_mirror,
                });
            }
            tables.push(RegistryTable {
                prefix,
                location,
                insecure: r.insecure,
                blocked: r.blocked,
                mirror_by_digest_only: r.mirror_by_digest_only,
                mirrors,
            });
        }
        // Within one file a prefix may appear once (as in containers/image).
        for (i, t) in tables.iter().enumerate() {
            if tables[..i].iter().any(|o| o.prefix == t.prefix) {
                return Err(err(format!(
                    "prefix {:?} is defined more than once",
                    t.prefix
                )));
            }
        }
        for t in tables {
            match self.registries.iter_mut().find(|o| o.prefix == t.prefix) {
                Some(o) => *o = t,
                None => self.registries.push(t),
            }
        }
        for (name, value) in raw.aliases {
            let field = format!("aliases.{name:?}");
            match split_short_name(&name) {
                Some((n, "")) if n == name && Reference::parse(&name).is_ok() => {}
                _ => {
                    return Err(err(format!(
                    "{field}: an alias name must be a short name without registry, tag or digest"
                )))
                }
            }
            let value = value.trim().to_string();
            if value.is_empty() {
                self.aliases.remove(&name);
                continue;
            }
            let last = value.rsplit('/').next().unwrap_or("");
            let ok = split_short_name(&value).is_none()
                && !value.contains('@')
                && !last.contains(':')
                && Reference::parse(&value).is_ok();
            if !ok {
                return Err(err(format!(
                    "{field} = {value:?}: the value must be a fully-qualified repository without tag or digest"
                )));
            }
            self.aliases.insert(name, value);
        }
        Ok(())
    }

    fn set_search(
        &mut self,
        err: &impl Fn(String) -> ImageError,
        field: &str,
        list: Vec<String>,
    ) -> Result<(), ImageError> {
        let mut out = Vec::new();
        for (i, h) in list.into_iter().enumerate() {
            let h = h.trim().trim_end_matches('/').to_string();
            if h.contains('/') || validate_domain(&h).is_err() {
                return Err(err(format!("{field}[{i}] {h:?}: expected host[:port]")));
            }
            if !out.contains(&h) {
                out.push(h);
            }
        }
        self.unqualified_search_registries = out;
        Ok(())
    }

    /// The fully-qualified references to try, in order, for `input` as a user or kubelet wrote
    /// it (CRI `ImageSpec.image`): a qualified reference gives itself; a short name gives its
    /// `[aliases]` target, else one reference per `unqualified_search_registries` entry, else
    /// `docker.io/...` (Docker normalization: `busybox` → `docker.io/library/busybox:latest`).
    /// The short name's tag and digest carry over.
    ///
    /// Errors: [`ImageError::InvalidReference`] for malformed input.
    pub fn candidates(&self, input: &str) -> Result<Vec<Reference>, ImageError> {
        let parsed = Reference::parse(input)?;
        let Some((name, suffix)) = split_short_name(input) else {
            return Ok(vec![parsed]);
        };
        let parse = |full: String, how: &str| {
            Reference::parse(&full).map_err(|e| ImageError::InvalidReference {
                reference: input.to_string(),
                reason: format!("{how} gives {full:?}: {e}"),
            })
        };
        if let Some(target) = self.aliases.get(name) {
            return Ok(vec![parse(
                format!("{target}{suffix}"),
                &format!("alias {name:?}"),
            )?]);
        }
        if self.unqualified_search_registries.is_empty() {
            return Ok(vec![parsed]);
        }
        self.unqualified_search_registries
            .iter()
            .map(|reg| {
                parse(
                    format!("{reg}/{name}{suffix}"),
                    &format!("search registry {reg:?}"),
                )
            })
            .collect()
    }

    /// The `[[registry]]` table with the longest prefix matching `full` (a reference's
    /// `to_string()`), and the length of the matched part.
    fn matching_table(&self, full: &str) -> Option<(&RegistryTable, usize)> {
        let mut best: Option<(&RegistryTable, usize)> = None;
        for t in &self.registries {
            let matched = if let Some(domain) = t.prefix.strip_prefix('*') {
                // `*.example.com`: the host must end with `.example.com`.
                let host = full.split('/').next().unwrap_or("");
                (host.len() > domain.len() && host.ends_with(domain)).then_some(host.len())
            } else if full == t.prefix {
                Some(full.len())
            } else if full.starts_with(&t.prefix)
                && matches!(
                    full.as_bytes().get(t.prefix.len()),
                    Some(b'/' | b':' | b'@')
                )
            {
                Some(t.prefix.len())
            } else {
                None
            };
            if let Some(m) = matched {
                if best.is_none_or(|(b, _)| t.prefix.len() > b.prefix.len()) {
                    best = Some((t, m));
                }
            }
        }
        best
    }

    /// The endpoint for `host`/`path`.
    fn endpoint(&self, host: &str, path: &str, insecure: bool, mirror: bool) -> Endpoint {
        let plain = insecure || is_loopback_host(host) || self.insecure.iter().any(|h| h == host);
        let server = if host == crate::reference::DEFAULT_DOMAIN {
            "registry-1.docker.io"
        } else {
            host
        };
        Endpoint {
            base: format!("{}://{server}", if plain { "http" } else { "https" }),
            host: host.to_string(),
            path: path.to_string(),
            mirror,
        }
    }

    /// Where to fetch the fully-qualified `r` from, in order: [`RegistryConfig::mirrors`],
    /// the matching table's usable mirrors, then its location (or `r` itself).
    ///
    /// Errors: [`ImageError::Blocked`]; [`ImageError::InvalidReference`] when a rewrite yields
    /// an invalid reference.
    pub(crate) fn sources(&self, r: &Reference) -> Result<Vec<Endpoint>, ImageError> {
        let full = r.to_string();
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(r.domain())
            .into_iter()
            .flatten()
            .map(|m| Endpoint {
                base: m.trim_end_matches('/').to_string(),
                host: m
                    .split("://")
                    .nth(1)
                    .unwrap_or(m)
                    .trim_end_matches('/')
                    .to_string(),
                path: r.path().to_string(),
                mirror: true,
            })
            .collect();
        let Some((t, matched)) = self.matching_table(&full) else {
            out.push(self.endpoint(r.domain(), r.path(), false, false));
            return Ok(out);
        };
        if t.blocked {
            return Err(ImageError::Blocked {
                reference: full,
                prefix: t.prefix.clone(),
            });
        }
        let rewrite = |location: &str| -> Result<Reference, ImageError> {
            let new = format!("{location}{}", &full[matched..]);
            Reference::parse(&new).map_err(|e| ImageError::InvalidReference {
                reference: full.clone(),
                reason: format!(
                    "registries.conf prefix {:?} rewrites it to {new:?}: {e}",
                    t.prefix
                ),
            })
        };
        let by_digest = r.digest().is_some();
        for m in &t.mirrors {
            let usable = if t.mirror_by_digest_only {
                by_digest
            } else {
                match m.pull_from_mirror {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => by_digest,
                    PullFromMirror::TagOnly => !by_digest,
                }
            };
            if usable {
                let mr = rewrite(&m.location)?;
                out.push(self.endpoint(mr.domain(), mr.path(), m.insecure, true));
            }
        }
        let primary = if t.location.is_empty() {
            r.clone()
        } else {
            rewrite(&t.location)?
        };
        out.push(self.endpoint(primary.domain(), primary.path(), t.insecure, false));
        Ok(out)
    }

    /// Tries per request (at least 1).
    pub(crate) fn attempts(&self) -> u32 {
        match self.max_attempts {
            0 => DEFAULT_MAX_ATTEMPTS,
            n => n,
        }
    }
}

#[cfg(test)]
#[path = "config/tests.rs"]
mod tests;
