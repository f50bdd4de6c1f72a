//! Prometheus metrics: per-RPC request counts and latencies, the number of sandboxes and
//! containers by state, image pulls (count, bytes, duration) and containers killed by the OOM
//! killer, served as text on `GET /metrics` when `metrics_listen` is set. The Grafana dashboard
//! `contrib/grafana/krio.json` queries them; a test checks that every name it uses exists.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::Krio;

/// Labels of the per-RPC metrics: the CRI method and the gRPC status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// CRI method name, e.g. `RunPodSandbox`.
    pub rpc: String,
    /// gRPC code name, e.g. `Ok`, `NotFound`.
    pub code: String,
}

/// Labels of the object gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The CRI state name, e.g. `SANDBOX_READY`, `CONTAINER_RUNNING`.
    pub state: String,
}

fn rpc_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// krio's metrics registry.
pub struct Metrics {
    registry: Registry,
    rpc_total: Family<RpcLabels, Counter>,
    rpc_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    sandboxes: Family<StateLabels, Gauge>,
    containers: Family<StateLabels, Gauge>,
    pulls: Counter,
    pull_bytes: Counter,
    pull_seconds: Histogram,
    oom_kills: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("krio");
        let rpc_total = Family::<RpcLabels, Counter>::default();
        let rpc_seconds =
            Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(rpc_histogram);
        let sandboxes = Family::<StateLabels, Gauge>::default();
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "cri_requests",
            "CRI requests handled, by method and gRPC code",
            rpc_total.clone(),
        );
        registry.register(
            "cri_request_duration_seconds",
            "Time to handle a CRI request, by method and gRPC code",
            rpc_seconds.clone(),
        );
        registry.register("sandboxes", "Pod sandboxes by CRI state", sandboxes.clone());
        registry.register("containers", "Containers by CRI state", containers.clone());
        let pulls = Counter::default();
        let pull_bytes = Counter::default();
        // 10 ms to about 45 min.
        let pull_seconds = Histogram::new(exponential_buckets(0.01, 4.0, 10));
        let oom_kills = Counter::default();
        registry.register("image_pulls", "Images pulled successfully", pulls.clone());
        registry.register(
            "image_pull_bytes",
            "Bytes of the images pulled successfully: the sum of their compressed layer sizes from the manifest (CRI Image.size)",
            pull_bytes.clone(),
        );
        registry.register(
            "image_pull_duration_seconds",
            "Time to pull an image successfully, manifest to unpacked layers",
            pull_seconds.clone(),
        );
        registry.register(
            "container_oom_kills",
            "Containers found exited because the OOM killer killed them (reason OOMKilled)",
            oom_kills.clone(),
        );
        Metrics {
            registry,
            rpc_total,
            rpc_seconds,
            sandboxes,
            containers,
            pulls,
            pull_bytes,
            pull_seconds,
            oom_kills,
        }
    }
}

impl Metrics {
    /// Records one handled RPC with its gRPC code and duration.
    pub fn observe(&self, rpc: &str, code: tonic::Code, elapsed: Duration) {
        let labels = RpcLabels {
            rpc: rpc.to_string(),
            code: format!("{code:?}"),
        };
        self.rpc_total.get_or_create(&labels).inc();
        self.rpc_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

impl Metrics {
    /// Records one successful pull of an image of `bytes` (compressed layer sizes) that took
    /// `elapsed`.
    pub fn observe_pull(&self, bytes: u64, elapsed: Duration) {
        self.pulls.inc();
        self.pull_bytes.inc_by(bytes);
        self.pull_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records one container found OOM-killed.
    pub fn observe_oom_kill(&self) {
        self.oom_kills.inc();
    }
}

impl Krio {
    /// The metrics in the Prometheus text format; the gauges are refreshed first.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        for (family, states) in [
            (
                &m.sandboxes,
                ["SANDBOX_READY", "SANDBOX_NOTREADY"].as_slice(),
            ),
            (
                &m.containers,
                [
                    "CONTAINER_CREATED",
                    "CONTAINER_RUNNING",
                    "CONTAINER_EXITED",
                    "CONTAINER_UNKNOWN",
                ]
                .as_slice(),
            ),
        ] {
            for s in states {
                family
                    .get_or_create(&StateLabels {
                        state: s.to_string(),
                    })
                    .set(0);
            }
        }
        for s in self.sandboxes.all() {
            let state = s.snapshot().state().to_cri().as_str_name().to_string();
            m.sandboxes.get_or_create(&StateLabels { state }).inc();
        }
        for c in self.containers.all() {
            let state = c.with_snapshot(|r| r.state().to_cri().as_str_name().to_string());
            m.containers.get_or_create(&StateLabels { state }).inc();
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown` completes.
///
/// Errors: the bind error when `addr` cannot be listened on.
pub async fn serve_metrics(
    krio: Arc<Krio>,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving Prometheus metrics on /metrics");
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept");
                        continue;
                    }
                },
            };
            let krio = krio.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let krio = krio.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&krio, &req)) }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(())
}

fn answer(krio: &Krio, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let mut resp = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(krio.metrics_text())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    } else {
        Response::new(Full::new(Bytes::from_static(b"not found\n")))
    };
    if req.uri().path() != "/metrics" || req.method() != hyper::Method::GET {
        *resp.status_mut() = StatusCode::NOT_FOUND;
    }
    resp
}
