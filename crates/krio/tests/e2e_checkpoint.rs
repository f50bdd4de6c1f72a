//! End to end: `CheckpointContainer` and `CreateContainer` from a checkpoint archive,
//! against a real daemon, runc and registry. This host's CRIU fails `criu check` (Debian's
//! 3.17.1 cannot read the vDSO), so a real checkpoint and restore cannot happen here: these
//! tests check every refusal, that nothing is left behind, and the archive writer on a real
//! container through the test-only switch that skips CRIU (its archive has an empty CRIU
//! image directory, which a restore refuses).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::*;
use krio_cri::v1 as cri;
use tonic::Code;

/// Whether `criu check` passes on this host.
fn criu_works() -> bool {
    std::process::Command::new("criu")
        .arg("check")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ckpt(id: &str, location: &str) -> cri::CheckpointContainerRequest {
    cri::CheckpointContainerRequest {
        container_id: id.to_string(),
        location: location.to_string(),
        timeout: 30,
    }
}

/// The entries of a directory, sorted (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Nothing of a checkpoint is left in the container's run directory.
fn no_staging_left(d: &Daemon, id: &str) {
    let left: Vec<_> = entries(&d.state.join("containers").join(id))
        .into_iter()
        .filter(|n| n.starts_with("checkpoint"))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_refuses_bad_requests_and_leaves_nothing() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let mut rt = d.runtime().await;
    let pod = pod_config(&d, "ckpt-bad");
    let pod_id = run_pod(&d, &pod).await;
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("c", &image("busybox"), "sleep 300"),
    )
    .await;
    // A container that was created and never started.
    let created = try_create(
        &d,
        &pod_id,
        Some(&pod),
        container_config("idle", &image("busybox"), "sleep 300"),
    )
    .await
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let loc = out.path().join("c.tar");
    let loc_s = loc.to_str().unwrap();

    let code_and_msg =
        |r: Result<tonic::Response<cri::CheckpointContainerResponse>, tonic::Status>| {
            let e = r.unwrap_err();
            (e.code(), e.message().to_string())
        };
    let (code, msg) = code_and_msg(rt.checkpoint_container(ckpt("", loc_s)).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("container_id"), "{msg}");
    let (code, msg) = code_and_msg(rt.checkpoint_container(ckpt(&"0".repeat(64), loc_s)).await);
    assert_eq!(code, Code::NotFound, "{msg}");
    let (code, msg) = code_and_msg(rt.checkpoint_container(ckpt(&created, loc_s)).await);
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("not running"), "{msg}");
    let dir_loc = out.path().to_str().unwrap().to_string();
    for (location, want) in [
        ("", "is required"),
        ("relative.tar", "absolute"),
        ("/nonexistent-krio-dir/c.tar", "does not exist"),
        (dir_loc.as_str(), "not a regular file"),
    ] {
        let (code, msg) = code_and_msg(rt.checkpoint_container(ckpt(&id, location)).await);
        assert_eq!(code, Code::InvalidArgument, "{location}: {msg}");
        assert!(msg.contains("location") && msg.contains(want), "{msg}");
    }
    let mut negative = ckpt(&id, loc_s);
    negative.timeout = -1;
    let (code, msg) = code_and_msg(rt.checkpoint_container(negative).await);
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("timeout"), "{msg}");

    // A file already at the location is left as it was when the checkpoint fails.
    std::fs::write(&loc, b"earlier").unwrap();
    let r = rt.checkpoint_container(ckpt(&id, loc_s)).await;
    if criu_works() {
        r.unwrap();
        assert_ne!(std::fs::read(&loc).unwrap(), b"earlier");
    } else {
        let (code, msg) = code_and_msg(r);
        assert_eq!(code, Code::FailedPrecondition, "{msg}");
        assert!(msg.contains("criu check"), "{msg}");
        assert_eq!(std::fs::read(&loc).unwrap(), b"earlier");
        std::fs::remove_file(&loc).unwrap();
        let (code, _) = code_and_msg(rt.checkpoint_container(ckpt(&id, loc_s)).await);
        assert_eq!(code, Code::FailedPrecondition);
        assert!(entries(out.path()).is_empty(), "{:?}", entries(out.path()));
    }
    no_staging_left(&d, &id);
    // The container still runs.
    assert_eq!(
        status(&d, &id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    remove_pod(&d, &pod_id).await;
}

/// Reads an archive's members: name → content (directories empty).
fn read_tar(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            (name, body)
        })
        .collect()
}

fn member<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &members
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| {
            panic!(
                "{name} not in the archive: {:?}",
                members.iter().map(|m| &m.0).collect::<Vec<_>>()
            )
        })
        .1
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_archive_of_a_real_container_without_criu() {
    ensure_images();
    // The test-only switch: everything but CRIU's dump (the archive's checkpoint/ is empty).
    let d = Daemon::start_with_env(
        Network::Loopback,
        &[("KRIO_TEST_CHECKPOINT_WITHOUT_CRIU", "1")],
    )
    .await;
    let image_id = pull(&d, &image("busybox")).await;
    let mut rt = d.runtime().await;
    let pod = pod_config(&d, "ckpt-real");
    let pod_id = run_pod(&d, &pod).await;
    let script = "mkdir -p /data/dir && echo hello > /data/dir/f && rm /bin/ls && echo ready \
                  && sleep 300";
    let id = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("c", &image("busybox"), script),
    )
    .await;
    wait_log_line(&d, &id, "ready").await;
    let out = tempfile::tempdir().unwrap();
    let loc = out.path().join("c.tar");
    rt.checkpoint_container(ckpt(&id, loc.to_str().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
    assert_eq!(entries(out.path()), vec!["c.tar"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&loc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let members = read_tar(&std::fs::read(&loc).unwrap());
    // The CRIU image directory is there, and empty: no checkpoint is pretended.
    assert!(member(&members, "checkpoint").is_empty());
    assert!(
        !members.iter().any(|(n, _)| n.starts_with("checkpoint/")),
        "{:?}",
        members.iter().map(|m| &m.0).collect::<Vec<_>>()
    );

    let config: serde_json::Value =
        serde_json::from_slice(member(&members, "config.dump")).unwrap();
    assert_eq!(config["id"], id.as_str());
    assert_eq!(
        config["name"],
        format!("c_ckpt-real_default_uid-ckpt-real-{}_0", std::process::id()).as_str(),
        "{config}"
    );
    assert_eq!(config["rootfsImage"], image("busybox").as_str());
    assert_eq!(config["rootfsImageRef"], image_id.as_str());
    assert!(
        config["rootfsImageName"]
            .as_str()
            .is_some_and(|s| s.contains("krio-test/busybox@sha256:")),
        "{config}"
    );
    assert_eq!(config["runtime"], "runc");
    assert_eq!(config["restored"], false);
    assert_eq!(config["restoredTime"], "0001-01-01T00:00:00Z");
    for t in ["createdTime", "checkpointedTime"] {
        let v = config[t].as_str().unwrap();
        assert!(v.starts_with("20") && v.ends_with('Z'), "{t}: {v}");
    }
    let spec: serde_json::Value = serde_json::from_slice(member(&members, "spec.dump")).unwrap();
    assert_eq!(spec["process"]["args"][2], script, "{spec}");
    let deleted: Vec<String> = serde_json::from_slice(member(&members, "deleted.files")).unwrap();
    assert!(deleted.contains(&"/bin/ls".to_string()), "{deleted:?}");
    let diff = read_tar(member(&members, "rootfs-diff.tar"));
    assert_eq!(member(&diff, "data/dir/f"), b"hello\n");
    // Mount points of /etc/hosts and friends are not part of the diff.
    assert!(
        !diff.iter().any(|(n, _)| n == "etc/hosts"),
        "{:?}",
        diff.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    let log = String::from_utf8_lossy(member(&members, "io.kubernetes.cri-o.LogPath")).into_owned();
    assert!(log.contains("ready"), "{log}");
    let binds: serde_json::Value = serde_json::from_slice(member(&members, "bind.mounts")).unwrap();
    assert!(
        binds
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["file_type"] == "file" || b["file_type"] == "directory"),
        "{binds}"
    );
    no_staging_left(&d, &id);

    // The container was resumed: it still runs and answers.
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["echo".into(), "alive".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.stdout, b"alive\n");

    // A restore from this archive is refused (it holds no CRIU image), leaving nothing.
    let before = entries(&d.root.join("containers"));
    let mut c = container_config("restored", loc.to_str().unwrap(), "");
    c.command.clear();
    let e = try_create(&d, &pod_id, Some(&pod), c).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("config.image.image") && e.message().contains("no CRIU image"),
        "{e:?}"
    );
    assert_eq!(entries(&d.root.join("containers")), before);
    assert!(entries(&d.root.join("restore-scratch")).is_empty());
    remove_pod(&d, &pod_id).await;
}

/// A tar of `members` (name, type, content, link target) with names written raw, so that
/// `..` and absolute names can be crafted.
fn craft(members: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in members {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The members of a sound archive of a busybox container whose spec has a bind mount at
/// `/data`.
fn sound(image_name: &str) -> Vec<(String, tar::EntryType, Vec<u8>, String)> {
    let config = serde_json::json!({
        "id": "0".repeat(64),
        "name": "old_pod_default_uid_0",
        "rootfsImageName": image_name,
        "runtime": "runc",
        "createdTime": "2026-01-01T00:00:00Z",
        "checkpointedTime": "2026-01-01T00:01:00Z",
        "restoredTime": "0001-01-01T00:00:00Z",
        "restored": false,
    });
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["sleep", "300"], "cwd": "/", "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hosts", "type": "bind", "source": "/x/hosts", "options": ["rbind"]},
            {"destination": "/data", "type": "bind", "source": "/var/lib/data", "options": ["rbind"]},
        ],
    });
    let reg = tar::EntryType::Regular;
    vec![
        (
            "checkpoint/".into(),
            tar::EntryType::Directory,
            vec![],
            String::new(),
        ),
        (
            "checkpoint/inventory.img".into(),
            reg,
            b"fake".to_vec(),
            String::new(),
        ),
        (
            "config.dump".into(),
            reg,
            serde_json::to_vec(&config).unwrap(),
            String::new(),
        ),
        (
            "spec.dump".into(),
            reg,
            serde_json::to_vec(&spec).unwrap(),
            String::new(),
        ),
        (
            "deleted.files".into(),
            reg,
            br#"["/etc/motd"]"#.to_vec(),
            String::new(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_crafted_archives_and_leaves_nothing() {
    ensure_images();
    let d = Daemon::start().await;
    pull(&d, &image("busybox")).await;
    let mut rt = d.runtime().await;
    let pod = pod_config(&d, "restore-bad");
    let pod_id = run_pod(&d, &pod).await;
    let dir = tempfile::tempdir().unwrap();
    let host_data = tempfile::tempdir().unwrap();
    let busybox = image("busybox");

    let mut cases: Vec<(&str, Vec<u8>, Code, &str, bool)> = Vec::new();
    let as_refs = |m: &[(String, tar::EntryType, Vec<u8>, String)]| {
        craft(
            &m.iter()
                .map(|(a, b, c, d)| (a.as_str(), *b, &c[..], d.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let with = |extra: (&str, tar::EntryType, &[u8], &str)| {
        let mut m = sound(&busybox);
        m.push((extra.0.into(), extra.1, extra.2.to_vec(), extra.3.into()));
        as_refs(&m)
    };
    let without = |name: &str| {
        let m: Vec<_> = sound(&busybox)
            .into_iter()
            .filter(|x| x.0 != name)
            .collect();
        as_refs(&m)
    };
    let reg = tar::EntryType::Regular;
    cases.push((
        "garbage",
        vec![7u8; 4096],
        Code::InvalidArgument,
        "not a readable tar",
        false,
    ));
    cases.push((
        "traversal",
        with(("../escaped", reg, b"x", "")),
        Code::InvalidArgument,
        "'..'",
        false,
    ));
    cases.push((
        "deep-traversal",
        with(("checkpoint/../../../escaped", reg, b"x", "")),
        Code::InvalidArgument,
        "'..'",
        false,
    ));
    cases.push((
        "absolute",
        with(("/tmp/krio-escaped", reg, b"x", "")),
        Code::InvalidArgument,
        "absolute",
        false,
    ));
    cases.push((
        "symlink",
        with(("link", tar::EntryType::Symlink, b"", "/etc")),
        Code::InvalidArgument,
        "not a regular file",
        false,
    ));
    cases.push((
        "hardlink",
        with(("hl", tar::EntryType::Link, b"", "/etc/shadow")),
        Code::InvalidArgument,
        "not a regular file",
        false,
    ));
    cases.push((
        "no-config",
        without("config.dump"),
        Code::InvalidArgument,
        "has no config.dump",
        false,
    ));
    cases.push((
        "no-spec",
        without("spec.dump"),
        Code::InvalidArgument,
        "has no spec.dump",
        false,
    ));
    cases.push((
        "no-criu-image",
        without("checkpoint/inventory.img"),
        Code::InvalidArgument,
        "no CRIU image",
        false,
    ));
    let mut bad_json = sound(&busybox);
    bad_json.retain(|x| x.0 != "config.dump");
    bad_json.push(("config.dump".into(), reg, b"{oops".to_vec(), String::new()));
    cases.push((
        "bad-json",
        as_refs(&bad_json),
        Code::InvalidArgument,
        "config.dump does not parse",
        false,
    ));
    // Sound, but the request does not name the checkpoint's /data bind mount.
    cases.push((
        "unrequested-mount",
        as_refs(&sound(&busybox)),
        Code::InvalidArgument,
        "/data",
        false,
    ));
    // Sound and matching the request: only CRIU stands in the way here.
    if !criu_works() {
        cases.push((
            "sound",
            as_refs(&sound(&busybox)),
            Code::FailedPrecondition,
            "criu check",
            true,
        ));
    }

    for (name, bytes, want_code, want_msg, with_mount) in cases {
        let path = dir.path().join(format!("{name}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let mut c = container_config(name, path.to_str().unwrap(), "");
        c.command.clear();
        if with_mount {
            c.mounts.push(cri::Mount {
                container_path: "/data".into(),
                host_path: host_data.path().to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        let e = try_create(&d, &pod_id, Some(&pod), c).await.unwrap_err();
        assert_eq!(e.code(), want_code, "{name}: {e:?}");
        assert!(e.message().contains(want_msg), "{name}: {e:?}");
        if want_code == Code::InvalidArgument && name != "unrequested-mount" {
            assert!(e.message().contains("config.image.image"), "{name}: {e:?}");
        }
        // Nothing left: no container, no scratch, nothing written beside the scratch.
        let listed = rt
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(listed.is_empty(), "{name}: {listed:?}");
        assert!(entries(&d.root.join("containers")).is_empty(), "{name}");
        assert!(entries(&d.state.join("containers")).is_empty(), "{name}");
        assert!(
            entries(&d.root.join("restore-scratch")).is_empty(),
            "{name}"
        );
        assert!(!d.root.join("escaped").exists() && !Path::new("/tmp/krio-escaped").exists());
    }
    // A path with no file is NotFound.
    let mut c = container_config("missing", "/nonexistent-krio/ckpt.tar", "");
    c.command.clear();
    let e = try_create(&d, &pod_id, Some(&pod), c).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    remove_pod(&d, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_builds_the_container_from_the_archive_up_to_runtime_restore() {
    ensure_images();
    // The test-only switch skips `criu check`; `runtime restore` itself needs CRIU, which
    // fails here, so the test goes up to it and checks what was built before it.
    let mut d = Daemon::start_with_env(
        Network::Loopback,
        &[("KRIO_TEST_CHECKPOINT_WITHOUT_CRIU", "1")],
    )
    .await;
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "restore-steps");
    let pod_id = run_pod(&d, &pod).await;
    let dir = tempfile::tempdir().unwrap();
    let host_data = tempfile::tempdir().unwrap();

    let mut diff = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(16);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    diff.append_data(&mut h, "data2/new.txt", &b"from-checkpoint\n"[..])
        .unwrap();
    let diff = diff.into_inner().unwrap();
    let mut m = sound(&image("busybox"));
    m.retain(|x| x.0 != "deleted.files");
    m.push((
        "deleted.files".into(),
        tar::EntryType::Regular,
        br#"["/bin/ls"]"#.to_vec(),
        String::new(),
    ));
    m.push((
        "rootfs-diff.tar".into(),
        tar::EntryType::Regular,
        diff,
        String::new(),
    ));
    let archive = dir.path().join("ckpt.tar");
    std::fs::write(
        &archive,
        craft(
            &m.iter()
                .map(|(a, b, c, d)| (a.as_str(), *b, &c[..], d.as_str()))
                .collect::<Vec<_>>(),
        ),
    )
    .unwrap();
    let mut c = container_config("restored", archive.to_str().unwrap(), "");
    c.command.clear();
    c.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: host_data.path().to_string_lossy().into_owned(),
        ..Default::default()
    });
    let id = try_create(&d, &pod_id, Some(&pod), c)
        .await
        .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", d.log()));
    let st = status(&d, &id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    // The checkpoint's process and image.
    assert!(st.image_ref.contains("krio-test/busybox@sha256:"), "{st:?}");
    let rootfs = d.state.join("containers").join(&id).join("rootfs");
    assert_eq!(
        std::fs::read(rootfs.join("data2/new.txt")).unwrap(),
        b"from-checkpoint\n"
    );
    assert!(rootfs.join("bin/sh").exists());
    assert!(rootfs.join("bin/ls").symlink_metadata().is_err());
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.state.join("containers").join(&id).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["sleep", "300"]));
    assert!(d
        .root
        .join("containers")
        .join(&id)
        .join("checkpoint/inventory.img")
        .exists());
    assert!(entries(&d.root.join("restore-scratch")).is_empty());

    // A restore waiting for its start survives a daemon restart.
    d.restart().await;
    let st = status(&d, &id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);

    // StartContainer runs `runc restore`, which CRIU fails here: an error, never a pretence.
    let e = d
        .runtime()
        .await
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("restore") || e.message().contains("criu"),
        "{e:?}"
    );
    assert_ne!(
        status(&d, &id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    d.runtime()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(entries(&d.root.join("containers")).is_empty());
    assert!(entries(&d.state.join("containers")).is_empty());
    remove_pod(&d, &pod_id).await;
}
