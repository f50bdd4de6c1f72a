//! `handler-<label>`: pod start latency and memory per pod under one RuntimeClass handler
//! ([`PodTemplate::runtime_handler`]), for comparing runc, runsc, youki, ... with each other and
//! with a reference runtime measured the same way.
//!
//! Start: pods with one container (the template's command) brought up one after another, each torn
//! down before the next, as in the `start` workload. Memory: `memory_pods` pods running at once; the
//! runtime's helper processes and everything below them are read from /proc
//! ([`ProcMatcher::pod_tree_memory`]) and divided by the number of pods.

use std::time::Duration;

use serde_json::json;

use super::{drop_pod_logs, ensure_image, finish_run, start_pod, teardown_pod, PodTemplate};
use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::procfs::ProcMatcher;
use crate::results::{Unit, WorkloadResult};

/// Prefix of the workload name; the full name is `handler-<label>`.
pub const WORKLOAD_PREFIX: &str = "handler-";

/// Sizes of the per-handler workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlerParams {
    /// Pods brought up and down one after another (timed).
    pub sequential_runs: usize,
    /// Untimed start/teardown cycles first.
    pub warmup: usize,
    /// Pods running at once while memory is read.
    pub memory_pods: usize,
    /// Wait after the memory pods are running, before reading /proc.
    pub settle: Duration,
}

impl HandlerParams {
    /// The full-size run: 20 sequential pods, 1 warm-up, memory with 5 pods after 2 s.
    pub const FULL: HandlerParams = HandlerParams {
        sequential_runs: 20,
        warmup: 1,
        memory_pods: 5,
        settle: Duration::from_secs(2),
    };
    /// The `--quick` run: 2 sequential pods, 1 warm-up, memory with 1 pod after 0.5 s.
    pub const QUICK: HandlerParams = HandlerParams {
        sequential_runs: 2,
        warmup: 1,
        memory_pods: 1,
        settle: Duration::from_millis(500),
    };
}

/// Which handler a run measures, as the results name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerSpec {
    /// Names the handler and its configuration in the results (`handler-<label>`), e.g.
    /// `runsc-pod`; the handler actually used is the template's `runtime_handler`.
    pub label: String,
    /// The handler's configuration in words (kept as the `handler_config` param), e.g.
    /// `pod_sandbox = "pod"`.
    pub config: String,
}

/// The workload name for a handler label: `handler-<label>`.
pub fn workload_name(label: &str) -> String {
    format!("{WORKLOAD_PREFIX}{label}")
}

/// Runs the workload for the handler in `tpl.runtime_handler`, recording it as
/// `handler-<spec.label>`.
///
/// Metrics: `pod_start`, `run_pod_sandbox`, `create_container`, `start_container`, `teardown` (ms,
/// one sample per sequential pod); `pss_per_pod`, `rss_per_pod` (bytes) and `processes_per_pod`
/// (count), one sample per run: the sums over the helper processes and their descendants with
/// `memory_pods` pods running, less the same sums just before those pods were started (normally
/// nothing), divided by `memory_pods`. Params `processes` and `pss_by_process`
/// give the same by process name, per pod.
///
/// Every pod made is removed, also on failure (by label).
///
/// # Errors
/// [`BenchError::InvalidParam`] for zero sizes or an empty label; CRI and /proc errors.
pub async fn run(
    client: &CriClient,
    tpl: &PodTemplate,
    procs: &ProcMatcher,
    runtime: &str,
    round: u32,
    spec: &HandlerSpec,
    p: HandlerParams,
) -> Result<WorkloadResult> {
    let label = spec.label.as_str();
    if p.sequential_runs == 0 || p.memory_pods == 0 {
        return Err(BenchError::InvalidParam {
            field: "sequential_runs/memory_pods",
            reason: "must be at least 1".to_owned(),
        });
    }
    if label.is_empty() || label.contains('/') {
        return Err(BenchError::InvalidParam {
            field: "handler label",
            reason: format!("{label:?} must be a non-empty name without '/'"),
        });
    }
    let res = run_inner(client, tpl, procs, runtime, round, spec, p).await;
    finish_run(client, tpl, res).await
}

async fn run_inner(
    client: &CriClient,
    tpl: &PodTemplate,
    procs: &ProcMatcher,
    runtime: &str,
    round: u32,
    spec: &HandlerSpec,
    p: HandlerParams,
) -> Result<WorkloadResult> {
    let label = spec.label.as_str();
    ensure_image(client, &tpl.image).await?;
    let mut r = WorkloadResult::new(runtime, &workload_name(label), round);
    r.param("handler", label);
    r.param("runtime_handler", tpl.runtime_handler.clone());
    r.param("handler_config", spec.config.clone());
    r.param("sequential_runs", p.sequential_runs);
    r.param("warmup", p.warmup);
    r.param("memory_pods", p.memory_pods);
    r.param(
        "settle_ms",
        u64::try_from(p.settle.as_millis()).unwrap_or(u64::MAX),
    );
    r.param("image", tpl.image.clone());
    r.param("command", tpl.command.clone());
    for i in 0..p.warmup {
        let name = format!("hwarm-{label}-r{round}-{i}");
        let pod = start_pod(client, tpl, &name, 1).await?;
        teardown_pod(client, &pod.pod_id).await?;
        drop_pod_logs(tpl, &name);
    }
    for i in 0..p.sequential_runs {
        let name = format!("hseq-{label}-r{round}-{i}");
        let pod = start_pod(client, tpl, &name, 1).await?;
        let t = &pod.times;
        r.push("pod_start", Unit::Ms, t.total_ms);
        r.push("run_pod_sandbox", Unit::Ms, t.run_pod_sandbox_ms);
        for v in &t.create_container_ms {
            r.push("create_container", Unit::Ms, *v);
        }
        for v in &t.start_container_ms {
            r.push("start_container", Unit::Ms, *v);
        }
        let d = teardown_pod(client, &pod.pod_id).await?;
        r.push("teardown", Unit::Ms, d.total_ms);
        drop_pod_logs(tpl, &name);
    }
    let before = procs.pod_tree_memory()?;
    r.param("processes_before", before.processes);
    let mut pods = Vec::with_capacity(p.memory_pods);
    for i in 0..p.memory_pods {
        let name = format!("hmem-{label}-r{round}-{i}");
        pods.push(start_pod(client, tpl, &name, 1).await?);
    }
    tokio::time::sleep(p.settle).await;
    let m = procs.pod_tree_memory()?;
    let k = p.memory_pods as f64;
    // Normally nothing runs before (every pod of the bench is gone); if something did, it is not
    // the pods' and is taken off.
    r.push(
        "pss_per_pod",
        Unit::Bytes,
        m.pss_bytes.saturating_sub(before.pss_bytes) as f64 / k,
    );
    r.push(
        "rss_per_pod",
        Unit::Bytes,
        m.rss_bytes.saturating_sub(before.rss_bytes) as f64 / k,
    );
    r.push(
        "processes_per_pod",
        Unit::Count,
        m.processes.saturating_sub(before.processes) as f64 / k,
    );
    r.param(
        "processes",
        m.by_name
            .iter()
            .map(|(n, u)| (n.clone(), json!(u.count as f64 / k)))
            .collect::<serde_json::Map<_, _>>(),
    );
    r.param(
        "pss_by_process",
        m.by_name
            .iter()
            .map(|(n, u)| (n.clone(), json!(u.pss_bytes as f64 / k)))
            .collect::<serde_json::Map<_, _>>(),
    );
    for (i, pod) in pods.iter().enumerate() {
        teardown_pod(client, &pod.pod_id).await?;
        drop_pod_logs(tpl, &format!("hmem-{label}-r{round}-{i}"));
    }
    r.finish();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes() {
        assert_eq!(workload_name("runsc-pod"), "handler-runsc-pod");
        const { assert!(HandlerParams::QUICK.sequential_runs < HandlerParams::FULL.sequential_runs) };
        const { assert!(HandlerParams::QUICK.memory_pods >= 1) };
    }
}
