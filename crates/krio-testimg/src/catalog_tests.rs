//! Unit tests of the catalogue: content, digests, diff_ids, media types, determinism. Uses the host's
//! real `/bin/busybox` (Debian busybox-static), which must be installed.

use super::*;
use crate::digest::Digest;
use crate::image::{media_types, write_oci_layout};
use crate::layer::EntryKind;
use crate::view::{apply_layers, list_dir, ViewEntry};

fn catalog() -> Catalog {
    Catalog::from_host().unwrap_or_else(|e| {
        panic!("these tests need Debian's busybox-static at {HOST_BUSYBOX} (apt-get install -y busybox-static): {e}")
    })
}

/// Checks every blob/descriptor relation of one image and parses it with oci-spec.
fn check_image(img: &Image) {
    assert_eq!(img.manifest_digest, Digest::of(&img.manifest));
    assert_eq!(img.config_digest, Digest::of(&img.config));
    let m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], img.media_type());
    assert_eq!(m["config"]["digest"], img.config_digest.as_str());
    assert_eq!(m["config"]["size"], img.config.len() as u64);
    assert_eq!(m["config"]["mediaType"], img.format.config_media_type());
    let cfg: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), img.layers.len());
    assert_eq!(diff_ids.len(), img.layers.len());
    assert_eq!(cfg["history"].as_array().unwrap().len(), img.layers.len());
    assert_eq!(cfg["rootfs"]["type"], "layers");
    assert_eq!(cfg["architecture"], img.platform.architecture.as_str());
    assert_eq!(cfg["os"], "linux");
    for ((l, desc), diff_id) in img.layers.iter().zip(layers).zip(diff_ids) {
        assert_eq!(desc["digest"], Digest::of(&l.blob).as_str());
        assert_eq!(desc["size"], l.blob.len() as u64);
        assert_eq!(
            desc["mediaType"],
            img.format.layer_media_type(l.compression).unwrap()
        );
        let tar = l.uncompressed().unwrap();
        assert_eq!(
            diff_id,
            Digest::of(&tar).as_str(),
            "diff_id = sha256(uncompressed tar)"
        );
        assert_eq!(l.uncompressed_size, tar.len() as u64);
    }
    // Readable by the OCI types the rest of krio uses.
    let parsed: oci_spec::image::ImageManifest = serde_json::from_slice(&img.manifest).unwrap();
    assert_eq!(parsed.layers().len(), img.layers.len());
    let pc: oci_spec::image::ImageConfiguration = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(pc.rootfs().diff_ids().len(), img.layers.len());
}

#[test]
fn busybox_layer_content() {
    let cat = catalog();
    let base = cat.base_layer();
    assert!(
        cat.applets().len() > 100,
        "busybox --list gave {} applets",
        cat.applets().len()
    );
    assert!(cat.applets().iter().any(|a| a == "sh"));
    assert!(!cat.applets().iter().any(|a| a == "busybox"));
    let bin = std::fs::read(HOST_BUSYBOX).unwrap();
    assert_eq!(base.get("bin/busybox").unwrap().kind, EntryKind::File(bin));
    for a in cat.applets() {
        assert_eq!(
            base.get(&format!("bin/{a}")).unwrap().kind,
            EntryKind::HardLink("bin/busybox".into()),
            "{a}"
        );
    }
    assert_eq!(base.get("tmp").unwrap().mode, 0o1777);
    assert_eq!(base.get("root").unwrap().mode, 0o700);
    assert!(base.get("home").is_some());
    let EntryKind::File(passwd) = &base.get("etc/passwd").unwrap().kind else {
        panic!("passwd")
    };
    let passwd = String::from_utf8(passwd.clone()).unwrap();
    for user in ["root:x:0:0:", "nobody:x:65534:", "krio:x:1000:1000:"] {
        assert!(passwd.contains(user), "{user}");
    }

    // The rendered tar: uid/gid 0, fixed mtime, hard links after their target.
    let tar = base.tar().unwrap();
    let mut ar = tar::Archive::new(tar.as_slice());
    let mut seen_busybox = false;
    let mut links = 0;
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mtime().unwrap(), crate::layer::LAYER_MTIME);
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "bin/busybox" {
            seen_busybox = true;
        }
        if h.entry_type() == tar::EntryType::Link {
            assert!(seen_busybox, "hard link {p} before its target");
            links += 1;
        }
    }
    assert_eq!(links, cat.applets().len());
}

#[test]
fn all_images_are_consistent() {
    let cat = catalog();
    let all = cat.build_all().unwrap();
    assert_eq!(all.iter().map(|i| i.name).collect::<Vec<_>>(), IMAGE_NAMES);
    for ti in &all {
        assert_eq!(ti.repository, format!("krio-test/{}", ti.name));
        crate::registry::validate_repository(&ti.repository).unwrap();
        for img in ti.artifact.images() {
            check_image(img);
        }
        assert!(ti.artifact.host_image().is_some(), "{}", ti.name);
    }
    let get = |n: &str| all.iter().find(|i| i.name == n).unwrap();

    let Artifact::Image(bb) = &get(BUSYBOX).artifact else {
        panic!()
    };
    assert_eq!(bb.media_type(), media_types::DOCKER_MANIFEST);
    let m: serde_json::Value = serde_json::from_slice(&bb.manifest).unwrap();
    assert_eq!(m["config"]["mediaType"], media_types::DOCKER_CONFIG);
    assert_eq!(m["layers"][0]["mediaType"], media_types::DOCKER_LAYER_GZIP);
    let cfg: serde_json::Value = serde_json::from_slice(&bb.config).unwrap();
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["sh"]));
    assert!(cfg["config"]["Env"][0]
        .as_str()
        .unwrap()
        .starts_with("PATH="));

    let Artifact::Image(oci) = &get(BUSYBOX_OCI).artifact else {
        panic!()
    };
    assert_eq!(oci.media_type(), media_types::OCI_MANIFEST);
    assert_eq!(oci.layers, bb.layers, "same layer blob in both formats");

    let Artifact::Image(z) = &get(ZSTD).artifact else {
        panic!()
    };
    assert_eq!(z.layers[0].compression, Compression::Zstd);
    assert_eq!(
        z.layers[0].diff_id, bb.layers[0].diff_id,
        "same content, other compression"
    );
    let zm: serde_json::Value = serde_json::from_slice(&z.manifest).unwrap();
    assert_eq!(zm["layers"][0]["mediaType"], media_types::OCI_LAYER_ZSTD);

    let Artifact::Image(u) = &get(UNCOMPRESSED).artifact else {
        panic!()
    };
    assert_eq!(u.layers[0].digest, u.layers[0].diff_id);
    let um: serde_json::Value = serde_json::from_slice(&u.manifest).unwrap();
    assert_eq!(um["layers"][0]["mediaType"], media_types::OCI_LAYER_TAR);

    let Artifact::Image(p) = &get(PAUSE).artifact else {
        panic!()
    };
    let pc: serde_json::Value = serde_json::from_slice(&p.config).unwrap();
    assert_eq!(
        pc["config"]["Entrypoint"],
        serde_json::json!(PAUSE_ENTRYPOINT)
    );
    assert!(pc["config"].get("Cmd").is_none());
}

#[test]
fn index_has_platforms() {
    let cat = catalog();
    let ti = cat.build(BUSYBOX_INDEX).unwrap();
    let Artifact::Index(idx) = &ti.artifact else {
        panic!("not an index")
    };
    assert_eq!(idx.digest, Digest::of(&idx.json));
    let _: oci_spec::image::ImageIndex = serde_json::from_slice(&idx.json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&idx.json).unwrap();
    assert_eq!(v["mediaType"], media_types::OCI_INDEX);
    let entries = v["manifests"].as_array().unwrap();
    assert!(entries.len() >= 3);
    for (e, img) in entries.iter().zip(&idx.images) {
        assert_eq!(e["digest"], img.manifest_digest.as_str());
        assert_eq!(e["size"], img.manifest.len() as u64);
        assert_eq!(
            e["platform"]["architecture"],
            img.platform.architecture.as_str()
        );
    }
    for (os, arch, variant) in INDEX_PLATFORMS {
        assert!(idx.image_for(&Platform::new(os, arch, *variant)).is_some());
    }
    let host = idx.image_for(&Platform::host()).unwrap();
    let real = cat.build(BUSYBOX_OCI).unwrap();
    assert_eq!(
        &host.manifest_digest,
        real.artifact.digest(),
        "host entry is the real busybox-oci image"
    );
    for img in &idx.images {
        if img.platform != Platform::host() {
            assert_eq!(img.layers.len(), 1);
            assert!(img.layers[0].blob.len() < 1024, "dummy layer is tiny");
        }
    }
}

#[test]
fn layered_whiteouts_and_merged_view() {
    let cat = catalog();
    let [l1, l2] = cat.layered_layers().unwrap();
    assert_eq!(
        l2.get("data/.wh.remove.txt").unwrap().kind,
        EntryKind::File(Vec::new())
    );
    assert_eq!(
        l2.get("opaque/.wh..wh..opq").unwrap().kind,
        EntryKind::File(Vec::new())
    );
    assert!(l1.get("data/remove.txt").is_some());

    // The pushed blobs, decompressed, carry the whiteout entries.
    let ti = cat.build(LAYERED).unwrap();
    let img = ti.artifact.host_image().unwrap();
    assert_eq!(img.layers.len(), 2);
    let tars: Vec<Vec<u8>> = img
        .layers
        .iter()
        .map(|l| l.uncompressed().unwrap())
        .collect();
    let names: Vec<String> = tar::Archive::new(tars[1].as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "data/.wh.remove.txt",
        "opaque/.wh..wh..opq",
        "opaque/c.txt",
        "data/change.txt",
        "data/added.txt",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from layer 2: {names:?}"
        );
    }

    let view = apply_layers(&[&tars[0], &tars[1]]).unwrap();
    for (path, content) in LAYERED_FILES {
        match view.get(*path) {
            Some(ViewEntry::File { data, .. }) => assert_eq!(&**data, content.as_bytes(), "{path}"),
            other => panic!("{path}: {other:?}"),
        }
    }
    for path in LAYERED_ABSENT {
        assert!(!view.contains_key(*path), "{path} should be absent");
    }
    for (dir, names) in LAYERED_DIRS {
        assert_eq!(list_dir(&view, dir), *names, "{dir}");
    }
    assert!(matches!(view.get("bin/sh"), Some(ViewEntry::File { .. })));
}

#[test]
fn builds_are_deterministic() {
    let a = catalog().build_all().unwrap();
    let b = catalog().build_all().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.artifact.digest(), y.artifact.digest(), "{}", x.name);
    }
}

#[test]
fn unknown_image() {
    assert!(matches!(
        catalog().build("nope"),
        Err(Error::UnknownImage { .. })
    ));
}

#[test]
fn oci_layout() {
    let cat = catalog();
    let dir = tempfile::Builder::new()
        .prefix("krio-testimg-")
        .tempdir()
        .unwrap();
    let imgs = [
        cat.build(BUSYBOX_INDEX).unwrap(),
        cat.build(LAYERED).unwrap(),
    ];
    let items: Vec<(&str, &Artifact)> = vec![
        ("index:latest", &imgs[0].artifact),
        ("layered:latest", &imgs[1].artifact),
    ];
    write_oci_layout(dir.path(), &items).unwrap();
    let idx: oci_spec::image::ImageIndex =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(idx.manifests().len(), 2);
    for d in idx.manifests() {
        let blob =
            std::fs::read(dir.path().join("blobs/sha256").join(d.digest().digest())).unwrap();
        assert_eq!(Digest::of(&blob).as_str(), d.digest().to_string());
    }
    for ti in &imgs {
        for img in ti.artifact.images() {
            for (d, data) in img.blobs() {
                assert_eq!(
                    std::fs::read(dir.path().join("blobs/sha256").join(d.hex())).unwrap(),
                    data
                );
            }
        }
    }
    assert!(dir.path().join("oci-layout").exists());
}
