//! `stream`: the CRI streaming calls. Exec of `echo hi` through the runtime's streaming server
//! (the URL from the Exec RPC, upgraded by krio's own client, `krio-stream`, over SPDY and over
//! WebSocket), ExecSync of the same command, and the memory of a container's monitor (krio) or shim
//! (containerd) with and without an attach client connected.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use krio_cri::v1::{AttachRequest, ExecRequest, ExecSyncRequest};
use krio_stream::client::{upgrade, TlsOptions, Transport};
use krio_stream::conn::ClientSession;
use krio_stream::remotecommand::{
    parse_error_stream, Outcome, StreamOptions, SPDY_PROTOCOLS, WEBSOCKET_PROTOCOLS,
};
use tokio::sync::mpsc;

use super::{drop_pod_logs, ensure_image, finish_run, start_pod, teardown_pod, PodTemplate};
use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::procfs::{smaps_rollup, MemUsage, ProcMatcher};
use crate::results::{ms_since, Unit, WorkloadResult};

/// The command run by every exec: its stdout must be exactly [`EXEC_OUTPUT`].
pub const EXEC_COMMAND: &[&str] = &["echo", "hi"];
/// What [`EXEC_COMMAND`] prints.
pub const EXEC_OUTPUT: &[u8] = b"hi\n";
/// Upper bound on one exec or attach exchange.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Sizes of the stream workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamParams {
    /// Timed execs per transport (and ExecSyncs).
    pub exec_runs: usize,
    /// Untimed execs of each kind first.
    pub warmup: usize,
    /// Wait before each memory reading (lets allocations settle).
    pub settle: Duration,
}

impl StreamParams {
    /// 100 execs of each kind, 5 warm-ups, 1 s settle.
    pub const FULL: StreamParams = StreamParams {
        exec_runs: 100,
        warmup: 5,
        settle: Duration::from_secs(1),
    };
    /// 5 execs of each kind, 1 warm-up, 0.2 s settle.
    pub const QUICK: StreamParams = StreamParams {
        exec_runs: 5,
        warmup: 1,
        settle: Duration::from_millis(200),
    };
}

fn stream_err(call: &'static str, id: &str, reason: impl std::fmt::Display) -> BenchError {
    BenchError::Stream {
        call,
        context: id.to_owned(),
        reason: reason.to_string(),
    }
}

/// Upgrades a streaming URL with krio's client and opens the streams `opts` asks for.
async fn open_session(
    call: &'static str,
    id: &str,
    url: &str,
    transport: Transport,
    opts: StreamOptions,
) -> Result<ClientSession> {
    let offers = match transport {
        Transport::Spdy => SPDY_PROTOCOLS,
        Transport::WebSocket => WEBSOCKET_PROTOCOLS,
    };
    let (io, protocol) = upgrade(url, transport, offers, &TlsOptions::default())
        .await
        .map_err(|e| stream_err(call, id, format!("upgrading {url}: {e}")))?;
    Ok(match transport {
        Transport::Spdy => ClientSession::connect_spdy(io, &protocol, opts)
            .await
            .map_err(|e| stream_err(call, id, format!("opening SPDY streams: {e}")))?,
        Transport::WebSocket => ClientSession::connect_websocket(io, &protocol, opts).await,
    })
}

async fn drain(rx: Option<&mut mpsc::Receiver<Bytes>>) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(rx) = rx {
        while let Some(c) = rx.recv().await {
            v.extend_from_slice(&c);
        }
    }
    v
}

/// One `Exec` of [`EXEC_COMMAND`] in container `id` plus its stream over `transport`, timed from
/// before the Exec RPC until the stream has ended with exit code 0 (milliseconds).
///
/// # Errors
/// [`BenchError::Rpc`] from Exec; [`BenchError::Stream`] if the upgrade fails, the output is not
/// [`EXEC_OUTPUT`] or the exit status is not 0; [`BenchError::Timeout`] after 30 s.
pub async fn exec_once(client: &CriClient, id: &str, transport: Transport) -> Result<f64> {
    let mut rt = client.runtime.clone();
    let t = Instant::now();
    let work = async {
        let url = rt
            .exec(ExecRequest {
                container_id: id.to_owned(),
                cmd: EXEC_COMMAND.iter().map(|s| (*s).to_owned()).collect(),
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await
            .map_err(|s| BenchError::rpc("Exec", id, s))?
            .into_inner()
            .url;
        let opts = StreamOptions {
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let mut s = open_session("Exec", id, &url, transport, opts).await?;
        let (mut out_rx, mut err_rx) = (s.stdout.take(), s.stderr.take());
        let (out, err, status) = tokio::join!(
            drain(out_rx.as_mut()),
            drain(err_rx.as_mut()),
            drain(Some(&mut s.error))
        );
        let ms = ms_since(t);
        s.close().await;
        match parse_error_stream(&s.protocol, &status) {
            Outcome::Exited(0) => {}
            o => {
                return Err(stream_err(
                    "Exec",
                    id,
                    format!(
                        "{:?} (protocol {}, stderr {:?})",
                        o,
                        s.protocol,
                        String::from_utf8_lossy(&err)
                    ),
                ))
            }
        }
        if out != EXEC_OUTPUT {
            return Err(stream_err(
                "Exec",
                id,
                format!(
                    "stdout {:?}, expected {:?}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(EXEC_OUTPUT)
                ),
            ));
        }
        Ok(ms)
    };
    tokio::time::timeout(STREAM_TIMEOUT, work)
        .await
        .map_err(|_| BenchError::Timeout {
            what: format!("exec of {EXEC_COMMAND:?} in {id} over {transport:?} to end"),
            waited_ms: STREAM_TIMEOUT.as_millis() as u64,
        })?
}

/// One `ExecSync` of [`EXEC_COMMAND`] in container `id`, timed (milliseconds).
///
/// # Errors
/// [`BenchError::Rpc`]; [`BenchError::Stream`] if the exit code or output is wrong.
pub async fn exec_sync_once(client: &CriClient, id: &str) -> Result<f64> {
    let mut rt = client.runtime.clone();
    let t = Instant::now();
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: EXEC_COMMAND.iter().map(|s| (*s).to_owned()).collect(),
            timeout: 30,
        })
        .await
        .map_err(|s| BenchError::rpc("ExecSync", id, s))?
        .into_inner();
    let ms = ms_since(t);
    if r.exit_code != 0 || r.stdout != EXEC_OUTPUT {
        return Err(stream_err(
            "ExecSync",
            id,
            format!(
                "exit code {}, stdout {:?}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout)
            ),
        ));
    }
    Ok(ms)
}

/// Sums the memory of `pids` (processes that vanished are skipped).
fn sum_memory(pids: &[u32]) -> MemUsage {
    let mut total = MemUsage::default();
    for p in pids {
        if let Ok(m) = smaps_rollup(*p) {
            total.rss_bytes += m.rss_bytes;
            total.pss_bytes += m.pss_bytes;
        }
    }
    total
}

/// Runs the workload. Metrics: `exec` (SPDY) and `exec_websocket` (ms, [`exec_once`]),
/// `exec_sync` (ms, [`exec_sync_once`]), all in one running container, interleaved; then, for a
/// pod whose container runs `cat` with stdin open, the Rss and Pss (bytes) of the helper
/// processes that appeared with that pod (krio: its `krio-monitor`; containerd: the pod's shim)
/// without a client (`monitor_rss_no_client`, `monitor_pss_no_client`) and with one attach client
/// connected over SPDY that has sent a line and read it back (`monitor_rss_attached`,
/// `monitor_pss_attached`). Pods are removed at the end, also on failure.
///
/// # Errors
/// Any CRI or streaming error; [`BenchError::InvalidParam`] for zero runs or when no helper
/// process appeared for the attach pod.
pub async fn run(
    client: &CriClient,
    tpl: &PodTemplate,
    procs: &ProcMatcher,
    runtime: &str,
    round: u32,
    p: StreamParams,
) -> Result<WorkloadResult> {
    if p.exec_runs == 0 {
        return Err(BenchError::InvalidParam {
            field: "exec_runs",
            reason: "must be at least 1".to_owned(),
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
    p: StreamParams,
) -> Result<WorkloadResult> {
    ensure_image(client, &tpl.image).await?;
    let mut r = WorkloadResult::new(runtime, "stream", round);
    r.param("exec_runs", p.exec_runs);
    r.param("exec_command", EXEC_COMMAND.to_vec());
    r.param("attach_command", vec!["/bin/cat"]);
    let exec_name = format!("stream-r{round}-exec");
    let pod = start_pod(client, tpl, &exec_name, 1).await?;
    let id = pod.container_ids[0].clone();
    for i in 0..p.warmup + p.exec_runs {
        let spdy = exec_once(client, &id, Transport::Spdy).await?;
        let ws = exec_once(client, &id, Transport::WebSocket).await?;
        let sync = exec_sync_once(client, &id).await?;
        if i >= p.warmup {
            r.push("exec", Unit::Ms, spdy);
            r.push("exec_websocket", Unit::Ms, ws);
            r.push("exec_sync", Unit::Ms, sync);
        }
    }
    teardown_pod(client, &pod.pod_id).await?;
    drop_pod_logs(tpl, &exec_name);

    // Monitor memory with and without an attach client.
    let before: BTreeSet<u32> = procs.monitors()?.into_iter().collect();
    let mut atpl = tpl.clone();
    atpl.stdin = true;
    atpl.command = vec!["/bin/cat".to_owned()];
    let attach_name = format!("stream-r{round}-attach");
    let pod = start_pod(client, &atpl, &attach_name, 1).await?;
    let id = pod.container_ids[0].clone();
    let helpers: Vec<u32> = procs
        .monitors()?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if helpers.is_empty() {
        return Err(BenchError::InvalidParam {
            field: "monitor_names",
            reason: format!(
                "no new {:?} process appeared for the attach pod",
                procs.monitor_names
            ),
        });
    }
    r.param("attach_helpers", helpers.len());
    tokio::time::sleep(p.settle).await;
    let idle = sum_memory(&helpers);
    r.push("monitor_rss_no_client", Unit::Bytes, idle.rss_bytes as f64);
    r.push("monitor_pss_no_client", Unit::Bytes, idle.pss_bytes as f64);
    let session = attach_echo(client, &id).await?;
    tokio::time::sleep(p.settle).await;
    let att = sum_memory(&helpers);
    r.push("monitor_rss_attached", Unit::Bytes, att.rss_bytes as f64);
    r.push("monitor_pss_attached", Unit::Bytes, att.pss_bytes as f64);
    session.close().await;
    drop(session);
    teardown_pod(client, &pod.pod_id).await?;
    drop_pod_logs(&atpl, &attach_name);
    r.finish();
    Ok(r)
}

/// Attaches to container `id` (stdin, stdout, stderr over SPDY), writes a line and waits until the
/// container (`cat`) echoes it back. Returns the open session.
///
/// # Errors
/// [`BenchError::Rpc`], [`BenchError::Stream`], [`BenchError::Timeout`] after 30 s.
pub async fn attach_echo(client: &CriClient, id: &str) -> Result<ClientSession> {
    const LINE: &[u8] = b"krio-bench attach\n";
    let mut rt = client.runtime.clone();
    let work = async {
        let url = rt
            .attach(AttachRequest {
                container_id: id.to_owned(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .map_err(|s| BenchError::rpc("Attach", id, s))?
            .into_inner()
            .url;
        let opts = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let mut s = open_session("Attach", id, &url, Transport::Spdy, opts).await?;
        let stdin = s
            .stdin
            .clone()
            .ok_or_else(|| stream_err("Attach", id, "no stdin stream"))?;
        stdin
            .write(Bytes::from_static(LINE))
            .await
            .map_err(|e| stream_err("Attach", id, format!("writing stdin: {e}")))?;
        let rx = s
            .stdout
            .as_mut()
            .ok_or_else(|| stream_err("Attach", id, "no stdout stream"))?;
        let mut seen = Vec::new();
        while !seen.windows(LINE.len()).any(|w| w == LINE) {
            match rx.recv().await {
                Some(c) => seen.extend_from_slice(&c),
                None => {
                    return Err(stream_err(
                        "Attach",
                        id,
                        format!(
                            "stdout ended before the echo; got {:?}",
                            String::from_utf8_lossy(&seen)
                        ),
                    ))
                }
            }
        }
        Ok(s)
    };
    tokio::time::timeout(STREAM_TIMEOUT, work)
        .await
        .map_err(|_| BenchError::Timeout {
            what: format!("attach to {id} to echo a line"),
            waited_ms: STREAM_TIMEOUT.as_millis() as u64,
        })?
}
