//! Content digests (OCI image-spec "Digests" section): validation, hashing and chain ids.

use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;

use crate::error::ImageError;

/// A validated content digest: `sha256:` + 64 lowercase hex or `sha512:` + 128 lowercase hex.
///
/// Only validated digests are ever used to build store paths or registry URLs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
}

/// The hash algorithm of a [`Digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-256 (the registry default).
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Digest {
    /// Parses `algo:hex`. `field` names the input in the error.
    ///
    /// Errors: [`ImageError::InvalidDigest`] for an unknown algorithm, wrong length or non-lowercase-hex.
    pub fn parse(s: &str, field: &str) -> Result<Digest, ImageError> {
        let err = |reason: &str| ImageError::InvalidDigest {
            digest: s.to_string(),
            field: field.to_string(),
            reason: reason.to_string(),
        };
        let (algo, hex) = s.split_once(':').ok_or_else(|| err("missing ':'"))?;
        let want = match algo {
            "sha256" => 64,
            "sha512" => 128,
            _ => {
                return Err(err(
                    "unsupported algorithm (sha256 and sha512 are accepted)",
                ))
            }
        };
        if hex.len() != want {
            return Err(err(&format!("{algo} hex must be {want} characters")));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err("hex must be lowercase [0-9a-f]"));
        }
        Ok(Digest {
            text: s.to_string(),
        })
    }

    /// Builds a sha256 digest from a 32-byte hash.
    pub fn sha256_from_bytes(hash: &[u8]) -> Digest {
        Digest {
            text: format!("sha256:{}", hex::encode(hash)),
        }
    }

    /// sha256 of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::sha256_from_bytes(&Sha256::digest(data))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        if self.text.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part (safe as a single path component: lowercase hex only).
    pub fn hex(&self) -> &str {
        self.text.split_once(':').map(|(_, h)| h).unwrap_or("")
    }

    /// The algorithm name (`sha256` / `sha512`).
    pub fn algo_str(&self) -> &str {
        self.text.split_once(':').map(|(a, _)| a).unwrap_or("")
    }

    /// `algo:hex`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A streaming hasher for this digest's algorithm.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm())
    }

    /// Checks `actual` against `self`; `what` names the content in the error.
    ///
    /// Errors: [`ImageError::DigestMismatch`].
    pub fn verify(&self, actual: &Digest, what: &str) -> Result<(), ImageError> {
        if self == actual {
            Ok(())
        } else {
            Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: self.text.clone(),
                actual: actual.text.clone(),
            })
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

/// Incremental hasher producing a [`Digest`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algo: Algorithm) -> Hasher {
        match algo {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::sha256_from_bytes(&h.finalize()),
            Hasher::Sha512(h) => Digest {
                text: format!("sha512:{}", hex::encode(h.finalize())),
            },
        }
    }
}

/// Chain ids per OCI image-spec "Layer ChainID":
/// `ChainID(L1) = DiffID(L1)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
///
/// Input: the config's `rootfs.diff_ids`, bottom layer first. Output: same order.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H64: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_validation() {
        assert!(Digest::parse(&format!("sha256:{H64}"), "t").is_ok());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(128)), "t").is_ok());
        for bad in [
            String::new(),
            H64.to_string(),
            format!("sha256:{}", &H64[1..]),
            format!("sha256:{H64}0"),
            format!("sha256:{}", H64.to_uppercase()),
            format!("sha256:../{}", &H64[3..]),
            format!("sha384:{H64}"),
            format!("SHA256:{H64}"),
            format!("sha512:{H64}"),
            "sha256:".to_string(),
        ] {
            let e = Digest::parse(&bad, "field.x").unwrap_err();
            assert!(e.to_string().contains("field.x"), "{e}");
        }
        let d = Digest::parse(&format!("sha256:{H64}"), "t").unwrap();
        assert_eq!(d.hex(), H64);
        assert_eq!(d.algo_str(), "sha256");
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn hasher_and_verify() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"ab");
        h.update(b"c");
        let d = h.finish();
        assert_eq!(
            d.as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(d.verify(&Digest::sha256_of(b"abc"), "x").is_ok());
        assert!(matches!(
            d.verify(&Digest::sha256_of(b"abd"), "x"),
            Err(ImageError::DigestMismatch { .. })
        ));
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        assert!(h.finish().as_str().starts_with("sha512:ddaf35a1"));
    }

    #[test]
    fn chain_id_spec() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let c = Digest::sha256_of(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids[0], a);
        let ab = Digest::sha256_of(format!("{} {}", a, b).as_bytes());
        assert_eq!(ids[1], ab);
        assert_eq!(
            ids[2],
            Digest::sha256_of(format!("{} {}", ab, c).as_bytes())
        );
        assert!(chain_ids(&[]).is_empty());
    }
}
