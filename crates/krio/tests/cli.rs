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

/// `krio install --destdir` lays down binaries, units, a commented config and a CNI network; the
/// units pass `systemd-analyze verify`; a second run keeps the operator's config and follows its
/// `listen` in the socket unit.
#[test]
fn install_lays_down_units_config_and_cni() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let out = krio(&["install", "--destdir", d.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bin in ["krio", "krio-monitor", "krioctl"] {
        let p = d.join("usr/local/bin").join(bin);
        let mode = std::os::unix::fs::PermissionsExt::mode(&p.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o755, "{}", p.display());
    }
    let v = Command::new(d.join("usr/local/bin/krio"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(v.status.success());

    let units = d.join("etc/systemd/system");
    let service = std::fs::read_to_string(units.join("krio.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/krio",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Delegate=yes",
        "KillMode=process",
        "Restart=always",
        "LimitNOFILE=1048576",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "{line} missing:\n{service}"
        );
    }
    let socket = std::fs::read_to_string(units.join("krio.socket")).unwrap();
    for line in ["ListenStream=/run/krio/krio.sock", "FileDescriptorName=cri"] {
        assert!(
            socket.lines().any(|l| l == line),
            "{line} missing:\n{socket}"
        );
    }
    // systemd's own checker (no running systemd needed), with ExecStart at the installed binary.
    let check = d.join("check");
    std::fs::create_dir(&check).unwrap();
    std::fs::write(
        check.join("krio.service"),
        service.replace(
            "ExecStart=/usr/local/bin/krio",
            &format!("ExecStart={}", d.join("usr/local/bin/krio").display()),
        ),
    )
    .unwrap();
    std::fs::write(check.join("krio.socket"), &socket).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(check.join("krio.service"))
        .arg(check.join("krio.socket"))
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed by this test");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The config documents every default without pinning one: it parses to the defaults.
    let config = d.join("etc/krio/krio.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("# listen = \"/run/krio/krio.sock\""),
        "{text}"
    );
    let out = krio(&["--config", config.to_str().unwrap(), "config"]);
    let effective: toml::Value = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(
        effective,
        toml::Value::try_from(krio_server::config::Config::default()).unwrap()
    );
    assert!(d.join("etc/krio/krio.d").is_dir());
    let cni: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("etc/cni/net.d/10-krio-bridge.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(cni["plugins"][0]["type"], "bridge");

    // Again, over an operator's config: kept, and the socket unit follows its `listen`.
    let mine = "listen = \"/run/k/cri.sock\"\n";
    std::fs::write(&config, mine).unwrap();
    let out = krio(&["install", "--destdir", d.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), mine);
    let socket = std::fs::read_to_string(units.join("krio.socket")).unwrap();
    assert!(
        socket.lines().any(|l| l == "ListenStream=/run/k/cri.sock"),
        "{socket}"
    );
}
