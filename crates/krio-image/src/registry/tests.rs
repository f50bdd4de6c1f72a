use super::*;

#[test]
fn challenge_parsing() {
    let (s, p) = parse_challenge(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
    )
    .unwrap();
    assert_eq!(s, "bearer");
    assert_eq!(p["realm"], "https://auth.docker.io/token");
    assert_eq!(p["service"], "registry.docker.io");
    assert_eq!(p["scope"], "repository:samalba/my-app:pull,push");
    let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
    assert_eq!(s, "basic");
    assert_eq!(p["realm"], "Registry Realm");
    let (s, p) = parse_challenge("Bearer realm=https://x/t, service=y").unwrap();
    assert_eq!(s, "bearer");
    assert_eq!(p["realm"], "https://x/t");
    assert_eq!(p["service"], "y");
}

#[test]
fn endpoints_and_loopback() {
    use crate::config::is_loopback_host;
    assert!(is_loopback_host("localhost:5000"));
    assert!(is_loopback_host("127.0.0.1:5020"));
    assert!(is_loopback_host("127.1.2.3"));
    assert!(is_loopback_host("[::1]:5000"));
    assert!(!is_loopback_host("quay.io"));
    assert!(!is_loopback_host("10.0.0.1:5000"));
    let ep = |c: &RegistryConfig, r: &str| c.sources(&Reference::parse(r).unwrap()).unwrap();
    let mut c = RegistryConfig::default();
    assert_eq!(ep(&c, "busybox")[0].base, "https://registry-1.docker.io");
    assert_eq!(ep(&c, "busybox")[0].path, "library/busybox");
    assert_eq!(ep(&c, "127.0.0.1:5020/a")[0].base, "http://127.0.0.1:5020");
    c.insecure.push("reg.local:80".into());
    c.mirrors
        .insert("docker.io".into(), vec!["http://127.0.0.1:5000/".into()]);
    assert_eq!(ep(&c, "reg.local:80/a")[0].base, "http://reg.local:80");
    let e = ep(&c, "busybox");
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].base, "http://127.0.0.1:5000");
    assert_eq!(e[0].path, "library/busybox");
    assert!(e[0].mirror);
    assert!(!e[1].mirror);
}

#[test]
fn auth_decoding() {
    let a = RegistryAuth {
        auth: base64::engine::general_purpose::STANDARD.encode("u:p:q"),
        ..Default::default()
    };
    assert_eq!(a.basic(), Some(("u".into(), "p:q".into())));
    let a = RegistryAuth {
        username: "x".into(),
        password: "secret".into(),
        ..Default::default()
    };
    assert_eq!(a.basic(), Some(("x".into(), "secret".into())));
    assert!(!format!("{a:?}").contains("secret"));
    assert_eq!(RegistryAuth::default().basic(), None);
}

/// A fake token-auth registry (unit-test only; real registries are used by the
/// integration tests). Answers one request per connection.
async fn fake_registry() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let a2 = addr.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let addr = a2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut tmp).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let body_start = head.find("\r\n\r\n").unwrap() + 4;
                let line = head.lines().next().unwrap_or("").to_string();
                let authz = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let basic_up = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("u:p")
                );
                let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
                let (status, extra, body): (&str, String, String) = if line
                    .starts_with("GET /token")
                {
                    if authz == basic_up {
                        ("200 OK", String::new(), r#"{"token":"tok-basic"}"#.into())
                    } else if authz.is_empty()
                        && line.contains("scope=repository%3Aanon%2Fr%3Apull")
                    {
                        (
                            "200 OK",
                            String::new(),
                            r#"{"access_token":"tok-anon"}"#.into(),
                        )
                    } else {
                        ("401 Unauthorized", String::new(), String::new())
                    }
                } else if line.starts_with("POST /token") {
                    let body = &buf[body_start.min(buf.len())..];
                    let form = String::from_utf8_lossy(body);
                    if form.contains("grant_type=refresh_token")
                        && form.contains("refresh_token=rt")
                    {
                        ("200 OK", String::new(), r#"{"token":"tok-refresh"}"#.into())
                    } else {
                        ("401 Unauthorized", String::new(), String::new())
                    }
                } else if line.starts_with("GET /v2/basic/") {
                    if authz == basic_up {
                        (
                            "200 OK",
                            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".into(),
                            manifest.into(),
                        )
                    } else {
                        (
                            "401 Unauthorized",
                            "WWW-Authenticate: Basic realm=\"fake\"\r\n".into(),
                            String::new(),
                        )
                    }
                } else if line.starts_with("GET /v2/") {
                    if [
                        "Bearer tok-basic",
                        "Bearer tok-anon",
                        "Bearer tok-refresh",
                        "Bearer given",
                    ]
                    .contains(&authz.as_str())
                    {
                        if line.contains("/manifests/missing") {
                            ("404 Not Found", String::new(), r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#.into())
                        } else {
                            (
                                "200 OK",
                                "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"
                                    .into(),
                                manifest.into(),
                            )
                        }
                    } else {
                        let repo = line.split('/').nth(2).unwrap_or("").to_string()
                            + "/"
                            + line.split('/').nth(3).unwrap_or("");
                        (
                            "401 Unauthorized",
                            format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\",scope=\"repository:{repo}:pull\"\r\n"),
                            String::new(),
                        )
                    }
                } else {
                    ("404 Not Found", String::new(), String::new())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
                let _ = c.shutdown().await;
            });
        }
    });
    addr
}

fn session(addr: &str, path: &str, auth: Option<&RegistryAuth>) -> Session {
    let r = Reference::parse(&format!("{addr}/{path}:t")).unwrap();
    let cfg = RegistryConfig::default();
    let ep = cfg.sources(&r).unwrap().remove(0);
    Session::new(http_client().unwrap(), r, ep, auth, &cfg)
}

#[tokio::test]
async fn token_and_basic_auth_flows() {
    let addr = fake_registry().await;
    let up = RegistryAuth {
        username: "u".into(),
        password: "p".into(),
        ..Default::default()
    };
    // bearer via basic credentials at the token realm
    let m = session(&addr, "priv/r", Some(&up))
        .get_manifest("t")
        .await
        .unwrap();
    assert_eq!(m.digest, Digest::sha256_of(&m.bytes));
    // anonymous token
    session(&addr, "anon/r", None)
        .get_manifest("t")
        .await
        .unwrap();
    // refused: no credentials for a private repo
    assert!(matches!(
        session(&addr, "priv/r", None).get_manifest("t").await,
        Err(ImageError::Unauthorized { .. })
    ));
    // base64 `auth` field
    let enc = RegistryAuth {
        auth: base64::engine::general_purpose::STANDARD.encode("u:p"),
        ..Default::default()
    };
    session(&addr, "priv/r", Some(&enc))
        .get_manifest("t")
        .await
        .unwrap();
    // identity token (OAuth2 refresh token grant)
    let idt = RegistryAuth {
        identity_token: "rt".into(),
        ..Default::default()
    };
    session(&addr, "priv/r", Some(&idt))
        .get_manifest("t")
        .await
        .unwrap();
    // registry token used as is
    let rt = RegistryAuth {
        registry_token: "given".into(),
        ..Default::default()
    };
    session(&addr, "priv/r", Some(&rt))
        .get_manifest("t")
        .await
        .unwrap();
    // basic challenge
    session(&addr, "basic/r", Some(&up))
        .get_manifest("t")
        .await
        .unwrap();
    assert!(matches!(
        session(&addr, "basic/r", None).get_manifest("t").await,
        Err(ImageError::Unauthorized { .. })
    ));
    // missing manifest after auth -> NotFound naming the reference and registry code
    match session(&addr, "priv/r", Some(&up))
        .get_manifest("missing")
        .await
    {
        Err(ImageError::NotFound { reference, detail }) => {
            assert!(reference.ends_with("priv/r:t"));
            assert!(detail.unwrap().contains("MANIFEST_UNKNOWN"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("found"),
    }
}
