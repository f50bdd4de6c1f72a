//! Sandbox and container ids: krio makes 64 lower-case hex characters, like containerd and
//! CRI-O; requests may carry any harmless string, which then matches nothing.

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

/// Longest id a request may carry, in bytes. krio's own ids are 64 characters; anything far
/// longer is refused rather than copied into logs and errors.
pub const MAX_ID_LEN: usize = 256;

/// Checks that `id` is harmless as a lookup key: non-empty, at most [`MAX_ID_LEN`] bytes, no
/// path separator, no `..`, no NUL or other control character. Any other string is accepted,
/// whether or not krio could have made it (a UUID, say): it simply matches nothing, which
/// `Stop*`/`Remove*` treat as already gone and the other calls as `NotFound`, as the CRI asks.
/// A shorter id is a prefix of krio's own ids.
///
/// Errors: [`ServerError::InvalidArgument`] naming `field`.
pub fn validate(field: &'static str, id: &str) -> Result<(), ServerError> {
    if id.is_empty() {
        return Err(ServerError::invalid(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(ServerError::invalid(
            field,
            format!("is {} bytes long (at most {MAX_ID_LEN})", id.len()),
        ));
    }
    if id.contains('/') || id.contains("..") || id.chars().any(|c| c.is_control()) {
        return Err(ServerError::invalid(
            field,
            format!("{id:?} contains '/', '..' or control characters"),
        ));
    }
    Ok(())
}

/// Whether `name` has the shape of an id krio makes ([`new_id`]): 64 lower-case hex characters.
/// Used to pick krio's own directories on recovery.
pub fn is_full_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
        assert!(is_full_id(&a));
        assert!(!is_full_id("ABC"));
    }

    #[test]
    fn validation_and_prefixes() {
        assert!(validate("id", "").is_err());
        assert!(validate("id", "../x").is_err());
        assert!(validate("id", "a/b").is_err());
        assert!(validate("id", "..").is_err());
        assert!(validate("id", "a\0b").is_err());
        assert!(validate("id", &"a".repeat(MAX_ID_LEN + 1)).is_err());
        // Ids krio did not make are fine: they match nothing.
        validate("id", "ABC").unwrap();
        validate("id", "6f1c2a9e-54b7-4c1e-9d2a-3b8e7f0a1c2d").unwrap();
        let known = vec!["abc1".to_string(), "abc2".to_string(), "def".to_string()];
        assert_eq!(resolve("id", "def", &known).unwrap(), Some("def".into()));
        assert_eq!(resolve("id", "abc1", &known).unwrap(), Some("abc1".into()));
        assert!(resolve("id", "abc", &known).is_err());
        assert_eq!(resolve("id", "0", &known).unwrap(), None);
        let uuid = "6f1c2a9e-54b7-4c1e-9d2a-3b8e7f0a1c2d";
        assert_eq!(resolve("id", uuid, &known).unwrap(), None);
    }
}
