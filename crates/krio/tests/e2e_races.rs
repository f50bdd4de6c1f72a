//! Races and faults of issue 11, exercised for real against a daemon: a create racing a stop of
//! the same pod, an image removal racing a create, a monitor killed without an exit file, and
//! a create whose caller gave up followed by a removal and a new create of the same name.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use krio_cri::v1 as cri;

/// Names of the entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that nothing of any container or pod is left: no container or sandbox directory, no
/// mount, no monitor or runtime process.
fn assert_nothing_left(d: &Daemon, when: &str) {
    for dir in [
        d.root.join("containers"),
        d.state.join("containers"),
        d.root.join("sandboxes"),
        d.state.join("sandboxes"),
    ] {
        assert_eq!(
            entries(&dir),
            Vec::<String>::new(),
            "{when}: {} is not empty; daemon log:\n{}",
            dir.display(),
            d.log()
        );
    }
    assert_eq!(d.mounts(), Vec::<String>::new(), "{when}: mounts left");
    assert_eq!(
        d.processes(),
        Vec::<(i32, String)>::new(),
        "{when}: processes left"
    );
}

/// A create racing a stop of the same pod either succeeds before the stop (and is then stopped
/// by it) or fails cleanly with FailedPrecondition and leaves nothing behind. The stop is sent
/// after a delay that varies from one iteration to the next, so that it lands before, during and
/// after the create.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_racing_stop_of_the_same_pod_is_clean() {
    ensure_images();
    let d = Daemon::start().await;
    let busybox = image("busybox");
    pull(&d, &busybox).await;
    let budget = Instant::now() + Duration::from_secs(60);
    let (mut created, mut refused, mut iterations) = (0, 0, 0);
    for i in 0..100u64 {
        if Instant::now() > budget && iterations >= 20 {
            break;
        }
        iterations += 1;
        let pod = pod_config(&d, &format!("race{i}"));
        let pod_id = run_pod(&d, &pod).await;
        let mut rt_create = d.runtime().await;
        let mut rt_stop = rt_create.clone();
        let create = rt_create.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config("c", &busybox, "sleep 1000")),
            sandbox_config: Some(pod.clone()),
        });
        let stop_pod = pod_id.clone();
        let stop = async move {
            // 0 to 30 ms: before, while and after the create runs.
            tokio::time::sleep(Duration::from_millis((i % 16) * 2)).await;
            rt_stop
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: stop_pod,
                })
                .await
        };
        let deadline = Duration::from_secs(60);
        let (c, s) = tokio::time::timeout(deadline, async { tokio::join!(create, stop) })
            .await
            .unwrap_or_else(|_| panic!("iteration {i}: create and stop deadlocked"));
        s.unwrap_or_else(|e| panic!("iteration {i}: StopPodSandbox: {e}; log:\n{}", d.log()));
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
        match c {
            Ok(r) => {
                created += 1;
                let id = r.into_inner().container_id;
                assert_eq!(listed.len(), 1, "iteration {i}: {listed:?}");
                let st = status(&d, &id).await;
                assert_eq!(
                    st.state,
                    cri::ContainerState::ContainerExited as i32,
                    "iteration {i}: a container created in a pod being stopped must be stopped \
                     with it: {st:?}; daemon log:\n{}",
                    d.log()
                );
            }
            Err(e) => {
                refused += 1;
                assert_eq!(
                    e.code(),
                    tonic::Code::FailedPrecondition,
                    "iteration {i}: a create refused by a stop must be FailedPrecondition: {e}; \
                     daemon log:\n{}",
                    d.log()
                );
                assert_eq!(
                    listed,
                    Vec::new(),
                    "iteration {i}: refused create left a container"
                );
                // Nothing of the refused container: only the pod's own directories remain.
                assert_eq!(
                    entries(&d.root.join("containers")),
                    Vec::<String>::new(),
                    "iteration {i}"
                );
            }
        }
        d.runtime()
            .await
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("iteration {i}: RemovePodSandbox: {e}; log:\n{}", d.log()));
        assert_nothing_left(&d, &format!("iteration {i}"));
    }
    eprintln!("{iterations} iterations: {created} created before the stop, {refused} refused");
    assert!(created + refused == iterations);
}

/// RemoveImage while a create of a container of that image is in flight (held in the daemon by
/// the test-only creation delay, before its rootfs is mounted) is refused with
/// FailedPrecondition, and the create then succeeds with its layers intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_image_counts_creates_in_flight() {
    ensure_images();
    let d =
        Daemon::start_with_env(Network::Loopback, &[("KRIO_TEST_DELAY_CREATE_MS", "1500")]).await;
    let busybox = image("busybox");
    let image_id = pull(&d, &busybox).await;
    let pod = pod_config(&d, "rmi");
    let pod_id = run_pod(&d, &pod).await;
    let mut rt = d.runtime().await;
    let (p, b) = (pod.clone(), busybox.clone());
    let pid = pod_id.clone();
    let create = tokio::spawn(async move {
        rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pid,
            config: Some(container_config("c", &b, "echo ready; sleep 1000")),
            sandbox_config: Some(p),
        })
        .await
    });
    d.poll(
        "the create to be held by the test-only delay",
        Duration::from_secs(20),
        || {
            let held = d.log().lines().any(|l| {
                l.contains("test-only delay before creating") && l.contains("kind=container")
            });
            std::future::ready(held.then_some(()))
        },
    )
    .await;
    let err = d
        .images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("RemoveImage must refuse an image a create in flight uses");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let id = create
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("CreateContainer: {e}; log:\n{}", d.log()))
        .into_inner()
        .container_id;
    d.runtime()
        .await
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    wait_log_line(&d, &id, "ready").await;
    // Its only tag (with the digest of the same repository) names the image itself: removing
    // it would delete the image, so it is refused while the container uses it.
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
        .expect_err("RemoveImage of the last tag of an image in use must be refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    remove_pod(&d, &pod_id).await;
    // Nothing uses it any more: now it goes.
    d.images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image_id,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    assert_nothing_left(&d, "after removal");
}

/// A monitor killed with SIGKILL writes no exit file: the daemon notices, kills the orphaned
/// container process and reports the container exited (255, reason naming the monitor loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_monitor_killed_without_an_exit_file_is_noticed() {
    ensure_images();
    let d = Daemon::start().await;
    let busybox = image("busybox");
    pull(&d, &busybox).await;
    let pod = pod_config(&d, "monlost");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("c", &busybox, "echo ready; sleep 1000"),
    )
    .await;
    wait_log_line(&d, &id, "ready").await;
    let info = d
        .runtime()
        .await
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
    let init = v["pid"].as_i64().unwrap() as i32;
    assert!(monitor > 0 && init > 0, "{v}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = d
        .poll(
            "the container to be reported exited after its monitor was killed",
            Duration::from_secs(20),
            || async {
                let s = status(&d, &id).await;
                (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
            },
        )
        .await;
    assert_eq!(st.exit_code, 255, "{st:?}");
    assert!(st.reason.contains("Monitor"), "{st:?}");
    d.poll(
        "the orphaned container process to be killed",
        Duration::from_secs(10),
        || std::future::ready(pod_init_gone(init).then_some(())),
    )
    .await;
    remove_pod(&d, &pod_id).await;
    assert_nothing_left(&d, "after removal");
}

/// A create whose caller gave up finishes on its own; once that container is removed, a new
/// create of the same name makes a new container instead of being handed the removed id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_later_create_is_never_handed_a_removed_container() {
    ensure_images();
    let d =
        Daemon::start_with_env(Network::Loopback, &[("KRIO_TEST_DELAY_CREATE_MS", "1000")]).await;
    let busybox = image("busybox");
    pull(&d, &busybox).await;
    let pod = pod_config(&d, "gaveup");
    let pod_id = run_pod(&d, &pod).await;
    let request = || cri::CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(container_config("c", &busybox, "sleep 1000")),
        sandbox_config: Some(pod.clone()),
    };
    let mut req = tonic::Request::new(request());
    req.set_timeout(Duration::from_millis(200));
    let err = d
        .runtime()
        .await
        .create_container(req)
        .await
        .expect_err("the caller gives up before the delayed create ends");
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err}"
    );
    let list = || async {
        d.runtime()
            .await
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
    };
    let first = d
        .poll(
            "the abandoned create to finish",
            Duration::from_secs(20),
            || async { list().await.first().map(|c| c.id.clone()) },
        )
        .await;
    d.runtime()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: first.clone(),
        })
        .await
        .unwrap();
    assert!(list().await.is_empty());
    let second = d
        .runtime()
        .await
        .create_container(request())
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}; log:\n{}", d.log()))
        .into_inner()
        .container_id;
    assert_ne!(second, first, "handed the id of a removed container");
    let listed: Vec<String> = list().await.into_iter().map(|c| c.id).collect();
    assert_eq!(listed, vec![second.clone()]);
    remove_pod(&d, &pod_id).await;
    assert_nothing_left(&d, "after removal");
}

/// Every log line of a call carries the call's span: the RPC name, a request id of its own and
/// the sandbox or container id, also on the tasks the call spawns (the detached stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_logs_under_a_span_with_its_ids() {
    ensure_images();
    let d = Daemon::start().await;
    let busybox = image("busybox");
    pull(&d, &busybox).await;
    let pod = pod_config(&d, "spans");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("c", &busybox, "sleep 1000"),
    )
    .await;
    remove_pod(&d, &pod_id).await;
    let log = d.log();
    let line = |what: &str, rpc: &str| {
        log.lines()
            .find(|l| l.contains(what) && l.contains(&format!("rpc{{rpc={rpc} ")))
            .unwrap_or_else(|| panic!("no {what:?} line in the span of {rpc}; log:\n{log}"))
            .to_string()
    };
    let request_id = |l: &str| {
        l.split("request_id=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no request id in {l}"))
    };
    // The detached stop task logs in the StopPodSandbox span, naming the pod.
    let stopped = line("sandbox stopped", "StopPodSandbox");
    assert!(stopped.contains(&format!("sandbox={pod_id}")), "{stopped}");
    // The creating task of CreateContainer names the container it makes and the pod.
    let created = line(": ok", "CreateContainer");
    assert!(
        created.contains(&format!("sandbox={pod_id}"))
            && created.contains(&format!("container={id}")),
        "{created}"
    );
    let started = line("container started", "StartContainer");
    assert!(started.contains(&format!("container={id}")), "{started}");
    let ran = line(": ok", "RunPodSandbox");
    assert!(ran.contains(&format!("sandbox={pod_id}")), "{ran}");
    // Each call has its own request id.
    let ids = [&stopped, &created, &started, &ran].map(|l| request_id(l));
    let mut unique = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

/// Load: 50 pods with a container each, started and removed in parallel, while other tasks
/// keep calling ListPodSandbox, ListContainers, Status and ContainerStatus and try to remove the
/// image in use. No call may fail except RemoveImage with FailedPrecondition (a container and
/// the anchor pod always use the image), every call has a deadline (no deadlock), and nothing
/// is left once the pods are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_pods_in_parallel_with_readers_and_image_removals() {
    const PODS: usize = 50;
    const DEADLINE: Duration = Duration::from_secs(120);
    ensure_images();
    let d = std::sync::Arc::new(Daemon::start().await);
    let busybox = image("busybox");
    let image_id = pull(&d, &busybox).await;
    // An anchor pod whose container uses the image for the whole test.
    let anchor = pod_config(&d, "anchor");
    let anchor_id = run_pod(&d, &anchor).await;
    run_container(
        &d,
        &anchor_id,
        &anchor,
        container_config("c", &busybox, "sleep 1000"),
    )
    .await;
    async fn within<T>(what: String, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, f)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {DEADLINE:?} (deadlock?)"))
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (d, done, image_id) = (d.clone(), done.clone(), image_id.clone());
        readers.push(tokio::spawn(async move {
            let mut rt = d.runtime().await;
            let mut img = d.images().await;
            let (mut calls, mut refused) = (0u64, 0u64);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                within(
                    format!("reader {r}: ListPodSandbox"),
                    rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()),
                )
                .await
                .unwrap_or_else(|e| panic!("ListPodSandbox: {e}"));
                let containers = within(
                    format!("reader {r}: ListContainers"),
                    rt.list_containers(cri::ListContainersRequest::default()),
                )
                .await
                .unwrap_or_else(|e| panic!("ListContainers: {e}"))
                .into_inner()
                .containers;
                within(
                    format!("reader {r}: Status"),
                    rt.status(cri::StatusRequest::default()),
                )
                .await
                .unwrap_or_else(|e| panic!("Status: {e}"));
                for c in containers.iter().take(5) {
                    // A container listed a moment ago may have been removed since.
                    match within(
                        format!("reader {r}: ContainerStatus"),
                        rt.container_status(cri::ContainerStatusRequest {
                            container_id: c.id.clone(),
                            verbose: false,
                        }),
                    )
                    .await
                    {
                        Ok(_) => {}
                        Err(e) if e.code() == tonic::Code::NotFound => {}
                        Err(e) => panic!("ContainerStatus: {e}"),
                    }
                }
                let e = within(
                    format!("reader {r}: RemoveImage"),
                    img.remove_image(cri::RemoveImageRequest {
                        image: Some(cri::ImageSpec {
                            image: image_id.clone(),
                            ..Default::default()
                        }),
                    }),
                )
                .await
                .expect_err("the image is in use: RemoveImage must fail");
                assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
                refused += 1;
                calls += 4 + containers.len().min(5) as u64;
            }
            (calls, refused)
        }));
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..PODS {
        let (d, busybox) = (d.clone(), busybox.clone());
        workers.push(tokio::spawn(async move {
            let pod = pod_config(&d, &format!("load{i}"));
            let mut rt = d.runtime().await;
            let pod_id = within(
                format!("pod {i}: RunPodSandbox"),
                rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(pod.clone()),
                    runtime_handler: String::new(),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("pod {i}: RunPodSandbox: {e}"))
            .into_inner()
            .pod_sandbox_id;
            let id = within(
                format!("pod {i}: CreateContainer"),
                rt.create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod_id.clone(),
                    config: Some(container_config("c", &busybox, "sleep 1000")),
                    sandbox_config: Some(pod.clone()),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("pod {i}: CreateContainer: {e}"))
            .into_inner()
            .container_id;
            within(
                format!("pod {i}: StartContainer"),
                rt.start_container(cri::StartContainerRequest {
                    container_id: id.clone(),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("pod {i}: StartContainer: {e}"));
            within(
                format!("pod {i}: StopPodSandbox"),
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: pod_id.clone(),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("pod {i}: StopPodSandbox: {e}"));
            within(
                format!("pod {i}: RemovePodSandbox"),
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: pod_id,
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("pod {i}: RemovePodSandbox: {e}"));
        }));
    }
    for w in workers {
        w.await
            .unwrap_or_else(|e| panic!("a pod worker failed: {e}; daemon log:\n{}", d.log()));
    }
    let elapsed = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Release);
    let (mut calls, mut refused) = (0, 0);
    for r in readers {
        let (c, n) = r
            .await
            .unwrap_or_else(|e| panic!("a reader failed: {e}; daemon log:\n{}", d.log()));
        calls += c;
        refused += n;
    }
    eprintln!(
        "{PODS} pods started and removed in {elapsed:?}; {calls} reader calls, {refused} RemoveImage refusals"
    );
    assert!(refused > 0);
    remove_pod(&d, &anchor_id).await;
    assert_nothing_left(&d, "after the load");
}

/// What the client of a kill-point run was told before the daemon died.
#[derive(Debug, Default)]
struct Told {
    pod: Option<String>,
    container: Option<String>,
    started: bool,
    stopped: bool,
    pod_stopped: bool,
    container_removed: bool,
    pod_removed: bool,
    image_removed: bool,
}

/// The command of the kill-point runs' container, unique enough to count its processes.
const KILL_POINT_SLEEP: &str = "7373";

/// Processes running `sleep 7373` (the kill-point container's command) on the host.
fn kill_point_sleepers() -> usize {
    let want = format!("sleep\0{KILL_POINT_SLEEP}\0");
    std::fs::read_dir("/proc")
        .expect("reading /proc")
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .count()
}

/// Checks a pod's state after a kill-point restart against what the client was told.
fn check_pod_state(p: &cri::PodSandbox, told: &Told, inflight: &str) -> Result<(), String> {
    let ready = p.state == cri::PodSandboxState::SandboxReady as i32;
    let may_be_stopped = matches!(inflight, "StopPodSandbox" | "RemovePodSandbox");
    if told.pod_stopped && ready {
        return Err("a pod told stopped is Ready".into());
    }
    if !told.pod_stopped && !ready && !may_be_stopped {
        return Err(format!("a pod told ready is {:?}", p.state));
    }
    Ok(())
}

/// Checks a container's state after a kill-point restart against what the client was told.
fn check_container_state(c: &cri::Container, told: &Told, inflight: &str) -> Result<(), String> {
    use cri::ContainerState as S;
    let allowed: &[S] = if told.stopped || told.pod_stopped {
        &[S::ContainerExited]
    } else if told.started {
        if matches!(inflight, "StopContainer" | "StopPodSandbox") {
            &[S::ContainerRunning, S::ContainerExited]
        } else {
            &[S::ContainerRunning]
        }
    } else if inflight == "StartContainer" {
        &[S::ContainerCreated, S::ContainerRunning]
    } else {
        &[S::ContainerCreated]
    };
    if !allowed.iter().any(|s| *s as i32 == c.state) {
        return Err(format!(
            "container told {told:?} is {:?}",
            S::try_from(c.state)
        ));
    }
    Ok(())
}

/// One kill-point run: the daemon SIGKILLs itself at `point` while a client drives a pod
/// through its whole life; the daemon is restarted, what the client was told is checked, the
/// rest of the life is finished through the CRI, and nothing may be left. `Err` says why not.
async fn kill_point_run(point: &'static str) -> Result<(), String> {
    let mut d =
        Daemon::start_with_env(Network::Loopback, &[(krio_server::TEST_KILL_AT_ENV, point)]).await;
    let busybox = image("busybox");
    let mut image_id = String::new();
    let pod = pod_config(&d, "kp");
    let mut told = Told::default();
    let mut rt = d.runtime().await;
    let mut img = d.images().await;
    let inflight = point.split(':').next().unwrap_or_default();
    let mut failed: Option<tonic::Status> = None;
    macro_rules! step {
        ($call:expr) => {
            match $call.await {
                Ok(r) => Some(r.into_inner()),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        };
    }
    'life: {
        let Some(r) = step!(img.pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: busybox.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })) else {
            break 'life;
        };
        image_id = r.image_ref;
        let Some(r) = step!(rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })) else {
            break 'life;
        };
        let pod_id = r.pod_sandbox_id;
        told.pod = Some(pod_id.clone());
        let Some(r) = step!(rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(
                "c",
                &busybox,
                &format!("exec sleep {KILL_POINT_SLEEP}")
            )),
            sandbox_config: Some(pod.clone()),
        })) else {
            break 'life;
        };
        let id = r.container_id;
        told.container = Some(id.clone());
        if step!(rt.start_container(cri::StartContainerRequest {
            container_id: id.clone()
        }))
        .is_none()
        {
            break 'life;
        }
        told.started = true;
        if step!(rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0
        }))
        .is_none()
        {
            break 'life;
        }
        told.stopped = true;
        if step!(rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone()
        }))
        .is_none()
        {
            break 'life;
        }
        told.pod_stopped = true;
        if step!(rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone()
        }))
        .is_none()
        {
            break 'life;
        }
        told.container_removed = true;
        if step!(rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone()
        }))
        .is_none()
        {
            break 'life;
        }
        told.pod_removed = true;
        if step!(img.remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image_id.clone(),
                ..Default::default()
            }),
        }))
        .is_none()
        {
            break 'life;
        }
        told.image_removed = true;
    }
    let Some(err) = failed else {
        return Err("the kill point was never reached".into());
    };
    if d.wait_exit(Duration::from_secs(10)).is_none() {
        return Err(format!("a call failed but the daemon lives: {err}"));
    }
    if !d.log().contains("test-only kill point reached") {
        return Err(format!("the daemon died elsewhere: {err}"));
    }
    d.env.clear();
    d.restart().await;
    let mut rt = d.runtime().await;
    let mut img = d.images().await;
    // Everything the client was told exists is there, in the state it was told.
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .items;
    // A removal in flight may have gone far enough to take its object with it.
    let pod_removal = inflight == "RemovePodSandbox";
    let container_removal = pod_removal || inflight == "RemoveContainer";
    if let Some(pod_id) = told.pod.as_ref().filter(|_| !told.pod_removed) {
        match pods.iter().find(|p| &p.id == pod_id) {
            None if pod_removal => {}
            None => return Err(format!("pod {pod_id} is gone after the restart")),
            Some(p) => check_pod_state(p, &told, inflight)?,
        }
    }
    let containers = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .containers;
    if containers.len() > 1 {
        return Err(format!("{} containers for one create", containers.len()));
    }
    if let Some(id) = told.container.as_ref().filter(|_| !told.container_removed) {
        match containers.iter().find(|c| &c.id == id) {
            None if container_removal => {}
            None => return Err(format!("container {id} is gone after the restart")),
            Some(c) => check_container_state(c, &told, inflight)?,
        }
    }
    let image_now = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: busybox.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .image;
    let told_image = !image_id.is_empty() && !told.image_removed;
    if told_image && image_now.is_none() && inflight != "RemoveImage" {
        return Err("the image is gone after the restart".into());
    }
    // No container runs twice.
    let sleepers = kill_point_sleepers();
    if sleepers > 1 {
        return Err(format!("{sleepers} processes of one container"));
    }
    // Finish the life through the CRI; then nothing may be left without an owner.
    for c in &containers {
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: c.id.clone(),
        })
        .await
        .map_err(|e| format!("RemoveContainer after the restart: {e}"))?;
    }
    for p in &pods {
        for call in [true, false] {
            let r = if call {
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await
                .map(drop)
            } else {
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await
                .map(drop)
            };
            r.map_err(|e| format!("tearing the pod down after the restart: {e}"))?;
        }
    }
    if let Some(i) = image_now {
        img.remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: i.id,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| format!("RemoveImage after the restart: {e}"))?;
    }
    let left = std::panic::catch_unwind(|| assert_nothing_left(&d, point));
    if let Err(p) = left {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "leftovers".into());
        return Err(msg.chars().take(1500).collect());
    }
    if kill_point_sleepers() > 0 {
        return Err("the container's process outlived its removal".into());
    }
    let layers = entries(&d.root.join("layers"));
    if !layers.is_empty() {
        return Err(format!("layers left without an image: {layers:?}"));
    }
    let runc = entries(&d.state.join("runtime/runc"));
    if !runc.is_empty() {
        return Err(format!("runtime state left: {runc:?}"));
    }
    for h in entries(Path::new("/sys/fs/cgroup")) {
        let base = Path::new("/sys/fs/cgroup")
            .join(h)
            .join(d.cgroup_parent.trim_start_matches('/'));
        let pods: Vec<String> = entries(&base)
            .into_iter()
            .filter(|e| e.starts_with("pod-"))
            .collect();
        if !pods.is_empty() {
            return Err(format!("cgroups left in {}: {pods:?}", base.display()));
        }
    }
    Ok(())
}

/// The daemon SIGKILLs itself at each kill point in turn (`KRIO_TEST_KILL_AT`) while a client
/// drives a pod, its container and its image through their whole life; after a restart,
/// everything the client was told exists is there in the right state, no container runs twice,
/// and once the life is finished nothing is left: no directory, mount, namespace pin, monitor,
/// runtime state, cgroup or layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kill_point_recovers() {
    ensure_images();
    let mut failures = Vec::new();
    for point in krio_server::KILL_POINTS {
        let run = tokio::spawn(kill_point_run(point)).await;
        let outcome = match run {
            Ok(r) => r,
            Err(e) => Err(format!("panicked: {e}")),
        };
        eprintln!(
            "kill point {point}: {}",
            outcome.as_ref().map_or_else(|e| e.as_str(), |()| "ok")
        );
        if let Err(e) = outcome {
            failures.push(format!("{point}: {e}"));
        }
    }
    let total = krio_server::KILL_POINTS.len();
    eprintln!("{} of {total} kill points pass", total - failures.len());
    assert!(failures.is_empty(), "{failures:#?}");
}
