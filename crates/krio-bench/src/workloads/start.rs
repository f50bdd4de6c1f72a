//! `start` and `teardown`: bring pods up (RunPodSandbox, CreateContainer, StartContainer until RUNNING)
//! and down (StopPodSandbox, RemovePodSandbox), sequentially and `parallel_width` at a time.

use std::time::Instant;

use futures::future::try_join_all;

use super::{drop_pod_logs, ensure_image, finish_run, start_pod, teardown_pod, PodTemplate};
use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::results::{ms_since, Unit, WorkloadResult};

/// Sizes of the start/teardown workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartParams {
    /// Pods brought up and down one after another (each torn down before the next starts).
    pub sequential_runs: usize,
    /// Pods started at once in a parallel round.
    pub parallel_width: usize,
    /// Number of parallel rounds.
    pub parallel_rounds: usize,
    /// Unmeasured start/teardown cycles done first (pulls the pause image, warms caches).
    pub warmup: usize,
}

impl StartParams {
    /// The full-size run: 50 sequential, 5 rounds of 10 in parallel, 2 warm-ups.
    pub const FULL: StartParams = StartParams {
        sequential_runs: 50,
        parallel_width: 10,
        parallel_rounds: 5,
        warmup: 2,
    };
    /// The `--quick` run: 3 sequential, 1 round of 3, 1 warm-up.
    pub const QUICK: StartParams = StartParams {
        sequential_runs: 3,
        parallel_width: 3,
        parallel_rounds: 1,
        warmup: 1,
    };
}

/// Runs the workload; returns the `start` and the `teardown` results.
///
/// Metrics (all ms): start — `run_pod_sandbox`, `create_container`, `start_container`, `total`
/// (sequential), `parallel_total` (per pod), `parallel_round_wall`; teardown — `stop_pod_sandbox`,
/// `remove_pod_sandbox`, `total`, `parallel_total`, `parallel_round_wall`.
///
/// Every pod made is removed, also on failure (by label).
///
/// # Errors
/// [`BenchError::InvalidParam`] for zero sizes; any error of the CRI calls.
pub async fn run(
    client: &CriClient,
    tpl: &PodTemplate,
    runtime: &str,
    round: u32,
    p: StartParams,
) -> Result<(WorkloadResult, WorkloadResult)> {
    if p.sequential_runs == 0 || p.parallel_width == 0 {
        return Err(BenchError::InvalidParam {
            field: "sequential_runs/parallel_width",
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
    p: StartParams,
) -> Result<(WorkloadResult, WorkloadResult)> {
    ensure_image(client, &tpl.image).await?;
    let mut start = WorkloadResult::new(runtime, "start", round);
    let mut down = WorkloadResult::new(runtime, "teardown", round);
    for r in [&mut start, &mut down] {
        r.param("sequential_runs", p.sequential_runs);
        r.param("parallel_width", p.parallel_width);
        r.param("parallel_rounds", p.parallel_rounds);
        r.param("warmup", p.warmup);
        r.param("image", tpl.image.clone());
        r.param("command", tpl.command.clone());
    }
    for i in 0..p.warmup {
        let name = format!("warm-r{round}-{i}");
        let pod = start_pod(client, tpl, &name, 1).await?;
        teardown_pod(client, &pod.pod_id).await?;
        drop_pod_logs(tpl, &name);
    }
    for i in 0..p.sequential_runs {
        let name = format!("seq-r{round}-{i}");
        let pod = start_pod(client, tpl, &name, 1).await?;
        let t = &pod.times;
        start.push("run_pod_sandbox", Unit::Ms, t.run_pod_sandbox_ms);
        for v in &t.create_container_ms {
            start.push("create_container", Unit::Ms, *v);
        }
        for v in &t.start_container_ms {
            start.push("start_container", Unit::Ms, *v);
        }
        start.push("total", Unit::Ms, t.total_ms);
        let d = teardown_pod(client, &pod.pod_id).await?;
        down.push("stop_pod_sandbox", Unit::Ms, d.stop_pod_sandbox_ms);
        down.push("remove_pod_sandbox", Unit::Ms, d.remove_pod_sandbox_ms);
        down.push("total", Unit::Ms, d.total_ms);
        drop_pod_logs(tpl, &name);
    }
    for pr in 0..p.parallel_rounds {
        let names: Vec<String> = (0..p.parallel_width)
            .map(|i| format!("par-r{round}-{pr}-{i}"))
            .collect();
        let t0 = Instant::now();
        let tasks = names.iter().map(|n| {
            let (c, t, n) = (client.clone(), tpl.clone(), n.clone());
            tokio::spawn(async move { start_pod(&c, &t, &n, 1).await })
        });
        let pods: Vec<_> = try_join_all(tasks)
            .await?
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        start.push("parallel_round_wall", Unit::Ms, ms_since(t0));
        for pod in &pods {
            start.push("parallel_total", Unit::Ms, pod.times.total_ms);
        }
        let t0 = Instant::now();
        let tasks = pods.iter().map(|pod| {
            let (c, id) = (client.clone(), pod.pod_id.clone());
            tokio::spawn(async move { teardown_pod(&c, &id).await })
        });
        let downs = try_join_all(tasks)
            .await?
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        down.push("parallel_round_wall", Unit::Ms, ms_since(t0));
        for d in downs {
            down.push("parallel_total", Unit::Ms, d.total_ms);
        }
        for n in &names {
            drop_pod_logs(tpl, n);
        }
    }
    start.finish();
    down.finish();
    Ok((start, down))
}
