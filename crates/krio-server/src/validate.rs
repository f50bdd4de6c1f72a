//! Request validation shared by the handlers. Every error names the CRI field.

use std::path::{Component, Path};

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};

/// Checks a `RunPodSandbox` config: metadata name, namespace and uid are required, the hostname
/// is a valid DNS label sequence, `log_directory` is absolute, sysctls are namespaced and clean.
pub fn sandbox_config(config: &cri::PodSandboxConfig) -> Result<()> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| ServerError::invalid("config.metadata", "is required"))?;
    non_empty("config.metadata.name", &m.name)?;
    non_empty("config.metadata.namespace", &m.namespace)?;
    non_empty("config.metadata.uid", &m.uid)?;
    for (field, v) in [
        ("config.metadata.name", &m.name),
        ("config.metadata.namespace", &m.namespace),
        ("config.metadata.uid", &m.uid),
    ] {
        if v.len() > 253 || v.chars().any(|c| c.is_control() || c == '/') {
            return Err(ServerError::invalid(
                field,
                format!("{v:?} contains '/' or control characters, or is too long"),
            ));
        }
    }
    if !config.hostname.is_empty() {
        hostname(&config.hostname)?;
    }
    if !config.log_directory.is_empty() && !Path::new(&config.log_directory).is_absolute() {
        return Err(ServerError::invalid(
            "config.log_directory",
            format!("{:?} must be an absolute path", config.log_directory),
        ));
    }
    if let Some(linux) = &config.linux {
        for (k, v) in &linux.sysctls {
            sysctl(k, v)?;
        }
        if !linux.cgroup_parent.is_empty() {
            cgroup_path("config.linux.cgroup_parent", &linux.cgroup_parent)?;
        }
    }
    if let Some(dns) = &config.dns_config {
        for s in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ServerError::invalid(
                    "config.dns_config",
                    format!("{s:?} is empty or contains whitespace"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a `CreateContainer` config: metadata name and image are required, `log_path` is
/// relative and stays inside the pod's log directory.
pub fn container_config(config: &cri::ContainerConfig) -> Result<()> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| ServerError::invalid("config.metadata", "is required"))?;
    non_empty("config.metadata.name", &m.name)?;
    if m.name.contains('/') || m.name.chars().any(|c| c.is_control()) {
        return Err(ServerError::invalid(
            "config.metadata.name",
            format!("{:?} contains '/' or control characters", m.name),
        ));
    }
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.as_str())
        .unwrap_or("");
    non_empty("config.image.image", image)?;
    if cri::Signal::try_from(config.stop_signal).is_err() {
        return Err(ServerError::invalid(
            "config.stop_signal",
            format!("{} is not a CRI Signal value", config.stop_signal),
        ));
    }
    if !config.log_path.is_empty() {
        relative_path("config.log_path", &config.log_path)?;
    }
    Ok(())
}

/// A path that is relative and has no `..` component.
pub fn relative_path(field: &'static str, p: &str) -> Result<()> {
    let path = Path::new(p);
    if path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ServerError::invalid(
            field,
            format!("{p:?} must be a relative path without '..'"),
        ));
    }
    Ok(())
}

/// A cgroupfs path: absolute, no `..` or empty components, no control characters.
pub fn cgroup_path(field: &'static str, p: &str) -> Result<()> {
    let ok = p.starts_with('/')
        && p.len() <= 4096
        && !p.chars().any(|c| c.is_control())
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok && p != "/" {
        return Err(ServerError::invalid(
            field,
            format!("{p:?} must be an absolute cgroup path without '..'"),
        ));
    }
    Ok(())
}

fn non_empty(field: &'static str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(ServerError::invalid(field, "is required"));
    }
    Ok(())
}

/// A hostname: 1-253 characters of DNS labels (letters, digits, '-', '.').
pub fn hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !ok {
        return Err(ServerError::invalid(
            "config.hostname",
            format!("{h:?} is not a valid hostname"),
        ));
    }
    Ok(())
}

/// Namespaced sysctls, as Kubernetes' "safe and unsafe namespaced" lists and runc accept them:
/// `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`, `net.*` (network namespace).
const NAMESPACED_SYSCTL_PREFIXES: &[&str] = &[
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shmall",
    "kernel.shm_rmid_forced",
    "kernel.msgmax",
    "kernel.msgmni",
    "kernel.msgmnb",
    "kernel.sem",
    "fs.mqueue.",
    "net.",
];

/// Checks one sysctl: a namespaced key made of `[a-z0-9_.-/]` segments and a value without
/// newlines, `=`, or NUL (so it cannot smuggle a second assignment).
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let field = "config.linux.sysctls";
    let key_ok = !key.is_empty()
        && key.len() <= 256
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-/".contains(&b))
        && !key.split(['.', '/']).any(|s| s.is_empty() || s == "..");
    if !key_ok {
        return Err(ServerError::invalid(
            field,
            format!("bad sysctl key {key:?}"),
        ));
    }
    let normalized = key.replace('/', ".");
    if !NAMESPACED_SYSCTL_PREFIXES
        .iter()
        .any(|p| normalized == p.trim_end_matches('.') || normalized.starts_with(p))
    {
        return Err(ServerError::invalid(
            field,
            format!("sysctl {key:?} is not namespaced"),
        ));
    }
    if value.is_empty()
        || value.len() > 4096
        || value.chars().any(|c| matches!(c, '\n' | '\r' | '=' | '\0'))
    {
        return Err(ServerError::invalid(
            field,
            format!("bad value {value:?} for sysctl {key:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ns: &str, uid: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                namespace: ns.into(),
                uid: uid.into(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sandbox_metadata_fields_are_named() {
        let err = sandbox_config(&cri::PodSandboxConfig::default()).unwrap_err();
        assert!(err.to_string().contains("config.metadata"));
        let err = sandbox_config(&pod("", "ns", "u")).unwrap_err();
        assert!(err.to_string().contains("config.metadata.name"));
        let err = sandbox_config(&pod("a", "", "u")).unwrap_err();
        assert!(err.to_string().contains("config.metadata.namespace"));
        let err = sandbox_config(&pod("a", "b", "")).unwrap_err();
        assert!(err.to_string().contains("config.metadata.uid"));
        sandbox_config(&pod("a", "b", "c")).unwrap();
        let mut p = pod("a", "b", "c");
        p.log_directory = "relative".into();
        assert!(sandbox_config(&p).is_err());
    }

    #[test]
    fn sysctls() {
        sysctl("net.ipv4.ip_forward", "1").unwrap();
        sysctl("kernel.shm_rmid_forced", "1").unwrap();
        sysctl("net/ipv4/ping_group_range", "0 1").unwrap();
        assert!(sysctl("kernel.panic", "1").is_err());
        assert!(sysctl("vm.swappiness", "1").is_err());
        assert!(sysctl("net.ipv4.ip_forward", "1\nkernel.panic=1").is_err());
        assert!(sysctl("net.ipv4.ip_forward", "1=2").is_err());
        assert!(sysctl("net..x", "1").is_err());
        assert!(sysctl("net/../kernel/panic", "1").is_err());
        assert!(sysctl("", "1").is_err());
    }

    #[test]
    fn paths_and_hostnames() {
        relative_path("f", "a/b.log").unwrap();
        assert!(relative_path("f", "/a").is_err());
        assert!(relative_path("f", "../a").is_err());
        assert!(relative_path("f", "a/../../b").is_err());
        cgroup_path("f", "/kubepods/pod1").unwrap();
        assert!(cgroup_path("f", "kubepods").is_err());
        assert!(cgroup_path("f", "/kubepods/../x").is_err());
        assert!(cgroup_path("f", "/a//b").is_err());
        hostname("pod-1.example").unwrap();
        assert!(hostname("-bad").is_err());
        assert!(hostname("a b").is_err());
    }
}
