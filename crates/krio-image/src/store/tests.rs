use super::*;

const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const H3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn config() -> ImageConfiguration {
    serde_json::from_str(
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"User":"1000"}}"#,
    )
    .unwrap()
}

fn record(id_hex: &str, chains: &[&str], tags: &[&str], digests: &[&str]) -> ImageRecord {
    ImageRecord {
        id: format!("sha256:{id_hex}"),
        repo_tags: tags.iter().map(|s| s.to_string()).collect(),
        repo_digests: digests.iter().map(|s| s.to_string()).collect(),
        size: 10,
        config: config(),
        chain_ids: chains.iter().map(|c| format!("sha256:{c}")).collect(),
        diff_ids: chains.iter().map(|c| format!("sha256:{c}")).collect(),
        manifest_digest: format!("sha256:{id_hex}"),
        manifest_media_type: crate::manifest::OCI_MANIFEST.into(),
        blobs: vec![],
        pulled_at_ns: 1,
    }
}

fn make_layer(root: &Path, hex: &str, with_meta: bool) {
    let d = root.join("layers").join(hex);
    fs::create_dir_all(d.join("diff")).unwrap();
    fs::write(d.join("diff/file"), b"x").unwrap();
    if with_meta {
        fs::write(d.join("meta.json"), b"{}").unwrap();
    }
}

fn write_record(root: &Path, rec: &ImageRecord) {
    let hex = rec.id.strip_prefix("sha256:").unwrap();
    fs::create_dir_all(root.join("images")).unwrap();
    fs::write(
        root.join("images").join(format!("{hex}.json")),
        serde_json::to_vec(rec).unwrap(),
    )
    .unwrap();
}

#[test]
fn open_recovers() {
    let dir = tempfile::Builder::new()
        .prefix("krio-image-unit-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("tmp/layer-x/diff")).unwrap();
    fs::write(root.join("tmp/junk"), b"x").unwrap();
    make_layer(root, H1, true); // referenced
    make_layer(root, H2, false); // half-written
    make_layer(root, H3, true); // unreferenced
    fs::create_dir_all(root.join("layers/not-hex")).unwrap();
    let good = record(H1, &[H1], &["docker.io/library/a:latest"], &[]);
    write_record(root, &good);
    // references a missing layer
    write_record(
        root,
        &record(H2, &[H2], &["docker.io/library/b:latest"], &[]),
    );
    fs::write(root.join("images/garbage.json"), b"{").unwrap();
    // unreferenced blob
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    fs::write(root.join("blobs/sha256").join(H3), b"x").unwrap();

    let s = ImageStore::open(root, RegistryConfig::default()).unwrap();
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    let layers: Vec<_> = fs::read_dir(root.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(layers, vec![H1.to_string()]);
    assert_eq!(fs::read_dir(root.join("images")).unwrap().count(), 1);
    assert_eq!(fs::read_dir(root.join("blobs/sha256")).unwrap().count(), 0);
    assert_eq!(s.list(), vec![good.clone()]);
    assert_eq!(s.resolve("a").unwrap().id, good.id);
    assert_eq!(s.resolve("a").unwrap().user(), Some("1000"));
    assert_eq!(
        s.layer_dirs(&good).unwrap(),
        vec![root.join("layers").join(H1).join("diff")]
    );
    let u = s.fs_usage().unwrap();
    assert!(u.used_bytes > 0 && u.inodes_used >= 6, "{u:?}");
    // What else lives under the root (containers' writable layers) is not image usage.
    fs::create_dir_all(root.join("containers/c1/upper")).unwrap();
    fs::write(root.join("containers/c1/upper/big"), vec![7u8; 1 << 20]).unwrap();
    let again = s.fs_usage().unwrap();
    assert_eq!(
        (again.used_bytes, again.inodes_used),
        (u.used_bytes, u.inodes_used)
    );
    let c = crate::tree_usage(&[&root.join("containers")], root).unwrap();
    assert!(c.used_bytes >= 1 << 20 && c.inodes_used == 4, "{c:?}");
    assert!(root.starts_with(&u.mountpoint) || u.mountpoint == Path::new("/"));
}

#[test]
fn resolve_and_remove_semantics() {
    let dir = tempfile::Builder::new()
        .prefix("krio-image-unit-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    for h in [H1, H2, H3] {
        make_layer(root, h, true);
    }
    let d1 = format!("docker.io/library/a@sha256:{H3}");
    let a = record(
        H1,
        &[H1, H2],
        &[
            "docker.io/library/a:latest",
            "docker.io/library/a:v1",
            "quay.io/x/y:t",
        ],
        &[
            &d1,
            "quay.io/x/y@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ],
    );
    let b = record(H2, &[H1, H3], &["docker.io/library/b:latest"], &[]);
    write_record(root, &a);
    write_record(root, &b);
    let s = ImageStore::open(root, RegistryConfig::default()).unwrap();
    assert_eq!(s.list().len(), 2);
    // lookups
    for name in [
        format!("sha256:{H1}"),
        H1.to_string(),
        H1[..12].to_string(),
        format!("sha256:{}", &H1[..12]),
        "a".into(),
        "a:v1".into(),
        "docker.io/library/a".into(),
        "library/a:latest".into(),
        format!("a@sha256:{H3}"),
        format!("a:whatever@sha256:{H3}"),
        "quay.io/x/y:t".into(),
    ] {
        assert_eq!(s.resolve(&name).map(|r| r.id), Some(a.id.clone()), "{name}");
    }
    for name in [
        "c",
        "a:v2",
        &H1[..11],
        "sha256:",
        "",
        "!!",
        &format!("b@sha256:{H3}"),
    ] {
        assert!(s.resolve(name).is_none(), "{name}");
    }
    // layer dirs topmost first
    let dirs = s.layer_dirs(&a).unwrap();
    assert_eq!(dirs[0], root.join("layers").join(H2).join("diff"));
    assert_eq!(dirs[1], root.join("layers").join(H1).join("diff"));

    // Which removals would delete the image itself (the in-use check depends on it).
    assert!(s.removal_deletes_image(H1));
    assert!(!s.removal_deletes_image("a:v1"));
    assert!(!s.removal_deletes_image("nope"));
    // remove unknown: ok
    s.remove("nope").unwrap();
    s.remove(&format!("sha256:{H3}")).unwrap();
    // remove a tag: other tags stay; the repo's digest stays while the repo has a tag
    s.remove("a:v1").unwrap();
    let r = s.resolve("a").unwrap();
    assert_eq!(r.repo_tags.len(), 2);
    assert_eq!(r.repo_digests.len(), 2);
    // last tag of docker.io/library/a: its digest goes too
    s.remove("a").unwrap();
    let r = s.resolve("quay.io/x/y:t").unwrap();
    assert_eq!(r.repo_tags, vec!["quay.io/x/y:t".to_string()]);
    assert_eq!(r.repo_digests.len(), 1);
    assert!(s.resolve(&d1).is_none());
    // persisted
    drop(s);
    let s = ImageStore::open(root, RegistryConfig::default()).unwrap();
    assert_eq!(s.resolve("quay.io/x/y:t").unwrap().repo_tags.len(), 1);
    // The last tag, with its repository's digest: removing it deletes the image.
    assert!(s.removal_deletes_image("quay.io/x/y:t"));
    // remove the last tag: image goes; its exclusive layer H2 goes, shared H1 stays
    s.remove("quay.io/x/y:t").unwrap();
    assert!(s.resolve(&a.id).is_none());
    assert!(!root.join("layers").join(H2).exists());
    assert!(root.join("layers").join(H1).exists());
    assert!(!root.join("images").join(format!("{H1}.json")).exists());
    // by id
    s.remove(&H2[..12]).unwrap();
    assert!(s.list().is_empty());
    assert_eq!(fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

#[test]
fn pins_protect_from_gc() {
    let dir = tempfile::Builder::new()
        .prefix("krio-image-unit-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let s = ImageStore::open(root, RegistryConfig::default()).unwrap();
    make_layer(root, H1, true);
    let pin = s.pin(vec![format!("layer:{H1}")]);
    s.gc().unwrap();
    assert!(root.join("layers").join(H1).exists());
    drop(pin);
    s.gc().unwrap();
    assert!(!root.join("layers").join(H1).exists());
}

#[test]
fn atomic_write_replaces() {
    let dir = tempfile::Builder::new()
        .prefix("krio-image-unit-")
        .tempdir()
        .unwrap();
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let dest = dir.path().join("f.json");
    atomic_write(&tmp, &dest, b"one").unwrap();
    atomic_write(&tmp, &dest, b"two").unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"two");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    assert_eq!(unescape_mount("/a\\040b"), "/a b");
}
