//! End to end: hardening against hostile or careless requests (issue 13): log paths that are
//! links, FIFOs or directories; the signal state containers start with; stop signals and
//! stops that shorten a stop in progress; ExecSync's process trees and bounded output; and
//! requests that used to be rewritten without a word.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use krio_cri::v1 as cri;

/// A file outside every directory krio may write to, with known content; `unchanged` checks
/// it still holds exactly that.
struct Planted {
    _dir: tempfile::TempDir,
    file: PathBuf,
    absent: PathBuf,
    content: Vec<u8>,
}

impl Planted {
    fn new() -> Planted {
        let dir = tempfile::Builder::new()
            .prefix("krio-planted-")
            .tempdir_in("/tmp")
            .unwrap();
        let file = dir.path().join("target.txt");
        let content = format!("planted {}\n", std::process::id()).into_bytes();
        std::fs::write(&file, &content).unwrap();
        let absent = dir.path().join("absent.txt");
        Planted {
            _dir: dir,
            file,
            absent,
            content,
        }
    }

    /// The planted file is byte for byte as planted, and the absent one was never created.
    fn assert_unchanged(&self) {
        assert_eq!(std::fs::read(&self.file).unwrap(), self.content);
        assert!(
            !self.absent.exists(),
            "{} was created",
            self.absent.display()
        );
        let names: Vec<_> = std::fs::read_dir(self.file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}

/// `status` lines of a `/proc/<pid>/status` text, e.g. `SigBlk`.
fn status_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

async fn exec(
    d: &Daemon,
    id: &str,
    script: &str,
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    d.runtime()
        .await
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_start_with_no_blocked_or_ignored_signals() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    for mode in [cri::NamespaceMode::Container, cri::NamespaceMode::Pod] {
        let pod = with_pid_mode(pod_config(&d, &format!("sig{}", mode as i32)), mode);
        let pod_id = run_pod(&d, &pod).await;
        let mut config = container_config("status", &image("busybox"), "");
        config.command = vec!["cat".into(), "/proc/self/status".into()];
        let id = run_container(&d, &pod_id, &pod, config).await;
        let st = wait_exited(&d, &id).await;
        assert_eq!(st.exit_code, 0);
        let text = log_lines(&st).join("\n");
        assert_eq!(
            status_field(&text, "SigBlk"),
            Some("0000000000000000"),
            "{text}"
        );
        assert_eq!(
            status_field(&text, "SigIgn"),
            Some("0000000000000000"),
            "{text}"
        );
        // An exec'd process starts clean too.
        let long = run_container(
            &d,
            &pod_id,
            &pod,
            container_config("long", &image("busybox"), "sleep 1000"),
        )
        .await;
        let out = d
            .runtime()
            .await
            .exec_sync(cri::ExecSyncRequest {
                container_id: long.clone(),
                cmd: vec!["cat".into(), "/proc/self/status".into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        eprintln!(
            "daemon: {}",
            std::fs::read_to_string(format!("/proc/{}/status", d.pid().unwrap()))
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("Sig"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            status_field(&text, "SigBlk"),
            Some("0000000000000000"),
            "{text}"
        );
        assert_eq!(
            status_field(&text, "SigIgn"),
            Some("0000000000000000"),
            "{text}"
        );
        remove_pod(&d, &pod_id).await;
    }
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
}

/// Polls `path` until it contains `text` (up to 30 s).
async fn wait_for_log(path: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = std::fs::read_to_string(path).unwrap_or_default();
        if now.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never appeared in {}: {now:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn reopen(d: &Daemon, id: &str) -> Result<(), tonic::Status> {
    d.runtime()
        .await
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.to_string(),
        })
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread")]
async fn log_paths_that_are_links_fifos_or_directories_are_refused() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let planted = Planted::new();
    let pod = pod_config(&d, "logpaths");
    let pod_id = run_pod(&d, &pod).await;
    let logs = PathBuf::from(&pod.log_directory);
    std::fs::create_dir_all(&logs).unwrap();
    std::os::unix::fs::symlink(&planted.file, logs.join("link.log")).unwrap();
    std::os::unix::fs::symlink(&planted.absent, logs.join("dangling.log")).unwrap();
    std::os::unix::fs::symlink(planted.file.parent().unwrap(), logs.join("dirlink")).unwrap();
    nix::unistd::mkfifo(
        &logs.join("fifo.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir(logs.join("dir.log")).unwrap();

    // CreateContainer: each planted path is refused at once, naming log_path.
    for log_path in [
        "link.log",
        "dangling.log",
        "dirlink/target.txt",
        "dirlink/new.log",
        "fifo.log",
        "dir.log",
    ] {
        let mut config = container_config("c", &image("busybox"), "echo leaked");
        config.log_path = log_path.to_string();
        let started = Instant::now();
        let err = try_create(&d, &pod_id, Some(&pod), config)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{log_path}: {err:?}"
        );
        assert!(err.message().contains("log_path"), "{log_path}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{log_path}");
    }
    let mut config = container_config("c", &image("busybox"), "echo leaked");
    config.log_path = "../escape.log".to_string();
    let err = try_create(&d, &pod_id, Some(&pod), config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("log_path"), "{err:?}");
    planted.assert_unchanged();

    // ReopenContainerLog: the rotated file swapped for a link, a FIFO or a directory is
    // refused, and the monitor keeps writing to the old file.
    let mut config = container_config(
        "ticker",
        &image("busybox"),
        "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.05; done",
    );
    config.log_path = "ticker/0.log".to_string();
    let id = run_container(&d, &pod_id, &pod, config).await;
    let log = logs.join("ticker/0.log");
    wait_for_log(&log, "tick-2").await;
    let rotated = logs.join("ticker/0.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    for plant in ["link", "dangling", "fifo", "dir"] {
        match plant {
            "link" => std::os::unix::fs::symlink(&planted.file, &log).unwrap(),
            "dangling" => std::os::unix::fs::symlink(&planted.absent, &log).unwrap(),
            "fifo" => {
                nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }
            _ => std::fs::create_dir(&log).unwrap(),
        }
        let started = Instant::now();
        let err = reopen(&d, &id).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{plant}: {err:?}"
        );
        assert!(err.message().contains("log_path"), "{plant}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{plant}");
        // Still logging, to the old file.
        let before = std::fs::metadata(&rotated).unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&rotated).unwrap().len() == before {
            assert!(
                Instant::now() < deadline,
                "{plant}: the old log stopped growing"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if plant == "dir" {
            std::fs::remove_dir(&log).unwrap();
        } else {
            std::fs::remove_file(&log).unwrap();
        }
    }
    // An intermediate component swapped for a link is refused too.
    std::fs::rename(logs.join("ticker"), logs.join("ticker.old")).unwrap();
    std::os::unix::fs::symlink(planted.file.parent().unwrap(), logs.join("ticker")).unwrap();
    let err = reopen(&d, &id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    std::fs::remove_file(logs.join("ticker")).unwrap();
    std::fs::create_dir(logs.join("ticker")).unwrap();
    // With the path clear again, reopening works and the new file gets the output.
    reopen(&d, &id).await.unwrap();
    wait_for_log(&log, "tick-").await;
    assert_eq!(
        status(&d, &id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    planted.assert_unchanged();
    remove_pod(&d, &pod_id).await;
    planted.assert_unchanged();
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_images_stop_signal_stops_the_container_cleanly() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("stopsignal")).await;
    let planted = Planted::new();
    let pod = pod_config(&d, "stopsig");
    let pod_id = run_pod(&d, &pod).await;
    let mut config = container_config("usr1", &image("stopsignal"), "");
    config.command.clear();
    let id = run_container(&d, &pod_id, &pod, config).await;
    let log = PathBuf::from(status(&d, &id).await.log_path);
    wait_for_log(&log, "ready").await;
    let started = Instant::now();
    d.runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 60,
        })
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
    let st = status(&d, &id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 0, "{st:?}");
    assert!(log_lines(&st).contains(&"got-usr1".to_string()));
    assert_eq!(st.stop_signal, cri::Signal::Sigusr1 as i32);

    // The CRI stop_signal overrides the image's: SIGINT ends the shell (exit 130) at once.
    let mut config = container_config("int", &image("stopsignal"), "");
    config.command.clear();
    config.stop_signal = cri::Signal::Sigint as i32;
    let id = run_container(&d, &pod_id, &pod, config).await;
    let log = PathBuf::from(status(&d, &id).await.log_path);
    wait_for_log(&log, "ready").await;
    assert_eq!(
        status(&d, &id).await.stop_signal,
        cri::Signal::Sigint as i32
    );
    let started = Instant::now();
    d.runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 60,
        })
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let st = status(&d, &id).await;
    assert_eq!(st.exit_code, 128 + 2, "{st:?}");
    // An unknown enum value is refused, naming the field.
    let mut config = container_config("bad", &image("stopsignal"), "");
    config.stop_signal = 999;
    let err = try_create(&d, &pod_id, Some(&pod), config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("stop_signal"), "{err:?}");
    remove_pod(&d, &pod_id).await;
    planted.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shorter_stop_shortens_the_stop_in_progress() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let planted = Planted::new();
    let pod = pod_config(&d, "stop2");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "stubborn",
            &image("busybox"),
            "trap 'echo got-term' TERM; echo ready; while true; do sleep 0.2; done",
        ),
    )
    .await;
    let log = PathBuf::from(status(&d, &id).await.log_path);
    wait_for_log(&log, "ready").await;
    let mut rt = d.runtime().await;
    let first = {
        let mut rt = rt.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = rt
                .stop_container(cri::StopContainerRequest {
                    container_id: id,
                    timeout: 300,
                })
                .await;
            (r, started.elapsed())
        })
    };
    // The first stop is waiting once its signal arrived.
    wait_for_log(&log, "got-term").await;
    let started = Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the second stop took {:?}",
        started.elapsed()
    );
    let (r, took) = tokio::time::timeout(Duration::from_secs(15), first)
        .await
        .expect("the first stop returns too")
        .unwrap();
    r.unwrap();
    assert!(took < Duration::from_secs(30), "{took:?}");
    let st = status(&d, &id).await;
    assert_eq!(st.exit_code, 137, "{st:?}");
    remove_pod(&d, &pod_id).await;
    planted.assert_unchanged();
}

/// Lines of `ps -o args` inside the container that are exactly `needle`.
async fn ps_lines(d: &Daemon, id: &str, needle: &str) -> Vec<String> {
    let out = exec(d, id, "ps -o args", 10).await.unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim() == needle)
        .map(str::to_string)
        .collect()
}

/// VmHWM (peak resident set) of `pid`, in KiB.
fn vm_hwm_kib(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status_field(&text, "VmHWM")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_kills_its_tree_returns_promptly_and_bounds_output() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let planted = Planted::new();
    let pod = pod_config(&d, "execs");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("long", &image("busybox"), "sleep 1000"),
    )
    .await;

    // A timed-out exec takes its whole process tree with it.
    let err = exec(&d, &id, "sleep 100 & sleep 100", 2).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = ps_lines(&d, &id, "sleep 100").await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A command that leaves a child in the background answers as soon as it exits.
    let started = Instant::now();
    let out = exec(&d, &id, "sleep 300 & echo started", 30).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    assert_eq!(out.exit_code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // 1 GiB of output: the reply is cut at the limit, the daemon's memory barely moves, and
    // the container keeps running.
    let pid = d.pid().unwrap();
    let before = vm_hwm_kib(pid);
    let out = d
        .runtime()
        .await
        .max_decoding_message_size(32 << 20)
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "head -c 1073741824 /dev/zero; echo done >&2".into(),
            ],
            timeout: 300,
        })
        .await
        .unwrap()
        .into_inner();
    let after = vm_hwm_kib(pid);
    assert_eq!(out.stdout.len(), 8 * 1024 * 1024 - 4096);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "done\n");
    assert_eq!(out.exit_code, 0);
    eprintln!("daemon VmHWM before {before} KiB, after {after} KiB");
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "VmHWM grew from {before} KiB to {after} KiB"
    );
    assert_eq!(
        status(&d, &id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    remove_pod(&d, &pod_id).await;
    planted.assert_unchanged();
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_racing_remove_and_a_killed_daemon_leave_nothing_wrong() {
    ensure_images();
    let mut d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let planted = Planted::new();
    let pod = pod_config(&d, "execrace");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("long", &image("busybox"), "sleep 1000"),
    )
    .await;

    // A daemon killed while an exec runs leaves its scratch directory; the next start
    // removes it.
    let scratch = d.state.join("runtime/runc.exec");
    let pending = {
        let socket = d.socket.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut rt = cri::runtime_service_client::RuntimeServiceClient::new(
                connect(&socket).await.unwrap(),
            );
            rt.exec_sync(cri::ExecSyncRequest {
                container_id: id,
                cmd: vec!["sleep".into(), "30".into()],
                timeout: 60,
            })
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&scratch).map_or(0, |e| e.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no exec scratch directory appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.kill9();
    let _ = pending.await;
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 1);
    d.restart().await;
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "{:?}",
        std::fs::read_dir(&scratch).unwrap().collect::<Vec<_>>()
    );

    // Execs racing RemoveContainer answer OK, NotFound or FailedPrecondition; never Internal.
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let socket = d.socket.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut rt = cri::runtime_service_client::RuntimeServiceClient::new(
                    connect(&socket).await.unwrap(),
                );
                let mut codes = Vec::new();
                for _ in 0..40 {
                    let r = rt
                        .exec_sync(cri::ExecSyncRequest {
                            container_id: id.clone(),
                            cmd: vec!["true".into()],
                            timeout: 10,
                        })
                        .await;
                    match r {
                        Ok(_) => codes.push((tonic::Code::Ok, String::new())),
                        Err(e) => {
                            let gone = e.code() == tonic::Code::NotFound;
                            codes.push((e.code(), e.message().to_string()));
                            if gone {
                                break;
                            }
                        }
                    }
                }
                codes
            })
        })
        .collect();
    let mut rt = d.runtime().await;
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    for r in racers {
        for (code, msg) in r.await.unwrap() {
            assert!(
                matches!(
                    code,
                    tonic::Code::Ok | tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ),
                "{code:?}: {msg}"
            );
        }
    }
    let err = exec(&d, &id, "true", 10).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    remove_pod(&d, &pod_id).await;
    planted.assert_unchanged();
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
}

fn with_port(
    mut pod: cri::PodSandboxConfig,
    protocol: i32,
    container_port: i32,
    host_port: i32,
    host_ip: &str,
) -> cri::PodSandboxConfig {
    pod.port_mappings = vec![cri::PortMapping {
        protocol,
        container_port,
        host_port,
        host_ip: host_ip.to_string(),
    }];
    pod
}

fn with_container_pid(
    mut config: cri::ContainerConfig,
    mode: cri::NamespaceMode,
    target_id: &str,
) -> cri::ContainerConfig {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(cri::NamespaceOption {
        pid: mode as i32,
        target_id: target_id.to_string(),
        ..Default::default()
    });
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_refused_rather_than_rewritten() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let planted = Planted::new();
    let mut rt = d.runtime().await;

    // Port mappings.
    let base = pod_config(&d, "ports");
    for (pod, field) in [
        (
            with_port(base.clone(), 0, 80, 8080, "1.2.3.4; rm -rf /"),
            "host_ip",
        ),
        (with_port(base.clone(), 9, 80, 8080, ""), "protocol"),
        (with_port(base.clone(), 0, 0, 8080, ""), "container_port"),
        (with_port(base.clone(), 0, -1, 8080, ""), "container_port"),
        (
            with_port(base.clone(), 0, 70000, 8080, ""),
            "container_port",
        ),
        (with_port(base.clone(), 0, 80, -1, ""), "host_port"),
        (with_port(base.clone(), 0, 80, 70000, ""), "host_port"),
    ] {
        let err = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(&format!("port_mappings[0].{field}")),
            "{err:?}"
        );
    }
    let left = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(left.is_empty(), "{left:?}");
    // A mapping without a host port is fine (kubelet lists every container port so). The pod's
    // PID namespace mode is CONTAINER, kubelet's default, so each container has its own.
    let pod = with_pid_mode(
        with_port(base.clone(), 0, 80, 0, ""),
        cri::NamespaceMode::Container,
    );
    let pod_id = run_pod(&d, &pod).await;

    // PID namespace TARGET joins the target container's namespace.
    let target = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("target", &image("busybox"), "exec sleep 1000"),
    )
    .await;
    let mut debug = container_config("debug", &image("busybox"), "");
    debug.command = vec!["cat".into(), "/proc/1/cmdline".into()];
    let debug = with_container_pid(debug, cri::NamespaceMode::Target, &target);
    let id = run_container(&d, &pod_id, &pod, debug).await;
    let st = wait_exited(&d, &id).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(log_lines(&st), vec!["sleep\u{0}1000\u{0}".to_string()]);
    // ... and refuses a target that is no running container of this pod.
    let other_pod = pod_config(&d, "other");
    let other_pod_id = run_pod(&d, &other_pod).await;
    let other = run_container(
        &d,
        &other_pod_id,
        &other_pod,
        container_config("other", &image("busybox"), "sleep 1000"),
    )
    .await;
    for bad in [
        "",
        "/proc/1/ns/pid",
        "0123456789abcdef",
        other.as_str(),
        id.as_str(),
    ] {
        let config = with_container_pid(
            container_config("bad", &image("busybox"), "sleep 1"),
            cri::NamespaceMode::Target,
            bad,
        );
        let err = try_create(&d, &pod_id, Some(&pod), config)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains("target_id"), "{bad}: {err:?}");
    }

    // working_dir: no '..', as for mount paths.
    let mut config = container_config("wd", &image("busybox"), "pwd");
    config.working_dir = "/tmp/../../etc".into();
    let err = try_create(&d, &pod_id, Some(&pod), config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("working_dir"), "{err:?}");
    let mut config = container_config("wd", &image("busybox"), "pwd");
    config.working_dir = "/tmp/./sub//dir".into();
    let id = run_container(&d, &pod_id, &pod, config).await;
    let st = wait_exited(&d, &id).await;
    assert_eq!(log_lines(&st), vec!["/tmp/sub/dir".to_string()]);

    // A 1 MB input is not echoed whole: the client sees the real code.
    let huge = "a".repeat(1 << 20);
    let err = d
        .images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: huge.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.code());
    assert!(err.message().len() < 8192, "{}", err.message().len());
    let err = try_create(
        &d,
        &pod_id,
        Some(&pod),
        container_config("huge", &huge, "true"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.code());
    assert!(err.message().len() < 8192, "{}", err.message().len());
    let mut config = container_config("huge", &image("busybox"), "true");
    config.log_path = format!("{huge}/../x.log");
    let err = try_create(&d, &pod_id, Some(&pod), config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.code());

    remove_pod(&d, &pod_id).await;
    remove_pod(&d, &other_pod_id).await;
    planted.assert_unchanged();
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
}
