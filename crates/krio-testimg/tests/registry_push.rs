//! Integration test against a real Debian `docker-registry` started with `scripts/registry.sh` on port
//! 5010. Fails loudly if the registry cannot be started (e.g. the package is missing).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::process::Command;

use krio_testimg::catalog::{self, IMAGE_NAMES};
use krio_testimg::image::media_types;
use krio_testimg::{Artifact, Catalog, Digest, RegistryClient};

const PORT: u16 = 5010;
const REGISTRY: &str = "127.0.0.1:5010";

fn start_registry() {
    let addr = krio_testimg::start_local_registry(PORT).unwrap_or_else(|e| {
        panic!("cannot start the test registry (is Debian's docker-registry installed?): {e}")
    });
    assert_eq!(addr, REGISTRY);
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// GET a manifest with a plain HTTP client (independent of the crate's client) and check it.
fn check_manifest(
    repo: &str,
    reference: &str,
    want_type: &str,
    want_digest: &Digest,
) -> serde_json::Value {
    let url = format!("http://{REGISTRY}/v2/{repo}/manifests/{reference}");
    let mut resp = agent()
        .get(&url)
        .header("Accept", media_types::ALL_MANIFESTS.join(","))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let dh = resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.body_mut().read_to_vec().unwrap();
    assert_eq!(ct, want_type, "{url}");
    assert_eq!(&Digest::of(&body), want_digest, "{url}");
    assert_eq!(dh, want_digest.as_str(), "{url}");
    serde_json::from_slice(&body).unwrap()
}

fn check_blob(repo: &str, digest: &str, size: u64) {
    let url = format!("http://{REGISTRY}/v2/{repo}/blobs/{digest}");
    let mut resp = agent().get(&url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    assert_eq!(body.len() as u64, size, "{url}");
    assert_eq!(Digest::of(&body).as_str(), digest, "{url}");
}

#[test]
fn push_all_and_fetch_back() {
    start_registry();
    let cat = Catalog::from_host().expect("need Debian busybox-static at /bin/busybox");
    let client = RegistryClient::new(REGISTRY).unwrap();
    client.ping().unwrap();
    // The one-call helper agrees with the catalogue.
    let pushed = krio_testimg::push_images(REGISTRY, &["layered"]).unwrap();
    assert_eq!(
        &pushed[0].digest,
        cat.build("layered").unwrap().artifact.digest()
    );
    let images = cat.build_all().unwrap();
    for ti in &images {
        let pushed = client.push_test_image(ti).unwrap();
        assert_eq!(
            pushed.reference,
            format!("{REGISTRY}/krio-test/{}:latest", ti.name)
        );
        assert_eq!(&pushed.digest, ti.artifact.digest());

        let top = check_manifest(
            &ti.repository,
            "latest",
            ti.artifact.media_type(),
            ti.artifact.digest(),
        );
        let manifests: Vec<serde_json::Value> = match &ti.artifact {
            Artifact::Image(_) => vec![top],
            Artifact::Index(idx) => {
                assert_eq!(top["manifests"].as_array().unwrap().len(), idx.images.len());
                idx.images
                    .iter()
                    .map(|img| {
                        check_manifest(
                            &ti.repository,
                            img.manifest_digest.as_str(),
                            img.media_type(),
                            &img.manifest_digest,
                        )
                    })
                    .collect()
            }
        };
        for m in manifests {
            let cfg = &m["config"];
            check_blob(
                &ti.repository,
                cfg["digest"].as_str().unwrap(),
                cfg["size"].as_u64().unwrap(),
            );
            for l in m["layers"].as_array().unwrap() {
                check_blob(
                    &ti.repository,
                    l["digest"].as_str().unwrap(),
                    l["size"].as_u64().unwrap(),
                );
            }
        }
    }

    // Second push: same digests, nothing uploaded (HEAD finds every blob).
    for ti in &images {
        let again = client.push_test_image(ti).unwrap();
        assert_eq!(&again.digest, ti.artifact.digest());
        assert_eq!(again.uploaded_blobs, 0, "{}", ti.name);
    }
}

#[test]
fn docker_media_types_on_the_wire() {
    start_registry();
    let cat = Catalog::from_host().expect("need Debian busybox-static at /bin/busybox");
    let client = RegistryClient::new(REGISTRY).unwrap();
    let ti = cat.build(catalog::BUSYBOX).unwrap();
    client.push_test_image(&ti).unwrap();
    let m = check_manifest(
        &ti.repository,
        "latest",
        media_types::DOCKER_MANIFEST,
        ti.artifact.digest(),
    );
    assert_eq!(m["config"]["mediaType"], media_types::DOCKER_CONFIG);
    assert_eq!(m["layers"][0]["mediaType"], media_types::DOCKER_LAYER_GZIP);
}

#[test]
fn delete_manifest_works() {
    start_registry();
    let cat = Catalog::from_host().expect("need Debian busybox-static at /bin/busybox");
    let client = RegistryClient::new(REGISTRY).unwrap();
    let ti = cat.build(catalog::PAUSE).unwrap();
    let repo = "krio-test/scratch-delete";
    let (digest, _, _) = client.push_artifact(repo, "latest", &ti.artifact).unwrap();
    assert!(client.delete_manifest(repo, &digest).unwrap());
    assert!(!client.delete_manifest(repo, &digest).unwrap());
    assert!(client.get_manifest(repo, "latest").is_err());
}

#[test]
fn binary_push_and_list() {
    start_registry();
    let bin = env!("CARGO_BIN_EXE_krio-testimg");
    let out = Command::new(bin).arg("list").output().unwrap();
    assert!(out.status.success());
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, IMAGE_NAMES);

    let out = Command::new(bin)
        .args([
            "push",
            "--registry",
            REGISTRY,
            "--only",
            "busybox-oci",
            "--only",
            "zstd",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let cat = Catalog::from_host().unwrap();
    for (line, name) in lines.iter().zip(["busybox-oci", "zstd"]) {
        let (reference, digest) = line.split_once(' ').unwrap();
        assert_eq!(reference, format!("{REGISTRY}/krio-test/{name}:latest"));
        assert_eq!(digest, cat.build(name).unwrap().artifact.digest().as_str());
    }

    let out = Command::new(bin)
        .args(["push", "--registry", REGISTRY, "--only", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown test image"));
}
