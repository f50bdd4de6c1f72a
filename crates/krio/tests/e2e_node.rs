//! End to end: what a node needs from krio beyond CRI: children's environments built on purpose.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use krio_cri::v1 as cri;

/// Writes an executable through a child process, so this (multi-threaded) test process never holds
/// a write descriptor on a file that another thread's fork could carry into an exec (ETXTBSY).
fn write_executable(path: &Path, text: &str) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "writing {}",
        path.display()
    );
}

/// `NAME=value` entries of a NUL-separated environ file (or of `env` output lines).
fn env_of(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0 || *b == b'\n')
        .filter_map(|e| {
            let e = String::from_utf8_lossy(e);
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The environment variables a child may get from krio: the ones each child needs, nothing else.
fn assert_only(what: &str, env: &BTreeMap<String, String>, allowed: &[&str]) {
    let stray: Vec<&String> = env
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()) && !k.starts_with("CNI_"))
        .collect();
    assert!(stray.is_empty(), "{what} got {stray:?} (whole: {env:?})");
}

fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    out.sort();
    out
}

/// The container's and its monitor's pids, from the verbose status.
async fn pids(d: &Daemon, id: &str) -> (i32, i32) {
    let st = d
        .runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    (
        v["pid"].as_i64().unwrap() as i32,
        v["monitorPid"].as_i64().unwrap() as i32,
    )
}

/// Started the way systemd starts a `Type=notify` service (`NOTIFY_SOCKET` set) and with a stray
/// variable, krio still starts containers, and neither variable reaches runc, the monitor, a CNI
/// plugin or the container. A container that names `NOTIFY_SOCKET` in its own envs gets it.
#[tokio::test(flavor = "multi_thread")]
async fn children_get_a_built_environment_not_krios() {
    ensure_images();
    let mut d = Daemon::start().await;
    let dir = d.dir.path().to_path_buf();
    // A runtime wrapper and a CNI plugin that record their environment, then do the real work.
    let envdir = dir.join("envs");
    std::fs::create_dir_all(&envdir).unwrap();
    let wrapper = dir.join("runc-wrapper");
    write_executable(
        &wrapper,
        &format!(
            "#!/bin/sh\nenv > {envs}/runtime.$$\nexec runc \"$@\"\n",
            envs = envdir.display()
        ),
    );
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_executable(
        &bin.join("krio-envdump"),
        &format!(
            "#!/bin/sh\nenv > {envs}/cni.$CNI_COMMAND.$$\ncat > /dev/null\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\"}}'\nexit 0\n",
            envs = envdir.display()
        ),
    );
    std::fs::write(
        dir.join("cni/10-test.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "krio-e2e-envdump",
            "plugins": [{"type": "krio-envdump"}, {"type": "loopback"}]
        })
        .to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("krio.d")).unwrap();
    std::fs::write(
        dir.join("krio.d/50-env.toml"),
        format!(
            "[runtimes.runc]\npath = \"{}\"\n[cni]\nbin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
             [tracing]\nenabled = true\nendpoint = \"http://127.0.0.1:{}/v1/traces\"\n",
            wrapper.display(),
            bin.display(),
            free_port()
        ),
    )
    .unwrap();
    // A NOTIFY_SOCKET whose directory does not exist: runc given it fails every start.
    d.env = vec![
        (
            "NOTIFY_SOCKET".into(),
            dir.join("no-such-dir/notify.sock")
                .to_string_lossy()
                .into_owned(),
        ),
        ("KRIO_LEAK_CANARY".into(), "1".into()),
        // Read by krio's trace exporter (tracing is on here), never passed on.
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS".into(),
            "x-canary=1".into(),
        ),
    ];
    d.restart().await;
    let daemon_env = env_of(&std::fs::read(format!("/proc/{}/environ", d.pid().unwrap())).unwrap());
    assert_eq!(
        daemon_env.get("KRIO_LEAK_CANARY").map(String::as_str),
        Some("1")
    );
    assert!(daemon_env.contains_key("OTEL_EXPORTER_OTLP_TRACES_HEADERS"));
    assert!(
        d.log().contains("exporting traces over OTLP/HTTP"),
        "{}",
        d.log()
    );

    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "envs");
    let pod_id = run_pod(&d, &pod).await;
    // `sleep` itself as the process, so no shell adds its own variables.
    let sleeper = |name: &str| cri::ContainerConfig {
        command: vec!["sleep".into(), "100000".into()],
        ..container_config(name, &image("busybox"), "")
    };
    let plain = run_container(&d, &pod_id, &pod, sleeper("plain")).await;
    let mut asking = sleeper("asking");
    asking.envs.push(cri::KeyValue {
        key: "NOTIFY_SOCKET".into(),
        value: "/run/app/notify.sock".into(),
    });
    let asking = run_container(&d, &pod_id, &pod, asking).await;

    let mut rt = d.runtime().await;
    let (plain_pid, monitor_pid) = pids(&d, &plain).await;
    let (asking_pid, _) = pids(&d, &asking).await;

    let container = env_of(&std::fs::read(format!("/proc/{plain_pid}/environ")).unwrap());
    assert_only("the container", &container, &["PATH", "HOSTNAME", "HOME"]);
    let asked = env_of(&std::fs::read(format!("/proc/{asking_pid}/environ")).unwrap());
    assert_eq!(
        asked.get("NOTIFY_SOCKET").map(String::as_str),
        Some("/run/app/notify.sock"),
        "a container that asks for NOTIFY_SOCKET gets its own value"
    );
    assert!(!asked.contains_key("KRIO_LEAK_CANARY"));

    let monitor = env_of(&std::fs::read(format!("/proc/{monitor_pid}/environ")).unwrap());
    assert_only("the monitor", &monitor, &["PATH"]);

    // Stop and remove, so the runtime's delete and kill calls are recorded too.
    for id in [&plain, &asking] {
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: 0,
        })
        .await
        .unwrap();
    }
    remove_pod(&d, &pod_id).await;

    let runtime_calls = files_with_prefix(&envdir, "runtime.");
    // create (by the monitor), start, kill, delete (by the daemon) at least.
    assert!(runtime_calls.len() >= 4, "runtime calls {runtime_calls:?}");
    for f in &runtime_calls {
        // `env` in the wrapper adds PWD (the shell's) and SHLVL; `_` is the shell's too.
        assert_only(
            &format!("the runtime ({})", f.display()),
            &env_of(&std::fs::read(f).unwrap()),
            &["PATH", "PWD", "SHLVL", "_"],
        );
    }
    let cni_calls = files_with_prefix(&envdir, "cni.");
    assert!(
        cni_calls
            .iter()
            .any(|f| f.to_string_lossy().contains(".ADD."))
            && cni_calls
                .iter()
                .any(|f| f.to_string_lossy().contains(".DEL.")),
        "CNI calls {cni_calls:?}"
    );
    for f in &cni_calls {
        let env = env_of(&std::fs::read(f).unwrap());
        assert_only(
            &format!("a CNI plugin ({})", f.display()),
            &env,
            &["PATH", "PWD", "SHLVL", "_"],
        );
        for k in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
        ] {
            assert!(env.contains_key(k), "{} lacks {k}: {env:?}", f.display());
        }
    }
}

/// A unix datagram socket at a fresh abstract address, as systemd's notify socket; returns it and
/// the `NOTIFY_SOCKET` value naming it.
fn notify_socket(tag: &str) -> (std::os::unix::net::UnixDatagram, String) {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "krio-e2e-notify-{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    (sock, format!("@{name}"))
}

/// The next notification datagram (waits up to the socket's 30 s read timeout).
fn next_notification(sock: &std::os::unix::net::UnixDatagram, d: &Daemon) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| {
        panic!(
            "no notification: {e}; daemon log:\n{}",
            std::fs::read_to_string(d.dir.path().join("activated.log")).unwrap_or_default()
                + &d.log()
        )
    });
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A daemon started by this test in the manner of a service manager; killed when dropped.
struct Supervised(std::process::Child);

impl Supervised {
    /// Starts krio on `d`'s config through `sh`, which puts `passed` (if any) at fd 3, sets
    /// `LISTEN_PID` to its own pid (`$$`, krio's after `exec`) unless `listen_pid` says otherwise,
    /// and adds `env`.
    fn start(
        d: &Daemon,
        passed: Option<std::os::unix::net::UnixListener>,
        listen_pid: Option<&str>,
        env: &[(&str, &str)],
    ) -> Supervised {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.dir.path().join("activated.log"))
            .unwrap();
        let pid = listen_pid.map_or_else(|| "$$".to_string(), str::to_string);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "exec 3<&0 0</dev/null; LISTEN_PID={pid} exec \"$0\" \"$@\""
            ))
            .arg(env!("CARGO_BIN_EXE_krio"))
            .arg("--config")
            .arg(&d.config)
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        match passed {
            Some(l) => cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(l))),
            None => cmd.stdin(Stdio::null()),
        };
        Supervised(cmd.spawn().unwrap())
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0.id() as i32)
    }

    /// SIGTERM, then waits (up to 30 s) for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(std::time::Instant::now() < deadline, "krio ignored SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn version_on(socket: &Path) -> String {
    let mut c = krio_cri::v1::runtime_service_client::RuntimeServiceClient::new(
        connect(socket).await.unwrap(),
    );
    c.version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runtime_name
}

/// The test plays systemd for a `Type=notify` service: krio sends `READY=1` (with its pid) once
/// its socket serves and `STOPPING=1` when SIGTERM arrives.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_and_stopping_are_notified() {
    let mut d = Daemon::start().await;
    d.kill9();
    let (rx, addr) = notify_socket("ready");
    let mut krio = Supervised::start(&d, None, None, &[("NOTIFY_SOCKET", &addr)]);
    let ready = next_notification(&rx, &d);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", krio.pid())),
        "{ready:?}"
    );
    // READY=1 promises a serving socket: no polling needed.
    assert_eq!(version_on(&d.socket).await, "krio");
    let status = krio.terminate();
    let stopping = next_notification(&rx, &d);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(status.success(), "{status}");
}

/// Socket activation as sd_listen_fds(3) defines it: a listening socket at fd 3 with
/// `LISTEN_FDS=1` and `LISTEN_PID` = krio's pid is served instead of `listen`, and its file is
/// left in place on exit (the manager keeps it). With another `LISTEN_PID` the fds are not ours:
/// krio binds `listen` as usual.
#[tokio::test(flavor = "multi_thread")]
async fn a_passed_socket_is_served_when_listen_pid_is_ours() {
    let mut d = Daemon::start().await;
    d.kill9();
    let activated = d.dir.path().join("activated.sock");

    // LISTEN_PID names another process: the passed fd is ignored.
    let (rx, addr) = notify_socket("other-pid");
    let mut krio = Supervised::start(
        &d,
        Some(std::os::unix::net::UnixListener::bind(&activated).unwrap()),
        Some("1"),
        &[("LISTEN_FDS", "1"), ("NOTIFY_SOCKET", &addr)],
    );
    assert!(next_notification(&rx, &d).contains("READY=1"));
    assert_eq!(version_on(&d.socket).await, "krio");
    assert!(krio.terminate().success());
    assert!(!d.socket.exists(), "krio removes the socket it made");
    std::fs::remove_file(&activated).unwrap();

    let (rx, addr) = notify_socket("ours");
    let mut krio = Supervised::start(
        &d,
        Some(std::os::unix::net::UnixListener::bind(&activated).unwrap()),
        None,
        &[
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "cri"),
            ("NOTIFY_SOCKET", &addr),
        ],
    );
    assert!(next_notification(&rx, &d).contains("READY=1"));
    assert_eq!(version_on(&activated).await, "krio");
    assert!(
        !d.socket.exists(),
        "with a passed socket krio binds none of its own"
    );
    assert!(krio.terminate().success());
    assert!(next_notification(&rx, &d).contains("STOPPING=1"));
    assert!(
        activated.exists(),
        "the manager's socket file is left alone"
    );
}

/// Polls `cond` on the daemon log written after byte `from`, for up to 20 s.
async fn wait_log(d: &Daemon, from: usize, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = d.log();
        let new = log.get(from..).unwrap_or_default().to_string();
        if cond(&new) {
            return new;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what} in the log:\n{new}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `log_format = "json"` writes one JSON object per line; SIGHUP applies a new `log_level` at
/// once, names the changed settings that need a restart, and leaves everything as it was when
/// the files no longer parse.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_and_sighup_reloads_the_log_level() {
    let mut d = Daemon::start().await;
    let dropin_dir = d.dir.path().join("krio.d");
    std::fs::create_dir_all(&dropin_dir).unwrap();
    let dropin = dropin_dir.join("60-log.toml");
    std::fs::write(&dropin, "log_level = \"info\"\nlog_format = \"json\"\n").unwrap();
    let from = d.log().len();
    d.restart().await;
    // ListPodSandbox: an RPC whose success is logged at debug.
    let list = |d: &Daemon| {
        let socket = d.socket.clone();
        async move {
            krio_cri::v1::runtime_service_client::RuntimeServiceClient::new(
                connect(&socket).await.unwrap(),
            )
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap();
        }
    };
    list(&d).await;
    let started = wait_log(&d, from, "start line", |l| l.contains("serving CRI")).await;
    for line in started.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    // At info, a served RPC logs nothing (its line is at debug).
    assert!(!d.log()[from..].contains("\"rpc\""), "{}", &d.log()[from..]);

    let pid = nix::unistd::Pid::from_raw(d.pid().unwrap());
    std::fs::write(
        &dropin,
        "log_level = \"krio_server=debug,info\"\nlog_format = \"text\"\ncgroup_parent = \"/elsewhere\"\n",
    )
    .unwrap();
    let from = d.log().len();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloaded = wait_log(&d, from, "not_reloaded warning", |l| {
        l.contains("not_reloaded")
    })
    .await;
    assert!(
        reloaded.contains("configuration reloaded") && reloaded.contains("log_level"),
        "{reloaded}"
    );
    let warning = reloaded
        .lines()
        .find(|l| l.contains("not_reloaded"))
        .unwrap();
    assert!(
        warning.contains("cgroup_parent") && warning.contains("log_format"),
        "{warning}"
    );
    // The new level is in force: the RPC's debug line appears (still as JSON: the format
    // needs a restart).
    let from = d.log().len();
    list(&d).await;
    let rpc = wait_log(&d, from, "debug line of the RPC", |l| {
        l.contains("\"rpc\":\"ListPodSandbox\"")
    })
    .await;
    let line = rpc
        .lines()
        .find(|l| l.contains("\"rpc\":\"ListPodSandbox\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "DEBUG", "{line}");

    // A broken file: an error naming it, and the daemon goes on as it was.
    std::fs::write(&dropin, "log_level = \n").unwrap();
    let from = d.log().len();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let err = wait_log(&d, from, "reload error", |l| l.contains("not reloaded")).await;
    assert!(err.contains("60-log.toml"), "{err}");
    assert_eq!(version_on(&d.socket).await, "krio");
}

/// `[container]` defaults reach the container: `pids_limit` its cgroup, `default_sysctls` its
/// namespaces (the pod's own sysctl wins), `default_ulimits` its process.
#[tokio::test(flavor = "multi_thread")]
async fn container_defaults_take_effect() {
    ensure_images();
    let mut d = Daemon::start().await;
    let dropin_dir = d.dir.path().join("krio.d");
    std::fs::create_dir_all(&dropin_dir).unwrap();
    std::fs::write(
        dropin_dir.join("70-container.toml"),
        "[container]\npids_limit = 123\ndefault_ulimits = [\"nofile=1111:2222\", \"nproc=77:88\"]\n\
         [container.default_sysctls]\n\"net.ipv4.ping_group_range\" = \"0 2147483647\"\n\"kernel.msgmax\" = \"4321\"\n",
    )
    .unwrap();
    d.restart().await;
    pull(&d, &image("busybox")).await;
    let mut pod = pod_config(&d, "defaults");
    pod.linux
        .get_or_insert_with(Default::default)
        .sysctls
        .insert("kernel.msgmax".into(), "8765".into());
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "defaults",
            &image("busybox"),
            "echo pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max); \
             echo ping=$(cat /proc/sys/net/ipv4/ping_group_range | tr -s '\\t ' ' '); \
             echo msgmax=$(cat /proc/sys/kernel/msgmax); \
             echo nofile=$(ulimit -Sn):$(ulimit -Hn); echo nproc=$(ulimit -Su):$(ulimit -Hu)",
        ),
    )
    .await;
    let st = wait_exited(&d, &id).await;
    let lines = log_lines(&st);
    for want in [
        "pids=123",
        "ping=0 2147483647",
        "msgmax=8765",
        "nofile=1111:2222",
        "nproc=77:88",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want} not in {lines:?}");
    }
    remove_pod(&d, &pod_id).await;
}

/// `image.pinned_images`: matching images are listed and reported with `pinned`, others not.
#[tokio::test(flavor = "multi_thread")]
async fn pinned_images_are_reported_pinned() {
    ensure_images();
    let mut d = Daemon::start().await;
    let dropin_dir = d.dir.path().join("krio.d");
    std::fs::create_dir_all(&dropin_dir).unwrap();
    // One exact reference, one prefix pattern.
    let layered = image("layered");
    let prefix = &layered[..layered.len() - 3];
    std::fs::write(
        dropin_dir.join("80-pinned.toml"),
        format!(
            "[image]\npinned_images = [\"{}\", \"{prefix}*\"]\n",
            image("busybox")
        ),
    )
    .unwrap();
    d.restart().await;
    let busybox = pull(&d, &image("busybox")).await;
    let oci = pull(&d, &image("busybox-oci")).await;
    let layered_id = pull(&d, &layered).await;
    let listed = d
        .images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let pinned = |id: &str| listed.iter().find(|i| i.id == id).unwrap().pinned;
    assert!(pinned(&busybox), "exact reference");
    assert!(pinned(&layered_id), "prefix pattern");
    if oci != busybox {
        assert!(!pinned(&oci), "not named");
    }
    let status = d
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image("busybox"),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.unwrap().pinned);
}

/// krioctl, built beside krio by `cargo build --workspace --bins`.
fn krioctl(d: &Daemon, args: &[&str]) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_krio")).with_file_name("krioctl");
    assert!(
        bin.exists(),
        "{} missing: cargo build --workspace --bins",
        bin.display()
    );
    let out = Command::new(bin)
        .arg("-r")
        .arg(&d.socket)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "krioctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `krioctl stats`, `statsp` and `events` against krio.
#[tokio::test(flavor = "multi_thread")]
async fn krioctl_stats_statsp_and_events() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "statsctl");
    let pod_id = run_pod(&d, &pod).await;
    let sleeper = |name: &str| cri::ContainerConfig {
        command: vec!["sleep".into(), "100000".into()],
        ..container_config(name, &image("busybox"), "")
    };
    let id = run_container(&d, &pod_id, &pod, sleeper("first")).await;

    let v: serde_json::Value =
        serde_json::from_str(&krioctl(&d, &["stats", "-o", "json"])).unwrap();
    let stats = v["stats"].as_array().unwrap();
    assert!(
        stats.iter().any(|s| s["attributes"]["id"] == id.as_str()
            && s["memory"]["workingSetBytes"]["value"].as_u64().is_some()),
        "{v}"
    );
    let table = krioctl(&d, &["stats", "--id", &id[..12]]);
    assert!(
        table.starts_with("CONTAINER") && table.contains("first"),
        "{table}"
    );
    let yaml = krioctl(&d, &["stats", "-o", "yaml", "-p", &pod_id]);
    assert!(yaml.contains(&id), "{yaml}");
    let v: serde_json::Value =
        serde_json::from_str(&krioctl(&d, &["statsp", "-o", "json"])).unwrap();
    assert!(
        v["stats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["attributes"]["id"] == pod_id.as_str()),
        "{v}"
    );
    let table = krioctl(&d, &["statsp"]);
    assert!(
        table.starts_with("POD") && table.contains("statsctl"),
        "{table}"
    );

    // events: a subscriber may attach after the first container's events; start containers
    // until it has seen three.
    let bin = Path::new(env!("CARGO_BIN_EXE_krio")).with_file_name("krioctl");
    let mut events = Command::new(bin)
        .arg("-r")
        .arg(&d.socket)
        .args(["events", "--count", "3", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut n = 0;
    while events.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "krioctl events saw too few events"
        );
        n += 1;
        run_container(&d, &pod_id, &pod, sleeper(&format!("more{n}"))).await;
    }
    let out = events.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines
        .iter()
        .any(|e| e["containerEventType"] == "CONTAINER_STARTED_EVENT"));
    assert!(lines
        .iter()
        .all(|e| e["containerId"].as_str().is_some_and(|c| c.len() == 64)));
    remove_pod(&d, &pod_id).await;
}

/// `container.log_line_max` splits longer lines into partial CRI log records;
/// `container.no_pivot` reaches `runtime create` (seen through a wrapper) and the container runs.
#[tokio::test(flavor = "multi_thread")]
async fn log_line_max_and_no_pivot_take_effect() {
    ensure_images();
    let mut d = Daemon::start().await;
    let dir = d.dir.path().to_path_buf();
    let args_dir = dir.join("args");
    std::fs::create_dir_all(&args_dir).unwrap();
    let wrapper = dir.join("runc-args");
    write_executable(
        &wrapper,
        &format!(
            "#!/bin/sh\necho \"$@\" > {}/call.$$\nexec runc \"$@\"\n",
            args_dir.display()
        ),
    );
    std::fs::create_dir_all(dir.join("krio.d")).unwrap();
    std::fs::write(
        dir.join("krio.d/90-monitor.toml"),
        format!(
            "[runtimes.runc]\npath = \"{}\"\n[container]\nlog_line_max = 10\nno_pivot = true\n",
            wrapper.display()
        ),
    )
    .unwrap();
    d.restart().await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "linemax");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "linemax",
            &image("busybox"),
            "echo abcdefghijklmnopqrstuvwxyz; echo short",
        ),
    )
    .await;
    let st = wait_exited(&d, &id).await;
    assert_eq!(st.exit_code, 0);
    let records: Vec<(String, String)> = read_cri_log(Path::new(&st.log_path))
        .into_iter()
        .map(|(_, tag, text)| (tag, text))
        .collect();
    let want = [
        ("P", "abcdefghij"),
        ("P", "klmnopqrst"),
        ("F", "uvwxyz"),
        ("F", "short"),
    ];
    assert_eq!(
        records,
        want.map(|(t, m)| (t.to_string(), m.to_string())).to_vec()
    );
    let creates: Vec<String> = std::fs::read_dir(&args_dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .filter(|a| a.split_whitespace().any(|w| w == "create"))
        .collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(
        creates[0].split_whitespace().any(|w| w == "--no-pivot"),
        "{creates:?}"
    );
    remove_pod(&d, &pod_id).await;
}

/// `container.seccomp_profile` replaces the built-in profile for `RuntimeDefault` containers
/// only: with a profile denying mkdir, a RuntimeDefault container cannot make a directory and
/// an unconfined one can.
#[tokio::test(flavor = "multi_thread")]
async fn seccomp_profile_serves_runtime_default() {
    ensure_images();
    let mut d = Daemon::start().await;
    let dir = d.dir.path().to_path_buf();
    let profile = dir.join("seccomp.json");
    std::fs::write(
        &profile,
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        })
        .to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("krio.d")).unwrap();
    std::fs::write(
        dir.join("krio.d/95-seccomp.toml"),
        format!("[container]\nseccomp_profile = \"{}\"\n", profile.display()),
    )
    .unwrap();
    d.restart().await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "seccomp");
    let pod_id = run_pod(&d, &pod).await;
    let script = "mkdir /tmp/made 2>/dev/null && echo made || echo denied";
    let mut confined = container_config("confined", &image("busybox"), script);
    confined
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let confined = run_container(&d, &pod_id, &pod, confined).await;
    let free = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("free", &image("busybox"), script),
    )
    .await;
    assert_eq!(log_lines(&wait_exited(&d, &confined).await), ["denied"]);
    assert_eq!(log_lines(&wait_exited(&d, &free).await), ["made"]);
    remove_pod(&d, &pod_id).await;

    // A profile that does not parse stops the daemon at start, naming the file.
    std::fs::write(&profile, "{not json").unwrap();
    d.kill9();
    let out = Command::new(env!("CARGO_BIN_EXE_krio"))
        .arg("--config")
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seccomp.json"), "{err}");
}

/// `container.log_size_max`: a container printing far more than the limit leaves a log file no
/// larger than the limit, holding its newest lines (the file was truncated and written on).
/// `container.default_capabilities`: a container starts with exactly the configured set, in its
/// bounding and effective sets.
#[tokio::test(flavor = "multi_thread")]
async fn log_size_max_and_default_capabilities_take_effect() {
    ensure_images();
    let mut d = Daemon::start().await;
    let dir = d.dir.path().to_path_buf();
    std::fs::create_dir_all(dir.join("krio.d")).unwrap();
    std::fs::write(
        dir.join("krio.d/91-logsize.toml"),
        "[container]\nlog_size_max = 20000\ndefault_capabilities = [\"CHOWN\", \"cap_kill\", \"NET_BIND_SERVICE\"]\n",
    )
    .unwrap();
    d.restart().await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "logsize");
    let pod_id = run_pod(&d, &pod).await;
    // About 3000 * 75 bytes of records: over 10 times the limit.
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "chatty",
            &image("busybox"),
            "i=0; while [ $i -lt 3000 ]; do echo \"line $i of the chatty container\"; i=$((i+1)); done",
        ),
    )
    .await;
    let st = wait_exited(&d, &id).await;
    assert_eq!(st.exit_code, 0);
    let size = std::fs::metadata(&st.log_path).unwrap().len();
    assert!(
        size <= 20000,
        "log is {size} bytes, over log_size_max 20000"
    );
    // A batch that would pass the limit truncates the file first (as conmon does), so the file
    // holds what came after the last truncation: from one record up to the limit's worth,
    // depending on where the last truncation fell (record sizes vary with the timestamps).
    let records = read_cri_log(Path::new(&st.log_path));
    assert!(!records.is_empty(), "the log kept no record");
    assert_eq!(
        records.last().map(|r| r.2.as_str()),
        Some("line 2999 of the chatty container")
    );
    assert!(
        records
            .iter()
            .all(|r| r.2 != "line 0 of the chatty container"),
        "the oldest line survived: {records:?}"
    );
    // Lines are whole records in order: each follows the one before.
    let numbers: Vec<u32> = records
        .iter()
        .map(|r| r.2.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");

    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "caps",
            &image("busybox"),
            "grep -E '^Cap(Bnd|Eff|Prm)' /proc/self/status",
        ),
    )
    .await;
    let st = wait_exited(&d, &id).await;
    let lines = log_lines(&st);
    // CHOWN = bit 0, KILL = bit 5, NET_BIND_SERVICE = bit 10.
    for cap in ["CapPrm", "CapEff", "CapBnd"] {
        let want = format!("{cap}:\t0000000000000421");
        assert!(lines.contains(&want), "{want:?} not in {lines:?}");
    }
    remove_pod(&d, &pod_id).await;
}

/// Every file below `dir` with its size, to show a tree was left unchanged.
fn tree(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), if m.is_file() { m.len() } else { 0 }));
        }
    }
    out.sort();
    out
}

/// `image.additional_stores`: a daemon whose own store is empty lists, runs and reports pinned
/// the images of another krio's store, refuses to remove them, pulls one of them without
/// unpacking a layer, and never changes anything in that store.
#[tokio::test(flavor = "multi_thread")]
async fn additional_image_stores_serve_images_read_only() {
    ensure_images();
    let mut d = Daemon::start().await;
    let busybox = pull(&d, &image("busybox")).await;
    let shared = d.root.clone();
    let before = tree(&shared.join("images"))
        .into_iter()
        .chain(tree(&shared.join("layers")))
        .chain(tree(&shared.join("blobs")))
        .collect::<Vec<_>>();
    let own_root = d.dir.path().join("root2");
    std::fs::create_dir_all(d.dir.path().join("krio.d")).unwrap();
    std::fs::write(
        d.dir.path().join("krio.d/92-stores.toml"),
        format!(
            "root = \"{}\"\n[image]\nadditional_stores = [\"{}\"]\n",
            own_root.display(),
            shared.display()
        ),
    )
    .unwrap();
    d.restart().await;

    let listed = d
        .images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let img = listed
        .iter()
        .find(|i| i.id == busybox)
        .unwrap_or_else(|| panic!("{busybox} not listed: {listed:?}"));
    assert!(img.pinned, "an image of a read-only store is pinned");
    assert!(img.repo_tags.contains(&image("busybox")), "{img:?}");

    let pod = pod_config(&d, "stores");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("ro", &image("busybox"), "echo from the shared store"),
    )
    .await;
    let st = wait_exited(&d, &id).await;
    assert_eq!(log_lines(&st), ["from the shared store"]);
    remove_pod(&d, &pod_id).await;

    let err = d
        .images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: busybox.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("read-only"), "{err:?}");

    // A pull of the same image stores its manifest and config here, and no layer.
    assert_eq!(pull(&d, &image("busybox")).await, busybox);
    let own_layers = tree(&own_root.join("layers"));
    assert!(
        own_layers.is_empty(),
        "layers unpacked again: {own_layers:?}"
    );
    d.images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: busybox.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // Removing the copy stored here shows the shared store's image again, without a restart.
    let listed = d
        .images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let img = listed
        .iter()
        .find(|i| i.id == busybox)
        .unwrap_or_else(|| panic!("{busybox} hidden after its local copy went: {listed:?}"));
    assert!(img.pinned, "{img:?}");
    let after = tree(&shared.join("images"))
        .into_iter()
        .chain(tree(&shared.join("layers")))
        .chain(tree(&shared.join("blobs")))
        .collect::<Vec<_>>();
    assert_eq!(before, after, "the read-only store changed");
}

/// `krioctl status`: readiness, handlers, the CNI network, counts, and the calls and creations
/// in flight (a creation held back by `KRIO_TEST_DELAY_CREATE_MS` is seen while it runs), from
/// the verbose Status RPC.
#[tokio::test(flavor = "multi_thread")]
async fn krioctl_status_shows_what_the_daemon_does() {
    ensure_images();
    let d =
        Daemon::start_with_env(Network::Loopback, &[("KRIO_TEST_DELAY_CREATE_MS", "1500")]).await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "status");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        cri::ContainerConfig {
            command: vec!["sleep".into(), "100000".into()],
            ..container_config("sleeper", &image("busybox"), "")
        },
    )
    .await;

    let text = krioctl(&d, &["status"]);
    for want in [
        "RuntimeReady        true",
        "NetworkReady        true",
        "Handler             runc ",
        "Network             krio-e2e-lo from ",
        "(plugins: loopback)",
        "Pods                1 (SANDBOX_READY 1)",
        "Containers          1 (CONTAINER_RUNNING 1)",
        "Images              1",
        "Config:",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&krioctl(&d, &["status", "-o", "json"])).unwrap();
    assert_eq!(v["config"]["listen"], d.socket.display().to_string(), "{v}");
    assert_eq!(v["handlers"][0]["ready"], true, "{v}");
    assert_eq!(
        v["counts"]["containersByState"]["CONTAINER_RUNNING"], 1,
        "{v}"
    );
    // The Status call itself is in flight while it is answered.
    let calls = v["inflight"]["calls"].as_array().unwrap();
    assert!(calls.iter().any(|c| c["rpc"] == "Status"), "{v}");

    // A pod creation held back is seen in flight, as a call and as a creation.
    let mut rt = d.runtime().await;
    let slow = pod_config(&d, "slow");
    let waiting = tokio::spawn(async move {
        rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(slow),
            runtime_handler: String::new(),
        })
        .await
    });
    let seen = d
        .poll(
            "RunPodSandbox in krioctl status",
            std::time::Duration::from_secs(10),
            || {
                let v: serde_json::Value =
                    serde_json::from_str(&krioctl(&d, &["status", "-o", "json"])).unwrap();
                let running = v["inflight"]["calls"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["rpc"] == "RunPodSandbox"))
                    && v["inflight"]["podCreations"].as_array().is_some_and(|p| {
                        p.iter()
                            .any(|n| n.as_str().is_some_and(|n| n.starts_with("slow_")))
                    });
                std::future::ready(running.then_some(v))
            },
        )
        .await;
    assert!(
        seen["inflight"]["calls"][0]["age_ms"].as_u64().is_some(),
        "{seen}"
    );
    let slow_id = waiting.await.unwrap().unwrap().into_inner().pod_sandbox_id;
    let v: serde_json::Value =
        serde_json::from_str(&krioctl(&d, &["status", "-o", "json"])).unwrap();
    assert!(
        v["inflight"]["podCreations"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert_eq!(v["counts"]["pods"], 2, "{v}");
    let _ = id;
    remove_pod(&d, &slow_id).await;
    remove_pod(&d, &pod_id).await;
}

/// `GET path` over HTTP/1.0; the body of a 200 answer, else a panic with the answer.
fn http_get_ok(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    assert!(head.contains(" 200 "), "GET {path}: {head}");
    body.to_string()
}

/// Every metric the Grafana dashboard `contrib/grafana/krio.json` queries exists in a scrape of
/// a running krio that pulled an image and ran a pod; and the pull is counted.
#[tokio::test(flavor = "multi_thread")]
async fn grafana_dashboard_queries_only_metrics_krio_serves() {
    ensure_images();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/grafana/krio.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Every `krio_*` name in a query (`expr`) or a template variable's `query`.
    fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    queries(&dash, &mut exprs);
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|e| {
            e.match_indices("krio_")
                .map(|(i, _)| {
                    e[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    for wanted in [
        "krio_cri_requests_total",
        "krio_cri_request_duration_seconds_bucket",
        "krio_sandboxes",
        "krio_containers",
        "krio_image_pull_bytes_total",
        "krio_image_pull_duration_seconds_bucket",
        "krio_container_oom_kills_total",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "the dashboard does not query {wanted}"
        );
    }

    let mut d = Daemon::start().await;
    d.extra_args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    d.restart().await;
    let addr = d.metrics_address().await.to_string();
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "dashboard");
    let pod_id = run_pod(&d, &pod).await;
    let body = http_get_ok(&addr, "/metrics");
    let served: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !served.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not in:\n{body}"
    );
    assert!(body.contains("krio_image_pulls_total 1\n"), "{body}");
    assert!(
        body.contains("krio_image_pull_duration_seconds_count 1\n"),
        "{body}"
    );
    assert!(!body.contains("krio_image_pull_bytes_total 0\n"), "{body}");
    remove_pod(&d, &pod_id).await;
}
