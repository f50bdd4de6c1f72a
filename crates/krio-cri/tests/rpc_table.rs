//! docs/cri-api.md's table of RPCs against the `.proto` the bindings are generated from:
//! the same RPCs in the same order, and every test it names exists.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The table rows between the markers: (RPC cell, test cell).
fn table() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(repo().join("docs/cri-api.md")).unwrap();
    let start = doc.find("<!-- rpc-table:begin -->").expect("begin marker");
    let end = doc.find("<!-- rpc-table:end -->").expect("end marker");
    doc[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[3].to_string())
        })
        .collect()
}

#[test]
fn rpc_table_lists_every_rpc_of_the_proto() {
    let want: Vec<String> = krio_cri::rpcs()
        .into_iter()
        .map(|(s, m)| format!("{s}/{m}"))
        .collect();
    let got: Vec<String> = table().into_iter().map(|(rpc, _)| rpc).collect();
    assert_eq!(
        got,
        want,
        "docs/cri-api.md's RPC table differs from the .proto; its first column should be:\n{}",
        want.iter()
            .map(|r| format!("| `{r}` |"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_test_the_table_names_exists() {
    let mut sources = String::new();
    for dir in ["crates/krio/tests"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&p).unwrap();
                // "file::fn" for every fn of the file.
                for line in text.lines() {
                    let l = line.trim_start();
                    let l = l.strip_prefix("async ").unwrap_or(l);
                    if let Some(rest) = l.strip_prefix("fn ") {
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        sources.push_str(&format!("{stem}::{name}\n"));
                    }
                }
            }
        }
    }
    for (rpc, tests) in table() {
        for t in tests.split(',').map(|t| t.trim().trim_matches('`')) {
            if t == "—" {
                continue;
            }
            assert!(
                sources.lines().any(|l| l == t),
                "{rpc}: test {t} named in docs/cri-api.md does not exist"
            );
        }
    }
}
