//! OpenTelemetry export of krio's spans (`[tracing]` in the configuration).
//!
//! The spans are krio's own `tracing` spans: the per-call `rpc` span of
//! [`krio_server::rpc_span`] and the `runtime`, `cni` and pull spans opened below it. A
//! `tracing-opentelemetry` layer turns those of the `krio*` crates (at `info` and above,
//! whatever `log_level` says) into OpenTelemetry spans, and a batch processor sends them to an
//! OTLP/HTTP collector as protobuf.
//!
//! The HTTP requests are made by the daemon's own `reqwest` client (rustls, the one the image
//! puller uses) on the daemon's tokio runtime: the exporter's thread hands each request to the
//! runtime and waits for its answer, so no second HTTP stack or runtime is built.

use std::time::Duration;

use anyhow::Context;
use krio_server::config::TracingSection;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Longest wait for one export request, and for the final flush at shutdown.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The tracer provider: owns the batch processor and its thread. [`Exporter::shutdown`] sends
/// what is queued.
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// The OTLP/HTTP client: `reqwest` requests run on the daemon's tokio runtime.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut req = client.request(parts.method, parts.uri.to_string());
            for (name, value) in &parts.headers {
                req = req.header(name, value);
            }
            let resp = req.body(body).send().await?;
            let mut out = http::Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                out = out.header(name, value);
            }
            // The collector's answer is a small ExportTraceServiceResponse; bound it anyway.
            let body = resp.bytes().await?;
            let body = body.slice(..body.len().min(64 * 1024));
            Ok::<_, opentelemetry_http::HttpError>(out.body(body)?)
        });
        task.await
            .map_err(|e| Box::new(e) as opentelemetry_http::HttpError)?
    }
}

impl Exporter {
    /// Builds the exporter of `cfg` (enabled), whose requests run on `runtime`, and the
    /// `tracing` layer feeding it.
    ///
    /// Errors: the endpoint or the HTTP client cannot be set up.
    pub fn new<S>(
        cfg: &TracingSection,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<(
        Exporter,
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    )>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .context("building the OTLP/HTTP client")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(RuntimeClient { client, runtime })
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(cfg.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("tracing.endpoint {:?}", cfg.endpoint))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(cfg.export_interval_ms))
            .build();
        let ratio = f64::from(cfg.sampling_rate_per_million) / 1_000_000.0;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("krio")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("krio"))
            .with_tracked_inactivity(false)
            .with_threads(false);
        Ok((Exporter { provider }, layer))
    }

    /// Sends the spans still queued and stops the exporter's thread (at daemon shutdown, while
    /// the tokio runtime still runs). A failure is logged.
    pub fn shutdown(self) {
        match self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            Ok(()) => tracing::info!("trace exporter flushed and stopped"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown"),
        }
    }
}

/// gRPC request headers as an OpenTelemetry carrier (`traceparent`, `tracestate`).
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The call's span for the gRPC server's `trace_fn` when tracing is on: krio's
/// [`krio_server::rpc_span`], named `<service>/<method>` (OpenTelemetry's RPC convention), of
/// kind server, and the child of the W3C `traceparent` in the request's metadata when there is
/// one (an invalid one is ignored: the call starts a trace of its own).
pub fn rpc_span(req: &http::Request<()>) -> tracing::Span {
    let span = krio_server::rpc_span(req);
    let path = req.uri().path().trim_start_matches('/');
    span.record("otel.name", path);
    span.record("otel.kind", "server");
    span.record("rpc.system", "grpc");
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    if opentelemetry::trace::TraceContextExt::has_active_span(&parent) {
        if let Err(e) = span.set_parent(parent) {
            tracing::debug!(error = %e, "traceparent not applied");
        }
    }
    span
}
