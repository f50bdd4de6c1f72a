//! Runtime handlers (RuntimeClass) end to end: gVisor's runsc beside runc on one bridge
//! network, handler readiness and refusals, annotations reaching the runtime. The container
//! lifecycle tests of e2e_pod.rs also run under runsc (`*_under_runsc`). Fails loudly when
//! runsc is missing (scripts/install-deps.sh installs Debian's `runsc`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use krio_cri::v1 as cri;

/// Third octet of this file's bridge subnet (10.123.241.0/24).
const SUBNET: u8 = 241;

async fn pod_ip(d: &Daemon, pod_id: &str) -> String {
    d.runtime()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default()
}

async fn run_pod_with(d: &Daemon, pod: &cri::PodSandboxConfig, handler: &str) -> String {
    d.runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: handler.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox({handler}): {e}; log:\n{}", d.log()))
        .into_inner()
        .pod_sandbox_id
}

async fn exec(d: &Daemon, id: &str, script: &str) -> cri::ExecSyncResponse {
    d.runtime()
        .await
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync: {e}; log:\n{}", d.log()))
        .into_inner()
}

/// The acceptance test: a pod under gVisor prints gVisor's own kernel in its log,
/// reaches a runc pod over the bridge, answers ExecSync from inside the sandbox, stops with
/// its exit code, and leaves no process, mount, namespace pin or runsc state behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_runsc_pod_runs_in_gvisor_reaches_a_runc_pod_and_leaves_nothing() {
    Handler::Runsc.require();
    ensure_images();
    let d = Daemon::start_full(Network::Bridge { subnet: SUBNET }, &[], RUNSC_TOML).await;
    pull(&d, &image("busybox")).await;

    // The server: a runc pod answering every TCP connection on 8080 with "pong".
    let server_pod = pod_config(&d, "server");
    let server_pod_id = run_pod_with(&d, &server_pod, "runc").await;
    let server_ip = pod_ip(&d, &server_pod_id).await;
    assert!(
        server_ip.starts_with(&format!("10.123.{SUBNET}.")),
        "{server_ip}"
    );
    let server = run_container(
        &d,
        &server_pod_id,
        &server_pod,
        container_config(
            "server",
            &image("busybox"),
            "echo listening; while true; do echo pong | nc -l -p 8080; done",
        ),
    )
    .await;
    wait_log_line(&d, &server, "listening").await;

    // The client: a runsc pod. dmesg's "Starting gVisor..." exists only in gVisor's kernel.
    let pod = pod_config(&d, "gvisor");
    let pod_id = run_pod_with(&d, &pod, "runsc").await;
    let ip = pod_ip(&d, &pod_id).await;
    assert!(ip.starts_with(&format!("10.123.{SUBNET}.")), "{ip}");
    let script = format!(
        "echo kernel $(uname -r); dmesg | head -n 1; ip addr show eth0 | grep -o 'inet [0-9.]*'; \
         until r=$(nc -w 2 {server_ip} 8080 </dev/null) && [ \"$r\" = pong ]; do sleep 0.2; done; \
         echo reply $r; trap 'echo term; exit 42' TERM; echo ready; while true; do sleep 0.1; done"
    );
    let client = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("client", &image("busybox"), &script),
    )
    .await;
    wait_log_line(&d, &client, "ready").await;
    let st = status(&d, &client).await;
    let lines = log_lines(&st);
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string();
    let kernel = lines
        .iter()
        .find_map(|l| l.strip_prefix("kernel "))
        .unwrap_or_else(|| panic!("no kernel line: {lines:?}"));
    assert_ne!(
        kernel, host_kernel,
        "the container saw the host's kernel: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Starting gVisor")),
        "gVisor's dmesg missing: {lines:?}"
    );
    // The sandbox sees the pod's own address (passthrough in the pod's network namespace).
    assert!(lines.contains(&format!("inet {ip}")), "{lines:?}");
    assert!(lines.contains(&"reply pong".to_string()), "{lines:?}");

    // ExecSync runs inside the same sandbox: gVisor's kernel again, and the exit code.
    let out = exec(&d, &client, "uname -r; exit 5").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), kernel);
    assert_eq!(out.exit_code, 5);

    // Stats come from the sandbox's cgroup.
    let stats = d
        .runtime()
        .await
        .container_stats(cri::ContainerStatsRequest {
            container_id: client.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(mem > 0, "{stats:?}");

    // Stop: SIGTERM reaches the process inside gVisor, whose exit code is the container's.
    d.runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: client.clone(),
            timeout: 10,
        })
        .await
        .unwrap();
    let st = wait_exited(&d, &client).await;
    assert_eq!(st.exit_code, 42, "{st:?}");
    assert!(log_lines(&st).contains(&"term".to_string()));

    for p in [&pod_id, &server_pod_id] {
        remove_pod(&d, p).await;
        d.assert_pod_cgroups_gone(p);
    }
    assert_eq!(d.processes(), Vec::<(i32, String)>::new(), "processes left");
    assert_eq!(d.mounts(), Vec::<String>::new(), "mounts left");
    let left = |dir: std::path::PathBuf| -> Vec<String> {
        std::fs::read_dir(&dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(left(d.state.join("sandboxes")), Vec::<String>::new());
    assert_eq!(left(d.state.join("containers")), Vec::<String>::new());
    // runsc keeps its container state under its root; nothing may stay there either.
    let runsc_root = d.state.join("runtime/runsc");
    let listed = std::process::Command::new("runsc")
        .arg("--root")
        .arg(&runsc_root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "");
    assert!(
        !left(runsc_root).iter().any(|f| f.ends_with(".state")),
        "runsc state files left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_handler_is_invalid_argument_naming_runtime_handler() {
    let d = Daemon::start().await;
    let pod = pod_config(&d, "unknown");
    let err = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("runtime_handler") && err.message().contains("kata"),
        "{err:?}"
    );
    let pods = d
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "half-made pod: {pods:?}");
}

fn conditions(st: &cri::StatusResponse) -> Vec<cri::RuntimeCondition> {
    st.status.clone().unwrap().conditions
}

/// A handler whose binary is missing: the daemon starts, `Status` says the handler is not
/// ready and why (the node stays ready: runc is the default), RunPodSandbox with it fails with
/// FailedPrecondition naming the binary, and installing the binary makes it ready.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_handler_binary_is_not_ready_and_refused_with_its_path() {
    Handler::Runsc.require();
    let dir = tempfile::tempdir().unwrap();
    let ghost = dir.path().join("ghost-runtime");
    let extra = format!(
        "{RUNSC_TOML}[runtimes.ghost]\npath = \"{}\"\n",
        ghost.display()
    );
    let d = Daemon::start_full(Network::Loopback, &[], &extra).await;
    let mut rt = d.runtime().await;
    let st = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = conditions(&st);
    let get = |t: &str| {
        conds
            .iter()
            .find(|c| c.r#type == t)
            .cloned()
            .unwrap_or_else(|| panic!("no condition {t}: {conds:?}"))
    };
    assert!(get("RuntimeReady").status, "{conds:?}");
    assert!(get("RuntimeHandlerReady/runc").status);
    assert!(get("RuntimeHandlerReady/runsc").status);
    let ghost_cond = get("RuntimeHandlerReady/ghost");
    assert!(!ghost_cond.status);
    assert_eq!(ghost_cond.reason, "RuntimeHandlerNotReady");
    assert!(
        ghost_cond.message.contains(&ghost.display().to_string()),
        "{ghost_cond:?}"
    );
    let names: Vec<&str> = st
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    // The default handler (runc) again under "", the CRI's name for the default handler, with
    // the same features: kubelet looks a pod without a RuntimeClass up there.
    assert_eq!(names, ["ghost", "runc", "runsc", ""]);
    let features = |name: &str| {
        st.runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.features)
            .unwrap()
    };
    assert_eq!(features(""), features("runc"));
    // Verbose info: readiness and where each handler's features came from.
    let list: serde_json::Value = serde_json::from_str(&st.info["handlers"]).unwrap();
    let handlers: serde_json::Map<String, serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap().to_string(), h.clone()))
        .collect();
    assert_eq!(handlers["ghost"]["ready"], false);
    assert_eq!(handlers["runc"]["ready"], true);
    assert_eq!(handlers["runc"]["features"]["source"], "runtime features");
    let runsc_source = handlers["runsc"]["features"]["source"].as_str().unwrap();
    assert!(
        runsc_source.contains("no `features` command"),
        "{runsc_source}"
    );

    let pod = pod_config(&d, "ghost");
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&ghost.display().to_string()),
        "{err:?}"
    );
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "half-made pod: {pods:?}");

    // Installed later, the binary is found without a restart.
    krio_testutil::write_executable(&ghost, "#!/bin/sh\nexec runc \"$@\"\n");
    d.poll(
        "the ghost handler to be ready",
        Duration::from_secs(10),
        || async {
            let st = d
                .runtime()
                .await
                .status(cri::StatusRequest { verbose: false })
                .await
                .ok()?
                .into_inner();
            conditions(&st)
                .iter()
                .any(|c| c.r#type == "RuntimeHandlerReady/ghost" && c.status)
                .then_some(())
        },
    )
    .await;
    let pod_id = run_pod_with(&d, &pod, "ghost").await;
    remove_pod(&d, &pod_id).await;
}

/// Only the annotations a handler allows reach the OCI spec, and a runsc handler's containers
/// name themselves as gVisor sandboxes.
#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_annotations_reach_the_runtime() {
    Handler::Runsc.require();
    ensure_images();
    let extra = format!(
        "{RUNSC_TOML}[runtimes.annotated]\npath = \"runc\"\nallowed_annotations = [\"example.com/\"]\n"
    );
    let d = Daemon::start_full(Network::Loopback, &[], &extra).await;
    pull(&d, &image("busybox")).await;
    let spec_annotations = |id: &str| -> serde_json::Value {
        let text = std::fs::read(d.state.join("containers").join(id).join("config.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&text).unwrap()["annotations"].clone()
    };
    for handler in ["annotated", "runc", "runsc"] {
        let mut pod = pod_config(&d, &format!("ann-{handler}"));
        pod.annotations
            .insert("example.com/from-pod".into(), "p".into());
        pod.annotations.insert("other.org/x".into(), "no".into());
        let pod_id = run_pod_with(&d, &pod, handler).await;
        let mut cfg = container_config("c", &image("busybox"), "echo ready; sleep 1000");
        cfg.annotations
            .insert("example.com/from-container".into(), "c".into());
        cfg.annotations
            .insert("io.kubernetes.cri.sandbox-id".into(), "forged".into());
        let id = run_container(&d, &pod_id, &pod, cfg).await;
        wait_log_line(&d, &id, "ready").await;
        let a = spec_annotations(&id);
        assert_eq!(a.get("other.org/x"), None, "{handler}: {a}");
        match handler {
            "annotated" => {
                assert_eq!(a["example.com/from-pod"], "p", "{a}");
                assert_eq!(a["example.com/from-container"], "c", "{a}");
                assert_eq!(a["io.kubernetes.cri.sandbox-id"], pod_id.as_str());
                assert_eq!(a["io.kubernetes.cri.container-type"], "container");
            }
            "runc" => {
                assert_eq!(a.get("example.com/from-pod"), None, "{a}");
                assert_eq!(a["io.kubernetes.cri.sandbox-id"], pod_id.as_str());
            }
            _ => {
                // Each runsc container is a gVisor sandbox of its own (pod_sandbox = per-container).
                assert_eq!(a.get("example.com/from-pod"), None, "{a}");
                assert_eq!(a["io.kubernetes.cri.container-type"], "sandbox");
                assert_eq!(a["io.kubernetes.cri.sandbox-id"], id.as_str());
            }
        }
        remove_pod(&d, &pod_id).await;
        d.assert_pod_cgroups_gone(&pod_id);
    }
    assert_eq!(d.processes(), Vec::<(i32, String)>::new(), "processes left");
}

/// The `runsc state` of `id` under the daemon's runsc root for `handler`: its JSON.
fn runsc_state(d: &Daemon, handler: &str, id: &str) -> serde_json::Value {
    let out = std::process::Command::new("runsc")
        .arg("--root")
        .arg(d.state.join("runtime").join(handler))
        .args(["state", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runsc state {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Host processes that are gVisor sandboxes (a Sentry: `runsc-sandbox`, started by `runsc boot`)
/// of this daemon's runsc root for `handler`.
fn gvisor_sandboxes(d: &Daemon, handler: &str) -> Vec<i32> {
    let root = d.state.join("runtime").join(handler);
    let root = root.to_string_lossy();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a == "runsc-sandbox")
                && args.iter().any(|a| a.contains(root.as_ref()))
        })
        .collect()
}

/// `pod_sandbox = "pod"`: the pod's containers join one gVisor sandbox. Inside, the second
/// container sees the first one's process in the pod's shared PID namespace (which only one
/// gVisor kernel can show: each sandbox emulates its own); on the host, runsc reports the same
/// sandbox process for the pod's root container and both containers, and exactly one Sentry
/// runs for the pod. Exit codes, ExecSync and stops work for containers in the shared sandbox,
/// and removing the pod leaves no process, mount, file or runsc state.
#[tokio::test(flavor = "multi_thread")]
async fn a_runsc_pod_is_one_gvisor_sandbox_shared_by_its_containers() {
    Handler::Runsc.require();
    ensure_images();
    let d = Daemon::start_full(Network::Loopback, &[], RUNSC_POD_TOML).await;
    pull(&d, &image("busybox")).await;
    let mut pod = pod_config(&d, "shared");
    pod.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    });
    let pod_id = run_pod_with(&d, &pod, "runsc-pod").await;
    // The root container holds the sandbox before any container of the pod exists.
    let root = runsc_state(&d, "runsc-pod", &pod_id);
    assert_eq!(root["status"], "running", "{root}");
    let sentries = gvisor_sandboxes(&d, "runsc-pod");
    assert_eq!(sentries.len(), 1, "one Sentry for the pod: {sentries:?}");

    let first = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "first",
            &image("busybox"),
            ": first-container; trap 'exit 3' TERM; echo ready; while true; do sleep 0.1; done",
        ),
    )
    .await;
    wait_log_line(&d, &first, "ready").await;
    let second = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "second",
            &image("busybox"),
            "echo kernel $(uname -r); ps > /tmp/ps; echo seen $(grep -c 'first-[c]ontainer' /tmp/ps); \
             trap 'exit 4' TERM; echo ready; while true; do sleep 0.1; done",
        ),
    )
    .await;
    wait_log_line(&d, &second, "ready").await;
    let lines = log_lines(&status(&d, &second).await);
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string();
    let kernel = lines
        .iter()
        .find_map(|l| l.strip_prefix("kernel "))
        .unwrap_or_else(|| panic!("no kernel line: {lines:?}"));
    assert_ne!(kernel, host_kernel, "the container saw the host's kernel");
    assert!(
        lines.contains(&"seen 1".to_string()),
        "the second container does not see the first one's process: {lines:?}"
    );

    // Host side: one sandbox process serves the root container and both containers.
    let sandbox_pid = &root["pid"];
    for id in [&first, &second] {
        let st = runsc_state(&d, "runsc-pod", id);
        assert_eq!(&st["pid"], sandbox_pid, "{id} is in another sandbox: {st}");
        assert_eq!(st["status"], "running", "{st}");
    }
    assert_eq!(
        gvisor_sandboxes(&d, "runsc-pod"),
        sentries,
        "Sentries changed"
    );

    // ExecSync in a container of the shared sandbox sees the other container too.
    let out = exec(&d, &first, "ps | grep -c 'echo kerne[l]'; exit 6").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");
    assert_eq!(out.exit_code, 6);

    // The pod's PID namespace is the root container's: its init is krio's `/pause`, which
    // outlives every container (none of them is the namespace's init) ...
    let out = exec(&d, &second, "tr '\\0' ' ' < /proc/1/cmdline").await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/pause",
        "{out:?}"
    );
    // ... and reaps the orphans it adopts: a process whose parent exited is adopted by PID 1
    // (its parent pid becomes 1), then leaves no zombie when it exits.
    exec(&d, &second, "(sleep 1.5 &); exit 0").await;
    let adopted = "grep -h '(sleep) S 1 ' /proc/[0-9]*/stat | wc -l";
    d.poll(
        "the orphan to be adopted by /pause",
        Duration::from_secs(10),
        || async {
            let out = exec(&d, &first, adopted).await;
            (String::from_utf8_lossy(&out.stdout).trim() == "1").then_some(())
        },
    )
    .await;
    let left = "grep -h -e '(sleep) S 1 ' -e ') Z 1 ' /proc/[0-9]*/stat | wc -l";
    d.poll(
        "the orphan to exit and be reaped",
        Duration::from_secs(10),
        || async {
            let out = exec(&d, &first, left).await;
            (String::from_utf8_lossy(&out.stdout).trim() == "0").then_some(())
        },
    )
    .await;

    // Stops: SIGTERM reaches each process inside the sandbox, and its exit code is recorded.
    for (id, code) in [(&second, 4), (&first, 3)] {
        d.runtime()
            .await
            .stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 10,
            })
            .await
            .unwrap();
        let st = wait_exited(&d, id).await;
        assert_eq!(st.exit_code, code, "{st:?}");
    }
    // The sandbox outlives its containers until the pod stops.
    assert_eq!(gvisor_sandboxes(&d, "runsc-pod"), sentries);

    // A container created but never started is removed with the pod.
    let idle = try_create(
        &d,
        &pod_id,
        Some(&pod),
        container_config("idle", &image("busybox"), "true"),
    )
    .await
    .unwrap();
    remove_pod(&d, &pod_id).await;
    d.assert_pod_cgroups_gone(&pod_id);
    let gone = d
        .runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: idle,
            verbose: false,
        })
        .await;
    assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(gvisor_sandboxes(&d, "runsc-pod"), Vec::<i32>::new());
    assert_eq!(d.processes(), Vec::<(i32, String)>::new(), "processes left");
    assert_eq!(d.mounts(), Vec::<String>::new(), "mounts left");
    let left = |dir: std::path::PathBuf| -> Vec<String> {
        std::fs::read_dir(&dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(left(d.state.join("sandboxes")), Vec::<String>::new());
    assert_eq!(left(d.state.join("containers")), Vec::<String>::new());
    let runsc_root = d.state.join("runtime/runsc-pod");
    let listed = std::process::Command::new("runsc")
        .arg("--root")
        .arg(&runsc_root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "");
    assert!(
        !left(runsc_root).iter().any(|f| f.ends_with(".state")),
        "runsc state files left"
    );
}

/// `ContainerStats` of `id`.
async fn container_stats(d: &Daemon, id: &str) -> cri::ContainerStats {
    d.runtime()
        .await
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStats({id}): {e}; log:\n{}", d.log()))
        .into_inner()
        .stats
        .unwrap()
}

/// Cumulative CPU (ns) and CPU rate (billionths of a core) of a container's stats.
fn cpu_of(s: &cri::ContainerStats) -> (Option<u64>, Option<u64>) {
    let cpu = s.cpu.as_ref();
    (
        cpu.and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map(|v| v.value),
        cpu.and_then(|c| c.usage_nano_cores.as_ref())
            .map(|v| v.value),
    )
}

/// `pod_sandbox = "pod"`: the containers of one gVisor sandbox have no host process in their
/// own cgroups, so their CPU comes from runsc's `events --stats`. A container spinning in a
/// loop shows CPU time that grows and a CPU rate, far above an idle container of the same
/// sandbox; neither reports memory (runsc gives only the sandbox's), while the pod's stats
/// do, from the pod's cgroup.
#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_runsc_pod_report_their_own_cpu() {
    Handler::Runsc.require();
    ensure_images();
    let d = Daemon::start_full(Network::Bridge { subnet: 243 }, &[], RUNSC_POD_TOML).await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "stats");
    let pod_id = run_pod_with(&d, &pod, "runsc-pod").await;
    let busy = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("busy", &image("busybox"), "echo ready; while :; do :; done"),
    )
    .await;
    let idle = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("idle", &image("busybox"), "echo ready; exec sleep 3600"),
    )
    .await;
    wait_log_line(&d, &busy, "ready").await;
    wait_log_line(&d, &idle, "ready").await;

    let first = d
        .poll(
            "a CPU figure for the busy container",
            Duration::from_secs(60),
            || async {
                cpu_of(&container_stats(&d, &busy).await)
                    .0
                    .filter(|ns| *ns > 0)
            },
        )
        .await;
    // At least one more second of CPU, a rate, and the idle container far below.
    let (busy_stats, idle_stats) = d
        .poll(
            "the busy container's CPU to grow past the idle one's",
            Duration::from_secs(60),
            || async {
                let b = container_stats(&d, &busy).await;
                let i = container_stats(&d, &idle).await;
                let (Some(busy_ns), Some(rate)) = cpu_of(&b) else {
                    return None;
                };
                let idle_ns = cpu_of(&i).0?;
                (busy_ns > first + 1_000_000_000
                    && rate > 200_000_000
                    && idle_ns.saturating_mul(10) < busy_ns)
                    .then_some((b, i))
            },
        )
        .await;
    eprintln!(
        "busy: {:?} (first {first}), idle: {:?} (ns, nano-cores)",
        cpu_of(&busy_stats),
        cpu_of(&idle_stats)
    );
    for s in [&busy_stats, &idle_stats] {
        assert!(s.memory.is_none(), "a per-container memory figure: {s:?}");
        let layer = s.writable_layer.as_ref().unwrap();
        assert!(layer.inodes_used.is_some(), "{s:?}");
    }

    // ListContainerStats answers the same way, from the same cache.
    let listed = d
        .runtime()
        .await
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 2, "{listed:?}");
    for s in &listed {
        assert!(cpu_of(s).0.is_some(), "{s:?}");
    }

    // The pod's own stats (its cgroup holds the Sentry) have memory and at least the busy
    // container's CPU.
    let pod_stats = d
        .runtime()
        .await
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .unwrap();
    let pod_mem = pod_stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(pod_mem > 0, "pod memory: {pod_mem}");
    let pod_cpu = pod_stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        pod_cpu >= first,
        "pod CPU {pod_cpu} below the busy container's {first}"
    );

    remove_pod(&d, &pod_id).await;
    d.assert_pod_cgroups_gone(&pod_id);
    assert_eq!(gvisor_sandboxes(&d, "runsc-pod"), Vec::<i32>::new());
    assert_eq!(d.processes(), Vec::<(i32, String)>::new(), "processes left");
}

/// Runs a pod with a container sleeping in it; returns the pod's id.
async fn pod_with_sleeper(d: &Daemon, name: &str) -> String {
    let pod = pod_config(d, name);
    let pod_id = run_pod(d, &pod).await;
    let c = run_container(
        d,
        &pod_id,
        &pod,
        container_config("sleeper", &image("busybox"), "sleep 1000"),
    )
    .await;
    assert_eq!(
        status(d, &c).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    assert!(!d.pod_cgroups(&pod_id).is_empty(), "no pod cgroup made");
    pod_id
}

/// RemovePodSandbox of a pod whose container still runs (no StopPodSandbox first) leaves no
/// cgroup of the pod in any hierarchy; and a test that fails halfway leaves its pods to the
/// harness: dropping the daemon while a pod runs a container leaves no cgroup directory under
/// the daemon's cgroup parent, in any hierarchy (the parent itself included). For each handler.
#[tokio::test(flavor = "multi_thread")]
async fn removed_pods_and_a_dropped_daemon_leave_no_cgroup() {
    ensure_images();
    for handler in [Handler::RunscPod, Handler::Runsc, Handler::Runc] {
        let d = Daemon::start_handler(handler, Network::Loopback).await;
        pull(&d, &image("busybox")).await;
        let removed = pod_with_sleeper(&d, "removed").await;
        d.runtime()
            .await
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: removed.clone(),
            })
            .await
            .unwrap();
        d.assert_pod_cgroups_gone(&removed);
        pod_with_sleeper(&d, "dropped").await;
        let parent = d.cgroup_parent.clone();
        drop(d);
        let left = cgroup_dirs(&parent);
        assert!(
            left.is_empty(),
            "{}: cgroups left: {left:?}",
            handler.name()
        );
    }
}
