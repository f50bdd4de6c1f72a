//! End to end: OpenTelemetry traces over OTLP/HTTP. The test runs an OTLP/HTTP receiver of its
//! own (hyper, decoding `ExportTraceServiceRequest` protobuf), points a real daemon at it, makes
//! CRI calls carrying a W3C `traceparent` as kubelet does, runs a pod and a container (real runc,
//! real CNI, a real pull from the local registry) and checks the spans that arrive.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use krio_cri::v1 as cri;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

/// One span as received, with what the assertions need.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    service: String,
}

/// The test's OTLP/HTTP receiver: every span of every export request it was sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    /// Serves `POST <any path>` on a free port of 127.0.0.1; returns the traces URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}/v1/traces")
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        let what = format!(
            "{} {} {:?}",
            req.method(),
            req.uri().path(),
            req.headers().get("content-type")
        );
        self.requests.lock().unwrap().push(what);
        let respond = |status: u16, body: Vec<u8>| {
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap()
        };
        let ok_request = req.method() == hyper::Method::POST
            && req.uri().path() == "/v1/traces"
            && req
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/x-protobuf");
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return respond(400, Vec::new()),
        };
        if !ok_request {
            return respond(415, Vec::new());
        }
        let Ok(export) = ExportTraceServiceRequest::decode(body) else {
            return respond(400, Vec::new());
        };
        let mut out = Vec::new();
        for rs in export.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Received {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        kind: s.kind,
                        service: service.clone(),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(out);
        respond(200, ExportTraceServiceResponse::default().encode_to_vec())
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A request carrying `traceparent: 00-<trace>-<parent>-<flags>` in its gRPC metadata.
fn traced<T>(msg: T, trace: &str, parent: &str, flags: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-{parent}-{flags}").parse().unwrap(),
    );
    r
}

/// Whether `span` descends from the span with id `ancestor` (through spans received).
fn descends(spans: &[Received], span: &Received, ancestor: &str) -> bool {
    let by_id: BTreeMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut cur = span;
    for _ in 0..32 {
        if cur.parent == ancestor {
            return true;
        }
        match by_id.get(cur.parent.as_str()) {
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

const SERVER: i32 = 2; // opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER

#[tokio::test(flavor = "multi_thread")]
async fn cri_calls_are_traced_over_otlp_with_kubelets_parent() {
    ensure_images();
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let mut d = Daemon::start_full(
        Network::Loopback,
        &[],
        &format!(
            "[tracing]\nenabled = true\nendpoint = \"{endpoint}\"\nexport_interval_ms = 100\n"
        ),
    )
    .await;
    // A trace id of this run, and one parent span id per call (kubelet's spans).
    let trace = format!(
        "{:016x}{:016x}",
        u64::from(std::process::id()) | 0x4b52_494f_0000_0000,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    );
    let parent = |n: u64| format!("{:016x}", 0x6b75_6265_0000_0000u64 | n);
    let img = image("layered");
    let mut images = d.images().await;
    let mut rt = d.runtime().await;

    images
        .pull_image(traced(
            cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: img.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &trace,
            &parent(1),
            "01",
        ))
        .await
        .unwrap_or_else(|e| panic!("PullImage: {e}; log:\n{}", d.log()));
    let pod = pod_config(&d, "traced");
    let pod_id = rt
        .run_pod_sandbox(traced(
            cri::RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: String::new(),
            },
            &trace,
            &parent(2),
            "01",
        ))
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}; log:\n{}", d.log()))
        .into_inner()
        .pod_sandbox_id;
    let ctr = rt
        .create_container(traced(
            cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(container_config("c", &img, "echo ready; exec sleep 1000")),
                sandbox_config: Some(pod.clone()),
            },
            &trace,
            &parent(3),
            "01",
        ))
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}; log:\n{}", d.log()))
        .into_inner()
        .container_id;
    rt.start_container(traced(
        cri::StartContainerRequest {
            container_id: ctr.clone(),
        },
        &trace,
        &parent(4),
        "01",
    ))
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e}; log:\n{}", d.log()));
    wait_log_line(&d, &ctr, "ready").await;
    // kubelet's sampler said no (flags 00): krio records nothing of this call.
    rt.list_pod_sandbox(traced(
        cri::ListPodSandboxRequest::default(),
        &trace,
        &parent(9),
        "00",
    ))
    .await
    .unwrap();
    rt.stop_container(traced(
        cri::StopContainerRequest {
            container_id: ctr.clone(),
            timeout: 0,
        },
        &trace,
        &parent(5),
        "01",
    ))
    .await
    .unwrap_or_else(|e| panic!("StopContainer: {e}; log:\n{}", d.log()));
    rt.stop_pod_sandbox(traced(
        cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        },
        &trace,
        &parent(6),
        "01",
    ))
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e}; log:\n{}", d.log()));
    rt.remove_pod_sandbox(traced(
        cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        },
        &trace,
        &parent(7),
        "01",
    ))
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}; log:\n{}", d.log()));

    let calls = [
        (1, "runtime.v1.ImageService/PullImage"),
        (2, "runtime.v1.RuntimeService/RunPodSandbox"),
        (3, "runtime.v1.RuntimeService/CreateContainer"),
        (4, "runtime.v1.RuntimeService/StartContainer"),
        (5, "runtime.v1.RuntimeService/StopContainer"),
        (6, "runtime.v1.RuntimeService/StopPodSandbox"),
        (7, "runtime.v1.RuntimeService/RemovePodSandbox"),
    ];
    let rpc_span = |spans: &[Received], n: u64| {
        spans
            .iter()
            .find(|s| s.trace_id == trace && s.parent == parent(n))
            .cloned()
    };
    // Every call's span, and the children that end before it, in batches every 100 ms.
    let spans = d
        .poll(
            "the spans of every traced call at the test's OTLP receiver",
            Duration::from_secs(30),
            || {
                let spans = receiver.spans();
                let all = calls.iter().all(|(n, _)| rpc_span(&spans, *n).is_some());
                std::future::ready(all.then_some(spans))
            },
        )
        .await;
    let requests = receiver.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .all(|r| r == "POST /v1/traces Some(\"application/x-protobuf\")"),
        "{requests:?}"
    );
    let show = || {
        spans
            .iter()
            .map(|s| format!("{} {} {} <- {}", s.name, s.trace_id, s.span_id, s.parent))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut rpc_ids = BTreeMap::new();
    for (n, name) in calls {
        let s = rpc_span(&spans, n).unwrap();
        assert_eq!(
            s.name,
            name,
            "the span under parent {}:\n{}",
            parent(n),
            show()
        );
        assert_eq!(s.kind, SERVER, "{s:?}");
        assert!(s.service.contains("krio"), "service.name: {s:?}");
        rpc_ids.insert(name.rsplit('/').next().unwrap(), s.span_id.clone());
    }
    // Children: name, the call they belong to, how many at least.
    let children = |name: &str| -> Vec<&Received> {
        spans.iter().filter(|s| s.name == name).collect::<Vec<_>>()
    };
    for (child, call, at_least) in [
        ("pull image", "PullImage", 1),
        ("pull manifest", "PullImage", 1),
        ("pull config", "PullImage", 1),
        ("download layer", "PullImage", 2),
        ("unpack layer", "PullImage", 2),
        ("CNI ADD", "RunPodSandbox", 1),
        ("CNI ADD loopback", "RunPodSandbox", 1),
        ("runc create", "CreateContainer", 1),
        ("runc start", "StartContainer", 1),
        ("runc kill", "StopContainer", 1),
        ("runc delete", "RemovePodSandbox", 1),
        ("CNI DEL", "StopPodSandbox", 1),
        ("CNI DEL loopback", "StopPodSandbox", 1),
    ] {
        let found = children(child);
        let under: Vec<_> = found
            .iter()
            .filter(|s| s.trace_id == trace && descends(&spans, s, &rpc_ids[call]))
            .collect();
        assert!(
            under.len() >= at_least,
            "{at_least} {child:?} span(s) under {call} expected, {} found ({} in all):\n{}",
            under.len(),
            found.len(),
            show()
        );
    }
    let downloads = children("download layer").len();
    assert_eq!(
        downloads,
        children("unpack layer").len(),
        "each downloaded layer is unpacked:\n{}",
        show()
    );
    // Child spans only exist inside calls: every runtime, CNI and pull span is in our trace.
    for s in &spans {
        if s.name.starts_with("runc ") || s.name.starts_with("CNI ") || s.name.contains(" layer") {
            assert_eq!(s.trace_id, trace, "{s:?} is outside the traced calls");
        }
    }
    assert!(
        !spans.iter().any(|s| s.parent == parent(9)),
        "a call kubelet did not sample was exported:\n{}",
        show()
    );
    // A call without trace context (the harness's Version at start-up) starts a trace.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "runtime.v1.RuntimeService/Version" && s.parent.is_empty()),
        "no root span for Version:\n{}",
        show()
    );

    // Shutdown flushes: with an hour between batches, only the exit sends this call's span.
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        text.replace("export_interval_ms = 100", "export_interval_ms = 3600000"),
    )
    .unwrap();
    d.restart().await;
    d.runtime()
        .await
        .version(traced(
            cri::VersionRequest::default(),
            &trace,
            &parent(8),
            "01",
        ))
        .await
        .unwrap();
    let pid = d.pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "krio did not exit cleanly on SIGTERM ({status:?}); log:\n{}",
        d.log()
    );
    let last = d
        .poll(
            "the last call's span, sent at shutdown",
            Duration::from_secs(5),
            || std::future::ready(rpc_span(&receiver.spans(), 8)),
        )
        .await;
    assert_eq!(last.name, "runtime.v1.RuntimeService/Version");
    assert!(
        d.log().contains("trace exporter flushed and stopped"),
        "{}",
        d.log()
    );
}
