//! End to end: the fresh-machine walk-through of docs/kubelet.md cannot rot. Every fenced block
//! of the guide is classified by the HTML comment right above it:
//!
//! - `<!-- exercised-by: walkthrough -->` (`sh`): run here, in order, as one bash session
//!   (`set -euo pipefail`), in a temporary root: `/etc/`, `/run/krio`, `/var/lib/krio`,
//!   `/var/log/krio` and `/usr/local/bin/` are moved below it, `sudo` is dropped, `krio install`
//!   gets `--destdir`, and this build's binaries stand in for `target/release`. After the first
//!   install the test adds a drop-in of its own that keeps the daemon's socket, state and CNI
//!   configuration inside the root.
//! - `<!-- exercised-by: demo -->` (`sh`): each line is a line of scripts/demo.sh.
//! - `<!-- not-exercised: ... -->` (not `sh`): may hold only `systemctl` commands.
//!
//! A `sh` block with no such comment fails the test. The output is then checked against what
//! kubelet needs: the cgroup driver the guide's flag table gives kubelet is the one krio reports,
//! the runtime and the network are ready, and every RuntimeClass `handler:` of the guide is
//! listed as ready.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// One fenced block of the guide: the marker comment right above it, its language, its lines,
/// and the line number of its opening fence.
#[derive(Debug)]
struct Block {
    marker: String,
    lang: String,
    lines: Vec<String>,
    at: usize,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut prev = "";
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        if let Some(b) = open.as_mut() {
            if line.trim_start().starts_with("```") {
                out.push(open.take().unwrap());
            } else {
                b.lines.push(line.to_string());
            }
            continue;
        }
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            let marker = prev
                .trim()
                .strip_prefix("<!--")
                .and_then(|m| m.strip_suffix("-->"))
                .map(|m| m.trim().to_string())
                .unwrap_or_default();
            open = Some(Block {
                marker,
                lang: lang.trim().to_string(),
                lines: Vec::new(),
                at: i + 1,
            });
        }
        prev = line;
    }
    assert!(
        open.is_none(),
        "docs/kubelet.md: a fenced block is not closed"
    );
    out
}

/// Commands of a block: lines that are neither empty nor comments.
fn commands(b: &Block) -> impl Iterator<Item = &str> {
    b.lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Moves the guide's host paths below `root` where a path starts (after a space, quote,
/// redirection, `=` or `unix://`).
fn relocate(line: &str, root: &str) -> String {
    const PREFIXES: [&str; 5] = [
        "/etc/",
        "/run/krio",
        "/var/lib/krio",
        "/var/log/krio",
        "/usr/local/bin/",
    ];
    let mut out = String::new();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let before = &line[..i];
        let starts_path = before.is_empty()
            || before.ends_with([' ', '>', '\'', '"', '=', '('])
            || before.ends_with("unix://");
        if starts_path && PREFIXES.iter().any(|p| rest.starts_with(p)) {
            out.push_str(root);
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Kills (SIGKILL) every process that belongs to the walk-through's `root` when dropped: a
/// daemon the walk-through started and did not stop, whatever happened. The guide starts
/// `krio` by name from `PATH`, so its command line does not name `root`; its executable and
/// its environment (`KRIO_CONFIG`) do.
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let names_root = |f: &str| {
                let bytes = std::fs::read(e.path().join(f)).unwrap_or_default();
                String::from_utf8_lossy(&bytes).contains(&self.0)
            };
            let exe_in_root =
                std::fs::read_link(e.path().join("exe")).is_ok_and(|x| x.starts_with(&self.0));
            if exe_in_root || names_root("cmdline") || names_root("environ") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[test]
fn kubelet_md_walkthrough_runs_as_written() {
    require_prerequisites();
    Handler::Runsc.require();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_krio")).parent().unwrap();
    assert!(
        bin_dir.join("krioctl").is_file(),
        "{} is missing: build the workspace first (cargo build --workspace --bins)",
        bin_dir.join("krioctl").display()
    );
    let doc = std::fs::read_to_string(repo_root().join("docs/kubelet.md")).unwrap();
    let demo = std::fs::read_to_string(repo_root().join("scripts/demo.sh")).unwrap();
    let demo_lines: Vec<&str> = demo.lines().map(str::trim).collect();

    let tmp = tempfile::Builder::new()
        .prefix("krio-walk-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = tmp.path().to_str().unwrap().to_string();
    let _reaper = Reaper(root.clone());
    let cgroup_parent = format!("/krio-walk-{}", std::process::id());
    let test_dropin = format!(
        "\ncat > {root}/etc/krio/krio.d/00-walkthrough-test.toml <<'EOF'\n\
         listen = \"{root}/run/krio/krio.sock\"\nroot = \"{root}/var/lib/krio\"\n\
         state_dir = \"{root}/run/krio\"\ncgroup_parent = \"{cgroup_parent}\"\n\
         [cni]\nconf_dir = \"{root}/etc/cni/net.d\"\nEOF\n"
    );

    let mut script = String::from("set -euo pipefail\n");
    let (mut run, mut demo_checked, mut installed) = (0, 0, false);
    let mut handlers = Vec::new();
    for b in blocks(&doc) {
        let kind = b.marker.split(':').next().unwrap_or("").trim();
        let value = b.marker.split(':').nth(1).unwrap_or("").trim();
        for l in &b.lines {
            if let Some(h) = l.trim().strip_prefix("handler:") {
                handlers.push(h.split('#').next().unwrap().trim().to_string());
            }
        }
        match (kind, value) {
            ("exercised-by", "walkthrough") => {
                assert_eq!(b.lang, "sh", "line {}: only sh blocks are run", b.at);
                script.push_str(&format!("echo '=== docs/kubelet.md line {}'\n", b.at));
                let mut has_install = false;
                for l in &b.lines {
                    let l = l.trim_start().strip_prefix("sudo ").unwrap_or(l);
                    let mut l = relocate(l, &root);
                    if l.contains("target/release/krio install") {
                        has_install = true;
                        l = l.replace(
                            "target/release/krio install",
                            &format!(
                                "env -u KRIO_CONFIG {}/krio install --destdir {root}",
                                bin_dir.display()
                            ),
                        );
                    }
                    assert!(
                        !l.contains("target/release"),
                        "line {}: {l:?} names a release binary the test cannot stand in for",
                        b.at
                    );
                    script.push_str(&l);
                    script.push('\n');
                }
                if has_install && !installed {
                    installed = true;
                    script.push_str(&test_dropin);
                }
                run += 1;
            }
            ("exercised-by", "demo") => {
                assert_eq!(b.lang, "sh", "line {}", b.at);
                for c in commands(&b) {
                    assert!(
                        demo_lines.contains(&c),
                        "docs/kubelet.md line {}: {c:?} is marked as run by scripts/demo.sh, which does not run it",
                        b.at
                    );
                    demo_checked += 1;
                }
            }
            ("not-exercised", _) => {
                assert_ne!(
                    b.lang, "sh",
                    "line {}: a block that is not exercised must not be `sh`",
                    b.at
                );
                for c in commands(&b) {
                    assert!(
                        c.starts_with("systemctl "),
                        "docs/kubelet.md line {}: {c:?} is neither run by this test nor by scripts/demo.sh",
                        b.at
                    );
                }
            }
            _ => assert!(
                b.lang != "sh" && b.lang != "bash" && b.lang != "shell",
                "docs/kubelet.md line {}: a `{}` block without an exercised-by / not-exercised comment",
                b.at,
                b.lang
            ),
        }
    }
    assert!(
        installed && run >= 5 && demo_checked >= 2,
        "the guide lost its walk-through"
    );
    assert!(
        handlers.contains(&"runsc".to_string()),
        "RuntimeClass handlers: {handlers:?}"
    );

    let path = format!(
        "{root}/usr/local/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(repo_root())
        .env("PATH", path)
        .env("KRIO_CONFIG", format!("{root}/etc/krio/krio.toml"))
        .env_remove("CONTAINER_RUNTIME_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let daemon_log =
        std::fs::read_to_string(format!("{root}/var/log/krio/krio.log")).unwrap_or_default();
    let context = format!(
        "script:\n{script}\nstdout:\n{stdout}\nstderr:\n{}\nkrio.log:\n{daemon_log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the walk-through failed\n{context}");

    // What the guide's commands showed is what kubelet needs.
    for want in [
        format!("installed  {root}/usr/local/bin/krioctl"),
        format!("installed  {root}/etc/systemd/system/krio.service"),
        format!("kept       {root}/etc/krio/krio.toml"),
        "cgroup_driver = \"cgroupfs\"".to_string(),
        "\"cgroupDriver\": \"CGROUPFS\"".to_string(),
    ] {
        assert!(stdout.contains(&want), "{want:?} not shown\n{context}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["RuntimeName:", "krio"])),
        "krioctl version did not answer RuntimeName krio\n{context}"
    );
    let table_driver = doc
        .lines()
        .find(|l| l.starts_with("| `--cgroup-driver`"))
        .expect("the kubelet flag table has --cgroup-driver");
    assert!(
        table_driver.contains("`cgroupfs`"),
        "the table gives kubelet another driver: {table_driver}"
    );
    for cond in ["RuntimeReady", "NetworkReady"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(cond) && l.trim_end().ends_with("true")),
            "{cond} is not true in krioctl status\n{context}"
        );
    }
    for h in &handlers {
        assert!(
            stdout.lines().any(|l| l.starts_with("Handler")
                && l.split_whitespace().nth(1) == Some(h.as_str())
                && l.contains(", ready")),
            "RuntimeClass handler {h} is not listed ready by krioctl status\n{context}"
        );
    }
    // The daemon was stopped and started again by the upgrade block, cleanly.
    assert!(
        daemon_log.matches("krio serving CRI v1").count() >= 2,
        "{context}"
    );
    drop(_reaper);
    for c in ["", "cpu", "memory", "pids"] {
        let _ = std::fs::remove_dir(
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join(cgroup_parent.trim_start_matches('/')),
        );
    }
}
