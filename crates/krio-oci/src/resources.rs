//! `linux.resources`, `process.oomScoreAdj` and `linux.sysctl` (CRI `LinuxContainerResources`, sandbox sysctls).

use std::collections::HashMap;

use krio_cri::v1::LinuxContainerResources;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use crate::error::SpecError;

/// Clamps the CRI `oom_score_adj` into `[max(daemon_oom_score_adj, -1000), 1000]`.
///
/// The daemon lacks `CAP_SYS_RESOURCE`, so the kernel refuses to lower a score below the daemon's own; asking
/// runc for less would make container creation fail. The kubelet's values (-997 for Guaranteed pods, 1000 for
/// BestEffort, computed for Burstable) are therefore raised to at least the daemon's own value.
pub fn clamp_oom_score_adj(requested: i64, daemon_oom_score_adj: i32) -> i32 {
    let floor = i64::from(daemon_oom_score_adj.clamp(-1000, 1000));
    // The clamp bounds fit in i32, so the conversion cannot fail; fall back to the floor defensively.
    i32::try_from(requested.clamp(floor, 1000)).unwrap_or(daemon_oom_score_adj)
}

/// Builds `linux.resources` (without devices): CPU shares / CFS quota / period / cpuset, memory limit and swap,
/// pids limit. CRI zero values mean "not specified" and are omitted. Hugepage limits are ignored (not used on this
/// host); `unified` is passed through on cgroup v2 only (on v1 runc would reject it).
///
/// Errors: `InvalidField` naming `linux.resources.<field>` for negative values.
pub fn resources(
    r: Option<&LinuxContainerResources>,
    pids_limit: Option<i64>,
    cgroup_v2: bool,
) -> Result<LinuxResources, SpecError> {
    let mut b = LinuxResourcesBuilder::default();
    if let Some(limit) = pids_limit {
        if limit == 0 || limit < -1 {
            return Err(SpecError::invalid(
                "pids_limit",
                format!("{limit} must be positive or -1 (unlimited)"),
            ));
        }
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(SpecError::build("pids"))?,
        );
    }
    let Some(r) = r else {
        return b.build().map_err(SpecError::build("resources"));
    };
    let nonneg = |name: &str, v: i64| -> Result<i64, SpecError> {
        if v < 0 {
            Err(SpecError::invalid(
                format!("linux.resources.{name}"),
                format!("{v} is negative"),
            ))
        } else {
            Ok(v)
        }
    };
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if nonneg("cpu_shares", r.cpu_shares)? > 0 {
        cpu = cpu.shares(r.cpu_shares.unsigned_abs());
        any_cpu = true;
    }
    if nonneg("cpu_quota", r.cpu_quota)? > 0 {
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    if nonneg("cpu_period", r.cpu_period)? > 0 {
        cpu = cpu.period(r.cpu_period.unsigned_abs());
        any_cpu = true;
    }
    for (name, v) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        if !v.is_empty()
            && !v
                .bytes()
                .all(|c| c.is_ascii_digit() || c == b',' || c == b'-')
        {
            return Err(SpecError::invalid(
                format!("linux.resources.{name}"),
                format!("{v:?} is not a cpu/node list"),
            ));
        }
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        any_cpu = true;
    }
    if any_cpu {
        b = b.cpu(cpu.build().map_err(SpecError::build("cpu"))?);
    }
    let mut mem = LinuxMemoryBuilder::default();
    let mut any_mem = false;
    if nonneg("memory_limit_in_bytes", r.memory_limit_in_bytes)? > 0 {
        mem = mem.limit(r.memory_limit_in_bytes);
        any_mem = true;
    }
    if nonneg("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes)? > 0 {
        mem = mem.swap(r.memory_swap_limit_in_bytes);
        any_mem = true;
    }
    if any_mem {
        b = b.memory(mem.build().map_err(SpecError::build("memory"))?);
    }
    if cgroup_v2 && !r.unified.is_empty() {
        for (k, v) in &r.unified {
            if k.is_empty() || k.contains('/') || k.contains('\0') || v.contains('\0') {
                return Err(SpecError::invalid(
                    "linux.resources.unified",
                    format!("bad key {k:?}"),
                ));
            }
        }
        b = b.unified(r.unified.clone());
    }
    b.build().map_err(SpecError::build("resources"))
}

/// Which namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SysctlNs {
    Ipc,
    Net,
}

/// Classifies a (dot-normalised) sysctl key as namespaced (the kubelet's / runc's safe list), or `None`.
fn sysctl_namespace(key: &str) -> Option<SysctlNs> {
    const IPC_EXACT: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC_EXACT.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(SysctlNs::Ipc)
    } else if key.starts_with("net.") {
        Some(SysctlNs::Net)
    } else {
        None
    }
}

/// Validates the sandbox sysctls and returns them keyed with `.` separators.
///
/// Rules: key made of `[A-Za-z0-9_.-/]` (kubelet allows `/` as separator; normalised to `.`), no empty or `..`
/// components, not starting or ending with a separator; value without newline or NUL (so nothing can be smuggled
/// into `/proc/sys` writes); only namespaced sysctls (IPC: `kernel.shm*`, `kernel.msg*`, `kernel.sem`,
/// `fs.mqueue.*`; network: `net.*`) and not for a namespace shared with the host.
pub(crate) fn sysctls(
    raw: &HashMap<String, String>,
    host_ipc: bool,
    host_net: bool,
) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::new();
    for (k, v) in raw {
        let field = format!("linux.sysctls[{k:?}]");
        let ok_chars = !k.is_empty()
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/'));
        if !ok_chars {
            return Err(SpecError::invalid(
                field,
                "invalid characters in sysctl name",
            ));
        }
        let key = k.replace('/', ".");
        if key.split('.').any(|c| c.is_empty() || c == "..") {
            return Err(SpecError::invalid(
                field,
                "empty or '..' component in sysctl name",
            ));
        }
        if v.contains('\n') || v.contains('\r') || v.contains('\0') {
            return Err(SpecError::invalid(field, "value contains a newline or NUL"));
        }
        match sysctl_namespace(&key) {
            None => {
                return Err(SpecError::invalid(field, "not a namespaced sysctl"));
            }
            Some(SysctlNs::Ipc) if host_ipc => {
                return Err(SpecError::invalid(
                    field,
                    "IPC sysctl not allowed with the host IPC namespace",
                ));
            }
            Some(SysctlNs::Net) if host_net => {
                return Err(SpecError::invalid(
                    field,
                    "network sysctl not allowed with the host network namespace",
                ));
            }
            Some(_) => {}
        }
        out.insert(key, v.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_table() {
        for (req, daemon, want) in [
            (0, 0, 0),
            (-997, -500, -500),
            (-997, 0, 0),
            (1000, -500, 1000),
            (5000, 0, 1000),
            (-5000, -2000, -1000),
            (300, 200, 300),
            (i64::MIN, -999, -999),
        ] {
            assert_eq!(
                clamp_oom_score_adj(req, daemon),
                want,
                "req={req} daemon={daemon}"
            );
        }
    }

    #[test]
    fn resources_mapping() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1".into(),
            ..Default::default()
        };
        let out = resources(Some(&r), Some(100), false).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(512), Some(50_000), Some(100_000))
        );
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(out.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(out.pids().unwrap().limit(), 100);
        let empty = resources(Some(&LinuxContainerResources::default()), None, false).unwrap();
        assert!(empty.cpu().is_none() && empty.memory().is_none());
        let neg = LinuxContainerResources {
            memory_limit_in_bytes: -1,
            ..Default::default()
        };
        assert!(resources(Some(&neg), None, false)
            .unwrap_err()
            .to_string()
            .contains("memory_limit_in_bytes"));
        let bad = LinuxContainerResources {
            cpuset_cpus: "0;rm".into(),
            ..Default::default()
        };
        assert!(resources(Some(&bad), None, false).is_err());
        assert!(resources(None, Some(0), false).is_err());
    }

    #[test]
    fn sysctl_table() {
        let one = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        let ok = sysctls(&one("net/ipv4/ip_forward", "1"), false, false).unwrap();
        assert_eq!(ok.get("net.ipv4.ip_forward").map(String::as_str), Some("1"));
        sysctls(&one("kernel.shm_rmid_forced", "1"), false, false).unwrap();
        sysctls(&one("fs.mqueue.msg_max", "10"), false, false).unwrap();
        for (k, v, hi, hn) in [
            ("kernel.hostname", "x", false, false),
            ("vm.swappiness", "1", false, false),
            ("net.ipv4.ip_forward", "1\nkernel.x=1", false, false),
            ("net.ipv4=x", "1", false, false),
            ("net..ipv4", "1", false, false),
            ("net/../../kernel", "1", false, false),
            (".net.ipv4", "1", false, false),
            ("net.ipv4.ip_forward", "1", false, true),
            ("kernel.sem", "1", true, false),
            ("", "1", false, false),
        ] {
            assert!(
                sysctls(&one(k, v), hi, hn).is_err(),
                "{k:?}={v:?} must be rejected"
            );
        }
    }
}
