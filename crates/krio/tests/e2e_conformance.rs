//! End to end: the CRI behaviours that cri-tools' critest checks and that are not covered
//! elsewhere (issue 10), each checked against a real daemon, runc and registry.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use krio_cri::v1 as cri;
use tonic::Code;

/// Stop and Remove of ids that krio never made succeed, whatever they look like; ids that could
/// harm are refused with InvalidArgument naming the field; Status calls say NotFound.
#[tokio::test(flavor = "multi_thread")]
async fn stop_and_remove_of_foreign_ids_succeed() {
    require_prerequisites();
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    for unknown in [
        "6f1c2a9e-54b7-4c1e-9d2a-3b8e7f0a1c2d".to_string(), // a UUID, as critest sends
        "NotAnIdOfKrios".to_string(),
        "f".repeat(64),
        "e".repeat(200),
    ] {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: unknown.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox {unknown}: {e}"));
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: unknown.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox {unknown}: {e}"));
        rt.stop_container(cri::StopContainerRequest {
            container_id: unknown.clone(),
            timeout: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("StopContainer {unknown}: {e}"));
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: unknown.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer {unknown}: {e}"));
        let err = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: unknown.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{unknown}: {err:?}");
        let err = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: unknown.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{unknown}: {err:?}");
    }
    for harmful in [
        String::new(),
        "../../etc".to_string(),
        "a/b".to_string(),
        "a\0b".to_string(),
        "a".repeat(4096),
    ] {
        let err = rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: harmful.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{harmful:?}: {err:?}");
        assert!(err.message().contains("container_id"), "{err:?}");
        let err = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: harmful.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{harmful:?}: {err:?}");
        assert!(err.message().contains("pod_sandbox_id"), "{err:?}");
    }
    // Nothing was made along the way.
    assert!(rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
}

/// The `Cap*` masks (`CapInh`, `CapPrm`, `CapEff`, `CapBnd`, `CapAmb`) of a `/proc/<pid>/status` text.
fn cap_masks(status: &str) -> std::collections::HashMap<String, u64> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
        })
        .collect()
}

/// A pod whose sandbox is privileged (a privileged container needs one).
fn privileged_pod(d: &Daemon, name: &str) -> cri::PodSandboxConfig {
    let mut pod = pod_config(d, name);
    pod.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
    pod
}

/// Runs `script` in a container of `pod` with `sc` and returns its log lines once it exited 0.
async fn run_to_exit(
    d: &Daemon,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    sc: cri::LinuxContainerSecurityContext,
    script: &str,
) -> Vec<String> {
    let mut c = container_config(name, &image("busybox"), script);
    c.linux
        .get_or_insert_with(Default::default)
        .security_context = Some(sc);
    let id = run_container(d, pod_id, pod, c).await;
    let st = wait_exited(d, &id).await;
    let lines = log_lines(&st);
    assert_eq!(st.exit_code, 0, "{name}: {lines:?}");
    lines
}

/// Privileged containers and `add_capabilities: [ALL]` get exactly the daemon's bounding set, on a host
/// whose bounding set lacks capabilities (this one lacks CAP_SYS_RESOURCE); an explicit add of a capability
/// the daemon lacks is refused with FailedPrecondition naming it, leaving nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn privileged_and_add_all_get_the_daemons_bounding_set() {
    require_prerequisites();
    ensure_images();
    let d = Daemon::start().await;
    let daemon_status =
        std::fs::read_to_string(format!("/proc/{}/status", d.pid().unwrap())).unwrap();
    let bounding = cap_masks(&daemon_status)["CapBnd"];
    pull(&d, &image("busybox")).await;
    let pod = privileged_pod(&d, "caps");
    let pod_id = run_pod(&d, &pod).await;
    let script = "cat /proc/self/status";

    let privileged = cri::LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    let add_all = cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: vec!["ALL".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    for (name, sc) in [("privileged", privileged), ("add-all", add_all)] {
        let out = run_to_exit(&d, &pod_id, &pod, name, sc, script).await;
        let masks = cap_masks(&out.join("\n"));
        assert_eq!(masks["CapBnd"], bounding, "{name}: {out:?}");
        assert_eq!(masks["CapEff"], bounding, "{name}: {out:?}");
        assert_eq!(masks["CapPrm"], bounding, "{name}: {out:?}");
    }

    // The lowest capability the daemon lacks, if any (this host: CAP_SYS_RESOURCE, number 24).
    match (0..CAP_NAMES.len()).find(|bit| bounding & (1u64 << bit) == 0) {
        Some(bit) => {
            let name = CAP_NAMES[bit];
            let mut c = container_config("lacking", &image("busybox"), "true");
            c.linux.get_or_insert_with(Default::default).security_context =
                Some(cri::LinuxContainerSecurityContext {
                    capabilities: Some(cri::Capability {
                        add_capabilities: vec!["CHOWN".into(), name.into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            let mut rt = d.runtime().await;
            let before = rt
                .list_containers(cri::ListContainersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .containers
                .len();
            let err = rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod_id.clone(),
                    config: Some(c),
                    sandbox_config: Some(pod.clone()),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
            assert!(
                err.message().contains("add_capabilities[1]")
                    && err.message().contains(&format!("CAP_{name}")),
                "{err:?}"
            );
            let after = rt
                .list_containers(cri::ListContainersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .containers
                .len();
            assert_eq!(before, after, "a refused container is not left listed");
        }
        None => eprintln!(
            "note: this host's bounding set holds every capability; the refusal of a lacking one is not exercised"
        ),
    }
    remove_pod(&d, &pod_id).await;
}

/// Capability names by kernel number (`<linux/capability.h>`), without the `CAP_` prefix.
const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];
