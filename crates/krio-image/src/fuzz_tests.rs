//! Seeded property / fuzz tests of the parsers that see untrusted input: manifest and index
//! classification, image references, registries.conf, auth files and auth challenges.
//! Deterministic (fixed seeds) so failures reproduce; `KRIO_FUZZ_ITERS` scales the rounds.

use serde_json::{json, Value};
use std::path::Path;

use crate::config::RegistryConfig;
use crate::manifest::{
    classify, select_platform, Document, Platform, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use crate::reference::Reference;
use krio_testutil::{iters, Rng};

const TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    OCI_CONFIG,
    "application/json",
    "",
    "text/html",
];

fn descriptor(rng: &mut Rng) -> Value {
    let mut d = serde_json::Map::new();
    if rng.chance(90) {
        d.insert("mediaType".into(), json!(rng.pick(TYPES)));
    }
    if rng.chance(90) {
        let digest = match rng.below(4) {
            0 => format!("sha256:{}", rng.hex(64)),
            1 => format!("sha512:{}", rng.hex(128)),
            2 => {
                let n = rng.below(70);
                format!("sha256:{}", rng.hex(n))
            }
            _ => rng.hex(10),
        };
        d.insert("digest".into(), json!(digest));
    }
    if rng.chance(90) {
        let size: Value = match rng.below(4) {
            0 => json!(rng.below(1 << 20)),
            1 => json!(-(rng.below(100) as i64)),
            2 => json!("12"),
            _ => json!(u64::MAX),
        };
        d.insert("size".into(), size);
    }
    if rng.chance(40) {
        d.insert(
            "platform".into(),
            json!({
                "os": rng.pick(&["linux", "windows", "", "LINUX"]),
                "architecture": rng.pick(&["amd64", "arm64", "arm", "x86_64", "", "s390x"]),
                "variant": rng.pick(&["v7", "v8", "", "8", "v1"]),
            }),
        );
    }
    Value::Object(d)
}

fn any_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 2 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.below(10)),
        3 => json!(rng.pick(TYPES)),
        4 => descriptor(rng),
        5 => Value::Array(
            (0..rng.below(3))
                .map(|_| any_value(rng, depth + 1))
                .collect(),
        ),
        6 => Value::Array((0..rng.below(3)).map(|_| descriptor(rng)).collect()),
        _ => json!({ "k": any_value(rng, depth + 1) }),
    }
}

/// A random document that is sometimes a valid manifest or index and often nearly one.
fn document(rng: &mut Rng) -> Value {
    let mut d = serde_json::Map::new();
    if rng.chance(90) {
        let sv: Value = rng
            .pick(&[
                json!(2),
                json!(2),
                json!(1),
                json!("2"),
                Value::Null,
                json!(3),
            ])
            .clone();
        d.insert("schemaVersion".into(), sv);
    }
    if rng.chance(70) {
        d.insert("mediaType".into(), json!(rng.pick(TYPES)));
    }
    for key in [
        "config",
        "layers",
        "manifests",
        "fsLayers",
        "annotations",
        "subject",
    ] {
        if rng.chance(35) {
            let v = match key {
                "config" if rng.chance(70) => descriptor(rng),
                "layers" | "manifests" if rng.chance(70) => {
                    Value::Array((0..rng.below(4)).map(|_| descriptor(rng)).collect())
                }
                _ => any_value(rng, 0),
            };
            d.insert(key.into(), v);
        }
    }
    Value::Object(d)
}

fn present(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// The invariants of an accepted document: never ambiguous, types consistent.
fn check_accepted(bytes: &[u8], content_type: Option<&str>, doc: &Document) {
    let v: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "accepted non-JSON {:?}: {e}",
            String::from_utf8_lossy(bytes)
        )
    });
    let show = || {
        format!(
            "{} (Content-Type {content_type:?})",
            String::from_utf8_lossy(bytes)
        )
    };
    assert_eq!(v.get("schemaVersion"), Some(&json!(2)), "{}", show());
    assert!(
        !(present(&v, "manifests") && (present(&v, "config") || present(&v, "layers"))),
        "accepted an ambiguous document: {}",
        show()
    );
    assert!(!present(&v, "fsLayers"), "accepted schema 1: {}", show());
    let ct = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| {
            [
                OCI_MANIFEST,
                OCI_INDEX,
                DOCKER_MANIFEST,
                DOCKER_MANIFEST_LIST,
            ]
            .contains(&c.as_str())
        });
    let (mt, is_index) = match doc {
        Document::Index { media_type, .. } => {
            assert!(
                !present(&v, "config") && !present(&v, "layers"),
                "{}",
                show()
            );
            (media_type, true)
        }
        Document::Manifest { media_type, .. } => {
            assert!(!present(&v, "manifests"), "{}", show());
            assert!(present(&v, "config"), "{}", show());
            (media_type, false)
        }
    };
    let index_types = [OCI_INDEX, DOCKER_MANIFEST_LIST];
    let manifest_types = [OCI_MANIFEST, DOCKER_MANIFEST];
    if is_index {
        assert!(index_types.contains(&mt.as_str()), "{mt}: {}", show());
    } else {
        assert!(manifest_types.contains(&mt.as_str()), "{mt}: {}", show());
    }
    if let Some(own) = v.get("mediaType").and_then(Value::as_str) {
        assert_eq!(own, mt, "{}", show());
        if let Some(c) = &ct {
            assert_eq!(c, own, "mediaType contradicts Content-Type: {}", show());
        }
    }
}

fn content_type(rng: &mut Rng) -> Option<String> {
    match rng.below(4) {
        0 => None,
        1 => Some(format!("{}; charset=utf-8", rng.pick(TYPES))),
        _ => Some(rng.pick(TYPES).to_string()),
    }
}

/// Random byte edits: flips, insertions, deletions, duplicated and swapped slices.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    const TOKENS: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"\"",
        b"null",
        b"\\u0000",
        b"\xff",
        b"\"manifests\":[]",
        b"\"layers\":[]",
    ];
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(5) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                let t = rng.pick(TOKENS);
                data.splice(i..i, t.iter().copied());
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i + 1).min(16);
                data.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i + 1).min(64);
                let slice: Vec<u8> = data[i..i + n].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, slice);
            }
            _ => {
                data.truncate(rng.below(len + 1));
            }
        }
    }
}

#[test]
fn manifest_classification_never_panics_or_accepts_ambiguity() {
    let mut rng = Rng::new(0x6b72_696f);
    let mut accepted = [0usize; 2];
    let want = Platform::host();
    for round in 0..iters(20_000) {
        let ct = content_type(&mut rng);
        let bytes: Vec<u8> = match round % 4 {
            // Pure noise.
            0 => (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
            // Structured documents.
            1 | 2 => serde_json::to_vec(&document(&mut rng)).unwrap_or_default(),
            // Mutated structured documents.
            _ => {
                let mut b = serde_json::to_vec(&document(&mut rng)).unwrap_or_default();
                mutate(&mut rng, &mut b);
                b
            }
        };
        if let Ok(doc) = classify("fuzz", ct.as_deref(), &bytes) {
            check_accepted(&bytes, ct.as_deref(), &doc);
            match &doc {
                Document::Index { manifests, .. } => {
                    accepted[0] += 1;
                    let _ = select_platform("fuzz", manifests, &want);
                    for m in manifests {
                        let _ = m.digest("f");
                        let _ = m.size("fuzz", "f");
                    }
                }
                Document::Manifest { config, layers, .. } => {
                    accepted[1] += 1;
                    for d in std::iter::once(config).chain(layers) {
                        let _ = d.digest("f");
                        let _ = d.size("fuzz", "f");
                        let _ = crate::manifest::layer_compression(&d.media_type, "f");
                    }
                }
            }
        }
    }
    // The generator must actually reach both accepting paths.
    assert!(accepted[0] > 20 && accepted[1] > 20, "{accepted:?}");
}

#[test]
fn mutated_real_documents_stay_unambiguous() {
    let d = format!("sha256:{}", "a".repeat(64));
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": d, "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 5}]});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": 10,
            "platform": {"os": "linux", "architecture": "amd64"}}]});
    let docker = json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": d, "size": 10}, "layers": []});
    let seeds: Vec<(Vec<u8>, &str)> = vec![
        (
            serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
            OCI_MANIFEST,
        ),
        (serde_json::to_vec(&index).unwrap_or_default(), OCI_INDEX),
        (
            serde_json::to_vec(&docker).unwrap_or_default(),
            DOCKER_MANIFEST,
        ),
    ];
    for (bytes, ct) in &seeds {
        let doc = classify("seed", Some(ct), bytes).unwrap();
        check_accepted(bytes, Some(ct), &doc);
    }
    let mut rng = Rng::new(42);
    for _ in 0..iters(20_000) {
        let (seed, ct) = rng.pick(&seeds);
        let mut b = seed.clone();
        mutate(&mut rng, &mut b);
        let ct = if rng.chance(20) {
            content_type(&mut rng)
        } else {
            Some(ct.to_string())
        };
        if let Ok(doc) = classify("fuzz", ct.as_deref(), &b) {
            check_accepted(&b, ct.as_deref(), &doc);
        }
    }
    // Duplicate keys are refused rather than resolved silently either way.
    for dup in [
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","mediaType":"{OCI_MANIFEST}","config":{{"digest":"{d}","size":1}}}}"#
        ),
        r#"{"schemaVersion":2,"manifests":[],"manifests":[]}"#.to_string(),
        r#"{"schemaVersion":2,"schemaVersion":1,"manifests":[]}"#.to_string(),
    ] {
        assert!(classify("dup", None, dup.as_bytes()).is_err(), "{dup}");
    }
}

const REF_ALPHABET: &[u8] = b"abcxyz019AZ._-/:@[]sha256 \t\x00%";

#[test]
fn reference_parsing_never_panics_and_round_trips() {
    let mut rng = Rng::new(7);
    let mut ok = 0usize;
    let cfg = {
        let mut c = RegistryConfig::default();
        c.merge_toml(
            Path::new("/fuzz.conf"),
            "unqualified-search-registries = [\"quay.io\", \"docker.io\"]\n[aliases]\n\"a\" = \"example.com/x/a\"\n[[registry]]\nprefix = \"*.io\"\n[[registry]]\nprefix = \"quay.io/a\"\nlocation = \"localhost:5000\"\n",
        )
        .unwrap();
        c
    };
    for round in 0..iters(30_000) {
        let s: String = match round % 3 {
            0 => (0..rng.below(40))
                .map(|_| char::from(*rng.pick(REF_ALPHABET)))
                .collect(),
            1 => {
                // Mostly-valid shapes with random damage.
                let mut s = format!(
                    "{}{}{}{}",
                    rng.pick(&[
                        "",
                        "quay.io/",
                        "localhost:5000/",
                        "[::1]:5/",
                        "a.b/",
                        "A.io/"
                    ]),
                    rng.pick(&["a", "ab/cd", "a__b", "a.b-c/d", "a/b/c", "a--b"]),
                    rng.pick(&["", ":t", ":latest", ":T_1.x-", ":"]),
                    if rng.chance(30) {
                        format!("@sha256:{}", rng.hex(64))
                    } else {
                        String::new()
                    }
                );
                if rng.chance(50) {
                    let mut b = s.into_bytes();
                    mutate(&mut rng, &mut b);
                    s = String::from_utf8_lossy(&b).into_owned();
                }
                s
            }
            _ => {
                // Arbitrary UTF-8, including multi-byte characters next to separators.
                let pieces = [
                    "é", "/", ":", "@", "ß", "a", "日本", "[", "]", "\u{200b}", "0",
                ];
                (0..rng.below(12)).map(|_| *rng.pick(&pieces)).collect()
            }
        };
        let _ = crate::reference::split_short_name(&s);
        if let Ok(cands) = cfg.candidates(&s) {
            for c in &cands {
                let _ = cfg.sources(c);
            }
        }
        if let Ok(r) = Reference::parse(&s) {
            ok += 1;
            let printed = r.to_string();
            let again = Reference::parse(&printed)
                .unwrap_or_else(|e| panic!("{s:?} -> {printed:?} does not re-parse: {e}"));
            assert_eq!(again, r, "{s:?} -> {printed:?}");
            assert_eq!(again.to_string(), printed);
            assert!(r.tag().is_some() || r.digest().is_some(), "{s:?}");
            assert!(!r.path().bytes().any(|b| b.is_ascii_uppercase()), "{s:?}");
        }
    }
    assert!(ok > 1_000, "only {ok} valid references generated");
}

#[test]
fn generated_valid_references_parse_exactly() {
    let mut rng = Rng::new(99);
    let alnum = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..iters(10_000) {
        let comp = |rng: &mut Rng| -> String {
            let mut c = String::new();
            for i in 0..1 + rng.below(3) {
                if i > 0 {
                    let sep: &&str = rng.pick(&[".", "_", "__", "-", "--"]);
                    c.push_str(sep);
                }
                for _ in 0..1 + rng.below(4) {
                    c.push(char::from(*rng.pick(alnum)));
                }
            }
            c
        };
        let domain = match rng.below(6) {
            0 => None,
            1 => Some("localhost".to_string()),
            2 => Some(format!("localhost:{}", rng.below(65536))),
            3 => Some(format!("10.{}.0.1:5000", rng.below(256))),
            4 => Some("[fe80::1]:443".to_string()),
            _ => Some(format!("reg-{}.example.com", rng.below(100))),
        };
        let ncomp = 1 + rng.below(3);
        let mut path: Vec<String> = (0..ncomp).map(|_| comp(&mut rng)).collect();
        if domain.is_none() {
            // A first component with '.' would be a registry host (Docker's rule).
            path[0] = path[0].replace('.', "-");
        }
        let path = path.join("/");
        let tag = rng.chance(60).then(|| {
            let n = rng.below(8);
            format!("{}{}", char::from(*rng.pick(alnum)), rng.hex(n))
        });
        let digest = rng.chance(30).then(|| format!("sha256:{}", rng.hex(64)));
        let mut s = match &domain {
            Some(d) => format!("{d}/{path}"),
            None => path.clone(),
        };
        if let Some(t) = &tag {
            s = format!("{s}:{t}");
        }
        if let Some(d) = &digest {
            s = format!("{s}@{d}");
        }
        let r = Reference::parse(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        let want_domain = domain.clone().unwrap_or_else(|| "docker.io".into());
        assert_eq!(r.domain(), want_domain, "{s}");
        let want_path = if domain.is_none() && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.clone()
        };
        assert_eq!(r.path(), want_path, "{s}");
        let want_tag = match (&tag, &digest) {
            (Some(t), _) => Some(t.as_str()),
            (None, Some(_)) => None,
            (None, None) => Some("latest"),
        };
        assert_eq!(r.tag(), want_tag, "{s}");
        assert_eq!(r.digest().map(|d| d.as_str()), digest.as_deref(), "{s}");
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{s}");
        assert_eq!(
            crate::reference::split_short_name(&s).is_some(),
            domain.is_none(),
            "{s}"
        );
    }
}

#[test]
fn config_auth_and_challenge_parsers_never_panic() {
    let mut rng = Rng::new(2024);
    let toml_seed = "unqualified-search-registries = [\"quay.io\"]\n[[registry]]\nprefix = \"*.example.com\"\nlocation = \"\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"m.local/x\"\npull-from-mirror = \"tag-only\"\n[aliases]\n\"a\" = \"quay.io/a\"\n";
    let json_seed = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"quay.io/ns":{"username":"u","password":"p","identitytoken":"t"}}}"#;
    let challenge_seed = r#"Bearer realm="https://auth.example.com/token",service="reg",scope="repository:a/b:pull",x=y"#;
    for _ in 0..iters(5_000) {
        let mut b = toml_seed.as_bytes().to_vec();
        mutate(&mut rng, &mut b);
        let mut c = RegistryConfig::default();
        if c.merge_toml(Path::new("/fuzz.conf"), &String::from_utf8_lossy(&b))
            .is_ok()
        {
            for r in ["a.example.com/x:1", "quay.io/a", "busybox", "a"] {
                if let Ok(cands) = c.candidates(r) {
                    for r in cands {
                        let _ = c.sources(&r);
                    }
                }
            }
        }
        let mut b = json_seed.as_bytes().to_vec();
        mutate(&mut rng, &mut b);
        if let Ok(store) = crate::authfile::AuthStore::parse(Path::new("/fuzz.json"), &b) {
            let _ = store.lookup("docker.io", "library/x");
            let _ = store.lookup("quay.io", "ns/x/y");
        }
        let mut b = challenge_seed.as_bytes().to_vec();
        mutate(&mut rng, &mut b);
        let _ = crate::registry::parse_challenge(&String::from_utf8_lossy(&b));
    }
}
