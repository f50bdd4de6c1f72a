//! `ContainerStats`, `ListContainerStats`, `PodSandboxStats` and `ListPodSandboxStats`, read
//! from the cgroup files of containers and pods (cgroup v1 controllers or the v2 tree) and
//! from the containers' writable layers.
//!
//! kubelet uses these through its CRI stats provider for runtimes other than containerd and
//! CRI-O (the summary API, eviction), so they follow kubelet's meaning of each field:
//! working set = usage - inactive file pages; `usage_nano_cores` is the rate between this
//! sample and the previous one of the same cgroup.
//!
//! A container inside its pod's runtime sandbox (a handler with `pod_sandbox = "pod"`, runsc)
//! has a cgroup that holds no process: its CPU time comes from the runtime's
//! `events --stats` instead (an estimate, see [`cpu_shares`]), and it reports no memory, which
//! the runtime gives only for the whole sandbox (the pod's stats have it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use krio_cri::v1 as cri;

use super::sandbox_list::labels_match;
use crate::error::Result;
use crate::state::{now_ns, ContainerRecord, ContainerState, SandboxRecord, SandboxState};
use crate::{ids, Krio};

/// Deadline of one `<runtime> events --stats` call for a container in a pod's runtime
/// sandbox (runsc answers in about 30 ms here).
const RUNTIME_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Cgroup counters of one cgroup at one moment.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct CgroupSample {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory usage including page cache, bytes.
    pub memory_usage: Option<u64>,
    /// Inactive file-backed pages, bytes.
    pub inactive_file: Option<u64>,
    /// Anonymous resident memory, bytes.
    pub rss: Option<u64>,
    /// Memory limit, bytes (`None` when unlimited).
    pub memory_limit: Option<u64>,
    /// Page faults and major page faults.
    pub pgfault: Option<u64>,
    /// Major page faults.
    pub pgmajfault: Option<u64>,
    /// Number of processes.
    pub pids: Option<u64>,
    /// Pressure stall information of CPU, memory and IO (`cpu.pressure`, `memory.pressure`,
    /// `io.pressure`): cgroup v2 with PSI only.
    pub cpu_psi: Option<cri::PsiStats>,
    /// See `cpu_psi`.
    pub memory_psi: Option<cri::PsiStats>,
    /// See `cpu_psi`.
    pub io_psi: Option<cri::PsiStats>,
}

/// Parses a cgroup v2 `*.pressure` file (kernel `Documentation/accounting/psi.rst`):
/// `some avg10=0.12 avg60=0.05 avg300=0.01 total=12345` and the same for `full`; `total` is
/// microseconds of stall. `None` when the file is missing or has neither line.
fn read_psi(p: &Path) -> Option<cri::PsiStats> {
    let text = std::fs::read_to_string(p).ok()?;
    let mut out = cri::PsiStats::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next();
        let mut d = cri::PsiData::default();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => d.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => d.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => d.avg300 = v.parse().unwrap_or(0.0),
                "total" => d.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => out.some = Some(d),
            Some("full") => out.full = Some(d),
            _ => {}
        }
    }
    (out.some.is_some() || out.full.is_some()).then_some(out)
}

/// Limits at or above this are "unlimited" (cgroup v1 reports a huge page-rounded number).
const UNLIMITED: u64 = 1 << 62;

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn read_keyed(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Reads the counters of cgroup `path` (cgroupfs form, e.g. `/krio/pod-x/<id>`) under `root`
/// (normally `/sys/fs/cgroup`), from the v2 tree when `root` is one, else from the v1
/// controllers. Missing files leave fields `None`.
pub(crate) fn read_cgroup(root: &Path, path: &str) -> CgroupSample {
    let rel = path.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(rel);
        let cpu = read_keyed(&dir.join("cpu.stat"));
        let mem = read_keyed(&dir.join("memory.stat"));
        return CgroupSample {
            cpu_ns: cpu.get("usage_usec").map(|u| u * 1000),
            memory_usage: read_u64(&dir.join("memory.current")),
            inactive_file: mem.get("inactive_file").copied(),
            rss: mem.get("anon").copied(),
            memory_limit: read_u64(&dir.join("memory.max")).filter(|l| *l < UNLIMITED),
            pgfault: mem.get("pgfault").copied(),
            pgmajfault: mem.get("pgmajfault").copied(),
            pids: read_u64(&dir.join("pids.current")),
            cpu_psi: read_psi(&dir.join("cpu.pressure")),
            memory_psi: read_psi(&dir.join("memory.pressure")),
            io_psi: read_psi(&dir.join("io.pressure")),
        };
    }
    let mem_dir = root.join("memory").join(rel);
    let mem = read_keyed(&mem_dir.join("memory.stat"));
    CgroupSample {
        cpu_ns: read_u64(&root.join("cpuacct").join(rel).join("cpuacct.usage")),
        memory_usage: read_u64(&mem_dir.join("memory.usage_in_bytes")),
        inactive_file: mem.get("total_inactive_file").copied(),
        rss: mem.get("total_rss").copied(),
        memory_limit: read_u64(&mem_dir.join("memory.limit_in_bytes")).filter(|l| *l < UNLIMITED),
        pgfault: mem.get("total_pgfault").copied(),
        pgmajfault: mem.get("total_pgmajfault").copied(),
        pids: read_u64(&root.join("pids").join(rel).join("pids.current")),
        // cgroup v1 has no per-cgroup pressure files.
        ..Default::default()
    }
}

fn u64v(v: Option<u64>) -> Option<cri::UInt64Value> {
    v.map(|value| cri::UInt64Value { value })
}

/// Bytes (allocated blocks) and inodes used under `dir`, not following symlinks and not
/// crossing into other file systems' mounts.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    let dev = std::fs::symlink_metadata(dir).map(|m| m.dev()).ok();
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if Some(m.dev()) != dev {
                continue;
            }
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

impl Krio {
    /// CPU usage of a cached sample: cumulative time and the rate the sampler computed.
    fn cpu_usage(c: &Cached) -> cri::CpuUsage {
        cri::CpuUsage {
            timestamp: c.at,
            usage_core_nano_seconds: u64v(c.sample.cpu_ns),
            usage_nano_cores: u64v(c.nano_cores),
            psi: c.sample.cpu_psi,
        }
    }

    /// Samples container `rec` now (cgroup files, or the runtime's figures for a container
    /// in its pod's runtime sandbox, and a walk of its writable layer) and stores the sample
    /// in the cache. Blocking: the sampler runs it on a blocking thread, an RPC only for a
    /// container the sampler has not seen yet.
    pub(crate) fn sample_container(&self, rec: &ContainerRecord) -> Cached {
        if rec.subcontainer() {
            let cpu =
                self.runtime_sandbox_cpu(rec.sandbox_id(), rec.runtime_handler(), &[rec.id()]);
            return self.store_subcontainer_sample(rec, cpu.get(rec.id()).copied());
        }
        let sample = read_cgroup(Path::new("/sys/fs/cgroup"), rec.cgroups_path());
        self.store_container_sample(rec, sample)
    }

    fn store_container_sample(&self, rec: &ContainerRecord, sample: CgroupSample) -> Cached {
        let upper = self.container_data_dir(rec.id()).join("upper");
        let layer = disk_usage(&upper);
        self.stats_cache
            .update(rec.id(), now_ns(), sample, Some(layer))
    }

    /// Stores the sample of a container inside its pod's runtime sandbox: its CPU time from
    /// the runtime (`None` when the runtime gave none) and nothing else, since its own cgroup
    /// holds no process.
    fn store_subcontainer_sample(&self, rec: &ContainerRecord, cpu_ns: Option<u64>) -> Cached {
        let sample = CgroupSample {
            cpu_ns,
            ..Default::default()
        };
        self.store_container_sample(rec, sample)
    }

    /// Cumulative CPU time, nanoseconds, of containers `ids` of pod `pod_id`, whose containers
    /// share one runtime sandbox (`pod_sandbox = "pod"`), from `<runtime> events --stats` of
    /// the pod's handler (runsc), keyed by container id: [`Krio::ask_runtime_cpu`] then
    /// [`RuntimeCpuQuery::collect`]. Blocking (see `collect`).
    fn runtime_sandbox_cpu(
        &self,
        pod_id: &str,
        handler: &str,
        ids: &[&str],
    ) -> HashMap<String, u64> {
        self.ask_runtime_cpu(pod_id, handler, ids)
            .map(RuntimeCpuQuery::collect)
            .unwrap_or_default()
    }

    /// Starts the `<runtime> events --stats` calls for containers `ids` of pod `pod_id` and
    /// for its root container (the pod's id), concurrently on the async runtime, each with
    /// [`RUNTIME_STATS_TIMEOUT`]; `None` when the handler is unknown or no async runtime
    /// runs (nothing to ask with). The child processes are the runtime wrapper's: its
    /// binary, `--root` and global options, an environment of `PATH` alone.
    fn ask_runtime_cpu(
        &self,
        pod_id: &str,
        handler: &str,
        ids: &[&str],
    ) -> Option<RuntimeCpuQuery> {
        let rt = self.runtime(handler).ok()?.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                pod = pod_id,
                "runtime stats: no async runtime to run the calls on"
            );
            return None;
        };
        let mut asked: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        asked.push(pod_id.to_string());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let answers = futures::future::join_all(
                asked
                    .iter()
                    .map(|id| rt.events_stats(id, RUNTIME_STATS_TIMEOUT)),
            )
            .await;
            let _ = tx.send(asked.into_iter().zip(answers).collect());
        });
        Some(RuntimeCpuQuery {
            pod_id: pod_id.to_string(),
            // The calls end by their own deadline; this one only guards against an async
            // runtime too busy to run the task.
            deadline: std::time::Instant::now() + RUNTIME_STATS_TIMEOUT + Duration::from_secs(1),
            rx,
        })
    }

    /// Samples pod `sb`'s cgroup now and stores the sample in the cache.
    pub(crate) fn sample_sandbox(&self, sb: &SandboxRecord) -> Cached {
        let sample = read_cgroup(Path::new("/sys/fs/cgroup"), sb.cgroup_parent());
        self.stats_cache
            .update(&pod_cpu_key(sb.id()), now_ns(), sample, None)
    }

    /// One round of the background sampler: samples every live container and ready pod, then
    /// drops the cache entries of everything else. Blocking (file reads and directory walks).
    pub(crate) fn sample_all(&self) {
        let containers = self.live_containers();
        let pods: Vec<SandboxRecord> = self
            .sandboxes
            .all()
            .iter()
            .map(|s| s.snapshot())
            .filter(|s| s.state() == SandboxState::Ready)
            .collect();
        let mut keep = std::collections::HashSet::new();
        // Containers in a pod's runtime sandbox, by pod: one round of runtime calls per pod.
        let mut shared: HashMap<&str, Vec<&ContainerRecord>> = HashMap::new();
        for c in &containers {
            if c.subcontainer() {
                shared.entry(c.sandbox_id()).or_default().push(c);
            } else {
                self.sample_container(c);
            }
            keep.insert(c.id().to_string());
        }
        // Every pod's calls are started before the first is waited for.
        let queries: Vec<_> = shared
            .into_iter()
            .map(|(pod, members)| {
                let ids: Vec<&str> = members.iter().map(|c| c.id()).collect();
                let query = self.ask_runtime_cpu(pod, members[0].runtime_handler(), &ids);
                (members, query)
            })
            .collect();
        for (members, query) in queries {
            let cpu = query.map(RuntimeCpuQuery::collect).unwrap_or_default();
            for c in members {
                self.store_subcontainer_sample(c, cpu.get(c.id()).copied());
            }
        }
        for p in &pods {
            self.sample_sandbox(p);
            keep.insert(pod_cpu_key(p.id()));
        }
        self.stats_cache.retain(|k| keep.contains(k));
    }

    fn memory_usage(now: i64, s: &CgroupSample) -> cri::MemoryUsage {
        let working_set = s
            .memory_usage
            .map(|u| u.saturating_sub(s.inactive_file.unwrap_or(0)));
        cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: u64v(working_set),
            available_bytes: u64v(
                s.memory_limit
                    .zip(working_set)
                    .map(|(l, w)| l.saturating_sub(w)),
            ),
            usage_bytes: u64v(s.memory_usage),
            rss_bytes: u64v(s.rss),
            page_faults: u64v(s.pgfault),
            major_page_faults: u64v(s.pgmajfault),
            psi: s.memory_psi,
        }
    }

    /// The stats of container `rec` from the sampler's cache (sampled now when the sampler
    /// has not seen it yet).
    pub(crate) fn container_stats_of(&self, rec: &ContainerRecord) -> cri::ContainerStats {
        let c = self
            .stats_cache
            .get(rec.id())
            .unwrap_or_else(|| self.sample_container(rec));
        let upper: PathBuf = self.container_data_dir(rec.id()).join("upper");
        let (bytes, inodes) = c.layer.unwrap_or_default();
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: rec.id().to_string(),
                metadata: rec.config().metadata.clone(),
                labels: rec.config().labels.clone(),
                annotations: rec.config().annotations.clone(),
            }),
            cpu: Some(Self::cpu_usage(&c)),
            // A container in its pod's runtime sandbox has no memory figure of its own: its
            // cgroup holds no process, and runsc's figure is the whole sandbox's.
            memory: (!rec.subcontainer()).then(|| Self::memory_usage(c.at, &c.sample)),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: c.at,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: upper.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            }),
            swap: None,
            io: c.sample.io_psi.map(|psi| cri::IoUsage {
                timestamp: c.at,
                psi: Some(psi),
            }),
        }
    }

    /// CRI `ContainerStats`.
    ///
    /// Errors: `InvalidArgument` for a malformed id, `NotFound` for an unknown one.
    pub(crate) fn container_stats(
        &self,
        req: cri::ContainerStatsRequest,
    ) -> Result<cri::ContainerStatsResponse> {
        ids::validate("container_id", &req.container_id)?;
        let c = self.containers.get("container_id", &req.container_id)?;
        Ok(cri::ContainerStatsResponse {
            stats: Some(self.container_stats_of(&c.snapshot())),
        })
    }

    /// CRI `ListContainerStats`: created and running containers, filtered by id (prefix),
    /// sandbox id (prefix) and labels.
    pub(crate) fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse> {
        let f = req.filter.unwrap_or_default();
        let stats = self
            .live_containers()
            .into_iter()
            .filter(|r| {
                r.id().starts_with(&f.id)
                    && r.sandbox_id().starts_with(&f.pod_sandbox_id)
                    && labels_match(&r.config().labels, &f.label_selector)
            })
            .map(|r| self.container_stats_of(&r))
            .collect();
        Ok(cri::ListContainerStatsResponse { stats })
    }

    pub(crate) fn live_containers(&self) -> Vec<ContainerRecord> {
        self.containers
            .all()
            .iter()
            .map(|c| c.snapshot())
            .filter(|r| matches!(r.state(), ContainerState::Created | ContainerState::Running))
            .collect()
    }

    fn sandbox_stats_of(
        &self,
        sb: &SandboxRecord,
        containers: &[ContainerRecord],
    ) -> cri::PodSandboxStats {
        let c = self
            .stats_cache
            .get(&pod_cpu_key(sb.id()))
            .unwrap_or_else(|| self.sample_sandbox(sb));
        let (now, sample) = (c.at, &c.sample);
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sb.id().to_string(),
                metadata: sb.config().metadata.clone(),
                labels: sb.config().labels.clone(),
                annotations: sb.config().annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(Self::cpu_usage(&c)),
                memory: Some(Self::memory_usage(now, sample)),
                network: super::pod_metrics::pod_interfaces(sb, containers)
                    .map(|ifaces| super::pod_metrics::network_usage(&ifaces, now)),
                process: Some(cri::ProcessUsage {
                    timestamp: now,
                    process_count: u64v(sample.pids),
                }),
                containers: containers
                    .iter()
                    .filter(|c| c.sandbox_id() == sb.id())
                    .map(|c| self.container_stats_of(c))
                    .collect(),
                io: sample.io_psi.map(|psi| cri::IoUsage {
                    timestamp: now,
                    psi: Some(psi),
                }),
            }),
            windows: None,
        }
    }

    /// CRI `PodSandboxStats`: the pod cgroup's CPU, memory and process count, and the stats
    /// of its live containers. Network counters are not reported yet.
    ///
    /// Errors: `InvalidArgument` for a malformed id, `NotFound` for an unknown one.
    pub(crate) fn pod_sandbox_stats(
        &self,
        req: cri::PodSandboxStatsRequest,
    ) -> Result<cri::PodSandboxStatsResponse> {
        ids::validate("pod_sandbox_id", &req.pod_sandbox_id)?;
        let sb = self
            .sandboxes
            .get("pod_sandbox_id", &req.pod_sandbox_id)?
            .snapshot();
        Ok(cri::PodSandboxStatsResponse {
            stats: Some(self.sandbox_stats_of(&sb, &self.live_containers())),
        })
    }

    /// CRI `ListPodSandboxStats` for ready pods, filtered by id (prefix) and labels.
    pub(crate) fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse> {
        let f = req.filter.unwrap_or_default();
        let containers = self.live_containers();
        let stats = self
            .sandboxes
            .all()
            .iter()
            .map(|s| s.snapshot())
            .filter(|s| {
                s.state() == SandboxState::Ready
                    && s.id().starts_with(&f.id)
                    && labels_match(&s.config().labels, &f.label_selector)
            })
            .map(|s| self.sandbox_stats_of(&s, &containers))
            .collect();
        Ok(cri::ListPodSandboxStatsResponse { stats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1_and_v2_layouts() {
        let v1 = tempfile::tempdir().unwrap();
        let p = "krio/pod-1/c1";
        for (ctrl, file, body) in [
            ("cpuacct", "cpuacct.usage", "5000000000\n"),
            ("memory", "memory.usage_in_bytes", "1000\n"),
            ("memory", "memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory", "memory.stat", "cache 5\ntotal_inactive_file 300\ntotal_rss 600\ntotal_pgfault 7\ntotal_pgmajfault 1\n"),
            ("pids", "pids.current", "3\n"),
        ] {
            let d = v1.path().join(ctrl).join(p);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), body).unwrap();
        }
        let s = read_cgroup(v1.path(), "/krio/pod-1/c1");
        assert_eq!(
            s,
            CgroupSample {
                cpu_ns: Some(5_000_000_000),
                memory_usage: Some(1000),
                inactive_file: Some(300),
                rss: Some(600),
                memory_limit: None,
                pgfault: Some(7),
                pgmajfault: Some(1),
                pids: Some(3),
                ..Default::default()
            }
        );
        let m = Krio::memory_usage(1, &s);
        assert_eq!(m.working_set_bytes.map(|v| v.value), Some(700));
        assert!(m.available_bytes.is_none());

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let d = v2.path().join(p);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 250\nuser_usec 200\n").unwrap();
        std::fs::write(d.join("memory.current"), "4096\n").unwrap();
        std::fs::write(d.join("memory.max"), "8192\n").unwrap();
        std::fs::write(
            d.join("memory.stat"),
            "anon 1024\ninactive_file 1024\npgfault 2\npgmajfault 0\n",
        )
        .unwrap();
        std::fs::write(
            d.join("io.pressure"),
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=4242\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=17\n",
        )
        .unwrap();
        std::fs::write(
            d.join("cpu.pressure"),
            "some avg10=0.10 avg60=0.00 avg300=0.00 total=9\n",
        )
        .unwrap();
        let s = read_cgroup(v2.path(), p);
        assert_eq!(s.cpu_ns, Some(250_000));
        let io = s.io_psi.unwrap();
        assert_eq!(
            io.some.as_ref().map(|d| (d.total, d.avg10, d.avg60)),
            Some((4242, 1.5, 0.25))
        );
        assert_eq!(io.full.as_ref().map(|d| d.total), Some(17));
        let cpu = s.cpu_psi.unwrap();
        assert_eq!(cpu.some.as_ref().map(|d| d.total), Some(9));
        assert!(cpu.full.is_none());
        assert!(s.memory_psi.is_none());
        let m = Krio::memory_usage(1, &s);
        assert_eq!(m.working_set_bytes.map(|v| v.value), Some(3072));
        assert_eq!(m.available_bytes.map(|v| v.value), Some(5120));
    }
}

/// The [`StatsCache`] key of a pod (containers are keyed by their id).
pub(crate) fn pod_cpu_key(sandbox_id: &str) -> String {
    format!("pod-{sandbox_id}")
}

/// Most cache entries kept: far more than the containers and pods of a node, so the bound only
/// matters if removals were missed.
const MAX_ENTRIES: usize = 16_384;

/// One cached sample of a container or pod.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cached {
    /// When it was taken, nanoseconds since the epoch.
    pub at: i64,
    /// The cgroup counters.
    pub sample: CgroupSample,
    /// CPU rate between this sample and the previous one of the same key, in nanoseconds of
    /// CPU time per second (billionths of a core); `None` for a first sample or a counter
    /// that went backwards.
    pub nano_cores: Option<u64>,
    /// Bytes and inodes of the writable layer (containers only).
    pub layer: Option<(u64, u64)>,
}

/// `usage_nano_cores` from two cumulative CPU samples `(time ns, cpu ns)`: the CPU time used
/// between them per second of wall time. `None` unless time advanced and the counter did not
/// go backwards (a cgroup made anew).
pub(crate) fn nano_cores(prev: (i64, u64), now: (i64, u64)) -> Option<u64> {
    let dt = now.0.checked_sub(prev.0).filter(|d| *d > 0)?;
    let used = now.1.checked_sub(prev.1)?;
    u64::try_from(used as u128 * 1_000_000_000 / dt as u128).ok()
}

/// Answers of one `<runtime> events --stats` call per container.
type RuntimeAnswers = Vec<(String, Result<krio_oci::StatsEvent, krio_oci::RuntimeError>)>;

/// `<runtime> events --stats` calls under way for one pod's runtime sandbox
/// ([`Krio::ask_runtime_cpu`]).
pub(crate) struct RuntimeCpuQuery {
    pod_id: String,
    deadline: std::time::Instant,
    rx: std::sync::mpsc::Receiver<RuntimeAnswers>,
}

impl RuntimeCpuQuery {
    /// Waits for the answers (at most until the query's deadline) and returns the containers'
    /// CPU figures by id, as [`cpu_shares`] keeps them: none when the root container has a
    /// share. Blocking: call it from a blocking thread (the sampler's, or an RPC's
    /// `block_in_place`), never from an async task, which would stall the calls it waits for.
    /// A container without a figure (the runtime failed, timed out, or gave none) is missing;
    /// each such failure is logged at debug, none is an error.
    pub(crate) fn collect(self) -> HashMap<String, u64> {
        let pod_id = self.pod_id.as_str();
        let wait = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        let Ok(answers) = self.rx.recv_timeout(wait) else {
            tracing::debug!(pod = pod_id, "runtime stats: no answer in time");
            return HashMap::new();
        };
        let asked = answers.len();
        let figures = answers.into_iter().filter_map(|(id, answer)| {
            match answer.map(|e| e.cpu_total_ns()) {
                Ok(Some(ns)) => return Some((id, ns)),
                Ok(None) => {
                    tracing::debug!(pod = pod_id, container = %id, "runtime stats: no CPU figure")
                }
                Err(e) => {
                    tracing::debug!(pod = pod_id, container = %id, error = %e, "runtime stats failed")
                }
            }
            None
        });
        let out = cpu_shares(pod_id, figures);
        if out.is_empty() && asked > 1 {
            tracing::debug!(
                pod = pod_id,
                "runtime stats: no per-container CPU this round (the root container's share is \
                 not 0, so the runtime split the sandbox's CPU time equally, or it is unknown)"
            );
        }
        out
    }
}

/// The per-container CPU figures of one pod's runtime sandbox, given the runtime's answers
/// (container id, cumulative CPU ns), the root container's (`pod_id`) among them: all but the
/// root's when the root's is 0, none when it is not 0 or missing.
///
/// Why the root container decides: runsc (20221219) gives each container its share of the
/// sandbox cgroup's CPU time, in proportion to the Sentry's own accounting of the container's
/// live tasks; but when no live task has used CPU by that accounting, it splits the cgroup's
/// time equally between the containers with live tasks instead (and a container created but
/// not started gets a share too). The root container runs krio's idle `/pause`, so it has a
/// share exactly when the figures are that equal split, which would credit idle containers with
/// CPU time they did not use.
pub(crate) fn cpu_shares(
    pod_id: &str,
    figures: impl IntoIterator<Item = (String, u64)>,
) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = figures.into_iter().collect();
    if out.remove(pod_id) != Some(0) {
        out.clear();
    }
    out
}

/// The stats sampler's cache: the last sample per container id or `pod-<sandbox id>`,
/// refreshed by the background sampler ([`Krio::sample_all`], every
/// `stats_collection_period` seconds) and read by the stats RPCs. An entry goes with its
/// container or pod ([`StatsCache::forget`], and each round drops entries of what is no
/// longer live), and at most [`MAX_ENTRIES`] are kept (the oldest goes first).
#[derive(Debug, Default)]
pub(crate) struct StatsCache(std::sync::Mutex<HashMap<String, Cached>>);

impl StatsCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a sample of `key` taken at `at`, with its CPU rate against the previous sample;
    /// returns the stored entry.
    pub(crate) fn update(
        &self,
        key: &str,
        at: i64,
        sample: CgroupSample,
        layer: Option<(u64, u64)>,
    ) -> Cached {
        let mut map = self.lock();
        let rate = match (map.get(key), sample.cpu_ns) {
            (Some(prev), Some(total)) => prev
                .sample
                .cpu_ns
                .and_then(|u0| nano_cores((prev.at, u0), (at, total))),
            _ => None,
        };
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            if let Some(oldest) = map.iter().min_by_key(|(_, v)| v.at).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        let entry = Cached {
            at,
            sample,
            nano_cores: rate,
            layer,
        };
        map.insert(key.to_string(), entry.clone());
        entry
    }

    /// The cached sample of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<Cached> {
        self.lock().get(key).cloned()
    }

    /// Forgets the sample of `key` (its container or pod was removed).
    pub(crate) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Keeps only the entries whose key passes `keep`.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }

    /// Number of entries kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn cpu(ns: u64) -> CgroupSample {
        CgroupSample {
            cpu_ns: Some(ns),
            ..Default::default()
        }
    }

    #[test]
    fn rate_is_cpu_time_per_second_between_consecutive_samples() {
        // Half a core: 0.5 s of CPU over 1 s.
        assert_eq!(
            nano_cores((0, 0), (1_000_000_000, 500_000_000)),
            Some(500_000_000)
        );
        // Two cores over 250 ms.
        assert_eq!(
            nano_cores((10, 7), (250_000_010, 500_000_007)),
            Some(2_000_000_000)
        );
        assert_eq!(nano_cores((5, 0), (5, 10)), None, "no time passed");
        assert_eq!(nano_cores((5, 10), (4, 20)), None, "time went back");
        assert_eq!(nano_cores((0, 10), (1, 5)), None, "the counter went back");
        assert_eq!(nano_cores((0, 0), (1, u64::MAX)), None, "does not fit");

        let c = StatsCache::default();
        assert_eq!(c.update("a", 0, cpu(0), None).nano_cores, None);
        let second = c.update("a", 2_000_000_000, cpu(1_000_000_000), Some((4096, 3)));
        assert_eq!(second.nano_cores, Some(500_000_000));
        assert_eq!(
            c.get("a").map(|e| (e.at, e.layer)),
            Some((2_000_000_000, Some((4096, 3))))
        );
        // A sample without a CPU counter has no rate, and the next one has none either.
        assert_eq!(
            c.update("a", 3_000_000_000, CgroupSample::default(), None)
                .nano_cores,
            None
        );
        assert_eq!(
            c.update("a", 4_000_000_000, cpu(2_000_000_000), None)
                .nano_cores,
            None
        );
    }

    #[test]
    fn runtime_cpu_is_kept_only_when_the_root_container_has_no_share() {
        let pod = "p".repeat(64);
        // runsc 20221219 while one container spins and one sleeps: the root has no share.
        let busy = [
            (pod.clone(), 0),
            ("busy".to_string(), 14_126_575_536),
            ("idle".to_string(), 0),
        ];
        let got = cpu_shares(&pod, busy);
        assert_eq!(got.len(), 2);
        assert_eq!(got.get("busy"), Some(&14_126_575_536));
        assert_eq!(got.get("idle"), Some(&0));
        // After the busy one exited: runsc split the cgroup's time equally, root included.
        let split = [
            (pod.clone(), 9_425_540_498),
            ("idle".to_string(), 9_425_279_509),
        ];
        assert!(cpu_shares(&pod, split).is_empty());
        // The root container did not answer: nothing can be checked, nothing is used.
        assert!(cpu_shares(&pod, [("idle".to_string(), 5)]).is_empty());
    }

    #[test]
    fn entries_are_pruned_forgotten_and_bounded() {
        let c = StatsCache::default();
        c.update("a", 1, cpu(10), None);
        c.update("b", 1, cpu(10), None);
        c.update("pod-x", 1, cpu(10), None);
        c.retain(|k| k != "b");
        assert!(c.get("b").is_none());
        assert_eq!(c.len(), 2);
        c.forget("a");
        assert!(c.get("a").is_none());
        // A forgotten key starts again without a rate.
        assert_eq!(c.update("a", 2, cpu(20), None).nano_cores, None);
        for i in 0..MAX_ENTRIES as i64 + 10 {
            c.update(&format!("k{i}"), 100 + i, cpu(0), None);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        // The oldest went first: "a", "pod-x" and the first keys.
        assert!(c.get("a").is_none() && c.get("pod-x").is_none() && c.get("k0").is_none());
        assert!(c.get(&format!("k{}", MAX_ENTRIES as i64 + 9)).is_some());
    }
}
