//! Seeded random entry sequences (with `..`, absolute names, symlinks to the host, hard
//! links out, whiteouts): `apply_layer` may fail but never panics and never creates,
//! changes or links anything outside the target directory.

#![allow(clippy::unwrap_used)] // test helpers and assertions

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use krio_testutil::Rng;
use tar::EntryType;

/// Snapshot of a tree: path -> (type bits+mode, size, mtime, nlink, ino), never following.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, u64, i64, u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        out.insert(key, (m.mode(), m.size(), m.mtime(), m.nlink(), m.ino()));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

fn random_name(r: &mut Rng, token: &str) -> String {
    let comps = [
        "a",
        "b",
        "l",
        "..",
        ".",
        "",
        ".wh.a",
        ".wh..wh..opq",
        ".wh.l",
        token,
        "a",
        "l",
        "b",
        "c",
        "a",
        "b",
        "c",
        "l",
    ];
    let clean = [
        "a",
        "b",
        "c",
        "l",
        ".wh.a",
        ".wh..wh..opq",
        ".wh.l",
        token,
        "a",
        "b",
        "c",
        "l",
    ];
    let hostile = r.chance(25);
    let n = 1 + r.next_u64() % 3;
    let mut parts = Vec::new();
    for _ in 0..n {
        if hostile {
            parts.push(r.pick(&comps).to_string());
        } else {
            parts.push(r.pick(&clean).to_string());
        }
    }
    let mut s = parts.join("/");
    if r.chance(15) {
        s.insert(0, '/');
    }
    if r.chance(10) {
        s.push('/');
    }
    s
}

fn run_case(seed: u64) -> bool {
    let mut r = Rng::new(seed);
    let token = format!("kfz{seed}");
    let sb = Sandbox::new();
    let lower = sb.dir("lower");
    krio_layer::apply_layer(
        tar(&[
            E::file("a/lowfile", b"low"),
            E::file("b", b"lowb"),
            E::symlink("l", "/etc"),
        ])
        .as_slice(),
        &lower,
        &[],
    )
    .unwrap();
    let lower_before = snapshot(&lower);
    let outside = sb.outside().to_string_lossy().into_owned();
    let sym_targets = [
        "/".to_string(),
        "..".to_string(),
        "../../../../../..".to_string(),
        "/etc".to_string(),
        "/tmp".to_string(),
        "a".to_string(),
        outside.clone(),
        format!("{outside}/canary"),
        "../../outside".to_string(),
    ];
    let n = 1 + r.next_u64() % 14;
    let mut entries = Vec::new();
    for _ in 0..n {
        let name = random_name(&mut r, &token);
        let e = match r.next_u64() % 8 {
            0 | 1 => E::file(&name, token.as_bytes()),
            2 => E::dir(&name),
            3 | 4 => E::symlink(&name, r.pick(&sym_targets[..]).as_str()),
            5 => {
                let t = match r.next_u64() % 6 {
                    0 => random_name(&mut r, &token),
                    3 | 4 if !entries.is_empty() => {
                        let prev: &E = r.pick(&entries[..]);
                        String::from_utf8_lossy(&prev.name).into_owned()
                    }
                    1 => "/etc/passwd".to_string(),
                    2 => format!("{outside}/canary"),
                    _ => "../outside/canary".to_string(),
                };
                E::hardlink(&name, &t)
            }
            6 => E::node(&name, EntryType::Fifo, 0, 0),
            _ => E::file(&name, b"").mode(0o4755).owner(r.next_u64() % 3, 0),
        };
        entries.push(e);
    }
    let lowers = if r.chance(50) {
        vec![lower.clone()]
    } else {
        vec![]
    };
    let res = krio_layer::apply_layer(tar(&entries).as_slice(), &sb.target(), &lowers);
    let ctx = format!("seed {seed}: {entries:#?} -> {res:?}");
    if let Err(e) = &res {
        if std::env::var_os("KRIO_LAYER_FUZZ_SHOW").is_some() {
            eprintln!("{e}");
        }
    }
    std::panic::catch_unwind(|| {
        sb.assert_outside_untouched(&["lower"]);
    })
    .unwrap_or_else(|_| panic!("escape detected: {ctx}"));
    assert_eq!(
        snapshot(&lower),
        lower_before,
        "lower layer modified: {ctx}"
    );
    for dir in ["/", "/tmp", "/etc", "/tmp/outside"] {
        assert!(
            !Path::new(dir).join(&token).exists(),
            "{dir}/{token} created on the host: {ctx}"
        );
    }
    res.is_ok()
}

#[test]
fn random_entry_sequences_never_escape() {
    require_root();
    let base: u64 = std::env::var("KRIO_LAYER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let iters: u64 = std::env::var("KRIO_LAYER_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let passwd = std::fs::symlink_metadata("/etc/passwd").unwrap().nlink();
    let mut ok = 0u64;
    for seed in base..base + iters {
        ok += u64::from(run_case(seed));
    }
    eprintln!("{ok}/{iters} random layers applied without error");
    assert!(
        ok * 5 >= iters,
        "too few successful cases ({ok}/{iters}): generator too hostile"
    );
    assert_eq!(
        std::fs::symlink_metadata("/etc/passwd").unwrap().nlink(),
        passwd
    );
}
