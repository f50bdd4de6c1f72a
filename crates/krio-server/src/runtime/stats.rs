//! `ContainerStats`, `ListContainerStats`, `PodSandboxStats` and `ListPodSandboxStats`, read
//! from the cgroup files of containers and pods (cgroup v1 controllers or the v2 tree) and
//! from the containers' writable layers.
//!
//! kubelet uses these through its CRI stats provider for runtimes other than containerd and
//! CRI-O (the summary API, eviction), so they follow kubelet's meaning of each field:
//! working set = usage - inactive file pages; `usage_nano_cores` is the rate between this
//! sample and the previous one of the same cgroup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use krio_cri::v1 as cri;

use super::sandbox_list::labels_match;
use crate::error::Result;
use crate::state::{now_ns, ContainerRecord, ContainerState, SandboxRecord, SandboxState};
use crate::{ids, Krio};

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
    /// CPU usage of a cgroup, with `usage_nano_cores` computed against the previous sample
    /// of the same key.
    fn cpu_usage(
        &self,
        key: &str,
        now: i64,
        cpu_ns: Option<u64>,
        psi: &Option<cri::PsiStats>,
    ) -> cri::CpuUsage {
        let mut nano_cores = None;
        if let Some(total) = cpu_ns {
            if let Some((t0, u0)) = self.cpu_samples.record(key, now, total) {
                let dt = now.saturating_sub(t0);
                if dt > 0 && total >= u0 {
                    nano_cores = Some(((total - u0) as u128 * 1_000_000_000 / dt as u128) as u64);
                }
            }
        }
        cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: u64v(cpu_ns),
            usage_nano_cores: u64v(nano_cores),
            psi: *psi,
        }
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

    pub(crate) fn container_stats_of(&self, rec: &ContainerRecord) -> cri::ContainerStats {
        let now = now_ns();
        let sample = read_cgroup(Path::new("/sys/fs/cgroup"), &rec.cgroups_path);
        let upper: PathBuf = self.container_data_dir(&rec.id).join("upper");
        let (bytes, inodes) = disk_usage(&upper);
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
            }),
            cpu: Some(self.cpu_usage(&rec.id, now, sample.cpu_ns, &sample.cpu_psi)),
            memory: Some(Self::memory_usage(now, &sample)),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: upper.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            }),
            swap: None,
            io: sample.io_psi.map(|psi| cri::IoUsage {
                timestamp: now,
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
                r.id.starts_with(&f.id)
                    && r.sandbox_id.starts_with(&f.pod_sandbox_id)
                    && labels_match(&r.config.labels, &f.label_selector)
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
            .filter(|r| matches!(r.state, ContainerState::Created | ContainerState::Running))
            .collect()
    }

    fn sandbox_stats_of(
        &self,
        sb: &SandboxRecord,
        containers: &[ContainerRecord],
    ) -> cri::PodSandboxStats {
        let now = now_ns();
        let sample = read_cgroup(Path::new("/sys/fs/cgroup"), &sb.cgroup_parent);
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sb.id.clone(),
                metadata: sb.config.metadata.clone(),
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(self.cpu_usage(
                    &pod_cpu_key(&sb.id),
                    now,
                    sample.cpu_ns,
                    &sample.cpu_psi,
                )),
                memory: Some(Self::memory_usage(now, &sample)),
                network: super::pod_metrics::pod_interfaces(sb, containers)
                    .map(|ifaces| super::pod_metrics::network_usage(&ifaces, now)),
                process: Some(cri::ProcessUsage {
                    timestamp: now,
                    process_count: u64v(sample.pids),
                }),
                containers: containers
                    .iter()
                    .filter(|c| c.sandbox_id == sb.id)
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
                s.state == SandboxState::Ready
                    && s.id.starts_with(&f.id)
                    && labels_match(&s.config.labels, &f.label_selector)
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

/// The [`CpuSamples`] key of a pod (containers are keyed by their id).
pub(crate) fn pod_cpu_key(sandbox_id: &str) -> String {
    format!("pod-{sandbox_id}")
}

/// Most CPU samples kept: far more than the containers and pods of a node, so the bound only
/// matters if removals were missed.
const MAX_CPU_SAMPLES: usize = 16_384;

/// The last CPU sample (time in ns since the epoch, cumulative CPU ns) per container id or
/// `pod-<sandbox id>`, for `usage_nano_cores`. An entry goes with its container or pod
/// ([`CpuSamples::forget`]), and at most [`MAX_CPU_SAMPLES`] are kept (the oldest goes first).
#[derive(Debug, Default)]
pub(crate) struct CpuSamples(std::sync::Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, u64)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records sample `(now, total)` for `key`; returns the previous one.
    pub(crate) fn record(&self, key: &str, now: i64, total: u64) -> Option<(i64, u64)> {
        let mut map = self.lock();
        if map.len() >= MAX_CPU_SAMPLES && !map.contains_key(key) {
            if let Some(oldest) = map.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(key.to_string(), (now, total))
    }

    /// Forgets the sample of `key` (its container or pod was removed).
    pub(crate) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Number of samples kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod cpu_sample_tests {
    use super::*;

    #[test]
    fn samples_are_forgotten_and_bounded() {
        let s = CpuSamples::default();
        assert_eq!(s.record("a", 1, 10), None);
        assert_eq!(s.record("a", 2, 20), Some((1, 10)));
        s.forget("a");
        assert_eq!(s.len(), 0);
        assert_eq!(s.record("a", 3, 30), None);
        for i in 0..MAX_CPU_SAMPLES as i64 + 10 {
            s.record(&format!("k{i}"), 100 + i, 0);
        }
        assert_eq!(s.len(), MAX_CPU_SAMPLES);
        // The oldest went first: "a" (time 3) and the first keys.
        assert_eq!(s.record("a", 1_000_000, 0), None);
        assert_eq!(s.record("k0", 1_000_001, 0), None);
        let last = format!("k{}", MAX_CPU_SAMPLES as i64 + 9);
        assert!(s.record(&last, 1_000_002, 0).is_some());
    }
}
