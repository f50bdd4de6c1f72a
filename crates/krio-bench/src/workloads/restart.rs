//! `restart`: how long a runtime takes, after its daemon was killed and started again, to answer
//! ListContainers with every container it had still `CONTAINER_RUNNING`.
//!
//! Two steps around a daemon restart done by the caller (bench/run.sh owns the daemon process):
//! [`prepare`] starts the pods and writes their container ids to a file; the caller kills the
//! daemon (SIGTERM or SIGKILL), waits for it to exit, notes the time and starts it again; then
//! [`await_recovered`] polls from that time on and records the result.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use krio_cri::v1::{ContainerState, ListContainersRequest};
use serde::{Deserialize, Serialize};

use super::{ensure_image, finish_run, start_pod, PodTemplate};
use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::results::{Unit, WorkloadResult};

/// Sizes of the restart workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartParams {
    /// Pods to start.
    pub pods: usize,
    /// Running containers per pod.
    pub containers_per_pod: usize,
}

impl RestartParams {
    /// 10 pods × 10 containers.
    pub const FULL: RestartParams = RestartParams {
        pods: 10,
        containers_per_pod: 10,
    };
    /// 2 pods × 2 containers.
    pub const QUICK: RestartParams = RestartParams {
        pods: 2,
        containers_per_pod: 2,
    };
}

/// What [`prepare`] leaves for [`await_recovered`] (the ids file, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// Run id of the pods' label (for cleanup).
    pub run_id: String,
    /// Pod sandbox ids.
    pub pod_ids: Vec<String>,
    /// Container ids that must be RUNNING after the restart.
    pub container_ids: Vec<String>,
}

/// Starts `pods` × `containers_per_pod` running containers and writes their ids to `ids_file`.
/// On failure the pods made are removed.
///
/// # Errors
/// [`BenchError::InvalidParam`] for zero sizes; CRI errors; [`BenchError::Io`]/[`BenchError::Json`]
/// writing the file.
pub async fn prepare(
    client: &CriClient,
    tpl: &PodTemplate,
    round: u32,
    p: RestartParams,
    ids_file: &Path,
) -> Result<Prepared> {
    if p.pods == 0 || p.containers_per_pod == 0 {
        return Err(BenchError::InvalidParam {
            field: "pods/containers_per_pod",
            reason: "must be at least 1".to_owned(),
        });
    }
    let res = async {
        ensure_image(client, &tpl.image).await?;
        let mut prep = Prepared {
            run_id: tpl.run_id.clone(),
            pod_ids: Vec::new(),
            container_ids: Vec::new(),
        };
        for i in 0..p.pods {
            let pod = start_pod(
                client,
                tpl,
                &format!("restart-r{round}-{i}"),
                p.containers_per_pod,
            )
            .await?;
            prep.pod_ids.push(pod.pod_id);
            prep.container_ids.extend(pod.container_ids);
        }
        let text = serde_json::to_string_pretty(&prep).map_err(|source| BenchError::Json {
            path: ids_file.to_owned(),
            source,
        })?;
        std::fs::write(ids_file, text).map_err(|e| BenchError::io("writing", ids_file, e))?;
        Ok(prep)
    }
    .await;
    if res.is_ok() {
        return res;
    }
    finish_run(client, tpl, res).await
}

/// How many of `want` are listed as `CONTAINER_RUNNING` in `listed` (id → state).
pub fn running_count(want: &[String], listed: &HashMap<String, i32>) -> usize {
    want.iter()
        .filter(|id| listed.get(*id) == Some(&(ContainerState::ContainerRunning as i32)))
        .count()
}

/// Milliseconds from `since_unix_us` (microseconds since the Unix epoch) until now.
pub fn ms_since_unix_us(since_unix_us: u64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as f64)
        .unwrap_or(0.0);
    (now - since_unix_us as f64) / 1e3
}

/// The times [`await_recovered`] measured, milliseconds from the restart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recovery {
    /// Until the first ListContainers that answered at all.
    pub first_rpc_ms: f64,
    /// Until the first ListContainers that listed every prepared container as RUNNING.
    pub all_running_ms: f64,
}

/// Polls the endpoint (connecting as soon as the socket accepts, then ListContainers every 2 ms)
/// until every container of `prep` is listed RUNNING; times are taken from `since_unix_us`, when
/// the caller started the daemon.
///
/// # Errors
/// [`BenchError::Timeout`] after `timeout`, naming how many containers were RUNNING last.
pub async fn await_recovered(
    endpoint: &str,
    prep: &Prepared,
    since_unix_us: u64,
    timeout: Duration,
) -> Result<Recovery> {
    let deadline = Instant::now() + timeout;
    let want: BTreeSet<&String> = prep.container_ids.iter().collect();
    let mut client: Option<CriClient> = None;
    let mut first_rpc_ms = None;
    let mut last = String::from("no connection");
    loop {
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                what: format!(
                    "{} containers RUNNING after the restart (last: {last})",
                    want.len()
                ),
                waited_ms: timeout.as_millis() as u64,
            });
        }
        if client.is_none() {
            match CriClient::connect(endpoint).await {
                Ok(c) => client = Some(c),
                Err(e) => last = e.to_string(),
            }
        }
        if let Some(c) = &client {
            let mut rt = c.runtime.clone();
            match rt
                .list_containers(ListContainersRequest { filter: None })
                .await
            {
                Ok(resp) => {
                    let at = ms_since_unix_us(since_unix_us);
                    first_rpc_ms.get_or_insert(at);
                    let listed: HashMap<String, i32> = resp
                        .into_inner()
                        .containers
                        .into_iter()
                        .map(|c| (c.id, c.state))
                        .collect();
                    let n = running_count(&prep.container_ids, &listed);
                    if n == want.len() {
                        return Ok(Recovery {
                            first_rpc_ms: first_rpc_ms.unwrap_or(at),
                            all_running_ms: at,
                        });
                    }
                    last = format!("{n} of {} RUNNING, {} listed", want.len(), listed.len());
                }
                Err(s) => {
                    last = format!("ListContainers: {:?}: {}", s.code(), s.message());
                    if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
                        client = None;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Adds `rec` under `<signal>_first_rpc` and `<signal>_all_running` to the round's `restart`
/// result in `out` (read if it exists, so SIGTERM and SIGKILL land in one file), and writes it.
///
/// # Errors
/// [`BenchError::Io`]/[`BenchError::Json`].
pub fn record(
    out: &Path,
    runtime: &str,
    round: u32,
    signal: &str,
    containers: usize,
    rec: Recovery,
) -> Result<WorkloadResult> {
    let fresh = WorkloadResult::new(runtime, "restart", round);
    let path = out.join(fresh.file_name());
    let mut r = if path.exists() {
        WorkloadResult::read(&path)?
    } else {
        fresh
    };
    r.param("containers", containers);
    r.push(&format!("{signal}_first_rpc"), Unit::Ms, rec.first_rpc_ms);
    r.push(
        &format!("{signal}_all_running"),
        Unit::Ms,
        rec.all_running_ms,
    );
    r.finish();
    r.write(out)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_wanted_running() {
        let running = ContainerState::ContainerRunning as i32;
        let exited = ContainerState::ContainerExited as i32;
        let listed = HashMap::from([
            ("a".to_owned(), running),
            ("b".to_owned(), exited),
            ("z".to_owned(), running),
        ]);
        let want = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(running_count(&want, &listed), 1);
        assert_eq!(running_count(&[], &listed), 0);
    }

    #[test]
    fn record_merges_signals_into_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |a, b| Recovery {
            first_rpc_ms: a,
            all_running_ms: b,
        };
        record(dir.path(), "krio", 1, "sigterm", 100, rec(1.0, 2.0)).unwrap();
        let r = record(dir.path(), "krio", 1, "sigkill", 100, rec(3.0, 4.0)).unwrap();
        let back = WorkloadResult::read(&dir.path().join("krio-r1-restart.json")).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.metrics["sigterm_all_running"].samples, vec![2.0]);
        assert_eq!(back.metrics["sigkill_first_rpc"].samples, vec![3.0]);
        assert_eq!(back.params["containers"], 100);
        assert!(ms_since_unix_us(0) > 1e12);
    }
}
