//! The daemon's command line: `--help`, `krio config`, and configuration errors.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

fn krio(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_krio"))
        .args(args)
        .output()
        .expect("running krio")
}

#[test]
fn help_lists_the_flags() {
    let out = krio(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--root",
        "--state-dir",
        "--cni-conf-dir",
        "--log-level",
        "config",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
}

#[test]
fn config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("krio.toml");
    std::fs::write(
        &file,
        "log_level = \"debug\"\n[runtimes.crun]\npath = \"/usr/bin/crun\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("krio.d")).unwrap();
    std::fs::write(
        dir.path().join("krio.d/10-root.toml"),
        "root = \"/srv/krio\"\n",
    )
    .unwrap();
    let out = krio(&[
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "/tmp/x.sock",
        "config",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Value = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed["log_level"].as_str(), Some("debug"));
    assert_eq!(printed["root"].as_str(), Some("/srv/krio"));
    assert_eq!(printed["listen"].as_str(), Some("/tmp/x.sock"));
    assert_eq!(printed["state_dir"].as_str(), Some("/run/krio"));
    assert_eq!(
        printed["runtimes"]["crun"]["path"].as_str(),
        Some("/usr/bin/crun")
    );
    assert_eq!(printed["runtimes"]["runc"]["path"].as_str(), Some("runc"));
}

#[test]
fn defaults_need_no_file_and_bad_files_are_named() {
    // An empty file (never the host's /etc/krio/krio.toml): the built-in defaults.
    let out = krio(&["--config", "/dev/null", "config"]);
    assert!(
        out.status.success(),
        "built-in defaults work without settings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Value = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed["listen"].as_str(), Some("/run/krio/krio.sock"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("krio.toml");
    std::fs::write(&file, "lissen = \"/x\"\n").unwrap();
    let out = krio(&["--config", file.to_str().unwrap(), "config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lissen") && err.contains("krio.toml"), "{err}");
    let out = krio(&[
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
        "config",
    ]);
    assert!(!out.status.success(), "a named config file must exist");
}
