//! Sandbox and container ids: 64 lower-case hex characters, like containerd's and CRI-O's.

use std::io::Read;

use crate::error::ServerError;

/// Returns a fresh random id (64 lower-case hex characters, 256 bits from the kernel's CSPRNG).
///
/// Errors: [`ServerError::Io`] if `/dev/urandom` cannot be read.
pub fn new_id() -> Result<String, ServerError> {
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| ServerError::Io {
            op: "reading random bytes",
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(hex::encode(buf))
}

/// Checks that `id` is usable as a lookup key: non-empty, at most 64 characters, lower-case hex
/// only (so it can never form a path component like `..`). A shorter id is a prefix.
///
/// Errors: [`ServerError::InvalidArgument`] naming `field`.
pub fn validate(field: &'static str, id: &str) -> Result<(), ServerError> {
    if id.is_empty() {
        return Err(ServerError::invalid(field, "must not be empty"));
    }
    if id.len() > 64 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ServerError::invalid(
            field,
            format!("{id:?} is not an id (up to 64 lower-case hex characters)"),
        ));
    }
    Ok(())
}

/// Resolves `id` (a full id or a unique prefix) against `known` ids.
/// Returns `Ok(None)` when nothing matches.
///
/// Errors: [`ServerError::InvalidArgument`] for a malformed id, or a prefix matching more than one id.
pub fn resolve<'a, I>(
    field: &'static str,
    id: &str,
    known: I,
) -> Result<Option<String>, ServerError>
where
    I: IntoIterator<Item = &'a String>,
{
    validate(field, id)?;
    let mut found: Option<&String> = None;
    for k in known {
        if k == id {
            return Ok(Some(k.clone()));
        }
        if k.starts_with(id) {
            if found.is_some() {
                return Err(ServerError::invalid(
                    field,
                    format!("id prefix {id:?} is ambiguous"),
                ));
            }
            found = Some(k);
        }
    }
    Ok(found.cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_unique() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        validate("id", &a).unwrap();
    }

    #[test]
    fn validation_and_prefixes() {
        assert!(validate("id", "").is_err());
        assert!(validate("id", "../x").is_err());
        assert!(validate("id", "ABC").is_err());
        let known = vec!["abc1".to_string(), "abc2".to_string(), "def".to_string()];
        assert_eq!(resolve("id", "def", &known).unwrap(), Some("def".into()));
        assert_eq!(resolve("id", "abc1", &known).unwrap(), Some("abc1".into()));
        assert!(resolve("id", "abc", &known).is_err());
        assert_eq!(resolve("id", "0", &known).unwrap(), None);
    }
}
