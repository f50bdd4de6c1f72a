//! Helpers shared by the integration tests (root required; real tools, failing loudly).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Panics unless running as root with the given executables present.
pub fn require(tools: &[&str]) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "krio-net integration tests must run as root"
    );
    for t in tools {
        assert!(
            Path::new(t).exists(),
            "required prerequisite {t} is missing (install util-linux, iproute2, busybox-static, \
             containernetworking-plugins, iptables)"
        );
    }
}

/// A fresh temp dir under /tmp named krio-net-*.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("krio-net-")
        .tempdir_in("/tmp")
        .expect("create temp dir")
}

/// Lines of /proc/self/mountinfo whose mount point lies under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let d = dir.to_string_lossy().to_string();
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|mp| mp.starts_with(&d)))
        .map(str::to_owned)
        .collect()
}

/// Runs a command and returns (success, stdout+stderr).
pub fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// `nsenter --<flag>=<pin> <args...>`.
pub fn nsenter(flag: &str, pin: &Path, args: &[&str]) -> (bool, String) {
    let ns = format!("--{flag}={}", pin.display());
    let mut all = vec![ns.as_str()];
    all.extend_from_slice(args);
    run("/usr/bin/nsenter", &all)
}

/// The inode of a namespace handle (pin or /proc/.../ns/...).
pub fn ns_inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .ino()
}
