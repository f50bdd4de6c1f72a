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
            let err = try_create(&d, &pod_id, Some(&pod), c).await.unwrap_err();
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

/// A bind mount of a directory onto itself with a chosen propagation, undone (lazily, with every
/// submount) when dropped.
struct HostMountPoint(std::path::PathBuf);

impl HostMountPoint {
    fn new(path: std::path::PathBuf, propagation: nix::mount::MsFlags) -> Self {
        use nix::mount::{mount, MsFlags};
        std::fs::create_dir_all(&path).unwrap();
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let guard = HostMountPoint(path);
        mount(
            None::<&str>,
            &guard.0,
            None::<&str>,
            propagation,
            None::<&str>,
        )
        .unwrap();
        guard
    }
}

impl Drop for HostMountPoint {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mounts a fresh tmpfs on `path` (made if absent) in the test's (the host's) mount namespace.
fn mount_tmpfs(path: &std::path::Path) {
    std::fs::create_dir_all(path).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
}

/// The optional fields (`shared:N`, `master:N`, ...) of the mountinfo line whose mount point is `mp`.
fn propagation_fields(mountinfo: &[String], mp: &str) -> Option<Vec<String>> {
    mountinfo.iter().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.len() > 6 && f[4] == mp).then(|| f[6..sep].iter().map(|s| s.to_string()).collect())
    })
}

/// Polls `cond` every 25 ms for up to 30 s.
async fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A CRI mount of `host` at `/mnt/vol` with `propagation`.
fn vol(host: &std::path::Path, propagation: cri::MountPropagation) -> cri::Mount {
    cri::Mount {
        container_path: "/mnt/vol".into(),
        host_path: host.display().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// Waits in the container, up to 30 s, until `cond` (a shell test) holds; exits 3 if it never does.
fn sh_wait(cond: &str) -> String {
    format!("i=0; until {cond}; do i=$((i+1)); [ $i -gt 300 ] && exit 3; sleep 0.1; done")
}

/// `rprivate`, `rslave` and `rshared` as the CRI defines them, in both directions, checked with
/// /proc/self/mountinfo inside the container and on the host; a propagation the host mount cannot carry
/// is refused with FailedPrecondition.
#[tokio::test(flavor = "multi_thread")]
async fn mount_propagation_private_slave_shared() {
    use nix::mount::MsFlags;
    require_prerequisites();
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let shared = HostMountPoint::new(d.dir.path().join("prop-shared"), MsFlags::MS_SHARED);
    let private = HostMountPoint::new(d.dir.path().join("prop-private"), MsFlags::MS_PRIVATE);
    let pod = privileged_pod(&d, "propagation");
    let pod_id = run_pod(&d, &pod).await;
    let mut rt = d.runtime().await;
    let privileged = || cri::LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };

    // Host to container, for rslave and rshared: the host mounts under the source once the container runs.
    let mut started = Vec::new();
    for (name, prop) in [
        ("slave", cri::MountPropagation::PropagationHostToContainer),
        ("shared", cri::MountPropagation::PropagationBidirectional),
    ] {
        let dir = shared.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut script = format!(
            "touch /mnt/vol/ready; {}; ",
            sh_wait("grep -q ' /mnt/vol/fromhost ' /proc/self/mountinfo")
        );
        if name == "shared" {
            // Container to host: a mount made in the container appears on the host.
            script += "mkdir -p /mnt/vol/fromctr && mount -t tmpfs -o size=1m none /mnt/vol/fromctr && echo hi > /mnt/vol/fromctr/hello; ";
        }
        script += "grep ' /mnt/vol' /proc/self/mountinfo; ";
        if name == "shared" {
            script += &sh_wait("[ -e /mnt/vol/done ]");
        }
        let mut c = container_config(name, &image("busybox"), &script);
        c.mounts = vec![vol(&dir, prop)];
        c.linux
            .get_or_insert_with(Default::default)
            .security_context = Some(privileged());
        started.push((name, dir, run_container(&d, &pod_id, &pod, c).await));
    }
    for (name, dir, _) in &started {
        poll_until(&format!("{name} container start"), || {
            dir.join("ready").exists()
        })
        .await;
        mount_tmpfs(&dir.join("fromhost"));
    }
    let host_info = || -> Vec<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let fromctr = shared.0.join("shared/fromctr");
    poll_until("the container's mount on the host", || {
        propagation_fields(&host_info(), fromctr.to_str().unwrap()).is_some()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(fromctr.join("hello")).unwrap(),
        "hi\n"
    );
    std::fs::write(shared.0.join("shared/done"), "").unwrap();
    for (name, _, id) in &started {
        let st = wait_exited(&d, id).await;
        let lines = log_lines(&st);
        assert_eq!(st.exit_code, 0, "{name}: {lines:?}\n{}", d.log());
        let vol = propagation_fields(&lines, "/mnt/vol").unwrap_or_else(|| panic!("{lines:?}"));
        assert!(
            propagation_fields(&lines, "/mnt/vol/fromhost").is_some(),
            "{name}: the host's mount did not propagate: {lines:?}"
        );
        if *name == "slave" {
            assert!(vol.iter().any(|f| f.starts_with("master:")), "{lines:?}");
            assert!(!vol.iter().any(|f| f.starts_with("shared:")), "{lines:?}");
        } else {
            assert!(vol.iter().any(|f| f.starts_with("shared:")), "{lines:?}");
            assert!(
                propagation_fields(&lines, "/mnt/vol/fromctr").is_some(),
                "{lines:?}"
            );
        }
    }

    // rprivate: no peer group and no master, so nothing propagates either way.
    let dir = shared.0.join("private");
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = container_config(
        "private",
        &image("busybox"),
        "grep ' /mnt/vol ' /proc/self/mountinfo",
    );
    c.mounts = vec![vol(&dir, cri::MountPropagation::PropagationPrivate)];
    let id = run_container(&d, &pod_id, &pod, c).await;
    let st = wait_exited(&d, &id).await;
    let lines = log_lines(&st);
    assert_eq!(
        propagation_fields(&lines, "/mnt/vol"),
        Some(vec![]),
        "{lines:?}"
    );

    // rslave and rshared on a private host mount: refused, naming the field; nothing left behind.
    for prop in [
        cri::MountPropagation::PropagationHostToContainer,
        cri::MountPropagation::PropagationBidirectional,
    ] {
        let mut c = container_config("refused", &image("busybox"), "true");
        c.mounts = vec![vol(&private.0, prop)];
        let err = try_create(&d, &pod_id, Some(&pod), c).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("mounts[0].propagation"), "{err:?}");
    }
    let listed = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 3, "{listed:?}");
    remove_pod(&d, &pod_id).await;
}

/// Pushes a one-layer image whose layer is compressed with `blob` but labelled with the media type of
/// `label`, as `krio-test/<name>:latest`; returns (reference, layer digest).
fn push_mislabelled(
    name: &str,
    blob: krio_testimg::Compression,
    label: krio_testimg::Compression,
) -> (String, String) {
    let mut l = krio_testimg::LayerBuilder::new();
    l.file(
        "hello.txt",
        0o644,
        format!("krio mislabelled layer {name}\n"),
    )
    .unwrap();
    let mut layer = l.build(blob).unwrap();
    layer.compression = label;
    let digest = layer.digest.to_string();
    let img = krio_testimg::Image::build(
        krio_testimg::ManifestFormat::Oci,
        &krio_testimg::ImageSpec::with_cmd(&["/hello.txt"]),
        vec![layer],
    )
    .unwrap();
    let client = krio_testimg::RegistryClient::new(REGISTRY).unwrap();
    let repo = format!("krio-test/{name}");
    client
        .push_artifact(&repo, "latest", &krio_testimg::Artifact::Image(img))
        .unwrap();
    (format!("{REGISTRY}/{repo}:latest"), digest)
}

/// A layer whose bytes do not match its media type fails the pull, naming the layer digest, and leaves
/// no image behind; decompression follows the media type only.
#[tokio::test(flavor = "multi_thread")]
async fn layer_bytes_that_contradict_the_media_type_fail_the_pull() {
    use krio_testimg::Compression::{Gzip, None as Plain, Zstd};
    require_prerequisites();
    ensure_images();
    let d = Daemon::start().await;
    let mut images = d.images().await;
    for (name, blob, label) in [
        ("mislabelled-zstd-as-gzip", Zstd, Gzip),
        ("mislabelled-gzip-as-tar", Gzip, Plain),
        ("mislabelled-gzip-as-zstd", Gzip, Zstd),
        ("mislabelled-tar-as-gzip", Plain, Gzip),
    ] {
        let (reference, digest) = push_mislabelled(name, blob, label);
        let err = images
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err:?}");
        assert!(err.message().contains(&digest), "{name}: {err:?}");
        assert!(err.message().contains("media type"), "{name}: {err:?}");
    }
    let listed = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(listed.is_empty(), "{listed:?}");
    // A correctly labelled image still pulls (the real zstd and uncompressed test images).
    pull(&d, &image("zstd")).await;
    pull(&d, &image("uncompressed")).await;
}

/// Pushes a busybox image with a second layer made by `extra` as `krio-test/<name>:latest`.
fn push_busybox_with(name: &str, extra: impl FnOnce(&mut krio_testimg::LayerBuilder)) -> String {
    let catalog = krio_testimg::Catalog::from_host().unwrap();
    let base = catalog
        .base_layer()
        .build(krio_testimg::Compression::Gzip)
        .unwrap();
    let mut top = krio_testimg::LayerBuilder::new();
    extra(&mut top);
    let img = krio_testimg::Image::build(
        krio_testimg::ManifestFormat::Oci,
        &krio_testimg::ImageSpec::with_cmd(&["sh"]),
        vec![base, top.build(krio_testimg::Compression::Gzip).unwrap()],
    )
    .unwrap();
    let repo = format!("krio-test/{name}");
    krio_testimg::RegistryClient::new(REGISTRY)
        .unwrap()
        .push_artifact(&repo, "latest", &krio_testimg::Artifact::Image(img))
        .unwrap();
    format!("{REGISTRY}/{repo}:latest")
}

/// Every entry below `dir` (relative path, file type, size), sorted: a fingerprint that shows any write.
fn tree(dir: &std::path::Path) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, format!("{:?}", m.file_type()), m.len()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// An image whose special directories and files (`/dev`, `/proc`, `/etc/hosts`, `/etc/resolv.conf`,
/// `/etc/hostname`, a volume's destination) are symlinks to host paths never makes krio or runc write
/// outside the rootfs: a symlinked `/dev` or `/proc` is refused with FailedPrecondition (runc 1.1 would
/// create `/dev/fd`, `/dev/ptmx`, ... in the host directory), other symlinks resolve inside the rootfs,
/// and the host targets are unchanged afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn image_symlinks_to_host_paths_write_nothing_on_the_host() {
    require_prerequisites();
    ensure_images();
    let d = Daemon::start().await;
    let host = d.dir.path().join("host-target");
    for dir in ["devdir", "procdir", "voldir", "etc"] {
        std::fs::create_dir_all(host.join(dir)).unwrap();
    }
    for f in ["hosts", "resolv.conf", "hostname"] {
        std::fs::write(host.join("etc").join(f), format!("host {f}\n")).unwrap();
    }
    let before = tree(&host);
    let h = host.display().to_string();
    let dev = push_busybox_with("symlinked-dev", |l| {
        l.symlink("dev", &format!("{h}/devdir")).unwrap();
    });
    let proc_ = push_busybox_with("symlinked-proc", |l| {
        l.symlink("proc", &format!("{h}/procdir")).unwrap();
    });
    let etc = push_busybox_with("symlinked-etc", |l| {
        for f in ["hosts", "resolv.conf", "hostname"] {
            l.symlink(&format!("etc/{f}"), &format!("{h}/etc/{f}"))
                .unwrap();
        }
        l.symlink("data", &format!("{h}/voldir")).unwrap();
    });
    let volume = d.dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("in-volume"), "v\n").unwrap();
    let pod = pod_config(&d, "symlinks");
    let pod_id = run_pod(&d, &pod).await;
    let mut rt = d.runtime().await;
    for (reference, name) in [(&dev, "/dev"), (&proc_, "/proc")] {
        pull(&d, reference).await;
        let err = try_create(
            &d,
            &pod_id,
            Some(&pod),
            container_config("refused", reference, "true"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains(&format!("{name} is a symlink")),
            "{err:?}"
        );
    }
    assert!(rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .is_empty());

    pull(&d, &etc).await;
    let mut c = container_config(
        "etc",
        &etc,
        "cat /etc/hosts /etc/hostname /data/sub/in-volume; echo made > /etc/hosts.new",
    );
    c.mounts = vec![cri::Mount {
        container_path: "/data/sub".into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    }];
    let id = run_container(&d, &pod_id, &pod, c).await;
    let st = wait_exited(&d, &id).await;
    let lines = log_lines(&st);
    assert_eq!(st.exit_code, 0, "{lines:?}");
    // The pod's own files, not the host's, and the volume.
    assert!(lines.iter().any(|l| l.ends_with("symlinks")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("host ")), "{lines:?}");
    assert!(lines.contains(&"v".to_string()), "{lines:?}");
    assert_eq!(tree(&host), before, "something was written under {h}");
    for f in ["hosts", "resolv.conf", "hostname"] {
        assert_eq!(
            std::fs::read_to_string(host.join("etc").join(f)).unwrap(),
            format!("host {f}\n")
        );
    }
    remove_pod(&d, &pod_id).await;
}

/// The mount options (field 6) of the mountinfo line whose mount point is `mp`, split at commas.
fn mount_options(mountinfo: &[String], mp: &str) -> Option<Vec<String>> {
    mountinfo.iter().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 5 && f[4] == mp).then(|| f[5].split(',').map(String::from).collect())
    })
}

/// `recursive_read_only` makes the mount and every submount read-only (checked with mountinfo and
/// writes inside the container), is reported in Status, refuses the combinations the CRI forbids with
/// InvalidArgument naming the field, and leaves no staging mount behind.
#[tokio::test(flavor = "multi_thread")]
async fn recursive_read_only_mounts_every_submount_read_only() {
    use nix::mount::MsFlags;
    require_prerequisites();
    ensure_images();
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    let st = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        st.runtime_handlers
            .iter()
            .all(|h| h.features.as_ref().unwrap().recursive_read_only_mounts),
        "{:?}",
        st.runtime_handlers
    );
    pull(&d, &image("busybox")).await;
    // A host directory with a writable submount.
    let src = HostMountPoint::new(d.dir.path().join("rro-src"), MsFlags::MS_PRIVATE);
    mount_tmpfs(&src.0.join("sub"));
    let pod = pod_config(&d, "rro");
    let pod_id = run_pod(&d, &pod).await;
    let mount = |path: &str, rro: bool| cri::Mount {
        container_path: path.into(),
        host_path: src.0.display().to_string(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    };
    let mut c = container_config(
        "rro",
        &image("busybox"),
        "grep ' /mnt/r' /proc/self/mountinfo; \
         touch /mnt/rro/a 2>/dev/null && echo wrote-rro; \
         touch /mnt/rro/sub/b 2>/dev/null && echo wrote-rro-sub; \
         touch /mnt/ro/sub/c 2>/dev/null && echo wrote-ro-sub; \
         echo x >> /mnt/rrofile 2>/dev/null && echo wrote-file; cat /mnt/rrofile; true",
    );
    // A file source works too.
    let file = d.dir.path().join("rro-file");
    std::fs::write(&file, "file\n").unwrap();
    let file_mount = cri::Mount {
        container_path: "/mnt/rrofile".into(),
        host_path: file.display().to_string(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    };
    c.mounts = vec![mount("/mnt/rro", true), mount("/mnt/ro", false), file_mount];
    let id = run_container(&d, &pod_id, &pod, c).await;
    let st = wait_exited(&d, &id).await;
    let lines = log_lines(&st);
    for mp in ["/mnt/rro", "/mnt/rro/sub", "/mnt/ro", "/mnt/rrofile"] {
        let opts = mount_options(&lines, mp).unwrap_or_else(|| panic!("{mp}: {lines:?}"));
        assert!(opts.contains(&"ro".to_string()), "{mp}: {lines:?}");
    }
    // A plain read-only mount leaves its submount writable; the recursive one does not.
    let opts = mount_options(&lines, "/mnt/ro/sub").unwrap();
    assert!(opts.contains(&"rw".to_string()), "{lines:?}");
    assert!(!lines.contains(&"wrote-rro".to_string()), "{lines:?}");
    assert!(!lines.contains(&"wrote-rro-sub".to_string()), "{lines:?}");
    assert!(lines.contains(&"wrote-ro-sub".to_string()), "{lines:?}");
    assert!(!lines.contains(&"wrote-file".to_string()), "{lines:?}");
    assert!(lines.contains(&"file".to_string()), "{lines:?}");
    // The host's submount stays writable for the host.
    std::fs::write(src.0.join("sub/host-write"), "ok").unwrap();

    // Forbidden combinations: InvalidArgument naming the field, nothing made.
    let mut not_ro = mount("/mnt/x", true);
    not_ro.readonly = false;
    let mut slave = mount("/mnt/x", true);
    slave.propagation = cri::MountPropagation::PropagationHostToContainer as i32;
    for (m, why) in [(not_ro, "readonly"), (slave, "PROPAGATION_PRIVATE")] {
        let mut c = container_config("bad-rro", &image("busybox"), "true");
        c.mounts = vec![mount("/mnt/ok", false), m];
        let err = try_create(&d, &pod_id, Some(&pod), c).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("mounts[1].recursive_read_only") && err.message().contains(why),
            "{err:?}"
        );
    }
    remove_pod(&d, &pod_id).await;
    let left: Vec<String> = d
        .mounts()
        .into_iter()
        .filter(|m| m.contains("/rro/"))
        .collect();
    assert!(left.is_empty(), "staging mounts left: {left:?}");
}

/// The host-side staging of a recursive read-only mount goes once the runtime has bound it into
/// the container (after `runtime create` for runc): while the container runs, a tmpfs mounted
/// under the volume's host path can be unmounted and its directory removed on the host (critest
/// "should support recursive readonly mounts" cleans up so, and met EBUSY), and the container
/// still has its mount, read-only. A staging left by an older daemon (or a kill between the
/// steps) is released by recovery after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn recursive_read_only_staging_does_not_hold_host_mounts() {
    use nix::mount::{MntFlags, MsFlags};
    require_prerequisites();
    ensure_images();
    let mut d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let src = HostMountPoint::new(d.dir.path().join("rro-host"), MsFlags::MS_PRIVATE);
    let sub = src.0.join("tmpfs");
    mount_tmpfs(&sub);
    std::fs::write(sub.join("f"), "x").unwrap();
    let pod = pod_config(&d, "rro-release");
    let pod_id = run_pod(&d, &pod).await;
    let mut c = container_config("rro", &image("busybox"), "sleep 600");
    c.mounts = vec![cri::Mount {
        container_path: "/mnt/rro".into(),
        host_path: src.0.display().to_string(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    }];
    let mut rt = d.runtime().await;
    let id = try_create(&d, &pod_id, Some(&pod), c).await.unwrap();
    let staging_dir = d.dir.path().join("run/containers").join(&id).join("rro");
    let staged = |d: &Daemon| -> Vec<String> {
        d.mounts()
            .into_iter()
            .filter(|m| m.contains("/rro/"))
            .collect()
    };
    // runc has bound every mount by the end of `create`: nothing staged from then on.
    assert!(staged(&d).is_empty(), "{:?}", staged(&d));
    assert!(!staging_dir.exists(), "{}", staging_dir.display());
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let exec = |script: &str| {
        let mut rt = rt.clone();
        let req = cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        };
        async move { rt.exec_sync(req).await.unwrap().into_inner() }
    };
    let seen =
        exec("cat /mnt/rro/tmpfs/f; touch /mnt/rro/tmpfs/g 2>/dev/null && echo wrote; true").await;
    let out = String::from_utf8_lossy(&seen.stdout).to_string();
    assert_eq!(out.lines().collect::<Vec<_>>(), ["x"], "{seen:?}");

    // The host takes its tmpfs down while the container runs: no EBUSY.
    nix::mount::umount2(&sub, MntFlags::empty()).unwrap();
    std::fs::remove_dir(&sub).unwrap();
    // The container keeps its mount, still read-only.
    let seen = exec(
        "grep ' /mnt/rro ' /proc/self/mountinfo; touch /mnt/rro/h 2>/dev/null && echo wrote; true",
    )
    .await;
    let lines: Vec<String> = String::from_utf8_lossy(&seen.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let opts = mount_options(&lines, "/mnt/rro").unwrap_or_else(|| panic!("{lines:?}"));
    assert!(opts.contains(&"ro".to_string()), "{lines:?}");
    assert!(!lines.contains(&"wrote".to_string()), "{lines:?}");

    // A staging as an older daemon left it (a recursive bind of the source), then a daemon
    // restart: recovery releases it, the container runs on.
    let stale = staging_dir.join("0");
    std::fs::create_dir_all(&stale).unwrap();
    nix::mount::mount(
        Some(&src.0),
        &stale,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .unwrap();
    assert!(!staged(&d).is_empty());
    d.restart().await;
    assert!(staged(&d).is_empty(), "{:?}", staged(&d));
    assert!(!staging_dir.exists(), "{}", staging_dir.display());
    assert!(src.0.exists());
    let st = d
        .runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    remove_pod(&d, &pod_id).await;
}

/// SupplementalGroupsPolicy Merge (the default) adds the image's `/etc/group` memberships, Strict does not;
/// ContainerStatus.user reports what the process really has, which matches /proc/self/status inside.
#[tokio::test(flavor = "multi_thread")]
async fn supplemental_groups_policy_and_container_user() {
    require_prerequisites();
    ensure_images();
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    let st = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(st.features.unwrap().supplemental_groups_policy);
    // The image's /etc/group makes user krio (1000) a member of group 4242.
    let reference = push_busybox_with("groups", |l| {
        l.file(
            "etc/group",
            0o644,
            "root:x:0:\nkrio:x:1000:\nextra:x:4242:nobody,krio\nnobody:x:65534:\n",
        )
        .unwrap();
    });
    pull(&d, &reference).await;
    let pod = pod_config(&d, "groups");
    let pod_id = run_pod(&d, &pod).await;
    for (name, policy, want) in [
        (
            "merge",
            cri::SupplementalGroupsPolicy::Merge,
            vec![1000, 4242, 50000],
        ),
        (
            "strict",
            cri::SupplementalGroupsPolicy::Strict,
            vec![1000, 50000],
        ),
    ] {
        let mut c = container_config(
            name,
            &reference,
            "grep -E '^(Uid|Gid|Groups):' /proc/self/status; sleep 600",
        );
        c.linux
            .get_or_insert_with(Default::default)
            .security_context = Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            supplemental_groups: vec![50000],
            supplemental_groups_policy: policy as i32,
            ..Default::default()
        });
        let id = run_container(&d, &pod_id, &pod, c).await;
        let user = status(&d, &id).await.user.and_then(|u| u.linux).unwrap();
        assert_eq!(
            (user.uid, user.gid, user.supplemental_groups.clone()),
            (1000, 1000, want.clone()),
            "{name}"
        );
        // Inside, the process has the same identity.
        let log = std::path::PathBuf::from(status(&d, &id).await.log_path);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let lines = loop {
            let lines: Vec<String> = if log.exists() {
                read_cri_log(&log).into_iter().map(|r| r.2).collect()
            } else {
                vec![]
            };
            if lines.len() >= 3 {
                break lines;
            }
            assert!(std::time::Instant::now() < deadline, "{name}: {lines:?}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        };
        let groups: Vec<i64> = lines
            .iter()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        assert_eq!(groups, want, "{name}: {lines:?}");
        assert!(
            lines.iter().any(|l| l.starts_with("Uid:\t1000\t")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("Gid:\t1000\t")),
            "{lines:?}"
        );
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        // The recorded identity outlives the process.
        let user = status(&d, &id).await.user.and_then(|u| u.linux).unwrap();
        assert_eq!(user.supplemental_groups, want, "{name}");
    }
    remove_pod(&d, &pod_id).await;
}

/// The `userns_options` of a pod in its own user namespace (mode POD) with one uid and one gid
/// mapping of `length` ids from container id 0 to host id `host`.
fn userns_pod(host: u32, length: u32) -> cri::NamespaceOption {
    let map = || {
        vec![cri::IdMapping {
            container_id: 0,
            host_id: host,
            length,
        }]
    };
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: map(),
            gids: map(),
        }),
        ..Default::default()
    }
}

/// A pod with `userns_options` mode POD runs in its own user namespace: its containers see the
/// requested mapping, run as root inside, write their rootfs over id-mapped image layers (stored
/// with the mapped host ids in the upper directory), share one user
/// namespace, which owns the pod's network namespace where CNI gave eth0 an address; Status
/// reports the feature for runc, invalid requests are refused, and removal leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn pod_in_its_own_user_namespace() {
    use std::os::unix::fs::MetadataExt;
    require_prerequisites();
    ensure_images();
    let d = Daemon::start_with(Network::Bridge { subnet: 242 }).await;
    let mut rt = d.runtime().await;
    let st = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let runc = st
        .runtime_handlers
        .iter()
        .find(|h| h.name == "runc")
        .unwrap();
    assert!(
        runc.features.as_ref().unwrap().user_namespaces,
        "{:?}",
        st.runtime_handlers
    );
    pull(&d, &image("busybox")).await;
    const HOST: u32 = 300_000;
    let mut pod = pod_config(&d, "userns");
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(userns_pod(HOST, 65536)),
        ..Default::default()
    });

    // Invalid requests: InvalidArgument naming the field; no sandbox is left. (A shared PID
    // namespace is accepted: see the test below.)
    let bad = |f: &dyn Fn(&mut cri::NamespaceOption)| {
        let mut p = pod.clone();
        let mut ns = userns_pod(HOST, 65536);
        f(&mut ns);
        p.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        });
        p
    };
    let cases: Vec<(cri::PodSandboxConfig, Code, &str)> = vec![
        (
            bad(&|ns| {
                ns.userns_options.as_mut().unwrap().mode = cri::NamespaceMode::Container as i32
            }),
            Code::InvalidArgument,
            "userns_options.mode",
        ),
        (
            bad(&|ns| ns.userns_options.as_mut().unwrap().mode = cri::NamespaceMode::Target as i32),
            Code::InvalidArgument,
            "userns_options.mode",
        ),
        (
            bad(&|ns| {
                let m = ns.userns_options.as_ref().unwrap().uids[0];
                ns.userns_options.as_mut().unwrap().uids.push(m)
            }),
            Code::InvalidArgument,
            "userns_options.uids",
        ),
        (
            bad(&|ns| ns.userns_options.as_mut().unwrap().gids[0].container_id = 1),
            Code::InvalidArgument,
            "userns_options.gids",
        ),
        (
            bad(&|ns| ns.network = cri::NamespaceMode::Node as i32),
            Code::InvalidArgument,
            "namespace_options.network",
        ),
        (
            bad(&|ns| ns.pid = cri::NamespaceMode::Node as i32),
            Code::InvalidArgument,
            "namespace_options.pid",
        ),
    ];
    for (p, code, field) in cases {
        let err = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(p),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {err:?}");
    }
    let listed = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");

    let pod_id = run_pod(&d, &pod).await;
    let sandbox = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let pod_ip = sandbox.network.unwrap().ip;
    assert!(pod_ip.starts_with("10.123.242."), "{pod_ip}");
    let mut first = container_config(
        "first",
        &image("busybox"),
        "cat /proc/self/uid_map /proc/self/gid_map; id; \
         echo hello > /created && stat -c 'created %u %g' /created; \
         stat -c 'bin %u %g' /bin/sh; stat -c 'hosts %u %g' /etc/hosts; \
         echo \"user $(readlink /proc/self/ns/user)\"; \
         echo \"net $(readlink /proc/self/ns/net)\"; \
         ip -o -4 addr show dev eth0; stat -c 'vol %u %g' /vol/host-file; \
         echo pod > /vol/from-pod && echo vol-written; \
         awk '$5 ~ /^\\/(proc|sys|dev\\/mqueue|sys\\/fs\\/cgroup\\/memory|dev\\/null)$/ \
              {print \"mnt\", $5, $(NF-2), $6}' /proc/self/mountinfo; \
         echo ready; sleep 600",
    );
    // A host volume owned by the host's root, id-mapped by krio.
    let vol = d.dir.path().join("userns-vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("host-file"), "host\n").unwrap();
    first.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    }];
    let first_id = run_container(&d, &pod_id, &pod, first).await;
    wait_log_line(&d, &first_id, "ready").await;
    let second = container_config(
        "second",
        &image("busybox"),
        "echo \"user $(readlink /proc/self/ns/user)\"; echo ready; sleep 600",
    );
    let second_id = run_container(&d, &pod_id, &pod, second).await;
    wait_log_line(&d, &second_id, "ready").await;
    let lines = |id: &str| {
        let id = id.to_string();
        let d = &d;
        async move {
            let path = std::path::PathBuf::from(status(d, &id).await.log_path);
            complete_records(&path)
                .into_iter()
                .map(|r| r.2)
                .collect::<Vec<_>>()
        }
    };
    let out = lines(&first_id).await;
    let words = |l: &String| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let maps: Vec<String> = out.iter().take(2).map(words).collect();
    assert_eq!(maps, vec!["0 300000 65536", "0 300000 65536"], "{out:?}");
    assert!(
        out.iter().any(|l| l.starts_with("uid=0(root) gid=0(root)")),
        "{out:?}"
    );
    for want in ["created 0 0", "bin 0 0", "hosts 0 0"] {
        assert!(out.iter().any(|l| l == want), "{want}: {out:?}");
    }
    assert!(
        out.iter()
            .any(|l| l.contains("eth0") && l.contains(&format!("inet {pod_ip}/"))),
        "{pod_ip}: {out:?}"
    );
    // What runc 1.1.5 mounts inside: fresh proc, sysfs and mqueue (the pod's namespaces are
    // owned by its user namespace, so no EPERM fallback to a bind of the host's /sys), the
    // cgroup v1 hierarchies read-only, and device nodes bound from the host (no mknod).
    for want in [
        "mnt /proc proc",
        "mnt /sys sysfs",
        "mnt /dev/mqueue mqueue",
        "mnt /sys/fs/cgroup/memory cgroup",
        "mnt /dev/null devtmpfs",
    ] {
        assert!(
            out.iter().any(|l| l.starts_with(&format!("{want} "))),
            "{want}: {out:?}"
        );
    }
    // The volume: the host root's file is root's inside, and what the pod's root writes is
    // the host root's on the host.
    for want in ["vol 0 0", "vol-written"] {
        assert!(out.iter().any(|l| l == want), "{want}: {out:?}");
    }
    let md = std::fs::metadata(vol.join("from-pod")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    // ContainerStatus.user is the identity inside the user namespace.
    let user = status(&d, &first_id)
        .await
        .user
        .and_then(|u| u.linux)
        .unwrap();
    assert_eq!((user.uid, user.gid), (0, 0), "{user:?}");
    let user_ns = out.iter().find(|l| l.starts_with("user ")).unwrap().clone();
    let host_user_ns = format!(
        "user {}",
        std::fs::read_link("/proc/self/ns/user").unwrap().display()
    );
    assert_ne!(user_ns, host_user_ns);
    let second_out = lines(&second_id).await;
    assert!(second_out.contains(&user_ns), "{user_ns}: {second_out:?}");
    // The pinned user namespace is the containers', and it owns the pinned network
    // namespace, which the container is in.
    let ns_dir = d.state.join("sandboxes").join(&pod_id).join("ns");
    let inode = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        user_ns,
        format!("user user:[{}]", inode(&ns_dir.join("user"))),
        "{out:?}"
    );
    let net_ns = out.iter().find(|l| l.starts_with("net ")).unwrap();
    assert_eq!(
        net_ns,
        &format!("net net:[{}]", inode(&ns_dir.join("net"))),
        "{out:?}"
    );
    // From the host: the upper directory holds the file with the mapped host ids (only the
    // image layers are id-mapped), and so does the rootfs mount.
    let upper = d
        .root
        .join("containers")
        .join(&first_id)
        .join("upper/created");
    let md = std::fs::metadata(&upper).unwrap();
    assert_eq!((md.uid(), md.gid()), (HOST, HOST), "{}", upper.display());
    let through = d
        .state
        .join("containers")
        .join(&first_id)
        .join("rootfs/created");
    let md = std::fs::metadata(&through).unwrap();
    assert_eq!((md.uid(), md.gid()), (HOST, HOST), "{}", through.display());
    assert_eq!(std::fs::read_to_string(&through).unwrap(), "hello\n");

    remove_pod(&d, &pod_id).await;
    let left: Vec<String> = d
        .mounts()
        .into_iter()
        .filter(|m| m.contains(&pod_id) || m.contains(&first_id) || m.contains(&second_id))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
    assert!(!ns_dir.exists(), "{} is left", ns_dir.display());
    assert!(!d.state.join("sandboxes").join(&pod_id).exists());
}

/// Namespaces, by kind and inode, that some process of the host is in or some mount pins.
fn live_namespaces() -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<i32>().is_err() {
            continue;
        }
        for kind in ["user", "pid"] {
            if let Ok(l) = std::fs::read_link(e.path().join("ns").join(kind)) {
                out.insert(l.display().to_string());
            }
        }
    }
    // A bind-mounted nsfs file shows `<kind>:[<inode>]` as the root of its mount.
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        if let Some(root) = l.split(' ').nth(3) {
            if root.starts_with("user:[") || root.starts_with("pid:[") {
                out.insert(root.to_string());
            }
        }
    }
    out
}

/// A pod in its own user namespace may share one PID namespace between its containers
/// (`shareProcessNamespace` with `hostUsers: false`): the pod init's PID namespace is owned by
/// the pod's user namespace, so runc 1.1.5 joins it after the user namespace and mounts a /proc
/// for it. The second container sees the first's process, pid 1 is the pod init, the id maps
/// are the pod's; a daemon restart keeps the init; removal leaves no process, mount or
/// namespace behind.
#[tokio::test(flavor = "multi_thread")]
async fn pod_in_its_own_user_namespace_shares_its_pid_namespace() {
    use std::os::unix::fs::MetadataExt;
    require_prerequisites();
    ensure_images();
    let mut d = Daemon::start_with(Network::Loopback).await;
    pull(&d, &image("busybox")).await;
    const HOST: u32 = 500_000;
    let mut ns = userns_pod(HOST, 65536);
    ns.pid = cri::NamespaceMode::Pod as i32;
    let mut pod = pod_config(&d, "usernspid");
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(ns),
        ..Default::default()
    });
    let pod_id = run_pod(&d, &pod).await;
    let init_pid = pod_init_pid(&d, &pod_id).await;
    let ns_dir = d.state.join("sandboxes").join(&pod_id).join("ns");
    let ino = |kind: &str| std::fs::metadata(ns_dir.join(kind)).unwrap().ino();
    let (user_ino, pid_ino) = (ino("user"), ino("pid"));
    // From the host: the pinned PID namespace is the init's and belongs to the pod's user
    // namespace (lsns asks the kernel with NS_GET_USERNS).
    assert_eq!(
        std::fs::metadata(format!("/proc/{init_pid}/ns/pid"))
            .unwrap()
            .ino(),
        pid_ino
    );
    let lsns = std::process::Command::new("lsns")
        .args([
            "--noheadings",
            "--raw",
            "--output",
            "NS,ONS",
            "--type",
            "pid",
        ])
        .output()
        .unwrap();
    let owner = String::from_utf8_lossy(&lsns.stdout).lines().find_map(|l| {
        let v: Vec<u64> = l
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        (v.len() == 2 && v[0] == pid_ino).then(|| v[1])
    });
    assert_eq!(owner, Some(user_ino), "{lsns:?}");

    let first = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("first", &image("busybox"), "exec sleep 1001"),
    )
    .await;
    // The second may trace what is in its user namespace; the init is not.
    let mut second = container_config("second", &image("busybox"), "exec sleep 1002");
    second.linux.as_mut().unwrap().security_context = Some(cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: vec!["SYS_PTRACE".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let second = run_container(&d, &pod_id, &pod, second).await;
    async fn exec(d: &Daemon, id: &str, script: &str) -> (i32, String) {
        let out = d
            .runtime()
            .await
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: vec!["sh".into(), "-c".into(), script.to_string()],
                timeout: 10,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync: {e}; daemon log:\n{}", d.log()))
            .into_inner();
        (
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
    // Both shells have exec'd their sleep.
    for id in [&first, &second] {
        d.poll(
            "both sleeps to run",
            std::time::Duration::from_secs(20),
            || async {
                let (code, out) = exec(&d, id, "ps -o args").await;
                (code == 0 && out.contains("sleep 1001") && out.contains("sleep 1002"))
                    .then_some(())
            },
        )
        .await;
    }
    const LOOK: &str = "cat /proc/self/uid_map /proc/self/gid_map; \
        echo \"pid1 $(tr '\\0' ' ' < /proc/1/cmdline)\"; \
        echo \"user $(readlink /proc/self/ns/user)\"; \
        echo \"pidns $(readlink /proc/self/ns/pid)\"; \
        for p in /proc/[0-9]*; do echo \"proc ${p#/proc/} $(tr '\\0' ' ' < $p/cmdline)\"; done; \
        ps -o pid,user,args; \
        if ls /proc/1/root/ >/dev/null 2>&1; then echo init-root-visible; fi; \
        kill -STOP 1; kill -KILL 1; \
        grep ^CapEff: /proc/self/status";
    let words = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let (code, out) = exec(&d, &second, LOOK).await;
    assert_eq!(code, 0, "{out}");
    let lines = words(&out);
    let has = |lines: &[String], want: &str| lines.iter().any(|l| l == want);
    let starts = |lines: &[String], want: &str| lines.iter().any(|l| l.starts_with(want));
    // The pod's mapping, not the identity map of the host's user namespace.
    assert_eq!(lines[..2], ["0 500000 65536", "0 500000 65536"], "{out}");
    // PID 1 is the pod init (the infra process of a shared PID namespace).
    assert!(starts(&lines, "pid1 krio-pod-init pod-init-run "), "{out}");
    assert!(has(&lines, &format!("user user:[{user_ino}]")), "{out}");
    assert!(has(&lines, &format!("pidns pid:[{pid_ino}]")), "{out}");
    // The first container's process, in /proc and in ps.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("proc ") && l.ends_with(" sleep 1001")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| !l.starts_with("proc ") && l.ends_with(" root sleep 1001")),
        "{out}"
    );
    // ps shows the init as an unmapped id (the host's root); the pod's root, even with
    // CAP_SYS_PTRACE, cannot look through it into the host's filesystem, nor stop or kill it.
    assert!(!has(&lines, "init-root-visible"), "{out}");
    let cap_eff = lines
        .iter()
        .find_map(|l| l.strip_prefix("CapEff: "))
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(0);
    assert_ne!(cap_eff & 1 << 19, 0, "CAP_SYS_PTRACE: {out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("1 ") && l.contains(" krio-pod-init ") && !l.contains(" root ")),
        "{out}"
    );
    // The first container sees the second's process too.
    let (code, out) = exec(&d, &first, "ps -o args").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sleep 1002"), "{out}");

    // A daemon restart finds the pod ready with the same init.
    d.restart().await;
    let state = d
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
        .unwrap()
        .state;
    assert_eq!(state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(pod_init_pid(&d, &pod_id).await, init_pid);
    let (code, out) = exec(&d, &second, "ps -o args").await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sleep 1001") && out.contains("krio-pod-init"),
        "{out}"
    );
    let (code, out) = exec(&d, &first, LOOK).await;
    assert_eq!(code, 0, "{out}");
    let lines = words(&out);
    assert!(starts(&lines, "pid1 krio-pod-init pod-init-run "), "{out}");
    assert!(has(&lines, &format!("pidns pid:[{pid_ino}]")), "{out}");

    let namespaces = [format!("user:[{user_ino}]"), format!("pid:[{pid_ino}]")];
    assert!(
        namespaces.iter().all(|n| live_namespaces().contains(n)),
        "{namespaces:?}"
    );
    remove_pod(&d, &pod_id).await;
    assert!(pod_init_gone(init_pid), "pod init {init_pid} left running");
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
    assert_eq!(d.mounts(), Vec::<String>::new());
    assert!(!ns_dir.exists(), "{} is left", ns_dir.display());
    // Nothing holds the pod's namespaces any more: no process is in them, no mount pins them.
    d.poll(
        "the pod's namespaces to be gone",
        std::time::Duration::from_secs(10),
        || {
            let live = live_namespaces();
            std::future::ready(namespaces.iter().all(|n| !live.contains(n)).then_some(()))
        },
    )
    .await;
}

/// A daemon killed while it ran such a pod (userns POD with pid POD), before the record named
/// the pod init: the restarted daemon finds the init by the PID namespace its pin holds, kills
/// it and leaves no process, mount or namespace of the pod behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_short_user_namespace_pod_with_a_shared_pid_namespace_is_undone_on_restart() {
    use std::os::unix::fs::MetadataExt;
    require_prerequisites();
    let mut d = Daemon::start_with(Network::Loopback).await;
    let mut ns = userns_pod(600_000, 65536);
    ns.pid = cri::NamespaceMode::Pod as i32;
    let mut pod = pod_config(&d, "usernspidcut");
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(ns),
        ..Default::default()
    });
    let pod_id = run_pod(&d, &pod).await;
    let init_pid = pod_init_pid(&d, &pod_id).await;
    let ns_dir = d.state.join("sandboxes").join(&pod_id).join("ns");
    let namespaces = ["user", "pid"].map(|kind| {
        let ino = std::fs::metadata(ns_dir.join(kind)).unwrap().ino();
        format!("{kind}:[{ino}]")
    });
    assert!(
        namespaces.iter().all(|n| live_namespaces().contains(n)),
        "{namespaces:?}"
    );
    // As if the daemon died in RunPodSandbox right after starting the init: the record is
    // Creating and does not name the init yet.
    d.kill9();
    let path = d.root.join("sandboxes").join(&pod_id).join("sandbox.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    rec["state"] = serde_json::json!("Creating");
    rec["pod_init"] = serde_json::Value::Null;
    rec["pidns"] = serde_json::Value::Null;
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
    assert!(pod_init_gone(init_pid), "pod init {init_pid} left running");
    assert_eq!(d.processes(), Vec::<(i32, String)>::new());
    assert_eq!(d.mounts(), Vec::<String>::new());
    assert!(!d.state.join("sandboxes").join(&pod_id).exists());
    d.poll(
        "the pod's namespaces to be gone",
        std::time::Duration::from_secs(10),
        || {
            let live = live_namespaces();
            std::future::ready(namespaces.iter().all(|n| !live.contains(n)).then_some(()))
        },
    )
    .await;
}
