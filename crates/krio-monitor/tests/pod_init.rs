//! Integration tests: the real `krio-monitor pod-init` as PID 1 of a real PID namespace, entered with `nsenter`.
//!
//! Prerequisites (the tests panic if missing): root, `nsenter` and `unshare` (util-linux), `/bin/busybox`, and
//! `runc` for the test that puts a runc container into the pinned namespace.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use krio_monitor::{pod_init_running, spawn_pod_init, stop_pod_init, MonitorError, PodInit};

mod common;
use common::{make_busybox_rootfs, runc};

const MONITOR: &str = env!("CARGO_BIN_EXE_krio-monitor");

fn prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "PREREQUISITE MISSING: these tests must run as root"
    );
    for p in ["/usr/bin/nsenter", "/usr/bin/unshare", "/bin/busybox"] {
        assert!(
            Path::new(p).exists(),
            "PREREQUISITE MISSING: {p} (apt-get install util-linux busybox-static)"
        );
    }
}

fn tmpdir() -> tempfile::TempDir {
    prerequisites();
    tempfile::Builder::new()
        .prefix("krio-monitor-podinit-")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Runs `busybox sh -c script` inside the pinned PID namespace; returns (exit ok, stdout).
fn in_ns(pin: &Path, script: &str) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--pid={}", pin.display()))
        .args(["/bin/busybox", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `script` in the PID namespace with a private /proc of that namespace mounted.
fn in_ns_with_proc(pin: &Path, script: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--pid={}", pin.display()))
        .args([
            "unshare",
            "--mount",
            "--mount-proc",
            "/bin/busybox",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nsenter+unshare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Host pids (with their state) of every process whose PID namespace is the one pinned at `pin`.
fn procs_in_ns(pin: &Path) -> Vec<(i32, char)> {
    let ino = std::fs::metadata(pin).unwrap().ino();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let state = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .and_then(|s| s.trim().chars().next())
            .unwrap_or('?');
        let in_ns = match std::fs::metadata(e.path().join("ns/pid")) {
            Ok(m) => m.ino() == ino,
            // Zombies have no namespace links: look at the NSpid depth instead.
            Err(_) => false,
        };
        if in_ns {
            out.push((pid, state));
        }
    }
    out
}

fn is_mounted(p: &Path) -> bool {
    let p = p.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let st = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            st != 'Z' && st != 'X'
        })
        .unwrap_or(false)
}

/// Whether every signal pending for the process (or its thread group) is one it blocks: the others
/// have been delivered (`/proc/PID/status`; a blocked one waits for the init's signalfd, harmlessly).
fn no_pending_signals(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") == 0
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts an init at `<dir>/pid`, stopping it when dropped (so a failing test leaves nothing behind).
struct Init {
    init: PodInit,
    pin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Init {
    fn start() -> Init {
        let dir = tmpdir();
        let pin = dir.path().join("pid");
        let init = spawn_pod_init(Path::new(MONITOR), &pin, None).unwrap();
        Init {
            init,
            pin,
            _dir: dir,
        }
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let _ = stop_pod_init(&self.init, &self.pin);
    }
}

#[test]
fn init_is_pid1_of_a_pinned_namespace_and_processes_join_it() {
    let i = Init::start();
    let pid = i.init.pid;
    assert!(pid > 1);
    assert!(pod_init_running(&i.init));
    assert!(is_mounted(&i.pin), "pin is not a mount point");
    // The pin is the init's PID namespace, which is not ours.
    let pin_ino = std::fs::metadata(&i.pin).unwrap().ino();
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/ns/pid"))
            .unwrap()
            .ino(),
        pin_ino
    );
    assert_ne!(
        std::fs::metadata("/proc/self/ns/pid").unwrap().ino(),
        pin_ino
    );
    // It is in its own session, not our child, and holds only /dev/null on 0..2.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ppid: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "the init must not be the caller's child"
    );
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "NSpid {nspid}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "session id (field 6) is the init's pid"
    );
    let mut fds: Vec<(String, PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_link(e.path()).unwrap(),
            )
        })
        .collect();
    fds.sort();
    assert_eq!(
        fds,
        vec![
            ("0".into(), "/dev/null".into()),
            ("1".into(), "/dev/null".into()),
            ("2".into(), "/dev/null".into())
        ]
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        PathBuf::from("/")
    );

    // A process entering the namespace is not pid 1; the init is.
    let (ok, out) = in_ns(&i.pin, "echo $$");
    assert!(ok);
    let inner: i32 = out.trim().parse().unwrap();
    assert!(inner > 1, "pid inside the namespace: {inner}");
    let out = in_ns_with_proc(&i.pin, "cat /proc/1/cmdline; echo; echo $$");
    let mut lines = out.lines();
    let cmdline = lines.next().unwrap();
    assert!(
        cmdline.starts_with("krio-pod-init\0pod-init-run\0"),
        "{cmdline:?}"
    );
    assert_ne!(lines.next().unwrap(), "1");

    // Memory footprint of the init (reported by the test output).
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb = |key: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    };
    let (rss, pss, anon) = (kb("Rss:"), kb("Pss:"), kb("Pss_Anon:"));
    eprintln!("pod init memory: Rss {rss} kB, Pss {pss} kB, anonymous {anon} kB");
    assert!(rss < 8 * 1024, "init RSS {rss} kB");
    assert!(anon < 1024, "init anonymous memory {anon} kB");
}

#[test]
fn signals_other_than_sigkill_do_not_end_the_init() {
    let i = Init::start();
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGCHLD,
    ] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i.init.pid), sig).unwrap();
    }
    // From inside the namespace too.
    let (ok, _) = in_ns(&i.pin, "kill -TERM 1; kill -INT 1; kill -HUP 1; true");
    assert!(ok);
    // Once no signal is pending, each was delivered: a fatal one would have ended the init.
    wait_until(
        "the init to take its signals",
        Duration::from_secs(10),
        || !alive(i.init.pid) || no_pending_signals(i.init.pid),
    );
    assert!(
        pod_init_running(&i.init),
        "init died from a catchable signal"
    );
    let (ok, out) = in_ns(&i.pin, "echo still-works");
    assert!(ok && out.contains("still-works"));
}

#[test]
fn orphans_are_reaped() {
    let i = Init::start();
    // Each outer shell double-forks a waiter and exits at once: the waiters are orphaned, reparented
    // to the namespace's init, and must be reaped when they exit (when the gate file appears).
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("go");
    let script = format!(
        "(busybox sh -c 'until [ -e {gate} ]; do busybox sleep 0.05; done' >/dev/null 2>&1 &) ; \
         (busybox sh -c 'exit 7' &) ; exit 0",
        gate = gate.display()
    );
    for _ in 0..3 {
        let (ok, _) = in_ns(&i.pin, &script);
        assert!(ok);
    }
    // While they wait they are in the namespace...
    wait_until(
        "the three orphaned waiters in the namespace",
        Duration::from_secs(10),
        || procs_in_ns(&i.pin).len() >= 4,
    );
    std::fs::write(&gate, b"").unwrap();
    // ...and afterwards only the init is left, with no zombie.
    wait_until("orphans to be reaped", Duration::from_secs(5), || {
        let procs = procs_in_ns(&i.pin);
        procs.len() == 1 && procs[0].0 == i.init.pid
    });
    let zombies: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .any(|l| l.starts_with("PPid:") && l[5..].trim() == i.init.pid.to_string())
        })
        .collect();
    assert!(
        zombies.is_empty(),
        "children of the init remain: {zombies:?}"
    );
    assert!(pod_init_running(&i.init));
}

#[test]
fn stop_kills_everything_inside_and_unpins() {
    let i = Init::start();
    // A daemonised sleeper (reparented to the init) and one whose parent (nsenter) is our child.
    let (ok, _) = in_ns(&i.pin, "(sleep 1000 >/dev/null 2>&1 &) ; exit 0");
    assert!(ok);
    let mut direct = Command::new("nsenter")
        .arg(format!("--pid={}", i.pin.display()))
        .args(["/bin/busybox", "sleep", "1000"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("both sleepers", Duration::from_secs(5), || {
        procs_in_ns(&i.pin).len() >= 3
    });
    let inside: Vec<i32> = procs_in_ns(&i.pin).into_iter().map(|(p, _)| p).collect();

    stop_pod_init(&i.init, &i.pin).unwrap();
    for pid in &inside {
        assert!(!alive(*pid), "pid {pid} survived stop_pod_init");
    }
    assert!(!pod_init_running(&i.init));
    assert!(!is_mounted(&i.pin), "pin still mounted");
    assert!(!i.pin.exists(), "pin file still exists");
    // nsenter sees its child killed.
    let st = direct.wait().unwrap();
    assert!(!st.success(), "{st:?}");

    // Idempotent.
    stop_pod_init(&i.init, &i.pin).unwrap();
    stop_pod_init(&i.init, &i.pin).unwrap();
}

#[test]
fn stop_never_kills_a_process_that_is_not_the_init() {
    let dir = tmpdir();
    let mut victim = Command::new("/bin/busybox")
        .args(["sleep", "1000"])
        .spawn()
        .unwrap();
    let pid = victim.id() as i32;
    let start_time: u64 = {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        s[s.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(19)
            .unwrap()
            .parse()
            .unwrap()
    };
    // A recycled pid: the start time does not match.
    let stale = PodInit {
        pid,
        start_time: start_time + 1,
    };
    assert!(!pod_init_running(&stale));
    stop_pod_init(&stale, &dir.path().join("missing")).unwrap();
    assert!(alive(pid), "a process with another start time was killed");

    // Start time matches, but the pin is another PID namespace.
    let other = Init::start();
    let matching = PodInit { pid, start_time };
    assert!(pod_init_running(&matching));
    let pin_copy = dir.path().join("pin-copy");
    std::fs::write(&pin_copy, b"").unwrap();
    nix::mount::mount(
        Some(&other.pin),
        &pin_copy,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    stop_pod_init(&matching, &pin_copy).unwrap();
    assert!(
        alive(pid),
        "a process outside the pinned namespace was killed"
    );
    assert!(!pin_copy.exists());
    assert!(pod_init_running(&other.init));

    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn bad_pins_are_rejected_and_leave_nothing() {
    let dir = tmpdir();
    let e = spawn_pod_init(Path::new(MONITOR), Path::new("rel/pid"), None).unwrap_err();
    assert!(
        matches!(e, MonitorError::InvalidConfig { field: "pin", .. }),
        "{e}"
    );

    let existing = dir.path().join("exists");
    std::fs::write(&existing, b"x").unwrap();
    let e = spawn_pod_init(Path::new(MONITOR), &existing, None).unwrap_err();
    assert!(
        matches!(&e, MonitorError::PodInitFailed { stage, .. } if stage == "pin"),
        "{e}"
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"x");

    let e = spawn_pod_init(
        Path::new(MONITOR),
        &dir.path().join("no/such/dir/pid"),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&e, MonitorError::PodInitFailed { stage, .. } if stage == "pin"),
        "{e}"
    );

    let e = spawn_pod_init(
        Path::new("/nonexistent/krio-monitor"),
        &dir.path().join("p"),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, MonitorError::Spawn { .. }), "{e}");
    assert!(!dir.path().join("p").exists());

    let e = stop_pod_init(
        &PodInit {
            pid: 0,
            start_time: 1,
        },
        &dir.path().join("p"),
    )
    .unwrap_err();
    assert!(matches!(
        e,
        MonitorError::InvalidConfig { field: "pid", .. }
    ));

    // The init refuses to run outside a fresh PID namespace.
    let st = Command::new(MONITOR)
        .args(["pod-init-run", "/x"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2));
}

#[test]
fn caller_descriptors_do_not_leak_into_the_init() {
    let dir = tmpdir();
    // A descriptor without close-on-exec, as a careless library in the daemon might leave.
    let leaky = nix::fcntl::open(
        &dir.path().join("leaky"),
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let pin = dir.path().join("pid");
    let init = spawn_pod_init(Path::new(MONITOR), &pin, None).unwrap();
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", init.pid))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).unwrap())
        .collect();
    stop_pod_init(&init, &pin).unwrap();
    drop(leaky);
    assert!(
        fds.iter().all(|p| p == Path::new("/dev/null")),
        "init fds: {fds:?}"
    );
    assert_eq!(fds.len(), 3);
}

#[test]
fn runc_containers_join_the_pinned_namespace() {
    let i = Init::start();
    let dir = tmpdir();
    let bundle = dir.path().join("bundle");
    make_busybox_rootfs(&bundle.join("rootfs"));
    let st = Command::new(runc())
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(st.success(), "runc spec failed");
    let id = format!("podinit-{}", std::process::id());
    let cfg_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "echo pid=$$; tr '\\0' ' ' < /proc/1/cmdline; echo; ps -o pid,args"
    ]);
    spec["root"]["path"] = bundle.join("rootfs").display().to_string().into();
    spec["linux"]["cgroupsPath"] = format!("/krio-monitor-podinit/{id}").into();
    for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "pid" {
            ns["path"] = i.pin.display().to_string().into();
        }
    }
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    // Another member of the pod, started through nsenter.
    let (ok, _) = in_ns(&i.pin, "(sleep 1000 >/dev/null 2>&1 &) ; exit 0");
    assert!(ok);
    let root = dir.path().join("runc-root");
    let out = Command::new(runc())
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new(runc())
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", &id])
        .output();
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(e.path().join("krio-monitor-podinit").join(&id));
        let _ = std::fs::remove_dir(e.path().join("krio-monitor-podinit"));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc run: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let pid_line = lines.next().unwrap();
    assert_ne!(pid_line, "pid=1", "the container must not be PID 1");
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("krio-pod-init pod-init-run "),
        "{stdout}"
    );
    assert!(
        stdout.contains("sleep 1000"),
        "the container does not see the other pod process:\n{stdout}"
    );
}

/// A user namespace mapping container ids 0..65536 to host ids 400000.., held by a `busybox sleep` that is
/// killed (and reaped) on drop.
struct UserNs {
    holder: std::process::Child,
}

impl UserNs {
    fn new() -> UserNs {
        let holder = Command::new("unshare")
            .args(["--user", "/bin/busybox", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let ns = UserNs { holder };
        let ours = std::fs::metadata("/proc/self/ns/user").unwrap().ino();
        // unshare(1) execs busybox in the new user namespace; map it from here (the parent namespace).
        wait_until(
            "the holder to be in a new user namespace",
            Duration::from_secs(10),
            || std::fs::metadata(ns.path()).is_ok_and(|m| m.ino() != ours),
        );
        for file in ["uid_map", "gid_map"] {
            std::fs::write(
                format!("/proc/{}/{file}", ns.holder.id()),
                "0 400000 65536\n",
            )
            .unwrap();
        }
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/user", self.holder.id()))
    }
}

impl Drop for UserNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The owner (user namespace inode) of the namespace `ns_ino`, from `lsns` (util-linux).
fn owner_of(kind: &str, ns_ino: u64) -> Option<u64> {
    let out = Command::new("lsns")
        .args([
            "--noheadings",
            "--raw",
            "--output",
            "NS,ONS",
            "--type",
            kind,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let v: Vec<u64> = l
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        (v.len() == 2 && v[0] == ns_ino).then(|| v[1])
    })
}

/// Runs `script` as root of the user namespace `userns`, in the PID namespace pinned at `pin`, with a /proc
/// of that namespace mounted (as runc does for a container of a pod in a user namespace).
fn in_userns_with_proc(userns: &Path, pin: &Path, script: &str) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--user={}", userns.display()))
        .arg(format!("--pid={}", pin.display()))
        .args([
            "unshare",
            "--mount",
            "--mount-proc",
            "/bin/busybox",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn an_init_started_for_a_user_namespace_holds_a_pid_namespace_that_namespace_owns() {
    let dir = tmpdir();
    let userns = UserNs::new();
    let userns_ino = std::fs::metadata(userns.path()).unwrap().ino();
    let pin = dir.path().join("pid");
    let init = spawn_pod_init(Path::new(MONITOR), &pin, Some(&userns.path())).unwrap();
    let running = Init {
        init,
        pin: pin.clone(),
        _dir: dir,
    };
    assert!(pod_init_running(&init));
    assert!(is_mounted(&pin), "pin is not a mount point");
    let pin_ino = std::fs::metadata(&pin).unwrap().ino();
    assert_eq!(
        std::fs::metadata(format!("/proc/{}/ns/pid", init.pid))
            .unwrap()
            .ino(),
        pin_ino
    );
    // The PID namespace belongs to the user namespace, and so does the init, with our uid (unmapped there).
    assert_eq!(owner_of("pid", pin_ino), Some(userns_ino));
    assert_eq!(
        std::fs::metadata(format!("/proc/{}/ns/user", init.pid))
            .unwrap()
            .ino(),
        userns_ino
    );
    // Forked from a process that had the launcher's pipe on stdin, it holds nothing but /dev/null.
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", init.pid))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).unwrap())
        .collect();
    assert!(
        fds.len() == 3 && fds.iter().all(|p| p == Path::new("/dev/null")),
        "init fds: {fds:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", init.pid)).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Uid:", "0", "0", "0", "0"])),
        "{status}"
    );

    // A member of the user namespace joins the PID namespace and mounts a /proc for it (which needs
    // CAP_SYS_ADMIN in the namespace's owner): it sees the init as PID 1, owned by an unmapped id.
    let out = in_userns_with_proc(
        &userns.path(),
        &pin,
        "cat /proc/self/uid_map; echo pid=$$; tr '\\0' ' ' < /proc/1/cmdline; echo; \
         grep ^Uid: /proc/1/status",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "400000", "65536"], "{stdout}");
    assert_ne!(lines[1], ["pid=1"], "{stdout}");
    assert_eq!(lines[2][..2], ["krio-pod-init", "pod-init-run"], "{stdout}");
    assert_eq!(
        lines[3],
        ["Uid:", "65534", "65534", "65534", "65534"],
        "{stdout}"
    );
    // With every capability in its user namespace it can neither stop nor kill the init (a namespace's init
    // ignores both from inside), nor trace it or look through it into our filesystem (the init is not dumpable
    // and its memory belongs to our user namespace).
    let out = in_userns_with_proc(
        &userns.path(),
        &pin,
        "grep ^CapEff: /proc/self/status; kill -STOP 1; kill -KILL 1; \
         ls /proc/1/root/ || echo no-root; ls /proc/1/fd/ || echo no-fd",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cap_eff = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    // CAP_KILL (5) and CAP_SYS_PTRACE (19).
    assert_eq!(cap_eff & (1 << 5 | 1 << 19), 1 << 5 | 1 << 19, "{stdout}");
    assert!(
        stdout.contains("no-root") && stdout.contains("no-fd"),
        "{stdout}"
    );
    assert!(pod_init_running(&init));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", init.pid)).unwrap();
    assert!(stat.contains(") S "), "not sleeping: {stat}");

    // Without the user namespace the PID namespace is ours, and its /proc cannot be mounted from inside.
    let other = Init::start();
    let out = in_userns_with_proc(&userns.path(), &other.pin, "true");
    assert!(
        !out.status.success(),
        "mounting /proc of a host-owned PID namespace"
    );

    stop_pod_init(&init, &pin).unwrap();
    assert!(!pin.exists());
    wait_until("the init to be gone", Duration::from_secs(10), || {
        !alive(init.pid)
    });
    drop(running);
}

#[test]
fn a_user_namespace_that_cannot_be_entered_fails_the_init_and_leaves_nothing() {
    let dir = tmpdir();
    let pin = dir.path().join("pid");
    for (userns, want) in [
        (PathBuf::from("/proc/self/ns/net"), "CLONE_NEWUSER"),
        (dir.path().join("missing"), "opening"),
    ] {
        let e = spawn_pod_init(Path::new(MONITOR), &pin, Some(&userns)).unwrap_err();
        match &e {
            MonitorError::PodInitFailed { stage, message, .. } => {
                assert_eq!(stage, "userns", "{e}");
                assert!(message.contains(want), "{e}");
            }
            _ => panic!("{userns:?}: {e}"),
        }
        assert!(!pin.exists(), "{}", pin.display());
    }
    let e = spawn_pod_init(Path::new(MONITOR), &pin, Some(Path::new("rel/user"))).unwrap_err();
    assert!(
        matches!(
            e,
            MonitorError::InvalidConfig {
                field: "userns",
                ..
            }
        ),
        "{e}"
    );
}
