//! Memory figures of a runtime's processes, read from /proc.
//!
//! Sources: `/proc/<pid>/smaps_rollup` (Rss, Pss; proc(5)), `/proc/<pid>/status` (VmRSS, VmHWM),
//! `/proc/net/unix` + `/proc/<pid>/fd` to find the process listening on the CRI socket.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// Resident and proportional set size of one process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemUsage {
    /// `Rss:` of smaps_rollup, bytes.
    pub rss_bytes: u64,
    /// `Pss:` of smaps_rollup, bytes (shared pages divided among their users).
    pub pss_bytes: u64,
}

/// Finds the `NAME:   123 kB` line in a /proc text file and returns the value in bytes.
pub fn parse_kb_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let mut it = rest.split_whitespace();
        let value: u64 = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") => Some(value * 1024),
            None => Some(value),
            Some(_) => None,
        }
    })
}

fn read_proc(path: PathBuf) -> Result<String> {
    fs::read_to_string(&path).map_err(|e| BenchError::io("reading", path, e))
}

/// Rss and Pss of `pid` from `/proc/<pid>/smaps_rollup`.
///
/// # Errors
/// [`BenchError::Io`] if the process is gone or unreadable, [`BenchError::ProcParse`] if a field is missing.
pub fn smaps_rollup(pid: u32) -> Result<MemUsage> {
    let path = PathBuf::from(format!("/proc/{pid}/smaps_rollup"));
    let text = read_proc(path.clone())?;
    let get = |f: &str| {
        parse_kb_field(&text, f).ok_or_else(|| BenchError::ProcParse {
            path: path.clone(),
            reason: format!("no {f}: line"),
        })
    };
    Ok(MemUsage {
        rss_bytes: get("Rss")?,
        pss_bytes: get("Pss")?,
    })
}

/// Current and peak resident set size of `pid` from `/proc/<pid>/status`, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// `VmRSS`, bytes.
    pub rss_bytes: u64,
    /// `VmHWM` (peak RSS over the process lifetime), bytes.
    pub hwm_bytes: u64,
}

/// Reads [`VmStatus`] of `pid`.
///
/// # Errors
/// [`BenchError::Io`] if the process is gone, [`BenchError::ProcParse`] if a field is missing.
pub fn vm_status(pid: u32) -> Result<VmStatus> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = read_proc(path.clone())?;
    let get = |f: &str| {
        parse_kb_field(&text, f).ok_or_else(|| BenchError::ProcParse {
            path: path.clone(),
            reason: format!("no {f}: line"),
        })
    };
    Ok(VmStatus {
        rss_bytes: get("VmRSS")?,
        hwm_bytes: get("VmHWM")?,
    })
}

/// Inodes of listening unix sockets bound to `socket`, from the text of `/proc/net/unix`.
pub fn parse_unix_listeners(net_unix: &str, socket: &Path) -> Vec<u64> {
    const ACCEPTCON: u32 = 0x0001_0000;
    net_unix
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let inode: u64 = f.get(6)?.parse().ok()?;
            let path = f.get(7)?;
            (flags & ACCEPTCON != 0 && Path::new(path) == socket).then_some(inode)
        })
        .collect()
}

fn pids() -> Result<Vec<u32>> {
    let rd = fs::read_dir("/proc").map_err(|e| BenchError::io("listing", "/proc", e))?;
    Ok(rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// The lowest pid holding a listening unix socket bound to `socket` (the CRI daemon).
///
/// # Errors
/// [`BenchError::NoListener`] if nobody listens there; [`BenchError::Io`] if /proc is unreadable.
pub fn listener_pid(socket: &Path) -> Result<u32> {
    let inodes = parse_unix_listeners(&read_proc(PathBuf::from("/proc/net/unix"))?, socket);
    if inodes.is_empty() {
        return Err(BenchError::NoListener {
            socket: socket.to_owned(),
        });
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut found: Option<u32> = None;
    for pid in pids()? {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let hit = fds.filter_map(|e| e.ok()).any(|e| {
            fs::read_link(e.path())
                .ok()
                .and_then(|t| t.to_str().map(|s| wanted.iter().any(|w| w == s)))
                .unwrap_or(false)
        });
        if hit {
            found = Some(found.map_or(pid, |p| p.min(pid)));
        }
    }
    found.ok_or_else(|| BenchError::NoListener {
        socket: socket.to_owned(),
    })
}

/// Selects a runtime's helper processes (shims / monitors).
///
/// A process matches when its `/proc/<pid>/exe` is one of `monitor_exes` (an exact path, ` (deleted)`
/// ignored), or when the basename of its `argv[0]` or of `/proc/<pid>/exe` is one of
/// `monitor_names`, AND one of: its command line contains one of `markers`; the daemon is one of its
/// ancestors; or it is an ancestor of a container init process recorded in a runc state directory
/// under one of `runc_roots` (`<root>/<container id>/state.json`, field `init_process_pid`).
/// (containerd shims re-parent to init but carry `-address <socket>` in argv, hence markers; krio's
/// monitors re-parent to init with a bare argv, hence the runc roots, which cover runc only, and
/// the monitor binary's path, which covers every runtime handler.)
#[derive(Clone, Debug, Default)]
pub struct ProcMatcher {
    /// The daemon's pid.
    pub daemon_pid: u32,
    /// Executable basenames, e.g. `containerd-shim-runc-v2` or `krio-monitor`.
    pub monitor_names: Vec<String>,
    /// Substrings of the monitor's command line that tie it to this daemon (e.g. its socket path).
    pub markers: Vec<String>,
    /// runc `--root` directories used by this daemon (e.g. krio's `<state_dir>/runtime/runc`).
    pub runc_roots: Vec<PathBuf>,
    /// Absolute paths of helper executables that belong to this daemon alone (krio: the
    /// `krio-monitor` beside the daemon's own executable, so monitors of other krio builds on the
    /// machine do not count).
    pub monitor_exes: Vec<PathBuf>,
}

/// The value of `--flag VALUE` or `--flag=VALUE` in the command line of `pid`, if present.
pub fn arg_value(pid: u32, flag: &str) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_owned)
        }
    })
}

impl ProcMatcher {
    /// Defaults for a known runtime label, given the daemon pid and its CRI socket:
    /// - `containerd`: helpers `containerd-shim-runc-v2`, marker = the socket path (shims get
    ///   `-address <socket>`);
    /// - anything else (krio): helpers `krio-monitor`, marker = the socket path, runc root
    ///   `<state dir>/runtime/runc` with the state dir taken from the daemon's `--state-dir` argument
    ///   (default `/run/krio`).
    pub fn for_runtime(runtime: &str, daemon_pid: u32, socket: &Path) -> ProcMatcher {
        let markers = vec![socket.display().to_string()];
        if runtime == "containerd" {
            return ProcMatcher {
                daemon_pid,
                monitor_names: vec!["containerd-shim-runc-v2".to_owned()],
                markers,
                runc_roots: Vec::new(),
                monitor_exes: Vec::new(),
            };
        }
        let state = arg_value(daemon_pid, "--state-dir").unwrap_or_else(|| "/run/krio".to_owned());
        let monitor_exes = fs::read_link(format!("/proc/{daemon_pid}/exe"))
            .ok()
            .and_then(|exe| {
                let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
                exe.parent().map(|d| d.join("krio-monitor"))
            })
            .into_iter()
            .collect();
        ProcMatcher {
            daemon_pid,
            monitor_names: vec!["krio-monitor".to_owned()],
            markers,
            runc_roots: vec![Path::new(&state).join("runtime").join("runc")],
            monitor_exes,
        }
    }
}

/// Init pids of the containers recorded under a runc `--root` directory; unreadable entries are
/// skipped (containers come and go while this runs).
pub fn runc_init_pids(root: &Path) -> Vec<u32> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let text = fs::read_to_string(e.path().join("state.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            u32::try_from(v.get("init_process_pid")?.as_u64()?).ok()
        })
        .collect()
}

struct ProcInfo {
    ppid: u32,
    names: Vec<String>,
    cmdline: String,
    exe: Option<PathBuf>,
}

fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parens: the fields after the last ')' are fixed.
    let after = stat.rsplit_once(')')?.1;
    let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut names = Vec::new();
    if let Some(a0) = args.first() {
        names.push(basename(a0));
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|e| PathBuf::from(e.to_string_lossy().trim_end_matches(" (deleted)")));
    if let Some(e) = &exe {
        names.push(basename(&e.to_string_lossy()));
    }
    Some(ProcInfo {
        ppid,
        names,
        cmdline: args.join(" "),
        exe,
    })
}

fn basename(s: &str) -> String {
    s.rsplit('/').next().unwrap_or(s).to_owned()
}

impl ProcMatcher {
    /// Pids of the matching monitor processes, sorted. Processes that vanish during the scan are skipped.
    ///
    /// # Errors
    /// [`BenchError::Io`] if /proc cannot be listed.
    pub fn monitors(&self) -> Result<Vec<u32>> {
        Ok(self.monitors_in(&all_procs()?))
    }

    fn monitors_in(&self, all: &HashMap<u32, ProcInfo>) -> Vec<u32> {
        let mut container_ancestors = std::collections::HashSet::new();
        for root in &self.runc_roots {
            for init in runc_init_pids(root) {
                let mut p = init;
                for _ in 0..64 {
                    match all.get(&p) {
                        Some(i) if i.ppid > 1 => {
                            container_ancestors.insert(i.ppid);
                            p = i.ppid;
                        }
                        _ => break,
                    }
                }
            }
        }
        let mut out: Vec<u32> = all
            .iter()
            .filter(|(pid, info)| {
                **pid != self.daemon_pid
                    && (info
                        .exe
                        .as_ref()
                        .is_some_and(|e| self.monitor_exes.contains(e))
                        || info.names.iter().any(|n| self.monitor_names.contains(n))
                            && (self
                                .markers
                                .iter()
                                .any(|m| info.cmdline.contains(m.as_str()))
                                || descends_from(all, **pid, self.daemon_pid)
                                || container_ancestors.contains(*pid)))
            })
            .map(|(pid, _)| *pid)
            .collect();
        out.sort_unstable();
        out
    }

    /// Memory of the runtime's per-pod processes: every helper ([`ProcMatcher::monitors`]) and
    /// every process below one (its descendants: the container's processes, and whatever the
    /// runtime left running for the pod, e.g. runsc's Sentry and Gofer, containerd's pause). The
    /// daemon itself is not counted. Processes that exit during the read are left out.
    ///
    /// # Errors
    /// [`BenchError::Io`] if /proc cannot be listed.
    pub fn pod_tree_memory(&self) -> Result<TreeMemory> {
        let all = all_procs()?;
        let monitors = self.monitors_in(&all);
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, info) in &all {
            children.entry(info.ppid).or_default().push(*pid);
        }
        let mut seen = std::collections::HashSet::new();
        let mut stack = monitors.clone();
        while let Some(p) = stack.pop() {
            if p == self.daemon_pid || !seen.insert(p) {
                continue;
            }
            if let Some(c) = children.get(&p) {
                stack.extend(c.iter().copied());
            }
        }
        let mut out = TreeMemory {
            helpers: monitors.len(),
            ..TreeMemory::default()
        };
        let mut pids: Vec<u32> = seen.into_iter().collect();
        pids.sort_unstable();
        for p in pids {
            let Ok(m) = smaps_rollup(p) else { continue };
            let name = all
                .get(&p)
                .and_then(|i| i.names.first().cloned())
                .unwrap_or_else(|| "?".to_owned());
            out.pss_bytes += m.pss_bytes;
            out.rss_bytes += m.rss_bytes;
            out.processes += 1;
            let e = out.by_name.entry(name).or_default();
            e.count += 1;
            e.pss_bytes += m.pss_bytes;
            e.rss_bytes += m.rss_bytes;
        }
        Ok(out)
    }

    /// Memory of the daemon and every monitor, read now.
    ///
    /// # Errors
    /// [`BenchError::Io`]/[`BenchError::ProcParse`] if the daemon's smaps_rollup is unreadable.
    /// Monitors that exit during the read are left out.
    pub fn memory(&self) -> Result<RuntimeMemory> {
        let daemon = smaps_rollup(self.daemon_pid)?;
        let monitors: Vec<(u32, MemUsage)> = self
            .monitors()?
            .into_iter()
            .filter_map(|p| smaps_rollup(p).ok().map(|m| (p, m)))
            .collect();
        let total_pss_bytes =
            daemon.pss_bytes + monitors.iter().map(|(_, m)| m.pss_bytes).sum::<u64>();
        let total_rss_bytes =
            daemon.rss_bytes + monitors.iter().map(|(_, m)| m.rss_bytes).sum::<u64>();
        Ok(RuntimeMemory {
            daemon,
            monitor_count: monitors.len(),
            monitors_pss_bytes: monitors.iter().map(|(_, m)| m.pss_bytes).sum(),
            total_pss_bytes,
            total_rss_bytes,
        })
    }

    /// Sum of `VmRSS` over the daemon and its monitors right now (bytes); cheap enough to sample often.
    ///
    /// # Errors
    /// [`BenchError::Io`] if the daemon is gone.
    pub fn rss_now(&self, monitors: &[u32]) -> Result<u64> {
        let mut total = vm_status(self.daemon_pid)?.rss_bytes;
        for p in monitors {
            if let Ok(s) = vm_status(*p) {
                total += s.rss_bytes;
            }
        }
        Ok(total)
    }
}

fn all_procs() -> Result<HashMap<u32, ProcInfo>> {
    Ok(pids()?
        .into_iter()
        .filter_map(|p| proc_info(p).map(|i| (p, i)))
        .collect())
}

/// Processes of one name (basename of `argv[0]`) within a [`TreeMemory`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUsage {
    /// How many processes had this name.
    pub count: usize,
    /// Sum of their Pss, bytes.
    pub pss_bytes: u64,
    /// Sum of their Rss, bytes.
    pub rss_bytes: u64,
}

/// Memory of a runtime's helper processes and everything below them, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeMemory {
    /// How many helper processes (monitors/shims) were found.
    pub helpers: usize,
    /// How many processes were read in all (helpers and descendants).
    pub processes: usize,
    /// Sum of Pss, bytes.
    pub pss_bytes: u64,
    /// Sum of Rss, bytes (shared pages counted once per process).
    pub rss_bytes: u64,
    /// The same by process name (basename of `argv[0]`, e.g. `runsc-sandbox`).
    pub by_name: std::collections::BTreeMap<String, NamedUsage>,
}

fn descends_from(all: &HashMap<u32, ProcInfo>, mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        let Some(info) = all.get(&pid) else {
            return false;
        };
        if info.ppid == ancestor {
            return true;
        }
        if info.ppid <= 1 {
            return false;
        }
        pid = info.ppid;
    }
    false
}

/// Memory of a runtime (daemon + monitors) at one moment, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeMemory {
    /// The daemon alone.
    pub daemon: MemUsage,
    /// How many monitor/shim processes were found.
    pub monitor_count: usize,
    /// Sum of the monitors' Pss.
    pub monitors_pss_bytes: u64,
    /// Daemon Pss + monitors' Pss.
    pub total_pss_bytes: u64,
    /// Daemon Rss + monitors' Rss (double-counts shared pages; for reference).
    pub total_rss_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_fields() {
        let t = "Rss:                1234 kB\nPss:                 100 kB\nPss_Anon:  7 kB\nVmHWM:\t  55 kB\n";
        assert_eq!(parse_kb_field(t, "Rss"), Some(1234 * 1024));
        assert_eq!(parse_kb_field(t, "Pss"), Some(100 * 1024));
        assert_eq!(parse_kb_field(t, "Pss_Anon"), Some(7 * 1024));
        assert_eq!(parse_kb_field(t, "VmHWM"), Some(55 * 1024));
        assert_eq!(parse_kb_field(t, "Swap"), None);
    }

    #[test]
    fn unix_listeners() {
        let t = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                 0000000000000000: 00000002 00000000 00010000 0001 01 4242 /tmp/x.sock\n\
                 0000000000000000: 00000003 00000000 00000000 0001 03 4243 /tmp/x.sock\n\
                 0000000000000000: 00000002 00000000 00010000 0001 01 4244 /tmp/y.sock\n\
                 0000000000000000: 00000002 00000000 00010000 0001 01 4245\n";
        assert_eq!(
            parse_unix_listeners(t, Path::new("/tmp/x.sock")),
            vec![4242]
        );
        assert!(parse_unix_listeners(t, Path::new("/tmp/z.sock")).is_empty());
    }

    #[test]
    fn runtime_defaults() {
        let me = std::process::id();
        let c = ProcMatcher::for_runtime("containerd", me, Path::new("/x/c.sock"));
        assert_eq!(c.monitor_names, vec!["containerd-shim-runc-v2"]);
        assert_eq!(c.markers, vec!["/x/c.sock"]);
        let k = ProcMatcher::for_runtime("krio", me, Path::new("/x/k.sock"));
        assert_eq!(k.monitor_names, vec!["krio-monitor"]);
        assert_eq!(k.runc_roots, vec![PathBuf::from("/run/krio/runtime/runc")]);
        assert_eq!(arg_value(me, "--no-such-flag"), None);
    }

    #[test]
    fn runc_state_inits() {
        let dir = tempfile::tempdir().unwrap();
        for (id, body) in [
            ("a", r#"{"id":"a","init_process_pid":42}"#),
            ("b", "not json"),
            ("c", "{}"),
        ] {
            std::fs::create_dir(dir.path().join(id)).unwrap();
            std::fs::write(dir.path().join(id).join("state.json"), body).unwrap();
        }
        assert_eq!(runc_init_pids(dir.path()), vec![42]);
        assert!(runc_init_pids(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn matches_own_child_as_monitor() {
        // This test process is the "daemon"; a child `sleep` is its "monitor".
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let m = ProcMatcher {
            daemon_pid: std::process::id(),
            monitor_names: vec!["sleep".to_owned()],
            markers: vec![],
            runc_roots: vec![],
            monitor_exes: vec![],
        };
        let found = m.monitors().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            found.contains(&child.id()),
            "{found:?} lacks {}",
            child.id()
        );
        let mem = m.memory();
        assert!(mem.is_ok());
    }

    #[test]
    fn own_process_memory() {
        let me = std::process::id();
        let m = smaps_rollup(me).unwrap();
        assert!(m.rss_bytes > 0 && m.pss_bytes > 0);
        let s = vm_status(me).unwrap();
        assert!(s.hwm_bytes >= s.rss_bytes / 2);
        assert!(vm_status(u32::MAX).is_err());
    }
}
