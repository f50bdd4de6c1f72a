//! [`build_spec`]: CRI `ContainerConfig` + `PodSandboxConfig` + image config -> OCI runtime spec.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use krio_cri::v1::{
    ContainerConfig, LinuxContainerSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig,
};
use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilitiesBuilder, LinuxIdMapping,
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, Process, Root, Spec,
    UserBuilder,
};

use crate::error::SpecError;
use crate::mounts::RootPropagation;
use crate::{mounts, process, resources, security, user};

/// Annotation keys set on every container spec, as containerd's CRI plugin does.
pub mod annotations {
    /// `container` for workload containers (`sandbox` is for pause containers, which krio does not create).
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    /// The pod sandbox id.
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    /// The pod name (sandbox metadata name).
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    /// The pod namespace.
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    /// The pod UID.
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    /// The container name (container metadata name).
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    /// The image reference the kubelet asked for.
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
    /// krio-specific: CRI `stdin` (`"true"`/`"false"`); the OCI process has no stdin field (CRI-O uses a similar
    /// `io.kubernetes.cri-o.Stdin` annotation).
    pub const STDIN: &str = "io.krio.stdin";
    /// krio-specific: CRI `stdin_once` (`"true"`/`"false"`).
    pub const STDIN_ONCE: &str = "io.krio.stdin-once";
}

/// Pinned namespace files (`/proc/<pid>/ns/*` or bind-mounted nsfs files) of the pod sandbox.
///
/// For network / IPC / UTS: joined via `path` when `Some` and the CRI mode is not `NODE`; a new namespace is
/// created when `None`. For PID: CRI mode `CONTAINER` always gets a new namespace; `POD` and `TARGET` need `pid`
/// set (the sandbox's or the target container's pid namespace) and fail with
/// [`SpecError::MissingNamespacePath`] otherwise. `NODE` always means the host namespace (omitted from the spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePaths {
    /// Network namespace file.
    pub network: Option<PathBuf>,
    /// IPC namespace file.
    pub ipc: Option<PathBuf>,
    /// UTS namespace file.
    pub uts: Option<PathBuf>,
    /// PID namespace file (pod-shared or target container).
    pub pid: Option<PathBuf>,
    /// The pod's user namespace file, needed when the CRI `userns_options` mode is `POD`: the
    /// container joins it (it is listed first, and the other namespaces above must be owned by
    /// it) with the CRI mappings as `linux.uidMappings`/`gidMappings`.
    pub user: Option<PathBuf>,
}

/// Everything [`build_spec`] needs.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    /// The CRI container config (`CreateContainerRequest.config`).
    pub container: &'a ContainerConfig,
    /// The CRI sandbox config (`CreateContainerRequest.sandbox_config`).
    pub sandbox: &'a PodSandboxConfig,
    /// The pod sandbox id (annotation `io.kubernetes.cri.sandbox-id`).
    pub sandbox_id: &'a str,
    /// The image config: `Entrypoint`, `Cmd`, `Env`, `WorkingDir` and `User` are used.
    pub image_config: Option<&'a ImageConfig>,
    /// The mounted rootfs (absolute path); its `/etc/passwd` and `/etc/group` resolve user and group names.
    pub rootfs: &'a Path,
    /// Sandbox namespace files to join.
    pub namespaces: NamespacePaths,
    /// Files provided by the sandbox (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, a shared `/dev/shm`);
    /// they replace default mounts with the same destination and are themselves replaced by CRI mounts.
    pub sandbox_mounts: Vec<Mount>,
    /// `linux.cgroupsPath`, cgroupfs style, e.g. `/krio/<pod-id>/<container-id>`.
    pub cgroups_path: String,
    /// The daemon's own `oom_score_adj`; the container's is clamped to at least this value.
    pub daemon_oom_score_adj: i32,
    /// `linux.resources.pids.limit` (the CRI has no per-container pids limit; daemon configuration). `None`:
    /// unlimited; `-1`: explicitly unlimited.
    pub pids_limit: Option<i64>,
    /// Whether the host uses the unified cgroup v2 hierarchy (see [`crate::host_uses_cgroup_v2`]): a cgroup
    /// namespace is created and `unified` resources are honoured only then.
    pub cgroup_v2: bool,
    /// The capabilities a container may hold at most: the daemon's bounding set ([`crate::daemon_bounding_set`]).
    /// Privileged containers and `add_capabilities: [ALL]` get exactly these. `None`: every capability in
    /// [`crate::ALL_CAPABILITIES`] (for callers that build specs without running them).
    pub capability_bounding_set: Option<&'a HashSet<Capability>>,
    /// The capabilities an unprivileged container starts from before its CRI adds and drops (the daemon's
    /// `container.default_capabilities`). `None`: [`crate::DEFAULT_CAPABILITIES`].
    pub default_capabilities: Option<&'a [Capability]>,
}

/// Builds the OCI runtime spec (`config.json`) for a CRI container.
///
/// Follows the CRI `api.proto` comments and containerd's CRI plugin where the CRI is silent; see the module docs of
/// each part: process args/env/cwd (`process`), user (`user`), mounts and devices (`mounts`), capabilities, masked
/// paths and seccomp (`security`), resources and sysctls (`resources`). Namespaces: network/IPC/UTS/PID per
/// [`NamespacePaths`]; a new mount namespace always; a new cgroup namespace on cgroup v2 only; with CRI
/// `userns_options` mode `POD` the pod's user namespace is joined by path with the CRI mappings (modes other than
/// `NODE` and `POD` are rejected). The hostname is set only when the
/// container gets its own UTS namespace (a joined sandbox UTS namespace already carries it); `HOSTNAME` is put in
/// the environment either way. Privileged containers require a privileged sandbox (containerd).
///
/// Errors: any [`SpecError`]; every variant names the offending CRI field.
pub fn build_spec(inputs: &SpecInputs) -> Result<Spec, SpecError> {
    let cfg = inputs.container;
    let sc: Option<&LinuxContainerSecurityContext> =
        cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let sandbox_sc = inputs
        .sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    if privileged && !sandbox_sc.is_some_and(|s| s.privileged) {
        return Err(SpecError::invalid(
            "linux.security_context.privileged",
            "privileged container in a non-privileged sandbox",
        ));
    }
    let rootfs_str = inputs.rootfs.to_str().ok_or_else(|| {
        SpecError::invalid(
            "rootfs",
            format!("{} is not UTF-8", inputs.rootfs.display()),
        )
    })?;
    mounts::validate_abs_path("rootfs", rootfs_str)?;
    if !inputs.cgroups_path.is_empty() {
        mounts::validate_abs_path("cgroups_path", &inputs.cgroups_path)?;
    }

    // Namespaces.
    let ns_opts = namespace_options(sc, sandbox_sc);
    let mode = |name: &'static str, v: i32| {
        NamespaceMode::try_from(v).map_err(|_| {
            SpecError::invalid(
                format!("linux.security_context.namespace_options.{name}"),
                format!("unknown mode {v}"),
            )
        })
    };
    let net_mode = mode("network", ns_opts.network)?;
    let ipc_mode = mode("ipc", ns_opts.ipc)?;
    let pid_mode = mode("pid", ns_opts.pid)?;
    let mut id_mappings = None;
    if let Some(u) = ns_opts.userns_options.as_ref() {
        match mode("userns_options.mode", u.mode)? {
            NamespaceMode::Node => {}
            NamespaceMode::Pod => id_mappings = Some(user_namespace_mappings(u)?),
            _ => {
                return Err(SpecError::unsupported(
                    "linux.security_context.namespace_options.userns_options.mode",
                    "user namespaces other than NODE and POD",
                ))
            }
        }
    }
    let host_net = net_mode == NamespaceMode::Node;
    let host_ipc = ipc_mode == NamespaceMode::Node;
    let mut namespaces = Vec::new();
    let mut push_ns = |typ: LinuxNamespaceType, path: Option<&PathBuf>| -> Result<(), SpecError> {
        let mut b = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            b = b.path(p.clone());
        }
        namespaces.push(b.build().map_err(SpecError::build("namespace"))?);
        Ok(())
    };
    if id_mappings.is_some() {
        let path = inputs
            .namespaces
            .user
            .as_ref()
            .ok_or(SpecError::MissingNamespacePath {
                namespace: "user",
                mode: "POD",
            })?;
        push_ns(LinuxNamespaceType::User, Some(path))?;
    }
    push_ns(LinuxNamespaceType::Mount, None)?;
    if !host_net {
        push_ns(
            LinuxNamespaceType::Network,
            inputs.namespaces.network.as_ref(),
        )?;
    }
    if !host_ipc {
        push_ns(LinuxNamespaceType::Ipc, inputs.namespaces.ipc.as_ref())?;
    }
    // UTS follows the network mode (Kubernetes hostNetwork implies the host's UTS namespace).
    let own_uts = !host_net && inputs.namespaces.uts.is_none();
    if !host_net {
        push_ns(LinuxNamespaceType::Uts, inputs.namespaces.uts.as_ref())?;
    }
    match pid_mode {
        NamespaceMode::Node => {}
        NamespaceMode::Container => push_ns(LinuxNamespaceType::Pid, None)?,
        NamespaceMode::Pod | NamespaceMode::Target => {
            let path = inputs
                .namespaces
                .pid
                .as_ref()
                .ok_or(SpecError::MissingNamespacePath {
                    namespace: "pid",
                    mode: if pid_mode == NamespaceMode::Pod {
                        "POD"
                    } else {
                        "TARGET"
                    },
                })?;
            push_ns(LinuxNamespaceType::Pid, Some(path))?;
        }
    }
    if inputs.cgroup_v2 {
        push_ns(LinuxNamespaceType::Cgroup, None)?;
    }

    // Hostname.
    let sandbox_hostname = inputs.sandbox.hostname.as_str();
    if !sandbox_hostname.is_empty() {
        validate_hostname(sandbox_hostname)?;
    }
    let env_hostname = if host_net {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    } else {
        sandbox_hostname.to_string()
    };

    // Process.
    let image = inputs.image_config;
    let db = user::UserDb::load(inputs.rootfs)?;
    let resolved = user::resolve_user(sc, image.and_then(|c| c.user().as_deref()), &db)?;
    let all_caps: HashSet<Capability>;
    let bounding = match inputs.capability_bounding_set {
        Some(b) => b,
        None => {
            all_caps = security::ALL_CAPABILITIES.iter().copied().collect();
            &all_caps
        }
    };
    let defaults = inputs
        .default_capabilities
        .unwrap_or(security::DEFAULT_CAPABILITIES);
    let caps = security::capabilities(sc, privileged, bounding, defaults)?;
    let ambient = security::ambient_capabilities(sc)?;
    if let Some(c) = ambient.iter().find(|c| !caps.contains(c)) {
        return Err(SpecError::invalid(
            "linux.security_context.capabilities.add_ambient_capabilities",
            format!("{c} is not in the container's capability set"),
        ));
    }
    let caps_set: Capabilities = caps.iter().copied().collect();
    let lr = cfg.linux.as_ref().and_then(|l| l.resources.as_ref());
    let mut proc = Process::default();
    proc.set_terminal(Some(cfg.tty));
    proc.set_console_size(None);
    proc.set_user(
        UserBuilder::default()
            .uid(resolved.uid)
            .gid(resolved.gid)
            .additional_gids(resolved.additional_gids)
            .build()
            .map_err(SpecError::build("user"))?,
    );
    proc.set_args(Some(process::resolve_args(cfg, image)?));
    proc.set_env(Some(process::resolve_env(
        cfg,
        image,
        Some(env_hostname.as_str()),
    )?));
    proc.set_cwd(PathBuf::from(process::resolve_cwd(cfg, image)?));
    proc.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(caps_set.clone())
            .effective(caps_set.clone())
            .permitted(caps_set)
            // containerd stopped setting inheritable (CVE-2022-24769); only ambient ones need it.
            .inheritable(ambient.iter().copied().collect::<Capabilities>())
            .ambient(ambient.iter().copied().collect::<Capabilities>())
            .build()
            .map_err(SpecError::build("capabilities"))?,
    ));
    // No rlimits: the container inherits the monitor's (the daemon's) limits, as with containerd's CRI plugin.
    proc.set_rlimits(None);
    proc.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    proc.set_apparmor_profile(None);
    proc.set_selinux_label(None);
    proc.set_oom_score_adj(Some(resources::clamp_oom_score_adj(
        lr.map(|r| r.oom_score_adj).unwrap_or(0),
        inputs.daemon_oom_score_adj,
    )));

    // Mounts.
    let (cri_mounts, propagation) =
        mounts::cri_mounts(cfg, &mut || std::fs::read_to_string("/proc/self/mountinfo"))?;
    for (i, m) in inputs.sandbox_mounts.iter().enumerate() {
        let dest = m.destination().to_str().unwrap_or("");
        mounts::validate_abs_path(&format!("sandbox_mounts[{i}].destination"), dest)?;
    }
    let all_mounts = mounts::merge_mounts(vec![
        mounts::default_mounts(privileged)?,
        inputs.sandbox_mounts.clone(),
        cri_mounts,
    ]);

    // Linux section.
    let (devices, mut device_rules) = mounts::cri_devices(cfg)?;
    let mut rules = mounts::default_device_rules(privileged)?;
    rules.append(&mut device_rules);
    let mut res = resources::resources(lr, inputs.pids_limit, inputs.cgroup_v2)?;
    res.set_devices(Some(rules));
    let (masked, readonly) = security::masked_and_readonly_paths(sc, privileged)?;
    let seccomp = security::seccomp(&security::seccomp_choice(sc)?, privileged, &caps)?;
    let raw_sysctls = inputs
        .sandbox
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    let sysctls = resources::sysctls(&raw_sysctls, host_ipc, host_net)?;

    let mut linux = Linux::default();
    let (uid_mappings, gid_mappings) = id_mappings.unzip();
    linux.set_uid_mappings(uid_mappings);
    linux.set_gid_mappings(gid_mappings);
    linux.set_sysctl(if sysctls.is_empty() {
        None
    } else {
        Some(sysctls)
    });
    linux.set_resources(Some(res));
    linux.set_cgroups_path(if inputs.cgroups_path.is_empty() {
        None
    } else {
        Some(PathBuf::from(&inputs.cgroups_path))
    });
    linux.set_namespaces(Some(namespaces));
    linux.set_devices(if devices.is_empty() {
        None
    } else {
        Some(devices)
    });
    linux.set_seccomp(seccomp);
    linux.set_rootfs_propagation(match propagation {
        RootPropagation::Private => None,
        RootPropagation::Slave => Some("rslave".to_string()),
        RootPropagation::Shared => Some("rshared".to_string()),
    });
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_mount_label(None);

    let mut root = Root::default();
    root.set_path(inputs.rootfs.to_path_buf());
    root.set_readonly(Some(sc.is_some_and(|s| s.readonly_rootfs)));

    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(all_mounts));
    spec.set_process(Some(proc));
    spec.set_hostname(if own_uts && !sandbox_hostname.is_empty() {
        Some(sandbox_hostname.to_string())
    } else {
        None
    });
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(build_annotations(inputs)));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The OCI `uidMappings` and `gidMappings` of a CRI `userns_options` with mode `POD`: its one uid
/// and one gid mapping (the daemon checked their shape at `RunPodSandbox`; checked again here).
fn user_namespace_mappings(
    u: &krio_cri::v1::UserNamespace,
) -> Result<(Vec<LinuxIdMapping>, Vec<LinuxIdMapping>), SpecError> {
    let one = |name: &str, maps: &[krio_cri::v1::IdMapping]| {
        let field = format!("linux.security_context.namespace_options.userns_options.{name}");
        let [m] = maps else {
            return Err(SpecError::invalid(
                field,
                format!("needs exactly one mapping, not {}", maps.len()),
            ));
        };
        if m.container_id != 0 || m.length == 0 {
            return Err(SpecError::invalid(
                field,
                "the mapping must start at container id 0 and map at least one id",
            ));
        }
        Ok(vec![LinuxIdMappingBuilder::default()
            .container_id(m.container_id)
            .host_id(m.host_id)
            .size(m.length)
            .build()
            .map_err(SpecError::build("id mapping"))?])
    };
    Ok((one("uids", &u.uids)?, one("gids", &u.gids)?))
}

/// The container's namespace options, falling back to the sandbox's (the kubelet sets both identically), then to
/// the CRI defaults (all `POD`).
fn namespace_options(
    sc: Option<&LinuxContainerSecurityContext>,
    sandbox_sc: Option<&krio_cri::v1::LinuxSandboxSecurityContext>,
) -> NamespaceOption {
    sc.and_then(|s| s.namespace_options.clone())
        .or_else(|| sandbox_sc.and_then(|s| s.namespace_options.clone()))
        .unwrap_or_default()
}

/// RFC 1123 hostname check (what the kubelet guarantees; re-checked because it lands in `sethostname`).
fn validate_hostname(h: &str) -> Result<(), SpecError> {
    let ok = h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            "sandbox_config.hostname",
            format!("{h:?} is not a valid hostname"),
        ))
    }
}

fn build_annotations(inputs: &SpecInputs) -> HashMap<String, String> {
    use annotations::*;
    let cfg = inputs.container;
    let md = inputs.sandbox.metadata.clone().unwrap_or_default();
    let mut a = HashMap::new();
    let mut put = |k: &str, v: &str| {
        a.insert(k.to_string(), v.to_string());
    };
    put(CONTAINER_TYPE, "container");
    put(SANDBOX_ID, inputs.sandbox_id);
    put(SANDBOX_NAME, &md.name);
    put(SANDBOX_NAMESPACE, &md.namespace);
    put(SANDBOX_UID, &md.uid);
    put(
        CONTAINER_NAME,
        cfg.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or(""),
    );
    put(
        IMAGE_NAME,
        cfg.image.as_ref().map(|i| i.image.as_str()).unwrap_or(""),
    );
    put(STDIN, if cfg.stdin { "true" } else { "false" });
    put(STDIN_ONCE, if cfg.stdin_once { "true" } else { "false" });
    a
}
