//! Integration test: a spec from `build_spec`, written with `write_bundle`, created by the real `krio-monitor`
//! (this test binary doubles as the monitor: see `main`) and driven through `OciRuntime` with the real runc on a
//! busybox rootfs.
//!
//! Prerequisites (the test panics if missing): root, runc, `/bin/busybox` (busybox-static).
//! `harness = false`: the binary must be able to act as the monitor, so it has its own `main`.

// Test code: panicking on unexpected errors is the point (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use krio_cri::v1::{
    security_profile::ProfileType, ContainerConfig, ContainerMetadata, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, SecurityProfile,
};
use krio_monitor::{read_exit_file, MonitorConfig};
use krio_oci::{
    build_spec, write_bundle, DeleteOptions, ExecOptions, KillOptions, NamespacePaths, OciRuntime,
    RuntimeError, RuntimeStatus, SpecInputs,
};

/// One integration test.
type TestFn = fn(&tokio::runtime::Runtime);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Monitor mode: `--krio-monitor` (how the test spawns it) or `--foreground` (the monitor's own re-exec).
    if args.first().map(String::as_str) == Some("--krio-monitor") {
        std::process::exit(krio_monitor::run_with_args(&args[1..]));
    }
    if args == ["--foreground"] {
        std::process::exit(krio_monitor::run_with_args(&args));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tests: Vec<(&str, TestFn)> = vec![
        ("lifecycle_with_monitor", lifecycle_with_monitor),
        ("exit_code_and_user", exit_code_and_user),
    ];
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    for (name, t) in tests {
        if args.iter().any(|a| !a.starts_with('-'))
            && !args.iter().any(|a| name.contains(a.as_str()))
        {
            filtered += 1;
            continue;
        }
        eprintln!("test {name} ...");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t(&rt))) {
            Ok(()) => {
                eprintln!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                eprintln!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    // The summary line in libtest's words: scripts/test.sh sums these lines.
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out\n",
        if failed > 0 { "FAILED" } else { "ok" }
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

fn runc() -> PathBuf {
    for p in [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/sbin/runc",
        "/usr/local/bin/runc",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("PREREQUISITE MISSING: runc is not installed (apt-get install runc)");
}

fn prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "PREREQUISITE MISSING: must run as root"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "PREREQUISITE MISSING: /bin/busybox (apt-get install busybox-static)"
    );
    runc();
}

/// The monitor "binary": a script exec'ing this test binary in monitor mode.
fn monitor_binary(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = dir.join("krio-monitor");
    krio_testutil::write_executable(
        &p,
        format!("#!/bin/sh\nexec {} --krio-monitor \"$@\"\n", exe.display()),
    );
    p
}

fn make_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = bin.join("busybox");
    krio_testutil::copy_executable(Path::new("/bin/busybox"), &bb);
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            let _ = std::fs::hard_link(&bb, bin.join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:1234:2345::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwww:x:2345:\nextra:x:3456:www\n",
    )
    .unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    id: String,
    rt: OciRuntime,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("krio-oci-")
            .tempdir_in("/tmp")
            .unwrap();
        make_rootfs(&dir.path().join("rootfs"));
        std::fs::create_dir(dir.path().join("bundle")).unwrap();
        let rt = OciRuntime::new(runc(), dir.path().join("runc-root"));
        Fixture {
            id: format!("oci-{name}-{}", std::process::id()),
            dir,
            rt,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn create(&self, container: &ContainerConfig) -> krio_monitor::Spawned {
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "pod".into(),
                uid: "u1".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            hostname: "krio-pod".into(),
            ..Default::default()
        };
        let daemon_oom: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let rootfs = self.path("rootfs");
        let spec = build_spec(&SpecInputs {
            container,
            sandbox: &sandbox,
            sandbox_id: "sb-1",
            image_config: None,
            rootfs: &rootfs,
            namespaces: NamespacePaths::default(),
            sandbox_mounts: vec![],
            cgroups_path: format!("/krio-test/{}", self.id),
            daemon_oom_score_adj: daemon_oom,
            pids_limit: Some(64),
            cgroup_v2: krio_oci::host_uses_cgroup_v2(),
            capability_bounding_set: Some(krio_oci::daemon_bounding_set()),
            default_capabilities: None,
        })
        .unwrap();
        write_bundle(&self.path("bundle"), &spec).unwrap();
        let cfg = MonitorConfig::new(
            &self.id,
            self.path("bundle"),
            runc(),
            self.rt.root(),
            Some(self.path("ctr.log")),
            self.path("exit.json"),
            self.path("ctr.pid"),
        );
        krio_monitor::spawn(&cfg, &monitor_binary(self.dir.path())).unwrap()
    }

    fn wait_exit(&self) -> krio_monitor::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = read_exit_file(&self.path("exit.json")).unwrap() {
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

    fn log_texts(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("ctr.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new(runc())
            .arg("--root")
            .arg(self.rt.root())
            .args(["delete", "--force", &self.id])
            .output();
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path().join("krio-test").join(&self.id));
                let _ = std::fs::remove_dir(e.path().join("krio-test"));
            }
        }
    }
}

fn container(args: &[&str], sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        envs: vec![KeyValue {
            key: "GREETING".into(),
            value: "hello".into(),
        }],
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                oom_score_adj: -999,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..sc
            }),
        }),
        ..Default::default()
    }
}

fn lifecycle_with_monitor(rt: &tokio::runtime::Runtime) {
    let f = Fixture::new("life");
    let c = container(
        &[
            "sh",
            "-c",
            "echo \"$GREETING from $(hostname)\"; exec sleep 1000",
        ],
        LinuxContainerSecurityContext::default(),
    );
    let spawned = f.create(&c);
    rt.block_on(async {
        let st = f.rt.state(&f.id).await.unwrap();
        assert_eq!(st.status, RuntimeStatus::Created);
        assert_eq!(st.pid, spawned.container_pid);
        f.rt.start(&f.id).await.unwrap();
        let st = f.rt.state(&f.id).await.unwrap();
        assert_eq!(st.status, RuntimeStatus::Running);
        assert!(f.rt.list().await.unwrap().iter().any(|s| s.id == f.id));

        // The default seccomp profile is active and blocks mount / unshare; exec sees the container env.
        let out = f
            .rt
            .exec(
                &f.id,
                &ExecOptions {
                    args: vec![
                        "sh".into(),
                        "-c".into(),
                        "grep Seccomp: /proc/self/status; echo $GREETING; unshare -m true || echo blocked; \
                         cat /proc/self/oom_score_adj; exit 7"
                            .into(),
                    ],
                    timeout: Some(Duration::from_secs(20)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.exit_code, 7, "stdout={stdout} stderr={}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("Seccomp:\t2"), "{stdout}");
        assert!(stdout.contains("hello"), "{stdout}");
        assert!(stdout.contains("blocked"), "{stdout}");
        // oom_score_adj clamped to the daemon's own value (-999 requested).
        let daemon_oom = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        let want = daemon_oom.trim().parse::<i64>().unwrap().max(-999);
        assert!(stdout.lines().any(|l| l.trim() == want.to_string()), "oom {want} not in {stdout}");

        // Exec timeout kills the process.
        let e = f
            .rt
            .exec(
                &f.id,
                &ExecOptions {
                    args: vec!["sleep".into(), "100".into()],
                    timeout: Some(Duration::from_millis(500)),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(e, Err(RuntimeError::Timeout { verb: "exec", .. })), "{e:?}");

        f.rt.kill(&f.id, &KillOptions { signal: 9, all: false }).await.unwrap();
    });
    let st = f.wait_exit();
    assert_eq!((st.exit_code, st.signal), (137, Some(9)));
    assert_eq!(f.log_texts(), vec!["hello from krio-pod".to_string()]);
    rt.block_on(async {
        assert_eq!(
            f.rt.state(&f.id).await.unwrap().status,
            RuntimeStatus::Stopped
        );
        f.rt.delete(&f.id, &DeleteOptions::default()).await.unwrap();
        assert!(matches!(
            f.rt.state(&f.id).await,
            Err(RuntimeError::NotFound { .. })
        ));
        assert!(matches!(
            f.rt.delete(&f.id, &DeleteOptions::default()).await,
            Err(RuntimeError::NotFound { .. })
        ));
    });
}

fn exit_code_and_user(rt: &tokio::runtime::Runtime) {
    let f = Fixture::new("user");
    let c = container(
        &["sh", "-c", "id; exit 3"],
        LinuxContainerSecurityContext {
            run_as_username: "www".into(),
            readonly_rootfs: true,
            no_new_privs: true,
            ..Default::default()
        },
    );
    f.create(&c);
    rt.block_on(async { f.rt.start(&f.id).await.unwrap() });
    let st = f.wait_exit();
    assert_eq!((st.exit_code, st.signal), (3, None));
    let texts = f.log_texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].starts_with("uid=1234") && texts[0].contains("gid=2345"),
        "{texts:?}"
    );
    assert!(
        texts[0].contains("3456"),
        "supplementary group missing: {texts:?}"
    );
    rt.block_on(async {
        f.rt.delete(&f.id, &DeleteOptions { force: true })
            .await
            .unwrap();
    });
}
