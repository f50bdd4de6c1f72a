//! A full disk, for real (issue 11): krio's root and state directories on a small
//! loop-mounted ext4 filesystem that the test fills up. Pulls and creates must fail with
//! `RESOURCE_EXHAUSTED`, leave nothing half-made and corrupt no record (every record still
//! parses after a restart on the full disk), and once space is freed everything works again.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use krio_cri::v1 as cri;

/// Every regular file under `dir`, recursively, not following symlinks nor entering other
/// filesystems' mounts other than the one `dir` is on (pinned namespaces, overlay rootfs).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::symlink_metadata(dir) {
        Ok(m) => m.dev(),
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The daemon's JSON records (and any temp files beside them) under root and state, skipping
/// the writable layers and image layers (container and image content, not krio's records).
fn record_files(d: &Daemon) -> Vec<PathBuf> {
    let mut all = files_under(&d.root);
    all.extend(files_under(&d.state));
    all.into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            !(s.contains("/upper/") || s.contains("/work/") || s.contains("/layers/"))
        })
        .collect()
}

/// Names of the entries of `dir` (none when it does not exist), sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What must not change when a call fails on the full disk: the objects' directories, the
/// image store's layers and blobs, the download scratch, and the mounts.
fn snapshot(d: &Daemon) -> Vec<(String, Vec<String>)> {
    let mut v: Vec<(String, Vec<String>)> = [
        d.root.join("containers"),
        d.state.join("containers"),
        d.root.join("sandboxes"),
        d.state.join("sandboxes"),
        d.root.join("layers"),
        d.root.join("blobs/sha256"),
        d.root.join("images"),
        d.root.join("tmp"),
    ]
    .iter()
    .map(|p| (p.display().to_string(), entries(p)))
    .collect();
    let mut mounts = d.mounts();
    mounts.sort();
    v.push(("mounts".into(), mounts));
    v
}

/// Asserts no temp file of an atomic write is left and every JSON record parses.
fn assert_records_whole(d: &Daemon, when: &str) {
    for p in record_files(d) {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        assert!(
            !name.contains(".tmp"),
            "{when}: temp file {} left behind; daemon log:\n{}",
            p.display(),
            d.log()
        );
        if name.ends_with(".json") {
            let bytes =
                std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                panic!(
                    "{when}: record {} does not parse ({e}): {:?}",
                    p.display(),
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }
}

/// Asserts `r` failed with RESOURCE_EXHAUSTED and a message that says the disk is full.
fn assert_no_space<T: std::fmt::Debug>(d: &Daemon, what: &str, r: Result<T, tonic::Status>) {
    match r {
        Ok(v) => panic!(
            "{what} succeeded on a full disk: {v:?}; daemon log:\n{}",
            d.log()
        ),
        Err(s) => {
            assert_eq!(
                s.code(),
                tonic::Code::ResourceExhausted,
                "{what} on a full disk: {s:?}; daemon log:\n{}",
                d.log()
            );
            assert!(
                s.message().to_lowercase().contains("no space"),
                "{what}: the message does not say the disk is full: {:?}",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_cleanly_and_recovers_when_freed() {
    ensure_images();
    let mut d = Daemon::start_on_disk(64).await;
    let busybox = image("busybox");
    let layered = image("layered");
    pull(&d, &busybox).await;
    let pod = pod_config(&d, "disk");
    let pod_id = run_pod(&d, &pod).await;
    let running = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("before", &busybox, "echo ready; sleep 1000"),
    )
    .await;
    wait_log_line(&d, &running, "ready").await;

    let disk = d.disk.as_ref().expect("daemon on a loop filesystem");
    let filler = disk.fill(4096);
    assert!(
        disk.free_bytes() <= 64 << 10,
        "the filesystem is not full: {} bytes free",
        disk.free_bytes()
    );
    let before = snapshot(&d);

    // A pull of an image with a layer of its own (about 1 MiB to download, 2 MiB unpacked).
    let r = d
        .images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: layered.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_no_space(&d, "PullImage", r);
    assert_records_whole(&d, "after the failed pull");
    assert_eq!(snapshot(&d), before, "the failed pull left something");

    // A create in the existing pod, from an image already present.
    let r = try_create(
        &d,
        &pod_id,
        Some(&pod),
        container_config("during", &busybox, "sleep 1000"),
    )
    .await;
    assert_no_space(&d, "CreateContainer", r);
    assert_records_whole(&d, "after the failed create");
    assert_eq!(snapshot(&d), before, "the failed create left something");

    // A new pod.
    let r = d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(&d, "disk2")),
            runtime_handler: String::new(),
        })
        .await;
    assert_no_space(&d, "RunPodSandbox", r);
    assert_records_whole(&d, "after the failed pod");
    assert_eq!(
        snapshot(&d),
        before,
        "the failed RunPodSandbox left something"
    );

    // Not a byte left: a record update fails and leaves the old record whole.
    let filler2 = d.disk.as_ref().map(|f| f.fill(0)).expect("loop filesystem");
    let r = d
        .runtime()
        .await
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: running.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_no_space(&d, "UpdateContainerResources", r);
    assert_records_whole(&d, "after the failed update");

    // A restart on the full disk reads every record back.
    d.restart().await;
    assert_records_whole(&d, "after a restart on the full disk");
    let mut rt = d.runtime().await;
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        pods.iter()
            .map(|p| (p.id.clone(), p.state))
            .collect::<Vec<_>>(),
        vec![(pod_id.clone(), cri::PodSandboxState::SandboxReady as i32)],
        "pods after the restart"
    );
    let st = status(&d, &running).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "the container started before the disk filled: {st:?}"
    );
    let listed = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![running.clone()],
        "containers after the restart"
    );

    // Space freed: everything works.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&filler2).unwrap();
    let freed = d.disk.as_ref().map(|f| f.free_bytes()).unwrap_or(0);
    assert!(
        freed > 32 << 20,
        "only {freed} bytes free after removing the filler"
    );
    pull(&d, &layered).await;
    let after = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("after", &layered, "cat /data/keep.txt; echo; sleep 1000"),
    )
    .await;
    wait_log_line(&d, &after, "keep").await;
    for id in [&after, &running] {
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("StopContainer {id}: {e}; daemon log:\n{}", d.log()));
        let st = wait_exited(&d, id).await;
        assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}; daemon log:\n{}", d.log()));
    }
    remove_pod(&d, &pod_id).await;
    d.poll("the pod's mounts to go", Duration::from_secs(10), || {
        std::future::ready(
            d.mounts()
                .iter()
                .all(|m| m.ends_with("/disk"))
                .then_some(()),
        )
    })
    .await;
    for dir in [
        d.root.join("containers"),
        d.state.join("containers"),
        d.root.join("sandboxes"),
        d.state.join("sandboxes"),
    ] {
        assert_eq!(
            entries(&dir),
            Vec::<String>::new(),
            "{} not empty",
            dir.display()
        );
    }
    assert_records_whole(&d, "at the end");
}
