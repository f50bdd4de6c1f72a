//! Image references per the distribution reference grammar
//! (`distribution/reference`: `name[:tag][@digest]`), with Docker's normalization of short names.

use std::fmt;

use crate::digest::Digest;
use crate::error::ImageError;

/// The default registry of short names.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The repository namespace Docker Hub uses for single-component names.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Maximum length of the name part (domain + path), in bytes.
pub const NAME_MAX_LEN: usize = 255;

/// A parsed, normalized image reference.
///
/// `busybox` → domain `docker.io`, path `library/busybox`, tag `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes `s`.
    ///
    /// Accepts `name`, `name:tag`, `name@digest`, `name:tag@digest`, where name may start with a
    /// registry `host[:port]` (a first component containing `.` or `:`, `localhost`, or `[ipv6]`).
    /// A reference with neither tag nor digest gets tag `latest`.
    ///
    /// Errors: [`ImageError::InvalidReference`] naming the offending part.
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        let err = |reason: &str| ImageError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d, "reference digest").map_err(|e| err(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|r| err(&r))?;
        }
        if name.is_empty() {
            return Err(err("empty repository name"));
        }
        if name.len() > NAME_MAX_LEN {
            return Err(err(&format!(
                "repository name longer than {NAME_MAX_LEN} characters"
            )));
        }
        let (domain, path) = split_domain(name);
        if let Some(d) = domain {
            validate_domain(d).map_err(|r| err(&r))?;
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        validate_path(path).map_err(|r| err(&r))?;
        let mut domain = domain.unwrap_or(DEFAULT_DOMAIN).to_string();
        if domain == "index.docker.io" {
            domain = DEFAULT_DOMAIN.to_string();
        }
        let mut path = path.to_string();
        if domain == DEFAULT_DOMAIN && !path.contains('/') {
            path = format!("{OFFICIAL_REPO_PREFIX}{path}");
        }
        if domain == DEFAULT_DOMAIN
            && path.len() == 64 + OFFICIAL_REPO_PREFIX.len()
            && path[OFFICIAL_REPO_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
            && tag.is_none()
            && digest.is_none()
            && !name.contains('/')
        {
            return Err(err(
                "cannot use a 64-character hex string as a repository name",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// Registry host as written in the reference (`docker.io`, `localhost:5000`, `[::1]:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Repository path (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any (`latest` when the reference had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `domain/path:tag` if there is a tag.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{}", self.name(), t))
    }

    /// `domain/path@digest` for the given digest (a CRI `repo_digests` entry).
    pub fn digested_name(&self, digest: &Digest) -> String {
        format!("{}@{}", self.name(), digest)
    }

    /// What to ask the registry's manifest endpoint for: the digest if present, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

impl fmt::Display for Reference {
    /// The fully normalized form: `domain/path[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// For a reference written without a registry host (a "short name" such as `busybox:1.36` or
/// `foo/bar@sha256:...`), returns `(name, suffix)`: the repository as written (`busybox`,
/// `foo/bar`) and the rest (`:1.36`, `@sha256:...`, `:t@sha256:...` or empty).
/// `None` for fully-qualified references. Does not validate; call [`Reference::parse`] first.
pub(crate) fn split_short_name(s: &str) -> Option<(&str, &str)> {
    let at = s.find('@').unwrap_or(s.len());
    let rest = &s[..at];
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let name_end = rest[last_slash..]
        .rfind(':')
        .map(|i| last_slash + i)
        .unwrap_or(rest.len());
    let name = &s[..name_end];
    match split_domain(name) {
        (None, _) => Some((name, &s[name_end..])),
        (Some(_), _) => None,
    }
}

/// Splits the registry domain off a name the way Docker does: the first component is a domain when
/// it contains `.` or `:`, is `localhost`, or contains uppercase letters.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `tag := [\w][\w.-]{0,127}`
fn validate_tag(t: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = t.as_bytes();
    match bytes.first() {
        None => return Err("empty tag".into()),
        Some(&b) if !word(b) => return Err(format!("tag {t:?} must start with [A-Za-z0-9_]")),
        _ => {}
    }
    if bytes.len() > 128 {
        return Err(format!("tag {t:?} is longer than 128 characters"));
    }
    if !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err(format!("tag {t:?} may contain only [A-Za-z0-9_.-]"));
    }
    Ok(())
}

/// `domain := host [':' port]`, `host := domain-name | IPv4 | '[' IPv6 ']'`.
pub(crate) fn validate_domain(d: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry host {d:?}: unterminated '['"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry host {d:?}: invalid IPv6 address"));
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return Err(format!("registry host {d:?}: junk after ']'")),
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(format!("registry host {d:?} is empty"));
        }
        for comp in host.split('.') {
            let b = comp.as_bytes();
            let ok = !b.is_empty()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-';
            if !ok {
                return Err(format!("registry host {d:?}: invalid component {comp:?}"));
            }
        }
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(format!("registry {d:?}: invalid port {p:?}"));
        }
    }
    Ok(())
}

/// `path := path-component ('/' path-component)*`,
/// `path-component := [a-z0-9]+ (separator [a-z0-9]+)*`, `separator := [_.] | '__' | '-'+`.
fn validate_path(p: &str) -> Result<(), String> {
    for comp in p.split('/') {
        if comp.is_empty() {
            return Err(format!("repository path {p:?} has an empty component"));
        }
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(format!(
                "repository path component {comp:?} must start and end with [a-z0-9]"
            ));
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            // A separator run.
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            let ok = sep == "."
                || sep == "_"
                || sep == "__"
                || (!sep.is_empty() && sep.bytes().all(|c| c == b'-'));
            if !ok {
                return Err(format!(
                    "repository path component {comp:?} has invalid separator {sep:?}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// input, domain, path, tag, digest
    type Case<'a> = (String, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

    #[test]
    fn valid_table() {
        let cases: Vec<Case> = vec![
            (
                "busybox".into(),
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            (
                "busybox:1.36".into(),
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
            ),
            (
                "library/busybox".into(),
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            (
                "docker.io/busybox".into(),
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            (
                "index.docker.io/foo/bar:x".into(),
                "docker.io",
                "foo/bar",
                Some("x"),
                None,
            ),
            (
                "foo/bar".into(),
                "docker.io",
                "foo/bar",
                Some("latest"),
                None,
            ),
            (
                "foo/bar/baz_q__x.y-z--w".into(),
                "docker.io",
                "foo/bar/baz_q__x.y-z--w",
                Some("latest"),
                None,
            ),
            (
                "localhost/foo".into(),
                "localhost",
                "foo",
                Some("latest"),
                None,
            ),
            (
                "localhost:5000/foo:v1".into(),
                "localhost:5000",
                "foo",
                Some("v1"),
                None,
            ),
            (
                "127.0.0.1:5020/krio-test/busybox".into(),
                "127.0.0.1:5020",
                "krio-test/busybox",
                Some("latest"),
                None,
            ),
            (
                "[::1]:5000/a/b:t".into(),
                "[::1]:5000",
                "a/b",
                Some("t"),
                None,
            ),
            ("[::1]/a".into(), "[::1]", "a", Some("latest"), None),
            (
                "Registry.Example.com/a".into(),
                "Registry.Example.com",
                "a",
                Some("latest"),
                None,
            ),
            (
                "quay.io/a/b@".to_string() + D,
                "quay.io",
                "a/b",
                None,
                Some(D),
            ),
            (
                "quay.io/a/b:t@".to_string() + D,
                "quay.io",
                "a/b",
                Some("t"),
                Some(D),
            ),
            (
                "busybox@".to_string() + D,
                "docker.io",
                "library/busybox",
                None,
                Some(D),
            ),
            (
                "a:_T.x-1".into(),
                "docker.io",
                "library/a",
                Some("_T.x-1"),
                None,
            ),
        ];
        for (input, domain, path, tag, digest) in cases {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.domain(), domain, "{input}");
            assert_eq!(r.path(), path, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().map(|d| d.as_str()), digest, "{input}");
        }
    }

    #[test]
    fn invalid_table() {
        let long_tag = format!("a:{}", "t".repeat(129));
        let long_name = format!("x.io/{}", "a".repeat(260));
        let hex_name = "a".repeat(64);
        let cases: Vec<&str> = vec![
            "",
            ":tag",
            "Busybox",
            "foo/Bar",
            "a:",
            "a:-tag",
            "a:.tag",
            "a:t/x",
            "a@sha256:abc",
            "a@md5:d41d8cd98f00b204e9800998ecf8427e",
            "a@",
            "-a",
            "a-",
            "a//b",
            "a/",
            "/a",
            "a..b",
            "a___b",
            "a.-b",
            "host:99999/a",
            "host:/a",
            "ho_st.io/a",
            "-host.io/a",
            "[::1/a",
            "[zz]:5000/a",
            "a b",
            "a:t:t",
            &long_tag,
            &long_name,
            &hex_name,
        ];
        for input in cases {
            match Reference::parse(input) {
                Err(ImageError::InvalidReference { reference, .. }) => assert_eq!(reference, input),
                other => panic!("{input:?} should be invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn display_and_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.tagged_name().unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(r.manifest_ref(), "latest");
        let r = Reference::parse(&format!("localhost:5000/x:t@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("localhost:5000/x:t@{D}"));
        assert_eq!(r.manifest_ref(), D);
        let d = Digest::parse(D, "t").unwrap();
        assert_eq!(r.digested_name(&d), format!("localhost:5000/x@{D}"));
    }
}
