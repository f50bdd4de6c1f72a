//! `krio-bench`: run CRI workloads against an endpoint, or pool results into BENCHMARKS.md.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use krio_bench::procfs::{listener_pid, ProcMatcher};
use krio_bench::report::Results;
use krio_bench::results::WorkloadResult;
use krio_bench::workloads::{
    self, busy, calls, floor, handler, memory, pull, restart, start, stream, PodTemplate,
};
use krio_bench::{plot, CriClient};

#[derive(Parser)]
#[command(
    name = "krio-bench",
    about = "Times CRI calls against a runtime endpoint."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Target {
    /// CRI endpoint: unix:///path or /path.
    #[arg(long)]
    endpoint: String,
    /// Runtime label used in results (containerd, krio, ...).
    #[arg(long)]
    runtime: String,
    /// Output directory for <runtime>-r<round>-<workload>.json.
    #[arg(long)]
    out: PathBuf,
    /// Round number in the alternating schedule.
    #[arg(long, default_value_t = 0)]
    round: u32,
    /// Daemon pid (default: the process listening on the endpoint's socket).
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Basename of the runtime's per-pod helper processes (repeatable). Default by runtime:
    /// containerd -> containerd-shim-runc-v2, krio -> krio-monitor.
    #[arg(long = "monitor-name")]
    monitor_names: Vec<String>,
    /// Command-line substring tying a helper to this daemon (repeatable; added to the socket path).
    #[arg(long = "proc-marker")]
    proc_markers: Vec<String>,
    /// runc --root directory of the runtime (repeatable): helpers that are ancestors of a container
    /// init recorded there count too (default for krio: <daemon's --state-dir>/runtime/runc).
    #[arg(long = "runc-root")]
    runc_roots: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run start/teardown, calls and memory workloads.
    Run {
        #[command(flatten)]
        target: Target,
        /// Comma-separated workloads: start (also writes teardown), calls, memory, stream (exec,
        /// exec_sync and the monitor's memory with an attach client), busy (RPC latency while pods
        /// start in parallel), handler (pod start and memory per pod under --runtime-handler; not
        /// in the default list).
        #[arg(
            long,
            default_value = "start,calls,memory,stream,busy",
            value_delimiter = ','
        )]
        workloads: Vec<String>,
        /// Tiny sizes, for tests.
        #[arg(long)]
        quick: bool,
        /// Image of the workload containers.
        #[arg(long, default_value = "127.0.0.1:5000/krio-test/busybox:latest")]
        image: String,
        /// Give pods log directories under this dir (created and removed by the driver).
        #[arg(long)]
        log_root: Option<PathBuf>,
        /// Run pods with host networking (no CNI).
        #[arg(long)]
        host_network: bool,
        /// cgroup_parent of every pod.
        #[arg(long, default_value = "")]
        cgroup_parent: String,
        /// Override: sequential start runs.
        #[arg(long)]
        seq_runs: Option<usize>,
        /// Override: pods per parallel round.
        #[arg(long)]
        par_width: Option<usize>,
        /// Override: parallel rounds.
        #[arg(long)]
        par_rounds: Option<usize>,
        /// Override: timed iterations of the calls workload.
        #[arg(long)]
        calls_iterations: Option<usize>,
        /// Override: memory levels (comma-separated running-pod counts).
        #[arg(long, value_delimiter = ',')]
        memory_levels: Option<Vec<usize>>,
        /// CRI `runtime_handler` of every pod (RuntimeClass handler); empty = the default one.
        #[arg(long, default_value = "")]
        runtime_handler: String,
        /// Label of the handler workload's results (`handler-<label>`), e.g. `runsc-pod`
        /// (default: the runtime handler, or `runc` when it is empty).
        #[arg(long)]
        handler_label: Option<String>,
        /// The handler's configuration in words, kept with the handler workload's results
        /// (e.g. `pod_sandbox = "pod"`).
        #[arg(long, default_value = "")]
        handler_config: String,
    },
    /// Time one PullImage (cold when the runtime's root is fresh, or with --remove-first).
    Pull {
        #[command(flatten)]
        target: Target,
        /// Image to pull.
        #[arg(long)]
        image: String,
        /// RemoveImage first.
        #[arg(long)]
        remove_first: bool,
        /// Seconds to wait after RemoveImage.
        #[arg(long, default_value_t = 0.0)]
        settle_secs: f64,
        /// Afterwards, time CreateContainer from the pulled image (in an untimed pod), to charge
        /// runtimes that unpack lazily.
        #[arg(long)]
        create_after: bool,
        /// Pods with host networking (no CNI), for --create-after.
        #[arg(long)]
        host_network: bool,
    },
    /// Start the restart workload's pods (10 pods × 10 containers, --quick 2 × 2) and write their
    /// ids to --ids-file; the caller then kills and restarts the daemon and runs `restart-wait`.
    RestartPrep {
        /// CRI endpoint.
        #[arg(long)]
        endpoint: String,
        /// Round number (names the pods).
        #[arg(long, default_value_t = 0)]
        round: u32,
        /// Runtime label (names the run id of the pods).
        #[arg(long)]
        runtime: String,
        /// Where to write the ids (JSON).
        #[arg(long)]
        ids_file: PathBuf,
        /// Image of the containers.
        #[arg(long, default_value = "127.0.0.1:5000/krio-test/busybox:latest")]
        image: String,
        /// Run pods with host networking (no CNI).
        #[arg(long)]
        host_network: bool,
        /// Tiny sizes, for tests.
        #[arg(long)]
        quick: bool,
    },
    /// After a daemon restart begun at --since-unix-us, poll until every container of
    /// --ids-file is listed RUNNING; record `<signal>_first_rpc` and `<signal>_all_running`.
    RestartWait {
        #[command(flatten)]
        target: Target,
        /// The ids file written by `restart-prep`.
        #[arg(long)]
        ids_file: PathBuf,
        /// When the daemon was started again, microseconds since the Unix epoch (bash:
        /// ${EPOCHREALTIME/./}).
        #[arg(long)]
        since_unix_us: u64,
        /// How the daemon was stopped (metric prefix): sigterm or sigkill.
        #[arg(long)]
        signal: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// The floor of pod start: netns + CNI ADD + overlay + runc create/start, done directly.
    /// Writes floor-r<round>-start.json and floor-r<round>-teardown.json.
    Floor {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Round number.
        #[arg(long, default_value_t = 0)]
        round: u32,
        /// The image's unpacked filesystem (overlay lower directory).
        #[arg(long)]
        lower: PathBuf,
        /// Scratch directory (absolute).
        #[arg(long)]
        work: PathBuf,
        /// The CNI conflist.
        #[arg(long)]
        conflist: PathBuf,
        /// CNI plugin directory.
        #[arg(long, default_value = "/usr/lib/cni")]
        cni_bin: PathBuf,
        /// runc binary.
        #[arg(long, default_value = "runc")]
        runc: PathBuf,
        /// Tiny sizes, for tests.
        #[arg(long)]
        quick: bool,
    },
    /// Stop and remove every pod the driver ever labelled on this endpoint.
    Cleanup {
        /// CRI endpoint.
        #[arg(long)]
        endpoint: String,
        /// Log root given to `run`, to remove pod log dirs too.
        #[arg(long)]
        log_root: Option<PathBuf>,
    },
    /// Pool per-round results into results.json, BENCHMARKS.md and an SVG plot.
    Report {
        /// Directory holding the per-round JSON files.
        #[arg(long = "in")]
        input: PathBuf,
        /// results.json to write (default: <in>/results.json).
        #[arg(long)]
        results: Option<PathBuf>,
        /// BENCHMARKS.md to write.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// SVG plot to write (default: <in>/start-latency.svg).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Markdown file with setup notes for the "Setup" section.
        #[arg(long)]
        notes: Option<PathBuf>,
        /// How BENCHMARKS.md links the plot and results (paths relative to the Markdown file).
        #[arg(long, default_value = "bench/out")]
        link_dir: String,
    },
}

fn matcher(t: &Target, client: &CriClient) -> anyhow::Result<ProcMatcher> {
    let daemon_pid = match t.daemon_pid {
        Some(p) => p,
        None => {
            listener_pid(client.socket()).context("finding the daemon pid (pass --daemon-pid)")?
        }
    };
    let mut m = ProcMatcher::for_runtime(&t.runtime, daemon_pid, client.socket());
    if !t.monitor_names.is_empty() {
        m.monitor_names = t.monitor_names.clone();
    }
    m.markers.extend(t.proc_markers.iter().cloned());
    if !t.runc_roots.is_empty() {
        m.runc_roots = t.runc_roots.clone();
    }
    Ok(m)
}

fn run_id(runtime: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rt: String = runtime
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect();
    format!("{rt}-{}-{secs}", std::process::id())
}

fn save(r: &WorkloadResult, out: &std::path::Path) -> anyhow::Result<()> {
    let p = r.write(out)?;
    eprintln!(
        "krio-bench: {} {} round {} -> {}",
        r.runtime,
        r.workload,
        r.round,
        p.display()
    );
    for (name, m) in &r.metrics {
        if let Some(s) = &m.summary {
            eprintln!(
                "    {name:<28} p50 {:>12.3}  p99 {:>12.3}  n {}  ({:?})",
                s.p50, s.p99, s.n, m.unit
            );
        }
    }
    Ok(())
}

async fn connect(endpoint: &str) -> anyhow::Result<CriClient> {
    CriClient::connect(endpoint)
        .await
        .with_context(|| format!("is the runtime running and serving CRI at {endpoint}?"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Run {
            target,
            workloads: wl,
            quick,
            image,
            log_root,
            cgroup_parent,
            host_network,
            seq_runs,
            par_width,
            par_rounds,
            calls_iterations,
            memory_levels,
            runtime_handler,
            handler_label,
            handler_config,
        } => {
            for w in &wl {
                if !["start", "calls", "memory", "stream", "busy", "handler"].contains(&w.as_str())
                {
                    bail!(
                        "--workloads: unknown workload {w:?} (start, calls, memory, stream, busy, \
                         handler)"
                    );
                }
            }
            let client = connect(&target.endpoint).await?;
            let mut tpl = PodTemplate::new(&image, &run_id(&target.runtime));
            tpl.log_root = log_root;
            tpl.cgroup_parent = cgroup_parent;
            tpl.host_network = host_network;
            tpl.runtime_handler = runtime_handler.clone();
            for w in &wl {
                match w.as_str() {
                    "start" => {
                        let mut p = if quick {
                            start::StartParams::QUICK
                        } else {
                            start::StartParams::FULL
                        };
                        p.sequential_runs = seq_runs.unwrap_or(p.sequential_runs);
                        p.parallel_width = par_width.unwrap_or(p.parallel_width);
                        p.parallel_rounds = par_rounds.unwrap_or(p.parallel_rounds);
                        let (s, d) =
                            start::run(&client, &tpl, &target.runtime, target.round, p).await?;
                        save(&s, &target.out)?;
                        save(&d, &target.out)?;
                    }
                    "calls" => {
                        let mut p = if quick {
                            calls::CallsParams::QUICK
                        } else {
                            calls::CallsParams::FULL
                        };
                        p.iterations = calls_iterations.unwrap_or(p.iterations);
                        let r = calls::run(&client, &tpl, &target.runtime, target.round, p).await?;
                        save(&r, &target.out)?;
                    }
                    "stream" => {
                        let procs = matcher(&target, &client)?;
                        let p = if quick {
                            stream::StreamParams::QUICK
                        } else {
                            stream::StreamParams::FULL
                        };
                        let r =
                            stream::run(&client, &tpl, &procs, &target.runtime, target.round, p)
                                .await?;
                        save(&r, &target.out)?;
                    }
                    "handler" => {
                        let procs = matcher(&target, &client)?;
                        let label = handler_label.clone().unwrap_or_else(|| {
                            if runtime_handler.is_empty() {
                                "runc".to_owned()
                            } else {
                                runtime_handler.clone()
                            }
                        });
                        let p = if quick {
                            handler::HandlerParams::QUICK
                        } else {
                            handler::HandlerParams::FULL
                        };
                        let spec = handler::HandlerSpec {
                            label,
                            config: handler_config.clone(),
                        };
                        let r = handler::run(
                            &client,
                            &tpl,
                            &procs,
                            &target.runtime,
                            target.round,
                            &spec,
                            p,
                        )
                        .await?;
                        save(&r, &target.out)?;
                    }
                    "busy" => {
                        let p = if quick {
                            busy::BusyParams::QUICK
                        } else {
                            busy::BusyParams::FULL
                        };
                        let r = busy::run(&client, &tpl, &target.runtime, target.round, p).await?;
                        save(&r, &target.out)?;
                    }
                    _ => {
                        let procs = matcher(&target, &client)?;
                        let mut p = if quick {
                            memory::MemoryParams::quick()
                        } else {
                            memory::MemoryParams::full()
                        };
                        if let Some(l) = &memory_levels {
                            p.levels = l.clone();
                        }
                        let r =
                            memory::run(&client, &tpl, &procs, &target.runtime, target.round, &p)
                                .await?;
                        save(&r, &target.out)?;
                    }
                }
            }
        }
        Cmd::Pull {
            target,
            image,
            remove_first,
            settle_secs,
            create_after,
            host_network,
        } => {
            if !(settle_secs.is_finite() && settle_secs >= 0.0) {
                bail!("--settle-secs must be a non-negative number");
            }
            let client = connect(&target.endpoint).await?;
            let procs = matcher(&target, &client)?;
            let p = pull::PullParams {
                image: image.clone(),
                remove_first,
                settle: Duration::from_secs_f64(settle_secs),
                sample_every: Duration::from_millis(10),
                create_after: create_after.then(|| {
                    let mut tpl = PodTemplate::new(&image, &run_id(&target.runtime));
                    tpl.host_network = host_network;
                    tpl
                }),
            };
            let r = pull::run(&client, &procs, &target.runtime, target.round, &p).await?;
            save(&r, &target.out)?;
        }
        Cmd::RestartPrep {
            endpoint,
            round,
            runtime,
            ids_file,
            image,
            host_network,
            quick,
        } => {
            let client = connect(&endpoint).await?;
            let mut tpl = PodTemplate::new(&image, &run_id(&runtime));
            tpl.host_network = host_network;
            let p = if quick {
                restart::RestartParams::QUICK
            } else {
                restart::RestartParams::FULL
            };
            let prep = restart::prepare(&client, &tpl, round, p, &ids_file).await?;
            eprintln!(
                "krio-bench: {} containers running in {} pods at {endpoint}",
                prep.container_ids.len(),
                prep.pod_ids.len()
            );
        }
        Cmd::RestartWait {
            target,
            ids_file,
            since_unix_us,
            signal,
            timeout_secs,
        } => {
            let text = std::fs::read_to_string(&ids_file)
                .with_context(|| format!("reading {}", ids_file.display()))?;
            let prep: restart::Prepared = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", ids_file.display()))?;
            let rec = restart::await_recovered(
                &target.endpoint,
                &prep,
                since_unix_us,
                Duration::from_secs(timeout_secs),
            )
            .await?;
            let r = restart::record(
                &target.out,
                &target.runtime,
                target.round,
                &signal,
                prep.container_ids.len(),
                rec,
            )?;
            save(&r, &target.out)?;
        }
        Cmd::Floor {
            out,
            round,
            lower,
            work,
            conflist,
            cni_bin,
            runc,
            quick,
        } => {
            let cfg = floor::FloorConfig {
                lower,
                work,
                conflist,
                cni_bin,
                runc,
                command: vec!["/bin/sleep".to_owned(), "3600".to_owned()],
            };
            let p = if quick {
                start::StartParams::QUICK
            } else {
                start::StartParams::FULL
            };
            let (s, d) = tokio::task::spawn_blocking(move || floor::run(cfg, round, p)).await??;
            save(&s, &out)?;
            save(&d, &out)?;
        }
        Cmd::Cleanup { endpoint, log_root } => {
            let client = connect(&endpoint).await?;
            let n = workloads::cleanup_labeled(&client, None, log_root.as_deref()).await?;
            eprintln!("krio-bench: removed {n} pod(s) at {endpoint}");
        }
        Cmd::Report {
            input,
            results,
            markdown,
            svg,
            notes,
            link_dir,
        } => {
            let res = Results::load_dir(&input)?;
            let results_path = results.unwrap_or_else(|| input.join("results.json"));
            res.write(&results_path)?;
            let svg_path = svg.unwrap_or_else(|| input.join("start-latency.svg"));
            plot::start_latency_svg(&res, &svg_path)?;
            eprintln!(
                "krio-bench: wrote {} and {}",
                results_path.display(),
                svg_path.display()
            );
            if let Some(md) = markdown {
                let notes = match notes {
                    Some(p) => std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                    None => String::new(),
                };
                let file = |p: &PathBuf| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                };
                // Cold pulls are numbered as rounds too (`--pull-runs`), so they do not count.
                let generated = format!(
                    "Runtimes: {}. Rounds: {}.",
                    res.runtimes.join(", "),
                    res.runs
                        .iter()
                        .filter(|r| r.workload != "pull")
                        .map(|r| r.round + 1)
                        .max()
                        .unwrap_or(0)
                );
                let text = res.render_markdown(
                    &format!("{link_dir}/{}", file(&results_path)),
                    &format!("{link_dir}/{}", file(&svg_path)),
                    &notes,
                    &generated,
                );
                std::fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
                eprintln!("krio-bench: wrote {}", md.display());
            }
        }
    }
    Ok(())
}
