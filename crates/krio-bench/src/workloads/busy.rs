//! `busy`: latency of ListContainers and ContainerStatus, sampled from a second client connection
//! (its own thread and HTTP/2 connection) continuously while pods start in parallel on the first
//! connection, and while they are torn down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::try_join_all;
use krio_cri::v1::{ContainerStatusRequest, ListContainersRequest};

use super::{drop_pod_logs, ensure_image, finish_run, start_pod, teardown_pod, PodTemplate};
use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::results::{ms_since, Unit, WorkloadResult};

/// Sizes of the busy workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusyParams {
    /// Containers of the background pod that is running throughout (ContainerStatus targets).
    pub background_containers: usize,
    /// Pods started at once in each round.
    pub parallel_width: usize,
    /// Rounds (start `parallel_width` pods, then tear them down).
    pub rounds: usize,
}

impl BusyParams {
    /// A background pod with 10 containers; 5 rounds of 10 pods.
    pub const FULL: BusyParams = BusyParams {
        background_containers: 10,
        parallel_width: 10,
        rounds: 5,
    };
    /// 2 background containers; 1 round of 3 pods.
    pub const QUICK: BusyParams = BusyParams {
        background_containers: 2,
        parallel_width: 3,
        rounds: 1,
    };
}

/// Latencies (ms) collected by a [`Sampler`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    /// ListContainers (no filter).
    pub list_containers: Vec<f64>,
    /// ContainerStatus, round-robin over the sampler's ids.
    pub container_status: Vec<f64>,
}

/// Calls ListContainers and ContainerStatus alternately, back to back, on its own thread, runtime
/// and connection, until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Samples>>,
}

impl Sampler {
    /// Connects a second client to `socket` on a new thread and starts sampling once connected
    /// (this returns after the connection is up). `ids` are the ContainerStatus targets.
    ///
    /// # Errors
    /// [`BenchError::Connect`] and friends if the thread cannot connect; [`BenchError::Io`] if the
    /// thread or its runtime cannot be made.
    pub fn start(socket: &std::path::Path, ids: Vec<String>) -> Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let endpoint = socket.display().to_string();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("busy-sampler".to_owned())
            .spawn(move || -> Result<Samples> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| BenchError::io("building a runtime for", "sampler", e))?;
                rt.block_on(async move {
                    let client = match CriClient::connect(&endpoint).await {
                        Ok(c) => {
                            let _ = ready_tx.send(Ok(()));
                            c
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            let _ = ready_tx.send(Err(e));
                            return Err(BenchError::InvalidParam {
                                field: "endpoint",
                                reason: msg,
                            });
                        }
                    };
                    sample_loop(&client, &ids, &flag).await
                })
            })
            .map_err(|e| BenchError::io("spawning", "sampler thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Sampler { stop, thread }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BenchError::InvalidParam {
                field: "sampler",
                reason: "the sampler thread ended before connecting".to_owned(),
            }),
        }
    }

    /// Stops sampling and returns what was collected.
    ///
    /// # Errors
    /// The first RPC error the sampler saw; [`BenchError::InvalidParam`] if its thread panicked.
    pub fn stop(self) -> Result<Samples> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().map_err(|_| BenchError::InvalidParam {
            field: "sampler",
            reason: "the sampler thread panicked".to_owned(),
        })?
    }
}

async fn sample_loop(client: &CriClient, ids: &[String], stop: &AtomicBool) -> Result<Samples> {
    let mut rt = client.runtime.clone();
    let mut s = Samples::default();
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        rt.list_containers(ListContainersRequest { filter: None })
            .await
            .map_err(|st| BenchError::rpc("ListContainers", "busy sampler", st))?;
        s.list_containers.push(ms_since(t));
        if let Some(id) = ids.get(i % ids.len().max(1)) {
            let t = Instant::now();
            rt.container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .map_err(|st| BenchError::rpc("ContainerStatus", id, st))?;
            s.container_status.push(ms_since(t));
        }
        i += 1;
    }
    Ok(s)
}

/// Runs the workload: a background pod with `background_containers` running containers, then
/// `rounds` times: `parallel_width` pods started at once (one container each) while a [`Sampler`]
/// runs, then the same pods torn down at once while another runs. Metrics (ms):
/// `list_containers_during_start`, `container_status_during_start`, `list_containers_during_teardown`,
/// `container_status_during_teardown`, and `parallel_round_wall` (the start of a round). Pods are
/// removed at the end, also on failure.
///
/// # Errors
/// [`BenchError::InvalidParam`] for zero sizes; any CRI error of either connection.
pub async fn run(
    client: &CriClient,
    tpl: &PodTemplate,
    runtime: &str,
    round: u32,
    p: BusyParams,
) -> Result<WorkloadResult> {
    if p.background_containers == 0 || p.parallel_width == 0 || p.rounds == 0 {
        return Err(BenchError::InvalidParam {
            field: "background_containers/parallel_width/rounds",
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
    p: BusyParams,
) -> Result<WorkloadResult> {
    ensure_image(client, &tpl.image).await?;
    let mut r = WorkloadResult::new(runtime, "busy", round);
    r.param("background_containers", p.background_containers);
    r.param("parallel_width", p.parallel_width);
    r.param("rounds", p.rounds);
    let bg_name = format!("busy-r{round}-bg");
    let bg = start_pod(client, tpl, &bg_name, p.background_containers).await?;
    for pr in 0..p.rounds {
        let names: Vec<String> = (0..p.parallel_width)
            .map(|i| format!("busy-r{round}-{pr}-{i}"))
            .collect();
        let sampler = Sampler::start(client.socket(), bg.container_ids.clone())?;
        let t0 = Instant::now();
        let tasks = names.iter().map(|n| {
            let (c, t, n) = (client.clone(), tpl.clone(), n.clone());
            tokio::spawn(async move { start_pod(&c, &t, &n, 1).await })
        });
        let started = try_join_all(tasks).await;
        let wall = ms_since(t0);
        let samples = sampler.stop()?;
        let pods = started?.into_iter().collect::<Result<Vec<_>>>()?;
        r.push("parallel_round_wall", Unit::Ms, wall);
        push_samples(&mut r, "during_start", &samples);
        let sampler = Sampler::start(client.socket(), bg.container_ids.clone())?;
        let tasks = pods.iter().map(|pod| {
            let (c, id) = (client.clone(), pod.pod_id.clone());
            tokio::spawn(async move { teardown_pod(&c, &id).await })
        });
        let downs = try_join_all(tasks).await;
        let samples = sampler.stop()?;
        downs?.into_iter().collect::<Result<Vec<_>>>()?;
        push_samples(&mut r, "during_teardown", &samples);
        for n in &names {
            drop_pod_logs(tpl, n);
        }
    }
    teardown_pod(client, &bg.pod_id).await?;
    drop_pod_logs(tpl, &bg_name);
    r.finish();
    Ok(r)
}

fn push_samples(r: &mut WorkloadResult, phase: &str, s: &Samples) {
    for v in &s.list_containers {
        r.push(&format!("list_containers_{phase}"), Unit::Ms, *v);
    }
    for v in &s.container_status {
        r.push(&format!("container_status_{phase}"), Unit::Ms, *v);
    }
}
