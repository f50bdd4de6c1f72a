//! Pulls against a tiny fake registry (unit tests only; the integration tests use a real
//! `docker-registry`): transient failures and retries, stalled downloads, registries.conf
//! rewrites / mirrors / aliases and auth-file credentials end to end.

use base64::Engine as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::RegistryConfig;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::manifest::{Compression, OCI_CONFIG, OCI_MANIFEST};
use crate::store::ImageStore;

/// What the fake registry does with one request.
enum Reply {
    /// A complete response.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Drop,
    /// Send headers promising `len` bytes, then `partial`, then nothing more.
    Stall { len: usize, partial: Vec<u8> },
    /// Never answer.
    Hang,
}

fn ok(body: &[u8], content_type: &str) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![("Content-Type", content_type.to_string())],
        body: body.to_vec(),
    }
}

fn status(code: u16) -> Reply {
    Reply::Full {
        status: code,
        headers: vec![],
        body: br#"{"errors":[{"code":"FAKE","message":"fake failure"}]}"#.to_vec(),
    }
}

/// `(request head, how many earlier requests had the same path) -> Reply`.
type Handler = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

/// Request paths in arrival order.
type Log = Arc<Mutex<Vec<String>>>;

async fn serve(handler: Handler) -> (String, Log) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let log: Log = Arc::default();
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let (handler, log, counts) = (handler.clone(), log2.clone(), counts.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let n = {
                    let mut m = counts.lock().unwrap();
                    let e = m.entry(path.clone()).or_default();
                    *e += 1;
                    *e - 1
                };
                log.lock().unwrap().push(path);
                match handler(&head, n) {
                    Reply::Full {
                        status,
                        headers,
                        body,
                    } => {
                        let mut out = format!(
                            "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        let _ = c.write_all(out.as_bytes()).await;
                        let _ = c.write_all(&body).await;
                        let _ = c.shutdown().await;
                    }
                    Reply::Drop => drop(c),
                    Reply::Stall { len, partial } => {
                        let out = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
                        );
                        let _ = c.write_all(out.as_bytes()).await;
                        let _ = c.write_all(&partial).await;
                        let _ = c.flush().await;
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                    Reply::Hang => tokio::time::sleep(Duration::from_secs(600)).await,
                }
            });
        }
    });
    (addr, log)
}

/// A one-layer image: manifest, config and layer bytes with their digests.
struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
}

fn image() -> Image {
    image_as(Compression::None, "application/vnd.oci.image.layer.v1.tar")
}

/// A one-layer image whose layer blob is compressed with `blob` but described by `media_type`
/// (which may say something else).
fn image_as(blob: Compression, media_type: &str) -> Image {
    use std::io::Write as _;
    let mut b = tar::Builder::new(Vec::new());
    let data = vec![b'k'; 100_000];
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, "hello.txt", &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let diff_id = Digest::sha256_of(&tar);
    let layer = match blob {
        Compression::None => tar,
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(&tar[..], 1).unwrap(),
    };
    let layer_digest = Digest::sha256_of(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    )
    .into_bytes();
    let config_digest = Digest::sha256_of(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{media_type}","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    )
    .into_bytes();
    Image {
        manifest,
        config,
        config_digest,
        layer,
        layer_digest,
    }
}

/// Serves `img` for every repository: manifests for any tag, the two blobs.
fn serve_image(img: &Image, head: &str) -> Reply {
    let path = head.split(' ').nth(1).unwrap_or("");
    if path.contains("/manifests/") {
        ok(&img.manifest, OCI_MANIFEST)
    } else if path.ends_with(img.config_digest.as_str()) {
        ok(&img.config, "application/octet-stream")
    } else if path.ends_with(img.layer_digest.as_str()) {
        ok(&img.layer, "application/octet-stream")
    } else {
        status(404)
    }
}

fn store(cfg: RegistryConfig) -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::Builder::new()
        .prefix("krio-image-pulltest-")
        .tempdir()
        .unwrap();
    let s = ImageStore::open(dir.path(), cfg).unwrap();
    (dir, s)
}

fn fast_retries() -> RegistryConfig {
    RegistryConfig {
        max_attempts: 3,
        retry_backoff: Duration::from_millis(10),
        ..Default::default()
    }
}

fn count(log: &Log, needle: &str) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|p| p.contains(needle))
        .count()
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let img = Arc::new(image());
    let i2 = img.clone();
    let (addr, log) = serve(Arc::new(move |head: &str, n| {
        let path = head.split(' ').nth(1).unwrap_or("");
        if path.contains("/down/") {
            return status(503);
        }
        if path.contains("/missing/") {
            return status(404);
        }
        match (path, n) {
            (p, 0) if p.contains("/manifests/") => status(503),
            (p, 1) if p.contains("/manifests/") => Reply::Full {
                status: 429,
                headers: vec![("Retry-After", "0".into())],
                body: vec![],
            },
            (p, 0) if p.ends_with(i2.config_digest.as_str()) => status(502),
            (p, 0) if p.ends_with(i2.layer_digest.as_str()) => Reply::Drop,
            _ => serve_image(&i2, head),
        }
    }))
    .await;
    let (_dir, s) = store(fast_retries());
    let rec = s.pull(&format!("{addr}/ok/img:v1"), None).await.unwrap();
    assert_eq!(rec.id, img.config_digest.to_string());
    assert_eq!(count(&log, "/manifests/v1"), 3);
    assert_eq!(count(&log, img.config_digest.as_str()), 2);
    assert_eq!(count(&log, img.layer_digest.as_str()), 2);
    // Persistent 5xx: bounded tries, then a registry error saying so.
    match s.pull(&format!("{addr}/down/img:v1"), None).await {
        Err(ImageError::Registry { detail, .. }) => {
            assert!(detail.contains("503"), "{detail}");
            assert!(detail.contains("after 3 attempts"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&log, "/down/"), 3);
    // 404 is final: no retry.
    assert!(s
        .pull(&format!("{addr}/missing/img:v1"), None)
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(count(&log, "/missing/"), 1);
}

#[tokio::test]
async fn stalled_downloads_are_cancelled() {
    let img = Arc::new(image());
    let i2 = img.clone();
    let (addr, _log) = serve(Arc::new(move |head: &str, _| {
        let path = head.split(' ').nth(1).unwrap_or("");
        if path.contains("/hang/") {
            return Reply::Hang;
        }
        if path.ends_with(i2.layer_digest.as_str()) {
            return Reply::Stall {
                len: i2.layer.len(),
                partial: i2.layer[..i2.layer.len() / 2].to_vec(),
            };
        }
        serve_image(&i2, head)
    }))
    .await;
    let (_dir, s) = store(RegistryConfig {
        progress_timeout: Duration::from_secs(1),
        max_attempts: 1,
        ..Default::default()
    });
    let t = Instant::now();
    match s.pull(&format!("{addr}/stall/img:v1"), None).await {
        Err(e @ ImageError::Stalled { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(img.layer_digest.as_str()), "{msg}");
            assert!(msg.contains("1s"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(s.list().is_empty());
    // No response headers at all: the same timeout, naming the manifest.
    match s.pull(&format!("{addr}/hang/img:v1"), None).await {
        Err(ImageError::Stalled { what, .. }) => assert!(what.contains("manifest v1"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn registries_conf_rewrites_mirrors_and_aliases() {
    let img = Arc::new(image());
    let i2 = img.clone();
    let (addr, log) = serve(Arc::new(move |head: &str, _| {
        let path = head.split(' ').nth(1).unwrap_or("");
        if path.starts_with("/v2/mirror/") {
            return status(404);
        }
        if path.starts_with("/v2/real/") {
            return serve_image(&i2, head);
        }
        status(404)
    }))
    .await;
    let mut cfg = RegistryConfig::default();
    cfg.merge_toml(
        std::path::Path::new("/t/registries.conf"),
        &format!(
            r#"
unqualified-search-registries = ["nothing-here.invalid", "example.invalid"]
[[registry]]
prefix = "nothing-here.invalid"
location = "{addr}/nothing"
[[registry]]
prefix = "example.invalid/foo"
location = "{addr}/real"
[[registry.mirror]]
location = "{addr}/mirror"
[[registry]]
prefix = "blocked.invalid"
blocked = true
[aliases]
"myimg" = "example.invalid/foo/img"
"bad" = "blocked.invalid/x"
"#
        ),
    )
    .unwrap();
    let (_dir, s) = store(cfg);
    let rec = s.pull("myimg:v1", None).await.unwrap();
    assert_eq!(rec.repo_tags, ["example.invalid/foo/img:v1"]);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0], "/v2/mirror/img/manifests/v1");
    assert_eq!(seen[1], "/v2/real/img/manifests/v1");
    // The short name resolves to the stored image like the pull did.
    assert_eq!(s.resolve("myimg:v1").unwrap().id, rec.id);
    assert!(s.resolve("myimg:v2").is_none());
    // Search registries are tried in order (the first resolves nowhere and fails).
    let rec2 = s.pull("foo/img:v2", None).await.unwrap();
    assert_eq!(rec2.repo_tags.len(), 2);
    assert!(rec2
        .repo_tags
        .contains(&"example.invalid/foo/img:v2".to_string()));
    // Blocked through an alias.
    assert!(matches!(
        s.pull("bad", None).await,
        Err(ImageError::Blocked { .. })
    ));
    s.remove("myimg:v1").unwrap();
    assert!(s.resolve("myimg:v1").is_none());
    assert!(s.resolve("foo/img:v2").is_some());
}

#[tokio::test]
async fn auth_file_credentials() {
    let img = Arc::new(image());
    let i2 = img.clone();
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("u:p")
    );
    let (addr, _log) = serve(Arc::new(move |head: &str, _| {
        let authz = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        });
        if authz.as_deref() != Some(want.as_str()) {
            return Reply::Full {
                status: 401,
                headers: vec![("WWW-Authenticate", "Basic realm=\"fake\"".into())],
                body: vec![],
            };
        }
        serve_image(&i2, head)
    }))
    .await;
    let dir = tempfile::Builder::new()
        .prefix("krio-image-authfile-")
        .tempdir()
        .unwrap();
    let file = dir.path().join("config.json");
    let r = format!("{addr}/priv/img:v1");
    // No file at the path: anonymous, refused.
    let (_d1, s) = store(RegistryConfig {
        auth_file: Some(file.clone()),
        ..Default::default()
    });
    assert!(matches!(
        s.pull(&r, None).await,
        Err(ImageError::Unauthorized { .. })
    ));
    std::fs::write(
        &file,
        format!(
            r#"{{"auths":{{"{addr}":{{"auth":"{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode("u:p")
        ),
    )
    .unwrap();
    // The file is read at each pull.
    s.pull(&r, None).await.unwrap();
    // Request credentials take precedence over the file.
    let wrong = crate::registry::RegistryAuth {
        username: "u".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    assert!(matches!(
        s.pull(&format!("{addr}/priv/img:v2"), Some(&wrong)).await,
        Err(ImageError::Unauthorized { .. })
    ));
    // A malformed file is a clear error.
    std::fs::write(&file, "{").unwrap();
    assert!(matches!(
        s.pull(&format!("{addr}/priv/img:v3"), None).await,
        Err(ImageError::AuthFile { .. })
    ));
}

/// Decompression follows the media type only: a layer whose bytes are compressed otherwise (or
/// not at all) fails the pull, naming the layer digest and both sides; matching ones pull.
#[tokio::test]
async fn layer_bytes_must_match_the_media_type() {
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    let cases = [
        (Compression::Zstd, GZIP, Some(("gzip", "zstd-compressed"))),
        (
            Compression::Zstd,
            DOCKER_GZIP,
            Some(("gzip", "zstd-compressed")),
        ),
        (
            Compression::Gzip,
            TAR,
            Some(("an uncompressed tar", "gzip-compressed")),
        ),
        (
            Compression::Zstd,
            TAR,
            Some(("an uncompressed tar", "zstd-compressed")),
        ),
        (Compression::Gzip, ZSTD, Some(("zstd", "gzip-compressed"))),
        (Compression::None, GZIP, Some(("gzip", "not compressed"))),
        (Compression::None, ZSTD, Some(("zstd", "not compressed"))),
        (Compression::Gzip, GZIP, None),
        (Compression::Zstd, ZSTD, None),
        (Compression::None, TAR, None),
    ];
    for (blob, media_type, want) in cases {
        let img = Arc::new(image_as(blob, media_type));
        let i2 = img.clone();
        let (addr, _log) = serve(Arc::new(move |head: &str, _| serve_image(&i2, head))).await;
        let (_dir, s) = store(fast_retries());
        let got = s.pull(&format!("{addr}/m/img:v1"), None).await;
        match (want, got) {
            (None, Ok(rec)) => assert_eq!(rec.id, img.config_digest.to_string()),
            (Some((expected, found)), Err(e)) => {
                match &e {
                    ImageError::LayerMediaTypeMismatch {
                        digest,
                        media_type: mt,
                        expected: ex,
                        found: fo,
                    } => {
                        assert_eq!(digest, img.layer_digest.as_str());
                        assert_eq!((mt.as_str(), *ex, *fo), (media_type, expected, found));
                    }
                    other => panic!("{blob:?} as {media_type}: {other:?}"),
                }
                assert!(e.to_string().contains(img.layer_digest.as_str()), "{e}");
                assert!(s.list().is_empty(), "nothing stored for a refused pull");
                let layers = std::fs::read_dir(s.root().join("layers"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                assert_eq!(layers, 0, "no layer left in the store");
            }
            (want, got) => panic!("{blob:?} as {media_type}: want {want:?}, got {got:?}"),
        }
    }
}
