//! `memory`: Pss/Rss of the runtime (daemon + monitors/shims) with 0, 10, 50 running pods.

use std::time::Duration;

use super::{drop_pod_logs, ensure_image, finish_run, start_pod, teardown_pod, PodTemplate};
use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::procfs::ProcMatcher;
use crate::results::{Unit, WorkloadResult};

/// Sizes of the memory workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryParams {
    /// Running-pod counts to measure at, ascending (pods are added incrementally).
    pub levels: Vec<usize>,
    /// Wait after reaching a level before reading /proc (lets the runtime settle, e.g. GC, lazy frees).
    pub settle: Duration,
}

impl MemoryParams {
    /// 0, 10 and 50 pods, 3 s settle.
    pub fn full() -> Self {
        MemoryParams {
            levels: vec![0, 10, 50],
            settle: Duration::from_secs(3),
        }
    }
    /// 0 and 2 pods, 0.5 s settle.
    pub fn quick() -> Self {
        MemoryParams {
            levels: vec![0, 2],
            settle: Duration::from_millis(500),
        }
    }
}

/// Runs the workload. Each pod runs one container. Metrics per level `L`:
/// `daemon_rss_{L}pods`, `daemon_pss_{L}pods`, `monitors_pss_{L}pods`, `total_pss_{L}pods` (bytes),
/// `monitor_count_{L}pods` (count); and `daemon_rss_idle` (bytes, before any pod of this workload).
/// Pods are removed at the end, also on failure.
///
/// # Errors
/// [`BenchError::InvalidParam`] for unsorted levels; /proc and CRI errors.
pub async fn run(
    client: &CriClient,
    tpl: &PodTemplate,
    procs: &ProcMatcher,
    runtime: &str,
    round: u32,
    p: &MemoryParams,
) -> Result<WorkloadResult> {
    if p.levels.windows(2).any(|w| w[0] >= w[1]) {
        return Err(BenchError::InvalidParam {
            field: "levels",
            reason: format!("must be strictly ascending, got {:?}", p.levels),
        });
    }
    let res = run_inner(client, tpl, procs, runtime, round, p).await;
    finish_run(client, tpl, res).await
}

async fn run_inner(
    client: &CriClient,
    tpl: &PodTemplate,
    procs: &ProcMatcher,
    runtime: &str,
    round: u32,
    p: &MemoryParams,
) -> Result<WorkloadResult> {
    ensure_image(client, &tpl.image).await?;
    let mut r = WorkloadResult::new(runtime, "memory", round);
    r.param("levels", p.levels.clone());
    r.param(
        "settle_ms",
        u64::try_from(p.settle.as_millis()).unwrap_or(u64::MAX),
    );
    r.param("daemon_pid", procs.daemon_pid);
    r.param("monitor_names", procs.monitor_names.clone());
    let idle = procs.memory()?;
    r.push("daemon_rss_idle", Unit::Bytes, idle.daemon.rss_bytes as f64);
    let mut pods = Vec::new();
    for &level in &p.levels {
        while pods.len() < level {
            let name = format!("mem-r{round}-{}", pods.len());
            pods.push(start_pod(client, tpl, &name, 1).await?);
        }
        tokio::time::sleep(p.settle).await;
        let m = procs.memory()?;
        r.push(
            &format!("daemon_rss_{level}pods"),
            Unit::Bytes,
            m.daemon.rss_bytes as f64,
        );
        r.push(
            &format!("daemon_pss_{level}pods"),
            Unit::Bytes,
            m.daemon.pss_bytes as f64,
        );
        r.push(
            &format!("monitors_pss_{level}pods"),
            Unit::Bytes,
            m.monitors_pss_bytes as f64,
        );
        r.push(
            &format!("total_pss_{level}pods"),
            Unit::Bytes,
            m.total_pss_bytes as f64,
        );
        r.push(
            &format!("monitor_count_{level}pods"),
            Unit::Count,
            m.monitor_count as f64,
        );
    }
    for (i, pod) in pods.iter().enumerate() {
        teardown_pod(client, &pod.pod_id).await?;
        drop_pod_logs(tpl, &format!("mem-r{round}-{i}"));
    }
    r.finish();
    Ok(r)
}
