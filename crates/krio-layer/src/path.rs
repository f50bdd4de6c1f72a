//! Lexical normalisation of tar entry names into layer-relative component lists.
//!
//! Tar names are byte strings. A name is made relative (leading `/` dropped), `.` and empty
//! components are dropped, and `..` removes the previous component; a `..` with nothing left
//! to remove would escape the layer root and is refused. Symlinks are NOT considered here:
//! they are handled by the kernel (`openat2` with `RESOLVE_IN_ROOT`) when the parent directory
//! is opened, so a lexically clean path can still never leave the layer root.

/// Longest accepted layer-relative path, in bytes (Linux `PATH_MAX` minus the NUL).
pub(crate) const MAX_PATH_BYTES: usize = 4095;
/// Longest accepted single path component, in bytes (Linux `NAME_MAX`).
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// Splits `raw` into normalised components (an empty list is the layer root).
///
/// Errors (returned as a static reason) when the name contains a NUL byte, when `..`
/// would escape the root, or when the name exceeds `PATH_MAX` / a component `NAME_MAX`.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.contains(&0) {
        return Err("contains a NUL byte");
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err("longer than PATH_MAX (4095 bytes)");
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("`..` escapes the layer root");
                }
            }
            c => {
                if c.len() > MAX_NAME_BYTES {
                    return Err("a component is longer than NAME_MAX (255 bytes)");
                }
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Joins components with `/` (the layer root is the empty string).
pub(crate) fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

/// True when `path` equals `prefix` or lies below it (both joined, normalised paths).
pub(crate) fn is_same_or_under(path: &[u8], prefix: &[u8]) -> bool {
    if prefix.is_empty() {
        return true;
    }
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<Vec<String>, &'static str> {
        normalize(s.as_bytes()).map(|v| {
            v.into_iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect()
        })
    }

    #[test]
    fn relative_and_absolute() {
        assert_eq!(n("a/b").unwrap(), ["a", "b"]);
        assert_eq!(n("/a/b/").unwrap(), ["a", "b"]);
        assert_eq!(n("./a//./b").unwrap(), ["a", "b"]);
        assert!(n("./").unwrap().is_empty());
        assert!(n("/").unwrap().is_empty());
        assert!(n("").unwrap().is_empty());
    }

    #[test]
    fn dotdot() {
        assert_eq!(n("a/../b").unwrap(), ["b"]);
        assert_eq!(n("/a/b/../../c").unwrap(), ["c"]);
        assert!(n("..").is_err());
        assert!(n("../x").is_err());
        assert!(n("/../x").is_err());
        assert!(n("a/../../x").is_err());
        assert!(n("./a/./../..").is_err());
    }

    #[test]
    fn limits() {
        assert!(normalize(b"a\0b").is_err());
        assert!(n(&"a".repeat(256)).is_err());
        assert!(n(&"a".repeat(255)).is_ok());
        assert!(n(&"a/".repeat(2100)).is_err());
    }

    #[test]
    fn prefix() {
        assert!(is_same_or_under(b"a/b", b"a"));
        assert!(is_same_or_under(b"a", b"a"));
        assert!(!is_same_or_under(b"ab", b"a"));
        assert!(is_same_or_under(b"x", b""));
        assert_eq!(join(&[b"a", b"b"]), b"a/b");
        assert_eq!(join(&[]), b"");
    }
}
