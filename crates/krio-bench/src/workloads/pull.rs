//! `pull`: time of one PullImage, with the runtime's peak RSS sampled during it.
//!
//! Cold pulls need a quiet filesystem: the caller (bench/run.sh) gives each pull a fresh filesystem
//! for the runtime's root, or waits out ext4's inode-reuse slowdown after deletions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use krio_cri::v1::{ImageSpec, ImageStatusRequest, PullImageRequest, RemoveImageRequest};

use krio_cri::v1::{CreateContainerRequest, RunPodSandboxRequest};

use super::{cleanup_labeled, teardown_pod, PodTemplate};
use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::procfs::{vm_status, ProcMatcher};
use crate::results::{ms_since, Unit, WorkloadResult};

/// What to pull and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullParams {
    /// Image reference, e.g. `127.0.0.1:5000/krio-bench/debian:bookworm`.
    pub image: String,
    /// RemoveImage first (NotFound is fine). Off when the runtime's root is fresh anyway.
    pub remove_first: bool,
    /// Wait after RemoveImage before pulling (filesystem quiescence), if `remove_first`.
    pub settle: Duration,
    /// How often RSS is sampled during the pull.
    pub sample_every: Duration,
    /// After the pull, run a pod (untimed) and time CreateContainer from the pulled image, so a
    /// runtime that defers unpacking to container creation is charged for it. The template's image is
    /// replaced by [`PullParams::image`]; the pod is removed afterwards.
    pub create_after: Option<PodTemplate>,
}

/// Pulls once. Metrics: `pull` (ms), `image_size` (bytes, ImageStatus `size`), `peak_rss` (bytes, highest
/// sampled sum of VmRSS over daemon + monitors), `daemon_peak_rss` (bytes), `daemon_hwm` (bytes, the
/// daemon's VmHWM afterwards: its lifetime peak, so a pull peak when the daemon was fresh).
/// With `create_after`: `create_container_after_pull` (ms) and `pull_and_create` (ms, the sum).
///
/// # Errors
/// [`BenchError::Rpc`] from RemoveImage (other than NotFound), PullImage or ImageStatus; /proc errors.
pub async fn run(
    client: &CriClient,
    procs: &ProcMatcher,
    runtime: &str,
    round: u32,
    p: &PullParams,
) -> Result<WorkloadResult> {
    let spec = ImageSpec {
        image: p.image.clone(),
        ..Default::default()
    };
    let mut im = client.image.clone();
    let mut r = WorkloadResult::new(runtime, "pull", round);
    r.param("image", p.image.clone());
    r.param("remove_first", p.remove_first);
    if p.remove_first {
        match im
            .remove_image(RemoveImageRequest {
                image: Some(spec.clone()),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(BenchError::rpc("RemoveImage", &p.image, s)),
        }
        tokio::time::sleep(p.settle).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let daemon_peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, daemon_peak, procs, every) = (
            stop.clone(),
            peak.clone(),
            daemon_peak.clone(),
            procs.clone(),
            p.sample_every,
        );
        tokio::spawn(async move {
            let mut monitors = procs.monitors().unwrap_or_default();
            let mut last_scan = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if last_scan.elapsed() > Duration::from_millis(250) {
                    monitors = procs.monitors().unwrap_or_default();
                    last_scan = Instant::now();
                }
                if let Ok(total) = procs.rss_now(&monitors) {
                    peak.fetch_max(total, Ordering::Relaxed);
                }
                if let Ok(d) = vm_status(procs.daemon_pid) {
                    daemon_peak.fetch_max(d.rss_bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    let t0 = Instant::now();
    let pulled = im
        .pull_image(PullImageRequest {
            image: Some(spec.clone()),
            ..Default::default()
        })
        .await;
    let elapsed = ms_since(t0);
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let image_ref = pulled
        .map_err(|s| BenchError::rpc("PullImage", &p.image, s))?
        .into_inner()
        .image_ref;
    r.param("image_ref", image_ref);
    r.push("pull", Unit::Ms, elapsed);
    let status = im
        .image_status(ImageStatusRequest {
            image: Some(spec),
            verbose: false,
        })
        .await
        .map_err(|s| BenchError::rpc("ImageStatus", &p.image, s))?
        .into_inner();
    if let Some(img) = status.image {
        r.push("image_size", Unit::Bytes, img.size as f64);
    }
    r.push("peak_rss", Unit::Bytes, peak.load(Ordering::Relaxed) as f64);
    r.push(
        "daemon_peak_rss",
        Unit::Bytes,
        daemon_peak.load(Ordering::Relaxed) as f64,
    );
    r.push(
        "daemon_hwm",
        Unit::Bytes,
        vm_status(procs.daemon_pid)?.hwm_bytes as f64,
    );
    if let Some(tpl) = &p.create_after {
        let mut tpl = tpl.clone();
        tpl.image = p.image.clone();
        let created = create_after(client, &tpl, round).await;
        if created.is_err() {
            let _ = cleanup_labeled(client, Some(&tpl.run_id), None).await;
        }
        let ms = created?;
        r.push("create_container_after_pull", Unit::Ms, ms);
        r.push("pull_and_create", Unit::Ms, elapsed + ms);
    }
    r.finish();
    Ok(r)
}

/// RunPodSandbox (untimed), CreateContainer (timed, ms), then StopPodSandbox + RemovePodSandbox.
async fn create_after(client: &CriClient, tpl: &PodTemplate, round: u32) -> Result<f64> {
    let mut rt = client.runtime.clone();
    let name = format!("pull-r{round}");
    let config = tpl.pod_config(&name);
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: tpl.runtime_handler.clone(),
        })
        .await
        .map_err(|s| BenchError::rpc("RunPodSandbox", &name, s))?
        .into_inner()
        .pod_sandbox_id;
    let t = Instant::now();
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(tpl.container_config("c0")),
        sandbox_config: Some(config.clone()),
    })
    .await
    .map_err(|s| BenchError::rpc("CreateContainer", format!("{name}/c0"), s))?;
    let ms = ms_since(t);
    teardown_pod(client, &pod_id).await?;
    // Runtimes create the pod's log directory for the container's log_path; it is ours to remove.
    if let (Some(root), Some(md)) = (&tpl.log_root, config.metadata.as_ref()) {
        super::remove_log_dir(root, &md.uid);
    }
    Ok(ms)
}
