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
    let out = krio(&["--config", "/etc/krio/krio.toml", "config"]);
    assert!(
        out.status.success(),
        "built-in defaults work without a file"
    );
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

#[test]
fn unknown_keys_in_tables_and_dropins_name_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("krio.toml");
    std::fs::write(&file, "[cni]\nconf_dir = \"/x\"\n").unwrap();
    std::fs::create_dir(dir.path().join("krio.d")).unwrap();
    let dropin = dir.path().join("krio.d/20-typo.toml");
    std::fs::write(&dropin, "[cni]\nbin_dir = [\"/x\"]\n").unwrap();
    let out = krio(&["--config", file.to_str().unwrap(), "config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bin_dir") && err.contains(&*dropin.to_string_lossy()),
        "{err}"
    );
}

/// `krio config --default` prints every setting with a comment; read back as a config file it
/// gives exactly the built-in defaults (defaults → TOML → parse → same values).
#[test]
fn default_config_round_trips_through_a_file() {
    let out = krio(&["config", "--default"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("krio.toml");
    std::fs::write(&file, &text).unwrap();
    let out = krio(&["--config", file.to_str().unwrap(), "config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Value = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let defaults = toml::Value::try_from(krio_server::config::Config::default()).unwrap();
    assert_eq!(effective, defaults);
    // Every setting line is preceded by its comment.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains(" = ") && !l.starts_with('#') {
            assert!(
                i > 0 && lines[i - 1].starts_with("# "),
                "{l:?} has no comment"
            );
        }
    }
}

/// The settings table in docs/configuration.md is `krio config --docs`, i.e. generated from the
/// config types. Regenerate it with `KRIO_UPDATE_DOCS=1 cargo test -p krio --test cli`.
#[test]
fn configuration_doc_matches_the_config_types() {
    let out = krio(&["config", "--docs"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let begin = "<!-- BEGIN generated by `krio config --docs` -->\n";
    let end = "<!-- END generated -->";
    let (head, rest) = doc.split_once(begin).expect("begin marker");
    let (current, tail) = rest.split_once(end).expect("end marker");
    if current != table && std::env::var_os("KRIO_UPDATE_DOCS").is_some() {
        std::fs::write(path, format!("{head}{begin}{table}{end}{tail}")).unwrap();
        return;
    }
    assert_eq!(
        current, table,
        "docs/configuration.md is out of date: KRIO_UPDATE_DOCS=1 cargo test -p krio --test cli"
    );
}
