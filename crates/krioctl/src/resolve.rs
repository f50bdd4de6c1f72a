//! Resolving user-typed ID prefixes to full IDs, as crictl does.

/// An ID prefix that does not name exactly one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The prefix was empty.
    #[error("{kind} ID cannot be empty")]
    Empty {
        /// "container", "pod sandbox" or "image".
        kind: &'static str,
    },
    /// No ID starts with the prefix.
    #[error("{kind} {prefix:?} not found")]
    NotFound {
        /// "container", "pod sandbox" or "image".
        kind: &'static str,
        /// What the user typed.
        prefix: String,
    },
    /// More than one ID starts with the prefix.
    #[error("{kind} ID prefix {prefix:?} is ambiguous: matches {}", matches.join(", "))]
    Ambiguous {
        /// "container", "pod sandbox" or "image".
        kind: &'static str,
        /// What the user typed.
        prefix: String,
        /// The full IDs it matches.
        matches: Vec<String>,
    },
}

/// Picks the one ID among `ids` that equals `prefix` or, failing that, starts
/// with it. `kind` names the object kind in errors.
///
/// Errors: [`ResolveError::Empty`], [`ResolveError::NotFound`],
/// [`ResolveError::Ambiguous`] (listing the matches, sorted).
pub fn resolve_prefix<'a, I>(
    kind: &'static str,
    prefix: &str,
    ids: I,
) -> Result<String, ResolveError>
where
    I: IntoIterator<Item = &'a str>,
{
    if prefix.is_empty() {
        return Err(ResolveError::Empty { kind });
    }
    let mut matches: Vec<String> = Vec::new();
    for id in ids {
        if id == prefix {
            return Ok(id.to_string());
        }
        if id.starts_with(prefix) && !matches.iter().any(|m| m == id) {
            matches.push(id.to_string());
        }
    }
    match matches.len() {
        0 => Err(ResolveError::NotFound {
            kind,
            prefix: prefix.to_string(),
        }),
        1 => Ok(matches.remove(0)),
        _ => {
            matches.sort();
            Err(ResolveError::Ambiguous {
                kind,
                prefix: prefix.to_string(),
                matches,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 3] = ["abc123", "abd456", "ff00"];

    #[test]
    fn unique_prefix() {
        assert_eq!(resolve_prefix("container", "abc", IDS).unwrap(), "abc123");
        assert_eq!(resolve_prefix("container", "f", IDS).unwrap(), "ff00");
        assert_eq!(resolve_prefix("container", "ff00", IDS).unwrap(), "ff00");
    }

    #[test]
    fn exact_match_wins_over_longer_ids() {
        let ids = ["ab", "abc"];
        assert_eq!(resolve_prefix("pod sandbox", "ab", ids).unwrap(), "ab");
    }

    #[test]
    fn ambiguous_not_found_empty() {
        match resolve_prefix("container", "ab", IDS) {
            Err(ResolveError::Ambiguous { matches, .. }) => {
                assert_eq!(matches, vec!["abc123", "abd456"])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            resolve_prefix("container", "zz", IDS),
            Err(ResolveError::NotFound {
                kind: "container",
                prefix: "zz".into()
            })
        );
        assert_eq!(
            resolve_prefix("image", "", IDS),
            Err(ResolveError::Empty { kind: "image" })
        );
        let e = resolve_prefix("container", "ab", IDS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("abc123, abd456"), "{e}");
    }

    #[test]
    fn duplicate_ids_are_not_ambiguous() {
        assert_eq!(
            resolve_prefix("container", "ab", ["abc", "abc"]).unwrap(),
            "abc"
        );
    }
}
