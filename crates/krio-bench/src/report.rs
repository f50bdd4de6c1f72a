//! Pooling of per-round results into `results.json` and generation of `BENCHMARKS.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};
use crate::results::{Unit, WorkloadResult, SCHEMA_VERSION};
use crate::stats::Summary;
use crate::workloads::handler::WORKLOAD_PREFIX as HANDLER_PREFIX;

/// The runtime every ratio is relative to.
pub const BASELINE: &str = "containerd";
/// The runtime under test (numerator of every ratio).
pub const SUBJECT: &str = "krio";

const TEMPLATE: &str = include_str!("../templates/BENCHMARKS.md.in");
const WORKLOAD_ORDER: &[&str] = &[
    "start", "teardown", "calls", "busy", "stream", "restart", "memory", "pull",
];
/// Display order of metrics (digits stripped, so `total_pss_10pods` is `total_pss_pods`).
const METRIC_ORDER: &[&str] = &[
    "total",
    "parallel_total",
    "parallel_round_wall",
    "run_pod_sandbox",
    "create_container",
    "start_container",
    "netns",
    "cni_add",
    "rootfs_mount",
    "runc_create",
    "runc_start",
    "stop_pod_sandbox",
    "remove_pod_sandbox",
    "runc_delete",
    "cni_del",
    "status",
    "version",
    "list_containers",
    "list_pod_sandbox",
    "list_images",
    "container_status",
    "teardown_pod",
    "list_containers_during_start",
    "container_status_during_start",
    "list_containers_during_teardown",
    "container_status_during_teardown",
    "exec",
    "exec_websocket",
    "exec_sync",
    "monitor_rss_no_client",
    "monitor_rss_attached",
    "monitor_pss_no_client",
    "monitor_pss_attached",
    "sigterm_first_rpc",
    "sigterm_all_running",
    "sigkill_first_rpc",
    "sigkill_all_running",
    "daemon_rss_idle",
    "total_pss_pods",
    "daemon_pss_pods",
    "monitors_pss_pods",
    "monitor_count_pods",
    "daemon_rss_pods",
    "pull",
    "pull_parallel",
    "create_container_after_pull",
    "pull_and_create",
    "peak_rss",
    "daemon_peak_rss",
    "daemon_hwm",
    "image_size",
];

type SamplesByRuntime = BTreeMap<String, Vec<f64>>;

/// One (workload, metric) with every runtime's pooled summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// Metric name within the workload.
    pub metric: String,
    /// Unit of the summaries.
    pub unit: Unit,
    /// Summary of all samples of all rounds, by runtime label.
    pub by_runtime: BTreeMap<String, Summary>,
    /// `krio p50 / containerd p50`, when both exist and the denominator is non-zero.
    pub ratio_p50: Option<f64>,
    /// `krio p99 / containerd p99`, likewise.
    pub ratio_p99: Option<f64>,
}

/// The content of `results.json`: pooled rows plus every raw per-round result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Runtime labels present, baseline first, then subject, then others alphabetically.
    pub runtimes: Vec<String>,
    /// Pooled rows in display order.
    pub rows: Vec<Row>,
    /// Every per-round result the rows were pooled from.
    pub runs: Vec<WorkloadResult>,
}

fn ratio(a: Option<&Summary>, b: Option<&Summary>, f: fn(&Summary) -> f64) -> Option<f64> {
    let (a, b) = (f(a?), f(b?));
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn workload_rank(w: &str) -> usize {
    WORKLOAD_ORDER
        .iter()
        .position(|x| *x == w)
        .unwrap_or(WORKLOAD_ORDER.len())
}

/// Ordering key: position in [`METRIC_ORDER`], then name stem, then the number in the name
/// (so `total_pss_10pods` sorts after `_0pods` and before `_50pods`).
fn metric_key(m: &str) -> (usize, String, u64) {
    let digits: String = m.chars().filter(|c| c.is_ascii_digit()).collect();
    let stem: String = m.chars().filter(|c| !c.is_ascii_digit()).collect();
    let rank = METRIC_ORDER
        .iter()
        .position(|x| *x == stem)
        .unwrap_or(METRIC_ORDER.len());
    (rank, stem, digits.parse().unwrap_or(0))
}

impl Results {
    /// Pools `runs` by (workload, metric, runtime), concatenating samples of all rounds.
    pub fn pool(runs: Vec<WorkloadResult>) -> Results {
        let mut samples: BTreeMap<(String, String), (Unit, SamplesByRuntime)> = BTreeMap::new();
        let mut names = BTreeSet::new();
        for r in &runs {
            names.insert(r.runtime.clone());
            for (m, metric) in &r.metrics {
                let e = samples
                    .entry((r.workload.clone(), m.clone()))
                    .or_insert_with(|| (metric.unit, BTreeMap::new()));
                e.1.entry(r.runtime.clone())
                    .or_default()
                    .extend(&metric.samples);
            }
        }
        let mut rows: Vec<Row> = samples
            .into_iter()
            .map(|((workload, metric), (unit, by))| {
                let by_runtime: BTreeMap<String, Summary> = by
                    .into_iter()
                    .filter_map(|(rt, s)| Summary::from_samples(&s).map(|s| (rt, s)))
                    .collect();
                Row {
                    ratio_p50: ratio(by_runtime.get(SUBJECT), by_runtime.get(BASELINE), |s| s.p50),
                    ratio_p99: ratio(by_runtime.get(SUBJECT), by_runtime.get(BASELINE), |s| s.p99),
                    workload,
                    metric,
                    unit,
                    by_runtime,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            (
                workload_rank(&a.workload),
                &a.workload,
                metric_key(&a.metric),
            )
                .cmp(&(
                    workload_rank(&b.workload),
                    &b.workload,
                    metric_key(&b.metric),
                ))
        });
        let mut runtimes: Vec<String> = Vec::new();
        for fixed in [BASELINE, SUBJECT] {
            if names.remove(fixed) {
                runtimes.push(fixed.to_owned());
            }
        }
        runtimes.extend(names);
        Results {
            schema: SCHEMA_VERSION,
            runtimes,
            rows,
            runs,
        }
    }

    /// Reads every `*.json` in `dir` except `results.json` as a [`WorkloadResult`] and pools them.
    ///
    /// # Errors
    /// [`BenchError::Io`]/[`BenchError::Json`] for unreadable files; [`BenchError::InvalidParam`] if none.
    pub fn load_dir(dir: &Path) -> Result<Results> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| BenchError::io("listing", dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name().is_some_and(|n| n != "results.json")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(BenchError::InvalidParam {
                field: "in",
                reason: format!("no per-workload *.json results in {}", dir.display()),
            });
        }
        let runs = files
            .iter()
            .map(|p| WorkloadResult::read(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Results::pool(runs))
    }

    /// Writes `results.json`.
    ///
    /// # Errors
    /// [`BenchError::Io`]/[`BenchError::Json`].
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| BenchError::Json {
            path: path.to_owned(),
            source,
        })?;
        fs::write(path, text).map_err(|e| BenchError::io("writing", path, e))
    }

    /// The row for (workload, metric), if present.
    pub fn row(&self, workload: &str, metric: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.workload == workload && r.metric == metric)
    }

    /// All samples of (workload, metric) for `runtime`, pooled over rounds in round order.
    pub fn samples(&self, runtime: &str, workload: &str, metric: &str) -> Vec<f64> {
        let mut runs: Vec<&WorkloadResult> = self
            .runs
            .iter()
            .filter(|r| r.runtime == runtime && r.workload == workload)
            .collect();
        runs.sort_by_key(|r| r.round);
        runs.iter()
            .filter_map(|r| r.metrics.get(metric))
            .flat_map(|m| m.samples.iter().copied())
            .collect()
    }

    /// The Markdown table: one line per (workload, metric); for each runtime `p50 / p99`, then ratios.
    pub fn markdown_table(&self) -> String {
        let mut out = String::from("| workload | metric | unit |");
        for rt in &self.runtimes {
            out.push_str(&format!(" {rt} p50 / p99 |"));
        }
        out.push_str(&format!(
            " {SUBJECT}/{BASELINE} p50 | {SUBJECT}/{BASELINE} p99 | n |\n"
        ));
        out.push_str("|---|---|---|");
        for _ in &self.runtimes {
            out.push_str("---:|");
        }
        out.push_str("---:|---:|---:|\n");
        for row in self
            .rows
            .iter()
            .filter(|r| !is_handler_workload(&r.workload))
        {
            let unit = match row.unit {
                Unit::Ms => "ms",
                Unit::Bytes => "MiB",
                Unit::Count => "count",
            };
            out.push_str(&format!("| {} | {} | {unit} |", row.workload, row.metric));
            for rt in &self.runtimes {
                match row.by_runtime.get(rt) {
                    Some(s) => out.push_str(&format!(
                        " {} / {} |",
                        fmt_value(row.unit, s.p50),
                        fmt_value(row.unit, s.p99)
                    )),
                    None => out.push_str(" — |"),
                }
            }
            let n: Vec<String> = self
                .runtimes
                .iter()
                .filter_map(|rt| row.by_runtime.get(rt).map(|s| s.n.to_string()))
                .collect();
            out.push_str(&format!(
                " {} | {} | {} |\n",
                fmt_ratio(row.ratio_p50),
                fmt_ratio(row.ratio_p99),
                n.join("/")
            ));
        }
        out
    }

    /// Fills the `BENCHMARKS.md` template: table, plot path (relative to the Markdown file), the
    /// caller's setup notes (Markdown) and the generation line.
    pub fn render_markdown(
        &self,
        results_path: &str,
        plot_path: &str,
        notes: &str,
        generated: &str,
    ) -> String {
        let param = |w: &str, k: &str| -> String {
            self.runs
                .iter()
                .find(|r| r.workload == w)
                .and_then(|r| r.params.get(k))
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".to_owned())
        };
        let calls_containers = match (
            param("calls", "pods").parse::<u64>(),
            param("calls", "containers_per_pod").parse::<u64>(),
        ) {
            (Ok(a), Ok(b)) => format!("{} ({a} pods × {b})", a * b),
            _ => "?".to_owned(),
        };
        let restart_containers = self
            .runs
            .iter()
            .find(|r| r.workload == "restart")
            .and_then(|r| r.params.get("containers"))
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".to_owned());
        TEMPLATE
            .replace("{{RESULTS}}", results_path)
            .replace("{{BUSY_BG}}", &param("busy", "background_containers"))
            .replace("{{BUSY_WIDTH}}", &param("busy", "parallel_width"))
            .replace("{{BUSY_ROUNDS}}", &param("busy", "rounds"))
            .replace("{{RESTART_CONTAINERS}}", &restart_containers)
            .replace("{{GENERATED}}", generated)
            .replace("{{TABLE}}", &self.markdown_table())
            .replace("{{HANDLERS}}", &self.handler_section())
            .replace("{{PLOT}}", plot_path)
            .replace("{{PAR_WIDTH}}", &param("start", "parallel_width"))
            .replace("{{CALLS_CONTAINERS}}", &calls_containers)
            .replace("{{NOTES}}", notes.trim())
    }
}

/// Whether a workload name is a per-handler one (`handler-<label>`), shown in its own section.
fn is_handler_workload(w: &str) -> bool {
    w.starts_with(HANDLER_PREFIX)
}

/// Display rank of a handler label: runc, runsc, runsc-pod, youki, then the rest.
fn handler_rank(label: &str) -> (usize, String) {
    let known = ["runc", "runsc", "runsc-pod", "youki"];
    (
        known
            .iter()
            .position(|k| *k == label)
            .unwrap_or(known.len()),
        label.to_owned(),
    )
}

fn param_str(r: &WorkloadResult, k: &str) -> Option<String> {
    r.params.get(k).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

impl Results {
    /// The summary of (`handler-<label>`, metric) for `runtime`, if measured.
    fn handler_summary(&self, runtime: &str, label: &str, metric: &str) -> Option<&Summary> {
        self.row(&format!("{HANDLER_PREFIX}{label}"), metric)?
            .by_runtime
            .get(runtime)
    }

    /// The "Per runtime handler" section: one line per (runtime, handler) measured or skipped,
    /// with pod start and memory per pod and their ratios to containerd with runc
    /// ([`BASELINE`] with handler label `runc`), then what was counted per pod.
    pub fn handler_section(&self) -> String {
        let mut entries: Vec<(String, String)> = Vec::new();
        for r in &self.runs {
            if let Some(label) = r.workload.strip_prefix(HANDLER_PREFIX) {
                let e = (r.runtime.clone(), label.to_owned());
                if !entries.contains(&e) {
                    entries.push(e);
                }
            }
        }
        if entries.is_empty() {
            return "Not measured in this run (`bench/run.sh` measures it; `--handlers` chooses \
                    which)."
                .to_owned();
        }
        entries.sort_by_key(|(rt, label)| (rt != BASELINE, handler_rank(label), rt.clone()));
        let reference = |m: &str| self.handler_summary(BASELINE, "runc", m);
        let mut out = String::from(
            "| runtime + handler | handler configuration | pod start p50 / p99 (ms) | \
             ratio p50 / p99 | teardown p50 / p99 (ms) | Pss per pod (MiB) | ratio | \
             Rss per pod (MiB) | ratio | processes per pod | n (starts / memory reads) |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut skipped = Vec::new();
        let mut counted = Vec::new();
        for (rt, label) in &entries {
            let workload = format!("{HANDLER_PREFIX}{label}");
            let mut runs: Vec<&WorkloadResult> = self
                .runs
                .iter()
                .filter(|r| &r.runtime == rt && r.workload == workload)
                .collect();
            runs.sort_by_key(|r| r.round);
            let last = runs.iter().rev().find(|r| !r.metrics.is_empty()).copied();
            let handler = runs
                .iter()
                .find_map(|r| param_str(r, "runtime_handler"))
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("{label} (default)"));
            let name = if rt == BASELINE && label == "runc" {
                format!("**{rt} + {handler}** (reference)")
            } else {
                format!("{rt} + {handler}")
            };
            let Some(last) = last else {
                let why = runs
                    .iter()
                    .find_map(|r| param_str(r, "skipped"))
                    .unwrap_or_else(|| "no results".to_owned());
                out.push_str(&format!(
                    "| {rt} + {label} | skipped: {why} | — | — | — | — | — | — | — | — | — |\n"
                ));
                skipped.push(format!("{rt} + {label}: {why}"));
                continue;
            };
            let config = param_str(last, "handler_config").unwrap_or_default();
            let get = |m: &str| self.handler_summary(rt, label, m);
            let pair = |m: &str| {
                get(m).map_or("—".to_owned(), |s| {
                    format!(
                        "{} / {}",
                        fmt_value(Unit::Ms, s.p50),
                        fmt_value(Unit::Ms, s.p99)
                    )
                })
            };
            let one =
                |m: &str, unit: Unit| get(m).map_or("—".to_owned(), |s| fmt_value(unit, s.p50));
            let r50 = |m: &str| fmt_ratio(ratio(get(m), reference(m), |s| s.p50));
            let start_ratio = format!(
                "{} / {}",
                r50("pod_start"),
                fmt_ratio(ratio(get("pod_start"), reference("pod_start"), |s| s.p99))
            );
            let n = format!(
                "{} / {}",
                get("pod_start").map_or(0, |s| s.n),
                get("pss_per_pod").map_or(0, |s| s.n)
            );
            out.push_str(&format!(
                "| {name} | {} | {} | {start_ratio} | {} | {} | {} | {} | {} | {} | {n} |\n",
                if config.is_empty() { "—" } else { &config },
                pair("pod_start"),
                pair("teardown"),
                one("pss_per_pod", Unit::Bytes),
                r50("pss_per_pod"),
                one("rss_per_pod", Unit::Bytes),
                r50("rss_per_pod"),
                one("processes_per_pod", Unit::Count),
            ));
            let procs: Vec<String> = match (
                last.params.get("processes").and_then(|v| v.as_object()),
                last.params
                    .get("pss_by_process")
                    .and_then(|v| v.as_object()),
            ) {
                (Some(c), Some(p)) => c
                    .iter()
                    .map(|(k, v)| {
                        let n = v.as_f64().unwrap_or(0.0);
                        let pss = p.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
                        format!(
                            "`{k}` × {} ({} MiB)",
                            fmt_value(Unit::Count, n),
                            fmt_value(Unit::Bytes, pss)
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            };
            counted.push(format!(
                "- {rt} + {handler}: {}",
                if procs.is_empty() {
                    "—".to_owned()
                } else {
                    procs.join(", ")
                }
            ));
        }
        let param = |k: &str| {
            self.runs
                .iter()
                .filter(|r| is_handler_workload(&r.workload))
                .find_map(|r| param_str(r, k))
                .unwrap_or_else(|| "?".to_owned())
        };
        out.push_str(&format!(
            "\n*Pod start*: RunPodSandbox, CreateContainer and StartContainer of one container \
             (busybox `sleep 3600`), then ContainerStatus polled until `CONTAINER_RUNNING`; {} pods \
             one after another per round, each torn down (StopPodSandbox + RemovePodSandbox = \
             *teardown*) before the next. *Memory per pod*: with {} pods running at once (one \
             container each), the sum of Pss (and of Rss) from `/proc/<pid>/smaps_rollup` over the \
             runtime's per-pod helper processes (krio's `krio-monitor`, containerd's \
             `containerd-shim-runc-v2`) and **every process below them**: the container's own \
             process, and whatever the runtime keeps running for the pod (runsc's Sentry \
             `runsc-sandbox`, its Gofer `runsc-gofer` and, with `--platform=ptrace`, the stub \
             processes; containerd's pause container), divided by the number of pods; one value \
             per round. The daemon is not counted here (the *memory* rows above have it). Pss \
             divides shared pages among the processes using them; Rss counts them in every \
             process. The ratios are to containerd with runc, measured in the same run, the \
             runtimes alternating in each round.\n",
            param("sequential_runs"),
            param("memory_pods"),
        ));
        out.push_str("\nProcesses counted per pod (last round; Pss per pod in brackets):\n\n");
        out.push_str(&counted.join("\n"));
        out.push('\n');
        if !skipped.is_empty() {
            out.push_str(&format!("\nNot measured: {}.\n", skipped.join("; ")));
        }
        out
    }
}

/// Formats a value for the table: ms with 3 significant figures, bytes as MiB with one decimal.
pub fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Ms if v.abs() >= 100.0 => format!("{v:.0}"),
        Unit::Ms if v.abs() >= 10.0 => format!("{v:.1}"),
        Unit::Ms => format!("{v:.2}"),
        Unit::Bytes => format!("{:.1}", v / (1024.0 * 1024.0)),
        Unit::Count if v.fract() == 0.0 => format!("{v:.0}"),
        Unit::Count => format!("{v:.1}"),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}"))
        .unwrap_or_else(|| "—".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rt: &str, wl: &str, round: u32, metric: &str, unit: Unit, v: &[f64]) -> WorkloadResult {
        let mut r = WorkloadResult::new(rt, wl, round);
        r.param("parallel_width", 10);
        for x in v {
            r.push(metric, unit, *x);
        }
        r.finish();
        r
    }

    #[test]
    fn pools_rounds_and_ratios() {
        let res = Results::pool(vec![
            run("krio", "start", 0, "total", Unit::Ms, &[10.0, 20.0]),
            run("containerd", "start", 0, "total", Unit::Ms, &[40.0]),
            run("containerd", "start", 1, "total", Unit::Ms, &[60.0]),
            run("krio", "start", 1, "total", Unit::Ms, &[30.0]),
            run("floor", "pull", 0, "pull", Unit::Ms, &[5.0]),
            run(
                "containerd",
                "memory",
                0,
                "total_pss_50pods",
                Unit::Bytes,
                &[50.0 * 1048576.0],
            ),
            run(
                "containerd",
                "memory",
                0,
                "total_pss_10pods",
                Unit::Bytes,
                &[10.0 * 1048576.0],
            ),
            run(
                "containerd",
                "memory",
                0,
                "total_pss_0pods",
                Unit::Bytes,
                &[1048576.0],
            ),
            run(
                "containerd",
                "memory",
                0,
                "daemon_rss_idle",
                Unit::Bytes,
                &[1048576.0],
            ),
            run(
                "containerd",
                "start",
                0,
                "run_pod_sandbox",
                Unit::Ms,
                &[1.0],
            ),
            run("containerd", "start", 0, "aaa_unknown", Unit::Ms, &[1.0]),
        ]);
        assert_eq!(res.runtimes, vec!["containerd", "krio", "floor"]);
        let row = res.row("start", "total").unwrap();
        assert_eq!(row.by_runtime["krio"].n, 3);
        assert_eq!(row.by_runtime["krio"].p50, 20.0);
        assert_eq!(row.by_runtime["containerd"].p50, 50.0);
        assert!((row.ratio_p50.unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(
            res.samples("krio", "start", "total"),
            vec![10.0, 20.0, 30.0]
        );
        assert!(res.row("pull", "pull").unwrap().ratio_p50.is_none());
        // order: start before memory before pull; memory levels numeric
        let order: Vec<&str> = res.rows.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(
            order,
            vec![
                "total",
                "run_pod_sandbox",
                "aaa_unknown",
                "daemon_rss_idle",
                "total_pss_0pods",
                "total_pss_10pods",
                "total_pss_50pods",
                "pull"
            ]
        );
    }

    #[test]
    fn table_and_markdown() {
        let res = Results::pool(vec![
            run("containerd", "start", 0, "total", Unit::Ms, &[150.0, 250.0]),
            run("krio", "start", 0, "total", Unit::Ms, &[50.0, 50.0]),
            run(
                "containerd",
                "memory",
                0,
                "daemon_rss_idle",
                Unit::Bytes,
                &[45.0 * 1048576.0],
            ),
        ]);
        let t = res.markdown_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| workload | metric | unit | containerd p50 / p99 | krio p50 / p99 | krio/containerd p50 | krio/containerd p99 | n |");
        assert_eq!(
            lines[2],
            "| start | total | ms | 200 / 249 | 50.0 / 50.0 | 0.25 | 0.20 | 2/2 |"
        );
        assert_eq!(
            lines[3],
            "| memory | daemon_rss_idle | MiB | 45.0 / 45.0 | — | — | — | 1 |"
        );
        let md = res.render_markdown(
            "bench/out/results.json",
            "bench/out/start.svg",
            "\nnotes here\n",
            "gen",
        );
        assert!(md.contains("| start | total | ms | 200 / 249 |"));
        assert!(md.contains("![Start latency distributions](bench/out/start.svg)"));
        assert!(md.contains("notes here"));
        assert!(md.contains("10 pods at once"));
        assert!(!md.contains("{{"), "unfilled placeholder in:\n{md}");
    }

    #[test]
    fn new_workloads_order_and_describe() {
        let mut busy = run(
            "krio",
            "busy",
            0,
            "list_containers_during_start",
            Unit::Ms,
            &[1.0],
        );
        busy.param("background_containers", 10);
        busy.param("rounds", 5);
        let mut restart = run(
            "krio",
            "restart",
            0,
            "sigkill_all_running",
            Unit::Ms,
            &[9.0],
        );
        restart.push("sigterm_all_running", Unit::Ms, 8.0);
        restart.param("containers", 100);
        restart.finish();
        let res = Results::pool(vec![
            run("floor", "start", 0, "runc_create", Unit::Ms, &[3.0]),
            run("floor", "start", 0, "total", Unit::Ms, &[5.0]),
            run("krio", "start", 0, "total", Unit::Ms, &[7.0]),
            run("krio", "stream", 0, "exec_sync", Unit::Ms, &[2.0]),
            run("krio", "stream", 0, "exec", Unit::Ms, &[2.0]),
            restart,
            busy,
        ]);
        let order: Vec<(&str, &str)> = res
            .rows
            .iter()
            .map(|r| (r.workload.as_str(), r.metric.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("start", "total"),
                ("start", "runc_create"),
                ("busy", "list_containers_during_start"),
                ("stream", "exec"),
                ("stream", "exec_sync"),
                ("restart", "sigterm_all_running"),
                ("restart", "sigkill_all_running"),
            ]
        );
        assert_eq!(res.runtimes, vec!["krio", "floor"]);
        let md = res.render_markdown("r.json", "p.svg", "", "");
        assert!(md.contains("with 100 running containers, the daemon"));
        assert!(md.contains("a background pod with 10 running containers"));
        assert!(md.contains("5 such rounds"));
        assert!(!md.contains("{{"), "unfilled placeholder in:\n{md}");
    }

    fn handler_run(
        rt: &str,
        label: &str,
        handler: &str,
        start: &[f64],
        pss_mib: f64,
    ) -> WorkloadResult {
        let mut r = WorkloadResult::new(rt, &format!("handler-{label}"), 0);
        r.param("handler", label);
        r.param("runtime_handler", handler);
        r.param("handler_config", format!("cfg of {label}"));
        r.param("sequential_runs", start.len());
        r.param("memory_pods", 2);
        r.param(
            "processes",
            serde_json::json!({"krio-monitor": 1.0, "sleep": 1.0}),
        );
        r.param(
            "pss_by_process",
            serde_json::json!({"krio-monitor": 1048576.0, "sleep": 524288.0}),
        );
        for v in start {
            r.push("pod_start", Unit::Ms, *v);
            r.push("teardown", Unit::Ms, *v / 2.0);
        }
        r.push("pss_per_pod", Unit::Bytes, pss_mib * 1048576.0);
        r.push("rss_per_pod", Unit::Bytes, 2.0 * pss_mib * 1048576.0);
        r.push("processes_per_pod", Unit::Count, 2.0);
        r.finish();
        r
    }

    #[test]
    fn handler_section_ratios_skips_and_main_table() {
        let mut skipped = WorkloadResult::new("krio", "handler-youki", 0);
        skipped.param("skipped", "not installed (/usr/local/bin/youki missing)");
        let res = Results::pool(vec![
            run("krio", "start", 0, "total", Unit::Ms, &[7.0]),
            handler_run("krio", "runsc-pod", "runsc-pod", &[400.0], 40.0),
            handler_run("krio", "runc", "", &[50.0], 1.0),
            skipped,
            handler_run("containerd", "runc", "", &[100.0], 4.0),
        ]);
        // The main table has no per-handler rows.
        assert!(!res.markdown_table().contains("handler-"));
        let h = res.handler_section();
        let lines: Vec<&str> = h.lines().collect();
        assert!(lines[2].starts_with("| **containerd + runc (default)** (reference) | cfg of runc | 100 / 100 | 1.00 / 1.00 |"), "{h}");
        assert!(lines[3].starts_with("| krio + runc (default) | cfg of runc | 50.0 / 50.0 | 0.50 / 0.50 | 25.0 / 25.0 | 1.0 | 0.25 | 2.0 | 0.25 | 2 | 1 / 1 |"), "{h}");
        assert!(
            lines[4]
                .starts_with("| krio + runsc-pod | cfg of runsc-pod | 400 / 400 | 4.00 / 4.00 |"),
            "{h}"
        );
        assert!(lines[4].contains("| 40.0 | 10.00 |"), "{h}");
        assert!(
            lines[5].starts_with("| krio + youki | skipped: not installed"),
            "{h}"
        );
        assert!(
            h.contains("Not measured: krio + youki: not installed"),
            "{h}"
        );
        assert!(
            h.contains("- krio + runsc-pod: `krio-monitor` × 1 (1.0 MiB), `sleep` × 1 (0.5 MiB)"),
            "{h}"
        );
        assert!(h.contains("with 2 pods running at once"), "{h}");
        let md = res.render_markdown("r.json", "p.svg", "", "");
        assert!(md.contains("## Per runtime handler"));
        assert!(md.contains("| krio + runsc-pod |"));
        assert!(!md.contains("{{"), "unfilled placeholder in:\n{md}");
        let none = Results::pool(vec![run("krio", "start", 0, "total", Unit::Ms, &[7.0])]);
        assert!(none
            .handler_section()
            .starts_with("Not measured in this run"));
    }

    #[test]
    fn load_dir_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        run("krio", "start", 0, "total", Unit::Ms, &[1.0])
            .write(dir.path())
            .unwrap();
        run("containerd", "start", 0, "total", Unit::Ms, &[2.0])
            .write(dir.path())
            .unwrap();
        let res = Results::load_dir(dir.path()).unwrap();
        res.write(&dir.path().join("results.json")).unwrap();
        let again = Results::load_dir(dir.path()).unwrap();
        assert_eq!(again.runs.len(), 2);
        assert_eq!(again.row("start", "total").unwrap().ratio_p50, Some(0.5));
        assert!(Results::load_dir(tempfile::tempdir().unwrap().path()).is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_value(Unit::Ms, 1.234), "1.23");
        assert_eq!(fmt_value(Unit::Ms, 12.34), "12.3");
        assert_eq!(fmt_value(Unit::Ms, 123.4), "123");
        assert_eq!(fmt_value(Unit::Bytes, 1572864.0), "1.5");
        assert_eq!(fmt_value(Unit::Count, 3.0), "3");
    }
}
