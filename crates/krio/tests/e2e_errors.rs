//! End to end: bad input gets a clear gRPC status naming the field, and the daemon keeps serving.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use krio_cri::v1 as cri;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_statuses() {
    ensure_images();
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    let mut img = d.images().await;

    // Unknown sandbox in CreateContainer: NotFound.
    let err = try_create(
        &d,
        &"0".repeat(64),
        None,
        container_config("c", &image("busybox"), "true"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&"0".repeat(64)), "{}", err.message());

    // A tag the registry does not have: NotFound naming the reference.
    let missing = format!("{REGISTRY}/krio-test/busybox:no-such-tag");
    let err = img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: missing.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&missing), "{}", err.message());

    // A malformed reference: InvalidArgument.
    let err = img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "UPPER/Case::bad".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Missing metadata and missing fields of it: InvalidArgument naming the field.
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig::default()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("config.metadata"),
        "{}",
        err.message()
    );
    let mut pod = pod_config(&d, "bad");
    pod.metadata.as_mut().unwrap().name.clear();
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("config.metadata.name"),
        "{}",
        err.message()
    );

    // An unknown runtime handler: InvalidArgument naming it; nothing is left behind.
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(&d, "h")),
            runtime_handler: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("runtime_handler"),
        "{}",
        err.message()
    );

    // A container config without an image: InvalidArgument naming the field.
    pull(&d, &image("busybox")).await;
    let pod = pod_config(&d, "ok");
    let pod_id = run_pod(&d, &pod).await;
    let mut c = container_config("noimage", "", "true");
    c.image = None;
    let err = try_create(&d, &pod_id, None, c).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("config.image.image"),
        "{}",
        err.message()
    );
    // An image that is not pulled: NotFound.
    let err = try_create(
        &d,
        &pod_id,
        None,
        container_config("nopull", &image("zstd"), "true"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // A log path escaping the log directory: InvalidArgument.
    let mut c = container_config("escape", &image("busybox"), "true");
    c.log_path = "../../etc/evil.log".into();
    let err = try_create(&d, &pod_id, None, c).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The same pod name again: AlreadyExists.
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // Nothing half-made: only the one pod, no containers.
    assert_eq!(
        rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .len(),
        1
    );
    assert!(rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .is_empty());
    assert_eq!(
        std::fs::read_dir(d.root.join("containers"))
            .unwrap()
            .count(),
        0
    );

    // Stop and remove of unknown ids succeed (the CRI makes them idempotent); empty ids do not.
    let unknown = "f".repeat(64);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .unwrap();
    rt.stop_container(cri::StopContainerRequest {
        container_id: unknown.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: unknown.clone(),
    })
    .await
    .unwrap();
    let err = rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: unknown.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Still serving.
    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "krio");
    assert_eq!(v.runtime_api_version, "v1");
    remove_pod(&d, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_runtime_config_are_honest() {
    require_prerequisites();
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    let st = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = st.status.unwrap().conditions;
    let get = |t: &str| conds.iter().find(|c| c.r#type == t).cloned().unwrap();
    assert!(get("RuntimeReady").status);
    assert!(get("NetworkReady").status, "{:?}", get("NetworkReady"));
    assert!(st.info.contains_key("config"));
    // Removing the network configuration makes NetworkReady false, with a reason.
    for e in std::fs::read_dir(d.dir.path().join("cni"))
        .unwrap()
        .flatten()
    {
        std::fs::remove_file(e.path()).unwrap();
    }
    let st = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let net = st
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(!net.status);
    assert!(!net.reason.is_empty() && !net.message.is_empty());
    let rc = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_directories_refuses_to_start() {
    require_prerequisites();
    let d = Daemon::start().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_krio"))
        .arg("--config")
        .arg(&d.config)
        .arg("--listen")
        .arg(d.dir.path().join("second.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another krio"), "{err}");
    // The first one still serves.
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_metrics_count_requests_and_objects() {
    ensure_images();
    let mut d = Daemon::start().await;
    // Port 0: the kernel picks a free port; the daemon logs the address it got.
    d.extra_args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    d.restart().await;
    let metrics = d.metrics_address().await.to_string();
    let pod = pod_config(&d, "metrics");
    let pod_id = run_pod(&d, &pod).await;
    let _ = d
        .runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: "0".repeat(64),
            verbose: false,
        })
        .await;
    let body = http_get(&metrics, "/metrics");
    assert!(
        body.contains("krio_cri_requests_total{rpc=\"RunPodSandbox\",code=\"Ok\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("krio_cri_requests_total{rpc=\"ContainerStatus\",code=\"NotFound\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("krio_cri_request_duration_seconds_bucket{"),
        "{body}"
    );
    assert!(
        body.contains("krio_sandboxes{state=\"SANDBOX_READY\"} 1"),
        "{body}"
    );
    assert!(http_get(&metrics, "/nope").is_empty());
    remove_pod(&d, &pod_id).await;
}

/// A minimal HTTP/1.0 GET: the body on 200, empty otherwise.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        body.to_string()
    } else {
        String::new()
    }
}

/// A call whose caller's deadline (`grpc-timeout`) passes on the server is answered
/// DEADLINE_EXCEEDED, never CANCELLED (tonic's own answer), whatever the deadline: a PullImage
/// from a registry that accepts connections and never answers, with deadlines from 1 ms to
/// 300 ms, several times each (critest "Public image should timeout if requested"). The call
/// is made over a bare HTTP/2 connection: a tonic client enforces `grpc-timeout` itself too
/// (answering CANCELLED on its side first), so every status seen here is the server's.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_deadline_is_deadline_exceeded() {
    use http_body_util::BodyExt;
    use prost::Message;
    let d = Daemon::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, answering nothing.
    let stall = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let stream = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for round in 0..4 {
        for ms in [1, 20, 300] {
            let msg = cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: format!("127.0.0.1:{port}/stalls/forever:{round}"),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec();
            // gRPC framing: uncompressed flag, big-endian length, message.
            let mut frame = vec![0u8];
            frame.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
            frame.extend_from_slice(&msg);
            let req = hyper::Request::post("http://localhost/runtime.v1.ImageService/PullImage")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-timeout", format!("{ms}m"))
                .body(http_body_util::Full::new(hyper::body::Bytes::from(frame)))
                .unwrap();
            let started = std::time::Instant::now();
            let resp = send.send_request(req).await.unwrap();
            // Trailers-only (the usual error answer) or headers, body and trailers.
            let (parts, body) = resp.into_parts();
            let status = match tonic::Status::from_header_map(&parts.headers) {
                Some(s) => s,
                None => {
                    let trailers = body.collect().await.unwrap().trailers().cloned();
                    tonic::Status::from_header_map(&trailers.unwrap_or_default())
                        .expect("no grpc-status")
                }
            };
            assert_eq!(
                status.code(),
                Code::DeadlineExceeded,
                "round {round}, {ms} ms: {status:?}"
            );
            assert!(
                started.elapsed() >= std::time::Duration::from_millis(ms),
                "answered before the deadline: {status:?}"
            );
        }
    }
    // The daemon serves on.
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
    stall.abort();
}
