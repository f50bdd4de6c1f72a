//! The tonic adapters: each RPC unwraps the request, calls the handler on [`Krio`], and maps
//! the result. Handlers that walk directories (stats) run through [`crate::blocking`]. RPCs that later issues implement answer `Unimplemented` with a message.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use krio_cri::v1 as cri;
use krio_cri::v1::image_service_server::ImageService;
use krio_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::ServerError;
use crate::runtime::streams;
use crate::Krio;

/// The CRI `RuntimeService` served by krio.
#[derive(Debug, Clone)]
pub struct RuntimeApi(pub Arc<Krio>);

/// The CRI `ImageService` served by krio.
#[derive(Debug, Clone)]
pub struct ImageApi(pub Arc<Krio>);

impl RuntimeApi {
    /// The tonic server for this service.
    pub fn server(self) -> cri::runtime_service_server::RuntimeServiceServer<Self> {
        cri::runtime_service_server::RuntimeServiceServer::new(self)
    }
}

impl ImageApi {
    /// The tonic server for this service.
    pub fn server(self) -> cri::image_service_server::ImageServiceServer<Self> {
        cri::image_service_server::ImageServiceServer::new(self)
    }
}

/// Logs the call's outcome and latency, records it in the metrics, and converts it to a gRPC
/// response.
fn respond<T>(
    krio: &Krio,
    rpc: &'static str,
    started: Instant,
    r: Result<T, ServerError>,
) -> Result<Response<T>, Status> {
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros() as u64;
    match r {
        Ok(v) => {
            krio.metrics.observe(rpc, tonic::Code::Ok, elapsed);
            tracing::debug!(rpc, micros, "ok");
            Ok(Response::new(v))
        }
        Err(e) => {
            krio.metrics.observe(rpc, e.code(), elapsed);
            tracing::info!(rpc, micros, code = ?e.code(), error = %e, "failed");
            Err(e.into())
        }
    }
}

/// Runs a handler on its own task, so a client that gives up (kubelet's deadline) never
/// cancels a multi-step operation halfway; the work finishes and leaves consistent state.
async fn detached<T, F>(krio: &Arc<Krio>, f: impl FnOnce(Arc<Krio>) -> F) -> Result<T, ServerError>
where
    F: std::future::Future<Output = Result<T, ServerError>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(f(krio.clone()).instrument(tracing::Span::current()))
        .await
        .map_err(|e| ServerError::Task(e.to_string()))?
}

/// The span of one CRI call, for `tonic::transport::Server::trace_fn`: `rpc` (the method
/// name), `request_id` (a number unique in this daemon's life, in call order), and `sandbox`
/// and `container`, recorded by the handler once it has decoded the request (see
/// `note_ids`). Every log line of the call, and of the tasks it spawns (detached
/// operations, creations), carries them. `otel.name`, `otel.kind` and `rpc.system` are left
/// empty (and so out of the log lines) for the daemon to record when it exports traces.
pub fn rpc_span(req: &http::Request<()>) -> tracing::Span {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let rpc = req.uri().path().rsplit('/').next().unwrap_or_default();
    tracing::info_span!(
        "rpc",
        rpc = %rpc,
        request_id = id,
        sandbox = tracing::field::Empty,
        container = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        rpc.system = tracing::field::Empty
    )
}

/// The sandbox and container a request names, for the call's span.
trait RequestIds {
    /// `(pod_sandbox_id, container_id)`; empty when the request names none.
    fn ids(&self) -> (&str, &str) {
        ("", "")
    }
}

macro_rules! request_ids {
    (sandbox: $($s:ident),*; container: $($c:ident),*; none: $($n:ident),*) => {
        $(impl RequestIds for cri::$s {
            fn ids(&self) -> (&str, &str) {
                (&self.pod_sandbox_id, "")
            }
        })*
        $(impl RequestIds for cri::$c {
            fn ids(&self) -> (&str, &str) {
                ("", &self.container_id)
            }
        })*
        $(impl RequestIds for cri::$n {})*
    };
}

request_ids!(
    sandbox: CreateContainerRequest, PodSandboxStatsRequest, PodSandboxStatusRequest, PortForwardRequest, RemovePodSandboxRequest, StopPodSandboxRequest, UpdatePodSandboxResourcesRequest;
    container: AttachRequest, CheckpointContainerRequest, ContainerStatsRequest, ContainerStatusRequest, ExecRequest, ExecSyncRequest, RemoveContainerRequest, ReopenContainerLogRequest, StartContainerRequest, StopContainerRequest, UpdateContainerResourcesRequest;
    none: GetEventsRequest, ImageFsInfoRequest, ImageStatusRequest, ListContainerStatsRequest, ListContainersRequest, ListImagesRequest, ListMetricDescriptorsRequest, ListPodSandboxMetricsRequest, ListPodSandboxRequest, ListPodSandboxStatsRequest, PullImageRequest, RemoveImageRequest, RunPodSandboxRequest, RuntimeConfigRequest, StatusRequest, StreamContainerStatsRequest, StreamContainersRequest, StreamImagesRequest, StreamPodSandboxMetricsRequest, StreamPodSandboxStatsRequest, StreamPodSandboxesRequest, UpdateRuntimeConfigRequest, VersionRequest
);

/// Records the sandbox and container the request names on the current (RPC) span.
fn note_ids<T: RequestIds>(r: &Request<T>) {
    let (sandbox, container) = r.get_ref().ids();
    record_ids(sandbox, container);
}

/// Records a sandbox and container id (either may be empty) on the current (RPC) span.
pub(crate) fn record_ids(sandbox: &str, container: &str) {
    let span = tracing::Span::current();
    if !sandbox.is_empty() {
        span.record("sandbox", tracing::field::display(sandbox));
    }
    if !container.is_empty() {
        span.record("container", tracing::field::display(container));
    }
}

type EventStream = Pin<
    Box<dyn futures::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>,
>;

/// A server-streaming answer.
type Chunks<R> = tonic::codegen::BoxStream<R>;

/// Answers a list-streaming RPC: the List call's items (`r`), in chunks of at most
/// [`streams::CHUNK_BYTES`] encoded bytes, each wrapped by `wrap`.
fn stream_chunks<T, R>(
    krio: &Krio,
    rpc: &'static str,
    started: Instant,
    r: Result<Vec<T>, ServerError>,
    wrap: impl Fn(Vec<T>) -> R,
) -> Result<Response<Chunks<R>>, Status>
where
    T: prost::Message,
    R: Send + 'static,
{
    let items = respond(krio, rpc, started, r)?.into_inner();
    let messages: Vec<Result<R, Status>> = streams::chunks(items, streams::CHUNK_BYTES)
        .into_iter()
        .map(|c| Ok(wrap(c)))
        .collect();
    Ok(Response::new(Box::pin(futures::stream::iter(messages))))
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(
        &self,
        r: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        note_ids(&r);
        Ok(Response::new(self.0.version(r.into_inner())))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "RunPodSandbox",
            t,
            self.0.run_pod_sandbox(r.into_inner()).await,
        )
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        let res = detached(&self.0, |k| async move { k.stop_pod_sandbox(req).await }).await;
        respond(
            &self.0,
            "StopPodSandbox",
            t,
            res.map(|()| cri::StopPodSandboxResponse {}),
        )
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        let res = detached(&self.0, |k| async move { k.remove_pod_sandbox(req).await }).await;
        respond(
            &self.0,
            "RemovePodSandbox",
            t,
            res.map(|()| cri::RemovePodSandboxResponse {}),
        )
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "PodSandboxStatus",
            t,
            self.0.pod_sandbox_status(r.into_inner()),
        )
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "ListPodSandbox",
            t,
            self.0.list_pod_sandbox(r.into_inner()),
        )
    }

    async fn stream_pod_sandboxes(
        &self,
        r: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Chunks<cri::StreamPodSandboxesResponse>>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let list = self.0.list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: r.into_inner().filter,
        });
        stream_chunks(
            &self.0,
            "StreamPodSandboxes",
            t,
            list.map(|l| l.items),
            |pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes },
        )
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let res = self
            .0
            .update_pod_sandbox_resources(r.into_inner())
            .await
            .map(|()| cri::UpdatePodSandboxResourcesResponse {});
        respond(&self.0, "UpdatePodSandboxResources", t, res)
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "CreateContainer",
            t,
            self.0.create_container(r.into_inner()).await,
        )
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        let res = detached(&self.0, |k| async move { k.start_container(req).await }).await;
        respond(
            &self.0,
            "StartContainer",
            t,
            res.map(|()| cri::StartContainerResponse {}),
        )
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        let res = detached(&self.0, |k| async move { k.stop_container(req).await }).await;
        respond(
            &self.0,
            "StopContainer",
            t,
            res.map(|()| cri::StopContainerResponse {}),
        )
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        let res = detached(&self.0, |k| async move { k.remove_container(req).await }).await;
        respond(
            &self.0,
            "RemoveContainer",
            t,
            res.map(|()| cri::RemoveContainerResponse {}),
        )
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "ListContainers",
            t,
            self.0.list_containers(r.into_inner()),
        )
    }

    async fn stream_containers(
        &self,
        r: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Chunks<cri::StreamContainersResponse>>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let list = self.0.list_containers(cri::ListContainersRequest {
            filter: r.into_inner().filter,
        });
        stream_chunks(
            &self.0,
            "StreamContainers",
            t,
            list.map(|l| l.containers),
            |containers| cri::StreamContainersResponse { containers },
        )
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "ContainerStatus",
            t,
            self.0.container_status(r.into_inner()),
        )
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        let res = detached(&self.0, |k| async move {
            k.update_container_resources(req).await
        })
        .await;
        respond(
            &self.0,
            "UpdateContainerResources",
            t,
            res.map(|()| cri::UpdateContainerResourcesResponse {}),
        )
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let res = self.0.reopen_container_log(r.into_inner()).await;
        respond(
            &self.0,
            "ReopenContainerLog",
            t,
            res.map(|()| cri::ReopenContainerLogResponse {}),
        )
    }

    async fn exec_sync(
        &self,
        r: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "ExecSync",
            t,
            self.0.exec_sync(r.into_inner()).await,
        )
    }

    async fn exec(
        &self,
        r: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(&self.0, "Exec", t, self.0.exec(r.into_inner()).await)
    }

    async fn attach(
        &self,
        r: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let t = Instant::now();
        respond(&self.0, "Attach", t, self.0.attach(r.into_inner()).await)
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "PortForward",
            t,
            self.0.port_forward(r.into_inner()).await,
        )
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "ContainerStats",
            t,
            crate::blocking(|| self.0.container_stats(r.into_inner())),
        )
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "ListContainerStats",
            t,
            crate::blocking(|| self.0.list_container_stats(r.into_inner())),
        )
    }

    async fn stream_container_stats(
        &self,
        r: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Chunks<cri::StreamContainerStatsResponse>>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let filter = r.into_inner().filter;
        let list = crate::blocking(|| {
            self.0
                .list_container_stats(cri::ListContainerStatsRequest { filter })
        });
        stream_chunks(
            &self.0,
            "StreamContainerStats",
            t,
            list.map(|l| l.stats),
            |container_stats| cri::StreamContainerStatsResponse { container_stats },
        )
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "PodSandboxStats",
            t,
            crate::blocking(|| self.0.pod_sandbox_stats(r.into_inner())),
        )
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "ListPodSandboxStats",
            t,
            crate::blocking(|| self.0.list_pod_sandbox_stats(r.into_inner())),
        )
    }

    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Chunks<cri::StreamPodSandboxStatsResponse>>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let filter = r.into_inner().filter;
        let list = crate::blocking(|| {
            self.0
                .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter })
        });
        stream_chunks(
            &self.0,
            "StreamPodSandboxStats",
            t,
            list.map(|l| l.stats),
            |pod_sandbox_stats| cri::StreamPodSandboxStatsResponse { pod_sandbox_stats },
        )
    }

    async fn update_runtime_config(
        &self,
        _r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        // kubelet sends the pod CIDR here; krio's CNI configuration owns addressing, so
        // accepting and ignoring it is what CRI-O does with a CNI network.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        r: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(&self.0, "Status", t, self.0.status(r.into_inner()))
    }

    async fn checkpoint_container(
        &self,
        r: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        // Detached: a client that gives up never leaves the container paused or a staging
        // directory behind.
        let res = detached(
            &self.0,
            |k| async move { k.checkpoint_container(req).await },
        )
        .await
        .map(|()| cri::CheckpointContainerResponse {});
        respond(&self.0, "CheckpointContainer", t, res)
    }

    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        use futures::StreamExt;
        Ok(Response::new(Box::pin(self.0.subscribe().map(Ok))))
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        let t = Instant::now();
        respond(
            &self.0,
            "ListMetricDescriptors",
            t,
            Ok(self.0.list_metric_descriptors()),
        )
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        let t = Instant::now();
        respond(
            &self.0,
            "ListPodSandboxMetrics",
            t,
            crate::blocking(|| Ok(self.0.list_pod_sandbox_metrics())),
        )
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _r: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Chunks<cri::StreamPodSandboxMetricsResponse>>, Status> {
        let t = Instant::now();
        stream_chunks(
            &self.0,
            "StreamPodSandboxMetrics",
            t,
            crate::blocking(|| Ok(self.0.list_pod_sandbox_metrics().pod_metrics)),
            |pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )
    }

    async fn runtime_config(
        &self,
        _r: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(self.0.runtime_config()))
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        r: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(&self.0, "ListImages", t, self.0.list_images(r.into_inner()))
    }

    async fn stream_images(
        &self,
        r: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Chunks<cri::StreamImagesResponse>>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let list = self.0.list_images(cri::ListImagesRequest {
            filter: r.into_inner().filter,
        });
        stream_chunks(
            &self.0,
            "StreamImages",
            t,
            list.map(|l| l.images),
            |images| cri::StreamImagesResponse { images },
        )
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        respond(
            &self.0,
            "ImageStatus",
            t,
            self.0.image_status(r.into_inner()),
        )
    }

    async fn pull_image(
        &self,
        r: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        let res = detached(&self.0, |k| async move { k.pull_image(req).await }).await;
        respond(&self.0, "PullImage", t, res)
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        note_ids(&r);
        let t = Instant::now();
        let req = r.into_inner();
        let res = detached(&self.0, |k| async move { k.remove_image(req).await }).await;
        respond(
            &self.0,
            "RemoveImage",
            t,
            res.map(|()| cri::RemoveImageResponse {}),
        )
    }

    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let t = Instant::now();
        respond(&self.0, "ImageFsInfo", t, self.0.image_fs_info().await)
    }
}
