//! End to end: a real pod from the real local registry, through real runc.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use krio_cri::v1 as cri;

#[tokio::test(flavor = "multi_thread")]
async fn pulled_image_is_listed_with_tag_and_digest() {
    ensure_images();
    let d = Daemon::start().await;
    let reference = image("busybox");
    let id = pull(&d, &reference).await;
    assert!(id.starts_with("sha256:") && id.len() == 71, "image id {id}");
    let images = d
        .images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let img = images
        .iter()
        .find(|i| i.id == id)
        .expect("pulled image listed");
    assert!(
        img.repo_tags.contains(&reference),
        "tags {:?}",
        img.repo_tags
    );
    let digest_ref = img
        .repo_digests
        .iter()
        .find(|r| r.starts_with(&format!("{REGISTRY}/krio-test/busybox@sha256:")))
        .expect("repo digest listed");
    assert_eq!(
        digest_ref.len(),
        format!("{REGISTRY}/krio-test/busybox@sha256:").len() + 64
    );
    assert!(img.size > 500_000, "size {}", img.size);
    // ImageStatus by tag and by digest reference find the same image.
    for r in [reference.as_str(), digest_ref.as_str(), id.as_str()] {
        let st = d
            .images()
            .await
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: r.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.image.map(|i| i.id), Some(id.clone()), "ImageStatus({r})");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn container_logs_exit_codes_and_clean_teardown() {
    logs_exit_codes_and_clean_teardown(Handler::Runc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn container_logs_exit_codes_and_clean_teardown_under_runsc() {
    logs_exit_codes_and_clean_teardown(Handler::Runsc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn container_logs_exit_codes_and_clean_teardown_under_runsc_pod() {
    logs_exit_codes_and_clean_teardown(Handler::RunscPod).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "youki is not installed by the suite (its build is too slow): bench/youki.sh runs it"]
async fn container_logs_exit_codes_and_clean_teardown_under_youki() {
    Handler::Youki.require();
    logs_exit_codes_and_clean_teardown(Handler::Youki).await;
}

async fn logs_exit_codes_and_clean_teardown(handler: Handler) {
    ensure_images();
    let d = Daemon::start_handler(handler, Network::Loopback).await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "logs");
    let pod_id = run_pod(&d, &pod).await;

    // It writes only once StartContainer has answered and the test has created /tmp/go: a
    // container that exits before StartContainer returns can show finished_at < started_at
    // (krio takes started_at after `runc start` returns), which the timestamp check below is
    // not about.
    let script = "until [ -e /tmp/go ]; do sleep 0.05; done; \
                  echo out-1; echo err-1 >&2; echo out-2; printf 'no-newline' >&2; exit 0";
    let ok = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("ok", &image("busybox"), script),
    )
    .await;
    d.runtime()
        .await
        .exec_sync(cri::ExecSyncRequest {
            container_id: ok.clone(),
            cmd: vec!["touch".into(), "/tmp/go".into()],
            timeout: 10,
        })
        .await
        .unwrap();
    let fail = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("fail", &image("busybox"), "echo bye; exit 3"),
    )
    .await;

    let st = wait_exited(&d, &ok).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(st.reason, "Completed");
    assert!(
        st.created_at > 0 && st.started_at >= st.created_at && st.finished_at >= st.started_at,
        "{st:?}"
    );
    assert_eq!(st.log_path, format!("{}/ok.log", pod.log_directory));
    assert_eq!(
        st.image.as_ref().map(|i| i.user_specified_image.clone()),
        Some(image("busybox"))
    );
    assert!(st.image_ref.contains("@sha256:") || st.image_ref.starts_with("sha256:"));
    let records = read_cri_log(std::path::Path::new(&st.log_path));
    // Each stream keeps its order; how the two interleave depends on when the monitor reads
    // each pipe, which nothing orders.
    let stream = |name: &str| -> Vec<(String, String)> {
        records
            .iter()
            .filter(|r| r.0 == name)
            .map(|r| (r.1.clone(), r.2.clone()))
            .collect()
    };
    let f = |text: &str| ("F".to_string(), text.to_string());
    assert_eq!(
        stream("stdout"),
        vec![f("out-1"), f("out-2")],
        "{records:?}"
    );
    assert_eq!(
        stream("stderr"),
        vec![f("err-1"), ("P".to_string(), "no-newline".to_string())],
        "{records:?}"
    );
    // A last write without a newline is a partial record (issue 10).
    assert_eq!(records.len(), 4, "{records:?}");

    let st = wait_exited(&d, &fail).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    assert_eq!(
        read_cri_log(std::path::Path::new(&st.log_path)),
        vec![("stdout".to_string(), "F".to_string(), "bye".to_string())]
    );

    let listed = d
        .runtime()
        .await
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|c| c.state == cri::ContainerState::ContainerExited as i32));

    let mut rt = d.runtime().await;
    for id in [&ok, &fail] {
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: 5,
        })
        .await
        .unwrap();
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap();
        // Idempotent: a second remove succeeds.
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap();
    }
    remove_pod(&d, &pod_id).await;
    d.assert_pod_cgroups_gone(&pod_id);
    assert_eq!(
        d.mounts(),
        Vec::<String>::new(),
        "mounts left under krio's directories"
    );
    assert_eq!(d.processes(), Vec::<(i32, String)>::new(), "processes left");
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_escalates_to_sigkill_and_pod_teardown_leaves_nothing() {
    stop_escalation_and_pod_teardown(Handler::Runc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_escalates_to_sigkill_and_pod_teardown_leaves_nothing_under_runsc() {
    stop_escalation_and_pod_teardown(Handler::Runsc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_escalates_to_sigkill_and_pod_teardown_leaves_nothing_under_runsc_pod() {
    stop_escalation_and_pod_teardown(Handler::RunscPod).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "youki is not installed by the suite (its build is too slow): bench/youki.sh runs it"]
async fn stop_escalates_to_sigkill_and_pod_teardown_leaves_nothing_under_youki() {
    Handler::Youki.require();
    stop_escalation_and_pod_teardown(Handler::Youki).await;
}

async fn stop_escalation_and_pod_teardown(handler: Handler) {
    ensure_images();
    let d = Daemon::start_handler(handler, Network::Loopback).await;
    pull(&d, &image("busybox-oci")).await;
    let pod = pod_config(&d, "stop");
    let pod_id = run_pod(&d, &pod).await;
    let stubborn = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "stubborn",
            &image("busybox-oci"),
            // Ignores SIGTERM, so the stop must escalate to SIGKILL.
            "trap '' TERM; echo ready; while true; do sleep 0.2; done",
        ),
    )
    .await;
    // This one handles SIGTERM and exits 143 at once.
    let polite = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "polite",
            &image("busybox-oci"),
            "trap 'exit 143' TERM; echo ready; while true; do sleep 0.1; done",
        ),
    )
    .await;
    // The traps are set before the stops below send SIGTERM.
    wait_log_line(&d, &stubborn, "ready").await;
    wait_log_line(&d, &polite, "ready").await;
    let long = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("long", &image("busybox-oci"), "sleep 1000"),
    )
    .await;
    assert_eq!(
        status(&d, &stubborn).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let pod_status = d
        .runtime()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(pod_status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(pod_status.metadata, pod.metadata);

    let mut rt = d.runtime().await;
    rt.stop_container(cri::StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let st = status(&d, &stubborn).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137);
    rt.stop_container(cri::StopContainerRequest {
        container_id: polite.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    assert_eq!(status(&d, &polite).await.exit_code, 143);
    // Stopping again is fine (idempotent).
    rt.stop_container(cri::StopContainerRequest {
        container_id: polite.clone(),
        timeout: 10,
    })
    .await
    .unwrap();

    // StopPodSandbox kills the still-running container; RemovePodSandbox removes them all.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        status(&d, &long).await.state,
        cri::ContainerState::ContainerExited as i32
    );
    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    let left = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
    d.assert_pod_cgroups_gone(&pod_id);
    assert_eq!(d.mounts(), Vec::<String>::new());
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
    assert_eq!(
        std::fs::read_dir(d.state.join("sandboxes"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(d.root.join("containers"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_layer_image_shows_whiteouts_and_changes() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("layered")).await;
    let pod = pod_config(&d, "layered");
    let pod_id = run_pod(&d, &pod).await;
    let mut script = String::new();
    for (path, _) in krio_testimg::catalog::LAYERED_FILES {
        script.push_str(&format!("echo \"{path}=$(cat {path})\"; "));
    }
    for path in krio_testimg::catalog::LAYERED_ABSENT {
        script.push_str(&format!(
            "if [ -e {path} ]; then echo \"present {path}\"; else echo \"absent {path}\"; fi; "
        ));
    }
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("view", &image("layered"), &script),
    )
    .await;
    let st = wait_exited(&d, &id).await;
    assert_eq!(st.exit_code, 0);
    let lines = log_lines(&st);
    let mut expected: Vec<String> = krio_testimg::catalog::LAYERED_FILES
        .iter()
        .map(|(p, content)| format!("{p}={}", content.trim_end_matches('\n')))
        .collect();
    expected.extend(
        krio_testimg::catalog::LAYERED_ABSENT
            .iter()
            .map(|p| format!("absent {p}")),
    );
    assert_eq!(lines, expected);
    remove_pod(&d, &pod_id).await;
    assert_eq!(d.mounts(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_survive_a_daemon_kill9() {
    ensure_images();
    let mut d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "restart");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "survivor",
            &image("busybox"),
            "trap 'echo bye; exit 7' TERM; echo up; while true; do sleep 0.1; done",
        ),
    )
    .await;
    d.restart().await;
    assert_eq!(
        status(&d, &id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let mut rt = d.runtime().await;
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    let st = status(&d, &id).await;
    assert_eq!(st.exit_code, 7);
    let lines = log_lines(&st);
    assert_eq!(lines, vec!["up".to_string(), "bye".to_string()]);
    // A second restart while the pod is stopped-but-present keeps it listed.
    d.restart().await;
    let mut rt = d.runtime().await;
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    remove_pod(&d, &pod_id).await;
    assert_eq!(d.mounts(), Vec::<String>::new());
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_and_log_reopen() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "exec");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "ticker",
            &image("busybox"),
            "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.05; done",
        ),
    )
    .await;
    let mut rt = d.runtime().await;
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo hi; echo err >&2; exit 4".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.exit_code, 4);
    let err = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![],
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // UpdateContainerResources reaches the container's cgroup and shows in ContainerStatus.
    let limit = 64 * 1024 * 1024;
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: limit,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares"
                    .into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{limit}\n512\n"),
        "{out:?}"
    );
    let st = status(&d, &id).await;
    assert_eq!(
        st.resources
            .and_then(|r| r.linux)
            .map(|l| l.memory_limit_in_bytes),
        Some(limit)
    );
    let err = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // kubelet's rotation: rename the log, then ReopenContainerLog; new lines go to a new file.
    let log = std::path::PathBuf::from(status(&d, &id).await.log_path);
    let ticks = |path: std::path::PathBuf| {
        std::future::ready((!complete_records(&path).is_empty()).then_some(()))
    };
    let wait = std::time::Duration::from_secs(20);
    d.poll("a tick in the log", wait, || ticks(log.clone()))
        .await;
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    d.poll("a tick in the reopened log", wait, || ticks(log.clone()))
        .await;
    let old = read_cri_log(&rotated);
    let new = read_cri_log(&log);
    assert!(
        !old.is_empty() && !new.is_empty(),
        "old {old:?} new {new:?}"
    );
    let n = |r: &(String, String, String)| r.2.trim_start_matches("tick-").parse::<u32>().unwrap();
    // Nothing is lost or repeated across the rotation.
    assert_eq!(n(new.first().unwrap()), n(old.last().unwrap()) + 1);
    remove_pod(&d, &pod_id).await;
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_pid_namespace_is_shared_through_the_pod_init() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let pod = with_pid_mode(pod_config(&d, "sharedpid"), cri::NamespaceMode::Pod);
    let pod_id = run_pod(&d, &pod).await;
    let sleeper = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("sleeper", &image("busybox"), "exec sleep 1000"),
    )
    .await;
    // The sleeper's shell has exec'd sleep.
    d.poll(
        "sleep to run in the sleeper container",
        std::time::Duration::from_secs(20),
        || async {
            let out = d
                .runtime()
                .await
                .exec_sync(cri::ExecSyncRequest {
                    container_id: sleeper.clone(),
                    cmd: vec!["pidof".into(), "sleep".into()],
                    timeout: 10,
                })
                .await
                .ok()?
                .into_inner();
            (out.exit_code == 0).then_some(())
        },
    )
    .await;
    let viewer = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "viewer",
            &image("busybox"),
            "cat /proc/1/comm; for p in /proc/[0-9]*; do cat $p/comm; done | sort -u",
        ),
    )
    .await;
    let st = wait_exited(&d, &viewer).await;
    let lines = log_lines(&st);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("krio-pod-init"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "sleep"),
        "the other container's process is visible: {lines:?}"
    );

    // With pid CONTAINER, a container sees only itself.
    let pod2 = with_pid_mode(pod_config(&d, "ownpid"), cri::NamespaceMode::Container);
    let pod2_id = run_pod(&d, &pod2).await;
    let own = run_container(
        &d,
        &pod2_id,
        &pod2,
        container_config("own", &image("busybox"), "echo $$; cat /proc/1/comm; true"),
    )
    .await;
    let st = wait_exited(&d, &own).await;
    let lines = log_lines(&st);
    assert_eq!(lines, vec!["1".to_string(), "sh".to_string()]);

    let init_pid = pod_init_pid(&d, &pod_id).await;
    assert!(std::path::Path::new(&format!("/proc/{init_pid}")).exists());

    remove_pod(&d, &pod_id).await;
    remove_pod(&d, &pod2_id).await;
    assert_eq!(d.mounts(), Vec::<String>::new());
    assert!(pod_init_gone(init_pid), "pod init {init_pid} left running");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_run_pod_sandbox_gets_the_sandbox_its_timed_out_attempt_made() {
    ensure_images();
    // Every creation in this daemon first waits 3 s (a test-only hook), so the first attempt is
    // certainly still running when its client gives up and when the retry arrives.
    let d =
        Daemon::start_with_env(Network::Loopback, &[("KRIO_TEST_DELAY_CREATE_MS", "3000")]).await;
    let pod = pod_config(&d, "retry");
    let delayed = |d: &Daemon| {
        d.log()
            .lines()
            .filter(|l| l.contains("test-only delay before creating") && l.contains("kind=sandbox"))
            .count()
    };
    let mut rt = d.runtime().await;
    let first_config = pod.clone();
    let first = tokio::spawn(async move {
        rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(first_config),
            runtime_handler: String::new(),
        })
        .await
    });
    // The daemon has begun creating the sandbox; then the client gives up, as kubelet does when
    // its deadline expires (the stream is reset; the creation goes on on its own task).
    d.poll(
        "the first attempt to reach the daemon",
        std::time::Duration::from_secs(20),
        || std::future::ready((delayed(&d) == 1).then_some(())),
    )
    .await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // The retry joins the running creation and gets its sandbox; it creates nothing itself.
    let id = run_pod(&d, &pod).await;
    assert_eq!(
        delayed(&d),
        1,
        "the retry created a sandbox of its own:\n{}",
        d.log()
    );
    let pods = d
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        pods.len(),
        1,
        "exactly one sandbox for the two attempts: {pods:?}"
    );
    assert_eq!(pods[0].id, id);
    // Once the retry has its answer, the same name again is a duplicate.
    let err = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    remove_pod(&d, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_id_prefix_state_and_labels() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let mut a = pod_config(&d, "filter-a");
    a.labels.insert("app".into(), "web".into());
    a.labels.insert("tier".into(), "front".into());
    let mut b = pod_config(&d, "filter-b");
    b.labels.insert("app".into(), "db".into());
    let a_id = run_pod(&d, &a).await;
    let b_id = run_pod(&d, &b).await;
    let mut rt = d.runtime().await;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: b_id.clone(),
    })
    .await
    .unwrap();
    let list = |f: cri::PodSandboxFilter| {
        let mut rt = rt.clone();
        async move {
            let mut ids: Vec<String> = rt
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|p| p.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        list(cri::PodSandboxFilter {
            id: a_id[..8].to_string(),
            ..Default::default()
        })
        .await,
        vec![a_id.clone()]
    );
    let ready = cri::PodSandboxStateValue {
        state: cri::PodSandboxState::SandboxReady as i32,
    };
    assert_eq!(
        list(cri::PodSandboxFilter {
            state: Some(ready),
            ..Default::default()
        })
        .await,
        vec![a_id.clone()]
    );
    let not_ready = cri::PodSandboxStateValue {
        state: cri::PodSandboxState::SandboxNotready as i32,
    };
    assert_eq!(
        list(cri::PodSandboxFilter {
            state: Some(not_ready),
            ..Default::default()
        })
        .await,
        vec![b_id.clone()]
    );
    let sel = [
        ("app".to_string(), "web".to_string()),
        ("tier".to_string(), "front".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        list(cri::PodSandboxFilter {
            label_selector: sel,
            ..Default::default()
        })
        .await,
        vec![a_id.clone()]
    );
    let sel = [
        ("app".to_string(), "web".to_string()),
        ("tier".to_string(), "back".to_string()),
    ]
    .into_iter()
    .collect();
    assert!(list(cri::PodSandboxFilter {
        label_selector: sel,
        ..Default::default()
    })
    .await
    .is_empty());

    // Containers: by pod, state and label.
    let mut c = container_config("labelled", &image("busybox"), "sleep 100");
    c.labels.insert("role".into(), "main".into());
    let c_id = run_container(&d, &a_id, &a, c).await;
    let done = run_container(
        &d,
        &a_id,
        &a,
        container_config("done", &image("busybox"), "true"),
    )
    .await;
    wait_exited(&d, &done).await;
    let lc = |f: cri::ContainerFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_containers(cri::ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        }
    };
    let running = cri::ContainerStateValue {
        state: cri::ContainerState::ContainerRunning as i32,
    };
    assert_eq!(
        lc(cri::ContainerFilter {
            state: Some(running),
            ..Default::default()
        })
        .await,
        vec![c_id.clone()]
    );
    let sel = [("role".to_string(), "main".to_string())]
        .into_iter()
        .collect();
    assert_eq!(
        lc(cri::ContainerFilter {
            label_selector: sel,
            ..Default::default()
        })
        .await,
        vec![c_id.clone()]
    );
    assert_eq!(
        lc(cri::ContainerFilter {
            pod_sandbox_id: b_id.clone(),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        lc(cri::ContainerFilter {
            id: done[..10].to_string(),
            ..Default::default()
        })
        .await,
        vec![done.clone()]
    );
    remove_pod(&d, &a_id).await;
    remove_pod(&d, &b_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn container_events_follow_the_lifecycle() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let mut events = d
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let pod = pod_config(&d, "events");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        // Exits when the test says so, after its started event was seen.
        container_config(
            "brief",
            &image("busybox"),
            "until [ -e /tmp/go ]; do sleep 0.05; done; exit 5",
        ),
    )
    .await;
    let mut seen = Vec::new();
    let deadline = std::time::Duration::from_secs(20);
    while seen.len() < 3 {
        if seen.len() == 2 {
            d.runtime()
                .await
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id.clone(),
                    cmd: vec!["touch".into(), "/tmp/go".into()],
                    timeout: 10,
                })
                .await
                .unwrap();
        }
        let e = tokio::time::timeout(deadline, events.message())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        assert_eq!(e.container_id, id);
        assert_eq!(
            e.pod_sandbox_status.as_ref().map(|s| s.id.clone()),
            Some(pod_id.clone())
        );
        let st = e.containers_statuses[0].clone();
        seen.push((e.container_event_type, st.state, st.exit_code));
    }
    assert_eq!(
        seen,
        vec![
            (
                cri::ContainerEventType::ContainerCreatedEvent as i32,
                cri::ContainerState::ContainerCreated as i32,
                0
            ),
            (
                cri::ContainerEventType::ContainerStartedEvent as i32,
                cri::ContainerState::ContainerRunning as i32,
                0
            ),
            (
                cri::ContainerEventType::ContainerStoppedEvent as i32,
                cri::ContainerState::ContainerExited as i32,
                5
            ),
        ]
    );
    d.runtime()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let e = tokio::time::timeout(deadline, events.message())
        .await
        .expect("event in time")
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (
            id.as_str(),
            cri::ContainerEventType::ContainerDeletedEvent as i32
        )
    );
    remove_pod(&d, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_cut_short_by_a_crash_is_undone_on_restart() {
    ensure_images();
    let mut d = Daemon::start_with(Network::Bridge { subnet: 210 }).await;
    let pod = with_pid_mode(pod_config(&d, "cutshort"), cri::NamespaceMode::Pod);
    let pod_id = run_pod(&d, &pod).await;
    let init_pid = pod_init_pid(&d, &pod_id).await;
    let ipam = d.dir.path().join("ipam");
    let leases = || {
        walk_files(&ipam)
            .into_iter()
            .filter(|p| p.contains("10.123.210."))
            .count()
    };
    assert_eq!(leases(), 1);
    // Simulate a daemon killed in the middle of RunPodSandbox: everything is made, but the
    // record still says Creating.
    d.kill9();
    let path = d.root.join("sandboxes").join(&pod_id).join("sandbox.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    rec["state"] = serde_json::json!("Creating");
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    d.restart().await;
    let pods = d
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    assert_eq!(leases(), 0, "the IP lease is released");
    assert_eq!(d.mounts(), Vec::<String>::new(), "namespace pins are gone");
    assert!(!d.state.join("sandboxes").join(&pod_id).exists());
    assert!(!d.root.join("sandboxes").join(&pod_id).exists());
    assert!(pod_init_gone(init_pid), "pod init {init_pid} left running");
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "krioe2e210"])
        .status();
}

fn walk_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk_files(&e.path()));
            } else {
                out.push(e.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oom_killed_container_says_so() {
    oom_killed_container_says_so(Handler::Runc, 16).await;
}

/// Under runsc the limit is the gVisor sandbox's (its cgroup holds the Sentry, which needs
/// some 50 MiB of its own): the host's OOM killer kills the sandbox once the process inside
/// takes the rest.
#[tokio::test(flavor = "multi_thread")]
async fn an_oom_killed_container_says_so_under_runsc() {
    oom_killed_container_says_so(Handler::Runsc, 128).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "youki is not installed by the suite (its build is too slow): bench/youki.sh runs it"]
async fn an_oom_killed_container_says_so_under_youki() {
    Handler::Youki.require();
    oom_killed_container_says_so(Handler::Youki, 16).await;
}

/// A container with a memory limit of `limit_mib` MiB that allocates without end is reported
/// Exited with 137 and reason `OOMKilled`.
async fn oom_killed_container_says_so(handler: Handler, limit_mib: i64) {
    ensure_images();
    let d = Daemon::start_handler(handler, Network::Loopback).await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "oom");
    let pod_id = run_pod(&d, &pod).await;
    let mut c = container_config("hog", &image("busybox"), "exec tail /dev/zero");
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: limit_mib * 1024 * 1024,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_container(&d, &pod_id, &pod, c).await;
    let st = wait_exited(&d, &id).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:?}"
    );
    remove_pod(&d, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_come_from_the_cgroups_and_the_writable_layer() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "stats");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "busy",
            &image("busybox"),
            "dd if=/dev/zero of=/tmp/blob bs=1024 count=2048 2>/dev/null; while true; do :; done",
        ),
    )
    .await;
    let mut rt = d.runtime().await;
    // Once dd has written its 2 MiB and the loop has used 10 ms of CPU time.
    let first = d
        .poll(
            "the container's stats to show its writes and CPU time",
            std::time::Duration::from_secs(30),
            || {
                let mut rt = rt.clone();
                let pod_id = pod_id.clone();
                async move {
                    let stats = rt
                        .list_container_stats(cri::ListContainerStatsRequest {
                            filter: Some(cri::ContainerStatsFilter {
                                pod_sandbox_id: pod_id,
                                ..Default::default()
                            }),
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .stats;
                    let s = stats.first()?;
                    let cpu = s.cpu.as_ref()?.usage_core_nano_seconds.as_ref()?.value;
                    let layer = s.writable_layer.as_ref()?.used_bytes.as_ref()?.value;
                    (cpu > 10_000_000 && layer >= 2 * 1024 * 1024).then_some(stats)
                }
            },
        )
        .await;
    assert_eq!(first.len(), 1);
    let s = &first[0];
    assert_eq!(s.attributes.as_ref().unwrap().id, id);
    let cpu = s
        .cpu
        .as_ref()
        .unwrap()
        .usage_core_nano_seconds
        .as_ref()
        .unwrap()
        .value;
    assert!(cpu > 10_000_000, "cpu {cpu}");
    let mem = s.memory.as_ref().unwrap();
    assert!(mem.working_set_bytes.as_ref().unwrap().value > 0, "{mem:?}");
    let layer = s
        .writable_layer
        .as_ref()
        .unwrap()
        .used_bytes
        .as_ref()
        .unwrap()
        .value;
    assert!(layer >= 2 * 1024 * 1024, "writable layer {layer}");
    // usage_nano_cores is the rate between the background sampler's consecutive samples (the
    // harness samples every second; there is none until it has taken two): a busy loop shows a
    // good part of a core in some sample, however busy the machine is elsewhere.
    d.poll(
        "a sample with the busy loop using over 0.1 core",
        std::time::Duration::from_secs(30),
        || {
            let mut rt = rt.clone();
            let id = id.clone();
            async move {
                let second = rt
                    .container_stats(cri::ContainerStatsRequest { container_id: id })
                    .await
                    .unwrap()
                    .into_inner()
                    .stats
                    .unwrap();
                let cores = second.cpu.unwrap().usage_nano_cores?.value;
                (cores > 100_000_000).then_some(())
            }
        },
    )
    .await;
    let pod_stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .linux
        .unwrap();
    assert_eq!(pod_stats.containers.len(), 1);
    assert!(
        pod_stats
            .cpu
            .unwrap()
            .usage_core_nano_seconds
            .unwrap()
            .value
            >= cpu
    );
    assert!(pod_stats.process.unwrap().process_count.unwrap().value >= 1);
    let all = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    remove_pod(&d, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_monitors_and_pod_inits_do_not_wedge_pods() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let pod = with_pid_mode(pod_config(&d, "wedge"), cri::NamespaceMode::Pod);
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("orphaned", &image("busybox"), "sleep 100000"),
    )
    .await;
    let mut rt = d.runtime().await;
    let info = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let monitor = v["monitorPid"].as_i64().unwrap() as i32;
    // The monitor dies (say, the OOM killer): the container must still stop and go.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = std::time::Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(
        status(&d, &id).await.state,
        cri::ContainerState::ContainerExited as i32
    );
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();

    // ExecSync past its timeout is DeadlineExceeded, as kubelet's probes expect.
    let sleeper = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("sleeper", &image("busybox"), "sleep 100000"),
    )
    .await;
    let err = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");

    // The pod init dies: the pod becomes NotReady at once, not only after a restart.
    let init = pod_init_pid(&d, &pod_id).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.poll(
        "the pod to be NotReady after its init died",
        std::time::Duration::from_secs(5),
        || {
            let mut rt = rt.clone();
            let pod_id = pod_id.clone();
            async move {
                let st = rt
                    .pod_sandbox_status(cri::PodSandboxStatusRequest {
                        pod_sandbox_id: pod_id,
                        verbose: false,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status
                    .unwrap();
                (st.state == cri::PodSandboxState::SandboxNotready as i32).then_some(())
            }
        },
    )
    .await;
    remove_pod(&d, &pod_id).await;
    assert_eq!(d.mounts(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_event_streams_and_the_daemon() {
    require_prerequisites();
    let mut d = Daemon::start().await;
    let mut events = d
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let pid = d.pid().expect("daemon running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), events.message()).await;
    assert!(
        matches!(end, Ok(Ok(None)) | Ok(Err(_))),
        "the event stream ends on shutdown: {end:?}"
    );
    let status = d
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("krio exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!d.socket.exists(), "the socket is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_shared_pid_namespace_a_containers_leftovers_end_with_it() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let pod = with_pid_mode(pod_config(&d, "leftovers"), cri::NamespaceMode::Pod);
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "parent",
            &image("busybox"),
            // Exits once the background sleep has exec'd.
            "sleep 100123 & while [ \"$(cat /proc/$!/comm)\" != sleep ]; do :; done; exit 4",
        ),
    )
    .await;
    let st = wait_exited(&d, &id).await;
    assert_eq!(st.exit_code, 4);
    d.poll(
        "the background process to end with its container",
        std::time::Duration::from_secs(5),
        || {
            let alive = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                String::from_utf8_lossy(&cmd).replace('\0', " ").trim() == "sleep 100123"
                    && !stat.contains(") Z ")
            });
            std::future::ready((!alive).then_some(()))
        },
    )
    .await;
    remove_pod(&d, &pod_id).await;
}
