//! `calls`: latency of cheap, frequent CRI calls with many containers present.

use std::time::Instant;

use krio_cri::v1::{
    ContainerStatusRequest, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    StatusRequest, VersionRequest,
};

use super::{drop_pod_logs, ensure_image, finish_run, start_pod, teardown_pod, PodTemplate};
use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::results::{ms_since, Unit, WorkloadResult};

/// Sizes of the calls workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallsParams {
    /// Pods to create.
    pub pods: usize,
    /// Running containers in each pod.
    pub containers_per_pod: usize,
    /// Timed iterations (each iteration makes one call of every kind).
    pub iterations: usize,
    /// Untimed iterations first.
    pub warmup: usize,
}

impl CallsParams {
    /// 10 pods × 10 containers, 300 iterations.
    pub const FULL: CallsParams = CallsParams {
        pods: 10,
        containers_per_pod: 10,
        iterations: 300,
        warmup: 20,
    };
    /// 2 pods × 2 containers, 20 iterations.
    pub const QUICK: CallsParams = CallsParams {
        pods: 2,
        containers_per_pod: 2,
        iterations: 20,
        warmup: 2,
    };
}

/// Runs the workload. Metrics (ms): `status` (Status), `version` (Version), `list_containers`
/// (ListContainers, no filter), `list_pod_sandbox`, `list_images`, `container_status` (round-robin over
/// all containers), plus `teardown_pod` (StopPodSandbox + RemovePodSandbox of a pod with
/// `containers_per_pod` containers). Pods are removed at the end, also on failure.
///
/// # Errors
/// [`BenchError::InvalidParam`] for zero sizes; any CRI error.
pub async fn run(
    client: &CriClient,
    tpl: &PodTemplate,
    runtime: &str,
    round: u32,
    p: CallsParams,
) -> Result<WorkloadResult> {
    if p.pods == 0 || p.containers_per_pod == 0 {
        return Err(BenchError::InvalidParam {
            field: "pods/containers_per_pod",
            reason: "must be at least 1".to_owned(),
        });
    }
    let res = run_inner(client, tpl, runtime, round, p).await;
    finish_run(client, tpl, res).await
}

async fn run_inner(
    client: &CriClient,
    tpl: &PodTemplate,
    runtime: &str,
    round: u32,
    p: CallsParams,
) -> Result<WorkloadResult> {
    ensure_image(client, &tpl.image).await?;
    let mut r = WorkloadResult::new(runtime, "calls", round);
    r.param("pods", p.pods);
    r.param("containers_per_pod", p.containers_per_pod);
    r.param("iterations", p.iterations);
    let mut pods = Vec::new();
    for i in 0..p.pods {
        pods.push(
            start_pod(
                client,
                tpl,
                &format!("calls-r{round}-{i}"),
                p.containers_per_pod,
            )
            .await?,
        );
    }
    let ids: Vec<String> = pods.iter().flat_map(|p| p.container_ids.clone()).collect();
    let mut rt = client.runtime.clone();
    let mut im = client.image.clone();
    for it in 0..p.warmup + p.iterations {
        let timed = it >= p.warmup;
        let mut rec = |name: &str, t: Instant| {
            if timed {
                r.push(name, Unit::Ms, ms_since(t));
            }
        };
        let t = Instant::now();
        rt.status(StatusRequest { verbose: false })
            .await
            .map_err(|s| BenchError::rpc("Status", "", s))?;
        rec("status", t);
        let t = Instant::now();
        rt.version(VersionRequest {
            version: "v1".to_owned(),
        })
        .await
        .map_err(|s| BenchError::rpc("Version", "", s))?;
        rec("version", t);
        let t = Instant::now();
        let n = rt
            .list_containers(ListContainersRequest { filter: None })
            .await
            .map_err(|s| BenchError::rpc("ListContainers", "", s))?
            .into_inner()
            .containers
            .len();
        rec("list_containers", t);
        if n < ids.len() {
            return Err(BenchError::InvalidParam {
                field: "containers",
                reason: format!(
                    "ListContainers returned {n} containers, expected at least {}",
                    ids.len()
                ),
            });
        }
        let t = Instant::now();
        rt.list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map_err(|s| BenchError::rpc("ListPodSandbox", "", s))?;
        rec("list_pod_sandbox", t);
        let t = Instant::now();
        im.list_images(ListImagesRequest { filter: None })
            .await
            .map_err(|s| BenchError::rpc("ListImages", "", s))?;
        rec("list_images", t);
        let id = &ids[it % ids.len()];
        let t = Instant::now();
        rt.container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .map_err(|s| BenchError::rpc("ContainerStatus", id, s))?;
        rec("container_status", t);
    }
    for (i, pod) in pods.iter().enumerate() {
        let d = teardown_pod(client, &pod.pod_id).await?;
        r.push("teardown_pod", Unit::Ms, d.total_ms);
        drop_pod_logs(tpl, &format!("calls-r{round}-{i}"));
    }
    r.finish();
    Ok(r)
}
