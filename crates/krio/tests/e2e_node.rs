//! End to end: what a node needs from krio beyond CRI: children's environments built on purpose.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use k8s_cri::v1 as cri;

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
            "[runtimes.runc]\npath = \"{}\"\n[cni]\nbin_dirs = [\"{}\", \"/usr/lib/cni\"]\n",
            wrapper.display(),
            bin.display()
        ),
    )
    .unwrap();
    // A NOTIFY_SOCKET whose directory does not exist: runc given it fails every start.
    d.extra_env = vec![
        (
            "NOTIFY_SOCKET".into(),
            dir.join("no-such-dir/notify.sock")
                .to_string_lossy()
                .into_owned(),
        ),
        ("KRIO_LEAK_CANARY".into(), "1".into()),
    ];
    d.restart().await;
    let daemon_env = env_of(&std::fs::read(format!("/proc/{}/environ", d.pid().unwrap())).unwrap());
    assert_eq!(
        daemon_env.get("KRIO_LEAK_CANARY").map(String::as_str),
        Some("1")
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
