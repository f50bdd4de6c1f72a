//! Integration tests: the real `krio-monitor` binary driving the real runc on a busybox rootfs.
//!
//! Prerequisites (the tests panic if missing): root, `runc` in PATH, `/bin/busybox` (busybox-static).

// Test code: panicking on unexpected errors is the point (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use krio_monitor::{read_exit_file, spawn, ExitStatus, MonitorConfig, MonitorError};

mod common;
use common::{make_busybox_rootfs, runc};

const MONITOR: &str = env!("CARGO_BIN_EXE_krio-monitor");

fn prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "PREREQUISITE MISSING: these tests must run as root"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "PREREQUISITE MISSING: /bin/busybox (apt-get install busybox-static)"
    );
    runc();
}

/// A test container: bundle + busybox rootfs + runc root under /tmp/krio-oci-monitor-*.
struct Fixture {
    dir: tempfile::TempDir,
    id: String,
}

impl Fixture {
    fn new(name: &str, args: &[&str]) -> Fixture {
        prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("krio-oci-monitor-")
            .tempdir_in("/tmp")
            .unwrap();
        let id = format!("mon-{name}-{}", std::process::id());
        let f = Fixture { dir, id };
        make_rootfs(&f.rootfs());
        let st = Command::new(runc())
            .args(["spec", "--bundle"])
            .arg(f.bundle())
            .status()
            .unwrap();
        assert!(st.success(), "runc spec failed");
        let cfg_path = f.bundle().join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = args
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into();
        spec["root"]["path"] = f.rootfs().display().to_string().into();
        spec["linux"]["cgroupsPath"] = format!("/krio-test/{}", f.id).into();
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        f
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc-root")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("ctr.log")
    }

    fn exit_file(&self) -> PathBuf {
        self.dir.path().join("exit.json")
    }

    fn config(&self) -> MonitorConfig {
        MonitorConfig::new(
            &self.id,
            self.bundle(),
            runc(),
            self.runc_root(),
            Some(self.log()),
            self.exit_file(),
            self.dir.path().join("ctr.pid"),
        )
    }

    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new(runc())
            .arg("--root")
            .arg(self.runc_root())
            .args(args)
            .output()
            .unwrap()
    }

    fn start(&self) {
        let out = self.runc(&["start", &self.id]);
        assert!(
            out.status.success(),
            "runc start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn wait_exit(&self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = read_exit_file(&self.exit_file()).unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "container {} did not exit",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Parsed log records: (stream, tag, text); timestamps must parse as RFC 3339 and be non-decreasing.
    fn records(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(self.log()).unwrap();
        let mut last = None;
        text.lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = chrono::DateTime::parse_from_rfc3339(it.next().unwrap()).unwrap();
                if let Some(prev) = last {
                    assert!(ts >= prev, "timestamps go backwards in {text}");
                }
                last = Some(ts);
                (
                    it.next().unwrap().to_string(),
                    it.next().unwrap().to_string(),
                    it.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "--force", &self.id]);
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path().join("krio-test").join(&self.id));
                let _ = std::fs::remove_dir(e.path().join("krio-test"));
            }
        }
    }
}

/// The busybox rootfs plus `/etc/passwd` and `/etc/group` with root.
fn make_rootfs(root: &Path) {
    make_busybox_rootfs(root);
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

/// Where each open descriptor of `pid` points (`readlink /proc/<pid>/fd/*`, "" if unreadable).
fn fd_targets(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect()
}

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn logs_stdout_and_stderr_and_exit_zero() {
    let f = Fixture::new(
        "logs",
        &[
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; printf 'no newline'",
        ],
    );
    let spawned = spawn(&f.config(), Path::new(MONITOR)).unwrap();
    assert!(spawned.container_pid > 0 && spawned.monitor_pid > 0);
    // The monitor is detached: not our child, its own session leader.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(spawned.monitor_pid))).unwrap();
    assert_eq!(
        sid.as_raw(),
        spawned.monitor_pid,
        "monitor must be a session leader"
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", spawned.monitor_pid)).unwrap();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "monitor must not be the daemon's child"
    );
    if let Some(kib) = rss_kib(spawned.monitor_pid) {
        eprintln!("krio-monitor RSS: {kib} KiB");
    }
    f.start();
    let st = f.wait_exit();
    assert_eq!((st.exit_code, st.signal, st.oom_killed), (0, None, false));
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(st.finished_at_ns > now_ns - 60_000_000_000 && st.finished_at_ns <= now_ns);
    let recs = f.records();
    // Each stream keeps its order; how the two interleave depends on when the monitor reads each
    // pipe, which nothing orders.
    let stream = |name: &str| -> Vec<(String, String)> {
        recs.iter()
            .filter(|r| r.0 == name)
            .map(|r| (r.1.clone(), r.2.clone()))
            .collect()
    };
    let full = |text: &str| ("F".to_string(), text.to_string());
    assert_eq!(
        stream("stdout"),
        vec![
            full("out1"),
            full("out2"),
            ("P".to_string(), "no newline".to_string())
        ],
        "{recs:?}"
    );
    assert_eq!(stream("stderr"), vec![full("err1")], "{recs:?}");
    assert_eq!(recs.len(), 4, "{recs:?}");
}

#[test]
fn records_exit_code_three() {
    let f = Fixture::new("exit3", &["sh", "-c", "exit 3"]);
    spawn(&f.config(), Path::new(MONITOR)).unwrap();
    f.start();
    let st = f.wait_exit();
    assert_eq!((st.exit_code, st.signal), (3, None));
}

#[test]
fn killed_container_records_137() {
    let f = Fixture::new("kill", &["sleep", "1000"]);
    // A descriptor WITHOUT close-on-exec in the "daemon": it must reach neither the monitor nor the container.
    let leaky = nix::fcntl::open(
        "/etc/hostname",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let spawned = spawn(&f.config(), Path::new(MONITOR)).unwrap();
    drop(leaky);
    f.start();
    // `runc start` returns before runc init has exec'd the process: wait for the exec, so the
    // descriptors listed are the container's and not runc init's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{}/comm", spawned.container_pid))
        .map(|c| c.trim() != "sleep")
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never exec'd sleep"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let ctr_fds = fd_targets(spawned.container_pid);
    eprintln!("container fds: {ctr_fds:?}");
    assert_eq!(
        ctr_fds.len(),
        3,
        "container must only have stdio: {ctr_fds:?}"
    );
    assert!(
        ctr_fds[0] == "/dev/null"
            && ctr_fds[1].starts_with("pipe:")
            && ctr_fds[2].starts_with("pipe:")
    );
    // Fds of the monitor: nothing inherited from us beyond its own pipes, signalfd and log.
    let fds = fd_targets(spawned.monitor_pid);
    eprintln!("monitor fds: {fds:?}");
    assert!(fds.len() <= 7, "unexpected monitor fds: {fds:?}");
    assert!(
        !fds.iter().any(|p| p == "/etc/hostname"),
        "daemon fd leaked into the monitor: {fds:?}"
    );
    let out = f.runc(&["kill", &f.id, "KILL"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = f.wait_exit();
    assert_eq!((st.exit_code, st.signal), (137, Some(9)));
}

#[test]
fn long_lines_are_split_and_log_reopens_on_sigusr1() {
    let mut_cfg = |f: &Fixture| {
        let mut c = f.config();
        c.max_log_line = 8;
        c
    };
    let f = Fixture::new(
        "reopen",
        &[
            "sh",
            "-c",
            // "second" only once the test has rotated the log and created /go.
            "echo 0123456789abcdefXYZ; until [ -e /go ]; do sleep 0.05; done; echo second",
        ],
    );
    let spawned = spawn(&mut_cfg(&f), Path::new(MONITOR)).unwrap();
    f.start();
    // Wait for the first line, rotate, signal, and wait for the monitor to create the new file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(f.log())
        .unwrap_or_default()
        .lines()
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "first line never logged");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rotated = f.dir.path().join("ctr.log.1");
    std::fs::rename(f.log(), &rotated).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(spawned.monitor_pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f.log().exists() {
        assert!(Instant::now() < deadline, "log not reopened");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(f.rootfs().join("go"), b"").unwrap();
    assert_eq!(f.wait_exit().exit_code, 0);
    let old = std::fs::read_to_string(&rotated).unwrap();
    let tags: Vec<String> = old
        .lines()
        .map(|l| l.splitn(4, ' ').skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        tags,
        ["stdout P 01234567", "stdout P 89abcdef", "stdout F XYZ"]
    );
    let recs = f.records();
    assert_eq!(recs, vec![("stdout".into(), "F".into(), "second".into())]);
}

#[test]
fn create_failure_reports_runtime_error() {
    let f = Fixture::new("fail", &["/bin/true"]);
    let cfg_path = f.bundle().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    spec["root"]["path"] = "/nonexistent/krio-rootfs".into();
    std::fs::write(&cfg_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    match spawn(&f.config(), Path::new(MONITOR)) {
        Err(MonitorError::CreateFailed {
            stage,
            runtime_stderr,
            ..
        }) => {
            assert_eq!(stage, "create");
            assert!(
                runtime_stderr.contains("nonexistent") || runtime_stderr.contains("no such file"),
                "runtime error should explain: {runtime_stderr:?}"
            );
        }
        other => panic!("expected CreateFailed, got {other:?}"),
    }
    assert_eq!(read_exit_file(&f.exit_file()).unwrap(), None);
}

#[test]
fn bad_monitor_binary_is_a_spawn_error() {
    let cfg = MonitorConfig::new("x1", "/b", "/r", "/rr", None, "/e", "/p");
    assert!(matches!(
        spawn(&cfg, Path::new("/nonexistent/krio-monitor")),
        Err(MonitorError::Spawn { .. })
    ));
}
