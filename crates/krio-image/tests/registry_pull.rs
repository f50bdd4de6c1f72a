//! Pulls from a real local registry (docker-registry 2.8 on 127.0.0.1:5020) of the
//! krio-testimg images: Docker schema 2, OCI manifest, OCI index, whiteout layers, zstd,
//! uncompressed.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use krio_image::{ImageError, ImageStore, RegistryConfig};
use krio_testimg::catalog::{self, IMAGE_NAMES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_every_catalogue_image() {
    let f = fixture();
    let (dir, s) = store();
    for name in IMAGE_NAMES {
        let (img, pushed) = &f.images[*name];
        let r = reference(name);
        let rec = s
            .pull(&r, None)
            .await
            .unwrap_or_else(|e| panic!("pull {r}: {e}"));
        // Images with the same config (busybox, busybox-oci, ...) are one image with several names.
        assert!(rec.repo_tags.contains(&r), "{name}: {:?}", rec.repo_tags);
        let repo_digest = format!("{}/{}@{}", registry(), img.repository, pushed.digest);
        assert!(
            rec.repo_digests.contains(&repo_digest),
            "{name}: {:?}",
            rec.repo_digests
        );
        assert_eq!(rec.repo_tags.len(), rec.repo_digests.len(), "{name}");
        assert!(rec.id.starts_with("sha256:") && rec.id.len() == 71);
        assert_eq!(rec.chain_ids.len(), rec.diff_ids.len());
        assert!(!rec.chain_ids.is_empty());
        assert!(rec.size > 0);
        assert_eq!(rec.config.os().to_string(), "linux");
        let host = img.artifact.host_image().expect("host entry");
        assert_eq!(
            rec.id,
            host.config_digest.to_string(),
            "{name}: host image picked"
        );
        assert_eq!(
            rec.size,
            host.layers.iter().map(|l| l.blob.len() as u64).sum::<u64>(),
            "{name}: size is the sum of compressed layer sizes"
        );
        let dirs = s.layer_dirs(&rec).unwrap();
        assert_eq!(dirs.len(), rec.chain_ids.len());
        // Every image but the image volume's (plain files, no command) runs busybox.
        let marker = if *name == catalog::VOLUME {
            "files/a.txt"
        } else {
            "bin/busybox"
        };
        assert!(
            dirs.iter().any(|d| d.join(marker).is_file()),
            "{name}: no {marker} in {dirs:?}"
        );
        assert!(
            dirs.iter().all(|d| !d.join("DUMMY").exists()),
            "{name}: dummy platform picked"
        );
        assert_eq!(s.resolve(&r).unwrap().id, rec.id);
        // the manifest and config are in the content store
        assert!(s.read_blob(&rec.manifest_digest).is_ok());
        assert!(s.read_blob(&rec.id).is_ok());
    }
    assert_eq!(count(&dir.path().join("tmp")), 0);
    // Reopening finds the same images.
    let list = s.list();
    drop(s);
    let s2 = ImageStore::open(dir.path(), RegistryConfig::default()).unwrap();
    assert_eq!(s2.list(), list);
    let u = s2.fs_usage().unwrap();
    assert!(u.used_bytes > 1_000_000 && u.inodes_used > 10, "{u:?}");
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_image_has_whiteouts_and_opaque_dirs() {
    fixture();
    let (dir, s) = store();
    let rec = s.pull(&reference(catalog::LAYERED), None).await.unwrap();
    let dirs = s.layer_dirs(&rec).unwrap();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let top = &dirs[0];
    let wh = std::fs::symlink_metadata(top.join("data/remove.txt")).expect("whiteout device");
    assert!(
        wh.file_type().is_char_device(),
        "data/remove.txt is not a char device"
    );
    assert_eq!(wh.rdev(), 0);
    assert!(!top.join("data/.wh.remove.txt").exists());
    assert!(!top.join("opaque/.wh..wh..opq").exists());
    assert_eq!(
        getxattr(&top.join("opaque"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // the bottom layer still has the hidden files
    assert!(dirs[1].join("opaque/a.txt").is_file());

    // A real read-only overlay mount of the lower dirs shows the expected merged view.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lower = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let st = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lower}"))
        .arg(&mnt)
        .status()
        .expect("mount");
    assert!(st.success(), "mounting overlay (needs root and overlayfs)");
    let check = std::panic::catch_unwind(|| {
        for (p, content) in catalog::LAYERED_FILES {
            assert_eq!(
                std::fs::read_to_string(mnt.join(p)).unwrap(),
                *content,
                "{p}"
            );
        }
        for p in catalog::LAYERED_ABSENT {
            assert!(
                std::fs::symlink_metadata(mnt.join(p)).is_err(),
                "{p} should be absent"
            );
        }
        for (d, names) in catalog::LAYERED_DIRS {
            let mut got: Vec<String> = std::fs::read_dir(mnt.join(d))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            got.sort();
            assert_eq!(
                got,
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{d}"
            );
        }
    });
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    if let Err(p) = check {
        std::panic::resume_unwind(p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_invalid_references() {
    fixture();
    let (dir, s) = store();
    let r = format!("{}/krio-test/busybox:no-such-tag", registry());
    match s.pull(&r, None).await {
        Err(ImageError::NotFound { reference, .. }) => {
            assert!(reference.contains("busybox:no-such-tag"))
        }
        other => panic!("{other:?}"),
    }
    let r = format!("{}/krio-test/no-such-repo", registry());
    match s.pull(&r, None).await {
        Err(ImageError::NotFound { reference, .. }) => assert!(reference.contains("no-such-repo")),
        other => panic!("{other:?}"),
    }
    let r = format!("{}/krio-test/busybox@sha256:{}", registry(), "0".repeat(64));
    assert!(matches!(
        s.pull(&r, None).await,
        Err(ImageError::NotFound { .. })
    ));
    for bad in ["", "foo/UPPER", "a::b", "x@sha256:123", "-x"] {
        assert!(
            matches!(
                s.pull(bad, None).await,
                Err(ImageError::InvalidReference { .. })
            ),
            "{bad}"
        );
    }
    // nothing listens on port 1
    assert!(matches!(
        s.pull("127.0.0.1:1/a/b", None).await,
        Err(ImageError::Registry { .. })
    ));
    assert_empty(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repull_and_pull_by_digest_reuse_layers() {
    let f = fixture();
    let (dir, s) = store();
    let r = reference(catalog::BUSYBOX);
    let a = s.pull(&r, None).await.unwrap();
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let before: Vec<u64> = s.layer_dirs(&a).unwrap().iter().map(|d| inode(d)).collect();
    let metas: Vec<Vec<u8>> = s
        .layer_dirs(&a)
        .unwrap()
        .iter()
        .map(|d| std::fs::read(d.parent().unwrap().join("meta.json")).unwrap())
        .collect();
    let b = s.pull(&r, None).await.unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(b.repo_tags, a.repo_tags);
    assert!(b.pulled_at_ns >= a.pulled_at_ns);
    let after: Vec<u64> = s.layer_dirs(&b).unwrap().iter().map(|d| inode(d)).collect();
    assert_eq!(before, after, "layers were re-created");
    let metas2: Vec<Vec<u8>> = s
        .layer_dirs(&b)
        .unwrap()
        .iter()
        .map(|d| std::fs::read(d.parent().unwrap().join("meta.json")).unwrap())
        .collect();
    assert_eq!(metas, metas2);
    // by digest, and name:tag@digest
    let digest = &f.images[catalog::BUSYBOX].1.digest;
    let by_digest = format!("{}/krio-test/busybox@{digest}", registry());
    let c = s.pull(&by_digest, None).await.unwrap();
    assert_eq!(c.id, a.id);
    assert_eq!(c.repo_tags, a.repo_tags);
    assert_eq!(c.repo_digests.len(), 1);
    let tagged_digest = format!("{}/krio-test/busybox:latest@{digest}", registry());
    assert_eq!(s.pull(&tagged_digest, None).await.unwrap().id, a.id);
    assert_eq!(s.resolve(&tagged_digest).unwrap().id, a.id);
    assert_eq!(s.resolve(&by_digest).unwrap().id, a.id);
    assert_eq!(count(&dir.path().join("layers")), a.chain_ids.len());
    assert_eq!(count(&dir.path().join("tmp")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls() {
    fixture();
    let (dir, s) = store();
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        let name = [catalog::LAYERED, catalog::ZSTD, catalog::BUSYBOX_OCI][i % 3];
        tasks.push(tokio::spawn(
            async move { s.pull(&reference(name), None).await },
        ));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().id);
    }
    assert_eq!(ids[0], ids[3]);
    assert_eq!(ids[1], ids[4]);
    assert_eq!(ids[2], ids[5]);
    let list = s.list();
    let tags: Vec<_> = list.iter().flat_map(|r| r.repo_tags.clone()).collect();
    assert_eq!(tags.len(), 3, "{tags:?}");
    let mut chains: Vec<String> = list.iter().flat_map(|r| r.chain_ids.clone()).collect();
    chains.sort();
    chains.dedup();
    assert_eq!(count(&dir.path().join("layers")), chains.len());
    assert_eq!(count(&dir.path().join("tmp")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_and_remove() {
    fixture();
    let (dir, s) = store();
    let a = s.pull(&reference(catalog::BUSYBOX), None).await.unwrap();
    let b = s.pull(&reference(catalog::LAYERED), None).await.unwrap();
    let hex = a.id.strip_prefix("sha256:").unwrap();
    for name in [
        a.id.clone(),
        hex.to_string(),
        hex[..12].to_string(),
        a.repo_digests[0].clone(),
        reference(catalog::BUSYBOX),
    ] {
        assert_eq!(s.resolve(&name).unwrap().id, a.id, "{name}");
    }
    assert!(s.resolve("busybox").is_none());
    // Remove by tag: the image had only that tag (and that repo's digest), so it goes;
    // layers shared with `layered` stay.
    s.remove(&reference(catalog::BUSYBOX)).unwrap();
    assert!(s.resolve(&a.id).is_none());
    assert_eq!(s.list().len(), 1);
    s.layer_dirs(&b).unwrap();
    assert_eq!(count(&dir.path().join("layers")), b.chain_ids.len());
    // idempotent
    s.remove(&reference(catalog::BUSYBOX)).unwrap();
    s.remove(&a.id).unwrap();
    // remove by repo digest
    s.remove(&b.repo_digests[0]).unwrap();
    let b2 = s.resolve(&b.id).unwrap();
    assert!(b2.repo_digests.is_empty());
    assert_eq!(b2.repo_tags, b.repo_tags);
    // remove by id: everything goes
    s.remove(&b.id).unwrap();
    assert!(s.list().is_empty());
    assert_empty(dir.path());
}

/// Pushes an image whose config claims a wrong diff_id (or whose manifest has a wrong layer
/// size) and checks the failed pull leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_images_leave_nothing() {
    let f = fixture();
    let (dir, s) = store();
    let client = client();
    let (img, _) = &f.images[catalog::LAYERED];
    let krio_testimg::Artifact::Image(image) = &img.artifact else {
        panic!("layered is a single image");
    };
    let repo = "krio-image-test/corrupt";
    for l in &image.layers {
        client.push_blob(repo, &l.digest, &l.blob).unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    // Second layer's diff_id is wrong: the first layer gets unpacked, then the pull fails.
    config["rootfs"]["diff_ids"][1] = serde_json::json!(format!("sha256:{}", "ab".repeat(32)));
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = krio_testimg::Digest::of(&config_bytes);
    client
        .push_blob(repo, &config_digest, &config_bytes)
        .unwrap();
    let layer_desc = |i: usize, size_delta: i64| {
        let l = &image.layers[i];
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": l.digest.to_string(),
            "size": l.blob.len() as i64 + size_delta,
        })
    };
    let manifest = |layers: Vec<serde_json::Value>| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": layers,
        }))
        .unwrap()
    };
    let mt = "application/vnd.oci.image.manifest.v1+json";
    client
        .push_manifest(
            repo,
            "bad-diffid",
            mt,
            &manifest(vec![layer_desc(0, 0), layer_desc(1, 0)]),
        )
        .unwrap();
    client
        .push_manifest(
            repo,
            "bad-size",
            mt,
            &manifest(vec![layer_desc(0, -1), layer_desc(1, 0)]),
        )
        .unwrap();
    let r = format!("{}/{repo}:bad-diffid", registry());
    match s.pull(&r, None).await {
        Err(ImageError::DigestMismatch { what, .. }) => assert!(what.contains("diff_id"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert_empty(dir.path());
    let r = format!("{}/{repo}:bad-size", registry());
    match s.pull(&r, None).await {
        Err(ImageError::SizeMismatch { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_empty(dir.path());
    // Good images still pull afterwards.
    s.pull(&reference(catalog::LAYERED), None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_pull_leaves_nothing() {
    fixture();
    let (dir, s) = store();
    for delay_ms in [1u64, 5, 20, 60] {
        let r = reference(catalog::LAYERED);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(delay_ms), s.pull(&r, None))
            .await;
        // The blocking worker may still be finishing; tmp/ drains quickly.
        for _ in 0..100 {
            if count(&dir.path().join("tmp")) == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if s.list().is_empty() {
            drop(s);
            let s2 = ImageStore::open(dir.path(), RegistryConfig::default()).unwrap();
            assert!(s2.list().is_empty());
            assert_empty(dir.path());
            return;
        }
        s.remove(&r).unwrap();
        assert_empty(dir.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_in_order() {
    fixture();
    let dir = tempfile::Builder::new()
        .prefix("krio-image-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cfg = RegistryConfig::default();
    let mirrors = vec![
        "http://127.0.0.1:1".to_string(),
        format!("http://{}/", registry()),
    ];
    cfg.mirrors
        .insert("registry.example.invalid".into(), mirrors.clone());
    cfg.mirrors.insert("docker.io".into(), mirrors);
    let s = ImageStore::open(dir.path(), cfg).unwrap();
    let rec = s
        .pull("registry.example.invalid/krio-test/busybox", None)
        .await
        .unwrap();
    assert_eq!(
        rec.repo_tags,
        vec!["registry.example.invalid/krio-test/busybox:latest".to_string()]
    );
    assert!(rec.repo_digests[0].starts_with("registry.example.invalid/krio-test/busybox@sha256:"));
    // Docker Hub names go to the docker.io mirrors.
    let rec2 = s.pull("krio-test/busybox", None).await.unwrap();
    assert_eq!(rec2.id, rec.id);
    assert!(rec2
        .repo_tags
        .contains(&"docker.io/krio-test/busybox:latest".to_string()));
    assert_eq!(s.resolve("krio-test/busybox").unwrap().id, rec.id);
}

/// Layer 2 hard-links a file of layer 1: it is first unpacked speculatively (in parallel with
/// layer 1, without lowers), fails to find the target, and is redone with its lowers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_layer_hard_link() {
    use krio_testimg::{image, layer, Artifact, Image, LayerBuilder};
    fixture();
    let mut b1 = LayerBuilder::new();
    b1.dir("data", 0o755).unwrap();
    b1.file("data/orig.txt", 0o644, vec![b'h'; 3_000_000])
        .unwrap();
    let l1 = b1.build(layer::Compression::Gzip).unwrap();
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_path("data/link.txt").unwrap();
    h.set_link_name("data/orig.txt").unwrap();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    t.append(&h, std::io::empty()).unwrap();
    let l2 =
        krio_testimg::Layer::from_tar(t.into_inner().unwrap(), layer::Compression::Gzip).unwrap();
    let img = Image::build(
        image::ManifestFormat::Oci,
        &image::ImageSpec::with_cmd(&["sh"]),
        vec![l1, l2],
    )
    .unwrap();
    let repo = "krio-image-test/hardlink";
    client()
        .push_artifact(repo, "latest", &Artifact::Image(img))
        .unwrap();

    let (dir, s) = store();
    let rec = s
        .pull(&format!("{}/{repo}:latest", registry()), None)
        .await
        .unwrap();
    let dirs = s.layer_dirs(&rec).unwrap();
    let link = dirs[0].join("data/link.txt");
    assert_eq!(std::fs::metadata(&link).unwrap().len(), 3_000_000);
    assert!(std::fs::read(&link).unwrap().iter().all(|b| *b == b'h'));
    assert_eq!(count(&dir.path().join("tmp")), 0);
    assert_eq!(count(&dir.path().join("layers")), 2);
}
