//! Shared setup of the registry integration tests: a real `docker-registry` on 127.0.0.1:5020
//! (`scripts/registry.sh`) with the krio-testimg catalogue pushed.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use krio_image::{ImageStore, RegistryConfig};
use krio_testimg::{Catalog, PushedImage, RegistryClient, TestImage};

/// The registry port of this crate's tests (override: `KRIO_IMAGE_TEST_PORT`).
pub fn port() -> u16 {
    std::env::var("KRIO_IMAGE_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5020)
}

pub fn registry() -> String {
    format!("127.0.0.1:{}", port())
}

pub struct Fixture {
    pub images: HashMap<String, (TestImage, PushedImage)>,
}

/// Starts the registry (idempotent) and pushes every catalogue image once per test binary.
/// Panics loudly when a prerequisite (docker-registry, curl, /bin/busybox) is missing.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/registry.sh");
        assert!(script.is_file(), "missing {}", script.display());
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(port().to_string())
            .output()
            .expect("running scripts/registry.sh");
        assert!(
            out.status.success(),
            "scripts/registry.sh start {} failed (docker-registry installed?): {}{}",
            port(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let catalog = Catalog::from_host()
            .expect("building test images needs busybox-static at /bin/busybox");
        let client = RegistryClient::new(&registry()).expect("registry client");
        let mut images = HashMap::new();
        for img in catalog
            .build_all()
            .expect("building the test image catalogue")
        {
            let pushed = client
                .push_test_image(&img)
                .unwrap_or_else(|e| panic!("pushing {} to {}: {e}", img.name, registry()));
            images.insert(img.name.to_string(), (img, pushed));
        }
        Fixture { images }
    })
}

pub fn reference(name: &str) -> String {
    format!("{}/krio-test/{name}:latest", registry())
}

pub fn client() -> RegistryClient {
    RegistryClient::new(&registry()).expect("registry client")
}

/// A fresh store root under /tmp/krio-image-*.
pub fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::Builder::new()
        .prefix("krio-image-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let s = ImageStore::open(dir.path(), RegistryConfig::default()).expect("open store");
    (dir, s)
}

pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Files under `dir`, recursively (relative paths).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                let path = e.path();
                out.push(path.strip_prefix(dir).unwrap_or(&path).to_path_buf());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                }
            }
        }
    }
    out
}

/// Asserts the store holds no images, layers, blobs or temp files.
pub fn assert_empty(root: &Path) {
    assert_eq!(count(&root.join("images")), 0, "images left");
    assert_eq!(
        count(&root.join("layers")),
        0,
        "layers left: {:?}",
        walk(&root.join("layers"))
    );
    assert_eq!(
        count(&root.join("tmp")),
        0,
        "tmp left: {:?}",
        walk(&root.join("tmp"))
    );
    let blobs: Vec<_> = walk(&root.join("blobs"))
        .into_iter()
        .filter(|p| p.components().count() == 2)
        .collect();
    assert!(blobs.is_empty(), "blobs left: {blobs:?}");
}
