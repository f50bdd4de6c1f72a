//! Request validation shared by the handlers. Every error names the CRI field.

use std::path::{Component, Path};

use krio_cri::v1 as cri;

use crate::error::{Result, ServerError};

/// The most bytes of a request's input that an error message quotes.
pub const QUOTE_LIMIT: usize = 256;

/// `input` quoted for an error message (Rust debug quoting, so control characters are
/// escaped), cut to its first [`QUOTE_LIMIT`] bytes (at a character boundary) with the total
/// length noted when longer. Every error that echoes request input goes through this: a whole
/// 1 MB field in a message would exceed gRPC's metadata limit and turn the reply into
/// `RESOURCE_EXHAUSTED`.
pub fn quote(input: &str) -> String {
    if input.len() <= QUOTE_LIMIT {
        return format!("{input:?}");
    }
    let mut end = QUOTE_LIMIT;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &input[..end], input.len())
}

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
                format!(
                    "{} contains '/' or control characters, or is too long",
                    quote(v)
                ),
            ));
        }
    }
    if !config.hostname.is_empty() {
        hostname(&config.hostname)?;
    }
    if !config.log_directory.is_empty()
        && (!Path::new(&config.log_directory).is_absolute() || config.log_directory.contains('\0'))
    {
        return Err(ServerError::invalid(
            "config.log_directory",
            format!(
                "{} must be an absolute path without NUL",
                quote(&config.log_directory)
            ),
        ));
    }
    if let Some(linux) = &config.linux {
        for (k, v) in &linux.sysctls {
            sysctl(k, v)?;
        }
        if !linux.cgroup_parent.is_empty() {
            cgroup_path("config.linux.cgroup_parent", &linux.cgroup_parent)?;
        }
        if let Some(u) = linux
            .security_context
            .as_ref()
            .and_then(|sc| sc.namespace_options.as_ref())
            .and_then(|ns| ns.userns_options.as_ref())
        {
            user_namespace(
                "config.linux.security_context.namespace_options.userns_options",
                u,
            )?;
            let ns = linux
                .security_context
                .as_ref()
                .and_then(|sc| sc.namespace_options.as_ref())
                .cloned()
                .unwrap_or_default();
            if u.mode == cri::NamespaceMode::Pod as i32 {
                userns_pod_namespaces(&ns)?;
            }
        }
    }
    for (i, p) in config.port_mappings.iter().enumerate() {
        port_mapping(i, p)?;
    }
    if let Some(dns) = &config.dns_config {
        for s in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ServerError::invalid(
                    "config.dns_config",
                    format!("{} is empty or contains whitespace", quote(s)),
                ));
            }
        }
    }
    Ok(())
}

/// Checks one `PodSandboxConfig.port_mappings` entry. A `container_port` must be 1..=65535;
/// a `host_port` of 0 means "no host port" (kubelet lists every declared container port so),
/// otherwise it must be 1..=65535; the protocol must be one CRI defines; a `host_ip`, when
/// set, must be an IP address. Nothing is silently dropped or rewritten (containerd skips
/// mappings without a host port, as krio does when it calls the plugins).
pub fn port_mapping(i: usize, p: &cri::PortMapping) -> Result<()> {
    let field = |name: &str| format!("config.port_mappings[{i}].{name}");
    if cri::Protocol::try_from(p.protocol).is_err() {
        return Err(ServerError::invalid(
            field("protocol"),
            format!("unknown protocol {} (TCP, UDP or SCTP)", p.protocol),
        ));
    }
    if !(1..=65535).contains(&p.container_port) {
        return Err(ServerError::invalid(
            field("container_port"),
            format!("{} is not a port (1-65535)", p.container_port),
        ));
    }
    if !(0..=65535).contains(&p.host_port) {
        return Err(ServerError::invalid(
            field("host_port"),
            format!("{} is not a port (1-65535, or 0 for none)", p.host_port),
        ));
    }
    if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(ServerError::invalid(
            field("host_ip"),
            format!("{} is not an IP address", quote(&p.host_ip)),
        ));
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
            format!("{} contains '/' or control characters", quote(&m.name)),
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
    for (i, m) in config.mounts.iter().enumerate() {
        recursive_read_only(i, m)?;
    }
    Ok(())
}

/// CRI `Mount.recursive_read_only`: only with `readonly` and private propagation, as the CRI
/// and kubelet define it ("recursive_read_only requires readonly" and "... requires
/// PROPAGATION_PRIVATE"), and only where the kernel can do it (`mount_setattr`, Linux 5.12).
fn recursive_read_only(i: usize, m: &cri::Mount) -> Result<()> {
    if !m.recursive_read_only {
        return Ok(());
    }
    let field = || format!("config.mounts[{i}].recursive_read_only");
    if !m.readonly {
        return Err(ServerError::InvalidArgument {
            field: field(),
            reason: "requires readonly".into(),
        });
    }
    if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
        return Err(ServerError::InvalidArgument {
            field: field(),
            reason: format!(
                "requires propagation PROPAGATION_PRIVATE, not {}",
                cri::MountPropagation::try_from(m.propagation)
                    .map(|p| p.as_str_name().to_string())
                    .unwrap_or_else(|_| m.propagation.to_string())
            ),
        });
    }
    if !crate::rootfs::recursive_read_only_supported() {
        return Err(ServerError::FailedPrecondition(format!(
            "{}: this kernel has no mount_setattr(2)",
            field()
        )));
    }
    Ok(())
}

/// A path that is relative, has no `..` component and no NUL (which no path can hold: the
/// open would fail later with an error that names no field).
pub fn relative_path(field: &'static str, p: &str) -> Result<()> {
    let path = Path::new(p);
    if path.is_absolute()
        || p.contains('\0')
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ServerError::invalid(
            field,
            format!("{} must be a relative path without '..' or NUL", quote(p)),
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
            format!("{} must be an absolute cgroup path without '..'", quote(p)),
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
            format!("{} is not a valid hostname", quote(h)),
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
            format!("bad sysctl key {}", quote(key)),
        ));
    }
    let normalized = key.replace('/', ".");
    if !NAMESPACED_SYSCTL_PREFIXES
        .iter()
        .any(|p| normalized == p.trim_end_matches('.') || normalized.starts_with(p))
    {
        return Err(ServerError::invalid(
            field,
            format!("sysctl {} is not namespaced", quote(key)),
        ));
    }
    if value.is_empty()
        || value.len() > 4096
        || value.chars().any(|c| matches!(c, '\n' | '\r' | '=' | '\0'))
    {
        return Err(ServerError::invalid(
            field,
            format!("bad value {} for sysctl {}", quote(value), quote(key)),
        ));
    }
    Ok(())
}

/// Checks a pod's CRI `UserNamespace` (`field` names it). `NODE` (the host's user namespace)
/// takes no mappings. `POD` needs exactly one uid and one gid mapping, each mapping container
/// id 0, with a non-zero length that stays within 32-bit ids (whether the pod's handler can
/// run it is checked at `RunPodSandbox`). `CONTAINER` and `TARGET` are not modes a user
/// namespace can have.
///
/// Errors: `InvalidArgument` naming the field for each rule above.
pub fn user_namespace(field: &str, u: &cri::UserNamespace) -> Result<()> {
    let mode = cri::NamespaceMode::try_from(u.mode).map_err(|_| {
        ServerError::invalid(format!("{field}.mode"), format!("unknown mode {}", u.mode))
    })?;
    match mode {
        cri::NamespaceMode::Node => {
            for (name, maps) in [("uids", &u.uids), ("gids", &u.gids)] {
                if !maps.is_empty() {
                    return Err(ServerError::invalid(
                        format!("{field}.{name}"),
                        "mappings need mode POD (NODE uses the host's ids)",
                    ));
                }
            }
            Ok(())
        }
        cri::NamespaceMode::Container | cri::NamespaceMode::Target => Err(ServerError::invalid(
            format!("{field}.mode"),
            format!(
                "{} is not a user namespace mode (NODE or POD)",
                mode.as_str_name()
            ),
        )),
        cri::NamespaceMode::Pod => {
            for (name, maps) in [("uids", &u.uids), ("gids", &u.gids)] {
                let f = format!("{field}.{name}");
                let [m] = maps.as_slice() else {
                    return Err(ServerError::invalid(
                        f,
                        format!("needs exactly one mapping, not {}", maps.len()),
                    ));
                };
                if m.container_id != 0 {
                    return Err(ServerError::invalid(
                        f,
                        format!(
                            "the mapping must start at container id 0, not {}",
                            m.container_id
                        ),
                    ));
                }
                let end = u64::from(m.host_id) + u64::from(m.length);
                if m.length == 0 || end > u64::from(u32::MAX) {
                    return Err(ServerError::invalid(
                        f,
                        format!(
                            "host_id {} and length {} are not a range of 32-bit ids",
                            m.host_id, m.length
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// The other namespaces of a pod in its own user namespace (mode POD): they must be the pod's,
/// owned by that user namespace. Kubernetes refuses `hostNetwork`, `hostIPC` and `hostPID`
/// with user namespaces, and so does krio. pid mode POD (`shareProcessNamespace`) is accepted:
/// the pod init's PID namespace is then made owned by the pod's user namespace.
///
/// Errors: `InvalidArgument` naming the namespace option that is NODE.
pub fn userns_pod_namespaces(ns: &cri::NamespaceOption) -> Result<()> {
    let f = "config.linux.security_context.namespace_options";
    let node = cri::NamespaceMode::Node as i32;
    for (name, mode) in [("network", ns.network), ("ipc", ns.ipc), ("pid", ns.pid)] {
        if mode == node {
            return Err(ServerError::invalid(
                format!("{f}.{name}"),
                "must not be NODE in a pod with its own user namespace (userns_options mode POD)",
            ));
        }
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
    fn port_mappings_are_refused_not_rewritten() {
        let pm =
            |protocol: i32, container_port: i32, host_port: i32, host_ip: &str| cri::PortMapping {
                protocol,
                container_port,
                host_port,
                host_ip: host_ip.into(),
            };
        for (m, field) in [
            (pm(0, 80, 8080, "1.2.3.4; rm -rf /"), "host_ip"),
            (pm(7, 80, 8080, ""), "protocol"),
            (pm(0, 0, 8080, ""), "container_port"),
            (pm(0, -1, 8080, ""), "container_port"),
            (pm(0, 70000, 8080, ""), "container_port"),
            (pm(0, 80, -1, ""), "host_port"),
            (pm(0, 80, 70000, ""), "host_port"),
        ] {
            let e = port_mapping(3, &m).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(
                e.to_string()
                    .contains(&format!("config.port_mappings[3].{field}")),
                "{e}"
            );
        }
        for m in [
            pm(0, 80, 0, ""),
            pm(1, 53, 5353, "127.0.0.1"),
            pm(2, 9, 9, "::1"),
        ] {
            port_mapping(0, &m).unwrap();
        }
    }

    #[test]
    fn long_input_is_cut_in_messages() {
        assert_eq!(quote("ab"), "\"ab\"");
        let long = "é".repeat(400_000);
        let q = quote(&long);
        assert!(q.len() < QUOTE_LIMIT + 64, "{}", q.len());
        assert!(q.ends_with("(800000 bytes)"), "{q}");
        let e = container_config(&cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: format!("a/{long}"),
                attempt: 0,
            }),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().len() < 1024);
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

    #[test]
    fn user_namespace_options_are_checked_by_field() {
        let f = "config.linux.security_context.namespace_options.userns_options";
        let map = |container_id, host_id, length| cri::IdMapping {
            container_id,
            host_id,
            length,
        };
        let ns =
            |mode: cri::NamespaceMode, uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>| {
                cri::UserNamespace {
                    mode: mode as i32,
                    uids,
                    gids,
                }
            };
        let invalid = |u: cri::UserNamespace, want: &str| match user_namespace(f, &u) {
            Err(ServerError::InvalidArgument { field, .. }) => assert_eq!(field, want, "{u:?}"),
            other => panic!("{u:?}: {other:?}"),
        };
        use cri::NamespaceMode::*;
        assert!(user_namespace(f, &ns(Node, vec![], vec![])).is_ok());
        invalid(
            ns(Node, vec![map(0, 100000, 65536)], vec![]),
            &format!("{f}.uids"),
        );
        invalid(ns(Container, vec![], vec![]), &format!("{f}.mode"));
        invalid(ns(Target, vec![], vec![]), &format!("{f}.mode"));
        invalid(
            cri::UserNamespace {
                mode: 42,
                ..Default::default()
            },
            &format!("{f}.mode"),
        );
        let good = || vec![map(0, 100000, 65536)];
        invalid(ns(Pod, vec![], good()), &format!("{f}.uids"));
        invalid(
            ns(Pod, vec![map(0, 100000, 1), map(1, 200000, 1)], good()),
            &format!("{f}.uids"),
        );
        invalid(
            ns(Pod, good(), vec![map(1, 100000, 65536)]),
            &format!("{f}.gids"),
        );
        invalid(
            ns(Pod, good(), vec![map(0, u32::MAX, 2)]),
            &format!("{f}.gids"),
        );
        invalid(
            ns(Pod, good(), vec![map(0, 100000, 0)]),
            &format!("{f}.gids"),
        );
        assert!(user_namespace(f, &ns(Pod, good(), good())).is_ok());
        let opts = |network, ipc, pid| cri::NamespaceOption {
            network: network as i32,
            ipc: ipc as i32,
            pid: pid as i32,
            ..Default::default()
        };
        assert!(userns_pod_namespaces(&opts(Pod, Pod, Container)).is_ok());
        // A PID namespace shared by the pod (shareProcessNamespace) is owned by its user
        // namespace too.
        assert!(userns_pod_namespaces(&opts(Pod, Pod, Pod)).is_ok());
        for (o, field) in [
            (opts(Node, Pod, Container), "network"),
            (opts(Pod, Node, Container), "ipc"),
            (opts(Pod, Pod, Node), "pid"),
        ] {
            match userns_pod_namespaces(&o) {
                Err(ServerError::InvalidArgument { field: got, .. }) => {
                    assert!(got.ends_with(field), "{got}")
                }
                other => panic!("{o:?}: {other:?}"),
            }
        }
        // The whole pod config, as kubelet sends it for hostUsers: false with
        // shareProcessNamespace: true.
        let mut p = pod("a", "b", "c");
        p.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    userns_options: Some(ns(Pod, good(), good())),
                    ..opts(Pod, Pod, Pod)
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        sandbox_config(&p).unwrap();
    }
}
