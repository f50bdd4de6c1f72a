//! Capabilities, masked / read-only paths and seccomp (CRI `LinuxContainerSecurityContext`).

use std::collections::HashSet;
use std::path::Path;

use krio_cri::v1::{security_profile::ProfileType, LinuxContainerSecurityContext, SecurityProfile};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscall,
    LinuxSyscallBuilder,
};

use crate::error::SpecError;

/// containerd's default capability set for unprivileged containers (`oci.defaultUnixCaps`).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability known to `oci-spec`, in the kernel's numbering: the capability at index `n` is capability
/// number `n` of `<linux/capability.h>` (bit `n` of the `Cap*` masks in `/proc/<pid>/status`). What `ALL` and
/// privileged containers get is this list intersected with the daemon's bounding set ([`daemon_bounding_set`]).
pub const ALL_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The capabilities whose bits are set in `mask` (a `Cap*` mask of `/proc/<pid>/status`), among
/// [`ALL_CAPABILITIES`]; bits the list does not know are ignored.
pub fn capabilities_in_mask(mask: u64) -> HashSet<Capability> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// The mask (bit `n` = capability number `n`) of a set of capabilities: the inverse of [`capabilities_in_mask`].
pub fn capability_mask(caps: &HashSet<Capability>) -> u64 {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(_, c)| caps.contains(c))
        .fold(0, |m, (bit, _)| m | (1u64 << bit))
}

/// The daemon's own capability bounding set (`CapBnd` of `/proc/self/status`), read once. A container can
/// never hold a capability outside it: runc fails with "unable to apply caps: operation not permitted" when
/// asked to. When the file cannot be read or parsed, every capability in [`ALL_CAPABILITIES`] is assumed.
pub fn daemon_bounding_set() -> &'static HashSet<Capability> {
    static SET: std::sync::OnceLock<HashSet<Capability>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .map(capabilities_in_mask)
            .unwrap_or_else(|| ALL_CAPABILITIES.iter().copied().collect())
    })
}

/// containerd's default masked paths (`oci.defaultUnixSpec` + CRI).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Parses a CRI capability name: case-insensitive, with or without the `CAP_` prefix.
///
/// Errors: [`SpecError::InvalidField`] naming `field` when the name is not a Linux capability.
pub fn parse_capability(field: &str, name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse::<Capability>()
        .map_err(|_| SpecError::invalid(field, format!("unknown capability {name:?}")))
}

/// The capability set of the container process (bounding = effective = permitted).
///
/// containerd semantics: privileged gets every capability (add/drop ignored). Otherwise start from
/// `defaults` (the daemon's `default_capabilities`, else [`DEFAULT_CAPABILITIES`]); `ALL` in `add_capabilities` selects every capability and `ALL` in
/// `drop_capabilities` clears the set (both applied before the individual names, so `add: [ALL], drop: [CHOWN]`
/// is "everything but CHOWN"); then individual adds, then individual drops.
///
/// "Every capability" (privileged, `ALL`) means every one in `bounding`, the daemon's own bounding set, as
/// containerd grants privileged containers what the daemon holds; defaults the daemon lacks are left out
/// silently. A capability named explicitly in `add_capabilities` that is not in `bounding` cannot be granted
/// (runc would fail late with "operation not permitted"); it is refused.
///
/// Errors: [`SpecError::InvalidField`] for an unknown name; [`SpecError::CapabilityUnavailable`] for an explicit
/// add outside `bounding`.
pub(crate) fn capabilities(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    bounding: &HashSet<Capability>,
    defaults: &[Capability],
) -> Result<HashSet<Capability>, SpecError> {
    if privileged {
        return Ok(bounding.clone());
    }
    let mut caps: HashSet<Capability> = defaults
        .iter()
        .filter(|c| bounding.contains(c))
        .copied()
        .collect();
    let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(caps);
    };
    let is_all = |s: &String| s.trim().eq_ignore_ascii_case("ALL");
    if c.add_capabilities.iter().any(is_all) {
        caps = bounding.clone();
    }
    if c.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    for (i, name) in c.add_capabilities.iter().enumerate() {
        if !is_all(name) {
            let field = format!("linux.security_context.capabilities.add_capabilities[{i}]");
            let cap = parse_capability(&field, name)?;
            if !bounding.contains(&cap) {
                return Err(SpecError::CapabilityUnavailable {
                    field,
                    capability: format!("CAP_{cap}"),
                });
            }
            caps.insert(cap);
        }
    }
    for (i, name) in c.drop_capabilities.iter().enumerate() {
        if !is_all(name) {
            caps.remove(&parse_capability(
                &format!("linux.security_context.capabilities.drop_capabilities[{i}]"),
                name,
            )?);
        }
    }
    Ok(caps)
}

/// Ambient capabilities (CRI `add_ambient_capabilities`); each must also be in the main set to be raisable.
pub(crate) fn ambient_capabilities(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<HashSet<Capability>, SpecError> {
    let mut out = HashSet::new();
    if let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) {
        for (i, name) in c.add_ambient_capabilities.iter().enumerate() {
            out.insert(parse_capability(
                &format!("linux.security_context.capabilities.add_ambient_capabilities[{i}]"),
                name,
            )?);
        }
    }
    Ok(out)
}

/// Masked and read-only paths: none when privileged; else the CRI lists when non-empty (kubelet passes its
/// defaults there), else [`DEFAULT_MASKED_PATHS`] / [`DEFAULT_READONLY_PATHS`]. Each path must be absolute.
pub(crate) fn masked_and_readonly_paths(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
) -> Result<(Vec<String>, Vec<String>), SpecError> {
    if privileged {
        return Ok((Vec::new(), Vec::new()));
    }
    let pick = |field: &str, cri: &[String], default: &[&str]| -> Result<Vec<String>, SpecError> {
        if cri.is_empty() {
            return Ok(default.iter().map(|s| s.to_string()).collect());
        }
        for (i, p) in cri.iter().enumerate() {
            crate::mounts::validate_abs_path(&format!("{field}[{i}]"), p)?;
        }
        Ok(cri.to_vec())
    };
    Ok((
        pick(
            "linux.security_context.masked_paths",
            sc.map(|s| s.masked_paths.as_slice()).unwrap_or(&[]),
            DEFAULT_MASKED_PATHS,
        )?,
        pick(
            "linux.security_context.readonly_paths",
            sc.map(|s| s.readonly_paths.as_slice()).unwrap_or(&[]),
            DEFAULT_READONLY_PATHS,
        )?,
    ))
}

/// Which seccomp profile the CRI asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    /// No filter.
    Unconfined,
    /// The runtime's default profile (krio's built-in one, or the daemon's configured file).
    RuntimeDefault,
    /// A profile file on the node (`localhost_ref`).
    Localhost(String),
}

/// Reads the seccomp choice from `seccomp` (preferred) or the deprecated `seccomp_profile_path`
/// (`runtime/default`, `docker/default`, `unconfined`, `localhost/<abs path>`, `""` = unconfined).
///
/// Errors: [`SpecError`] naming the field for an unknown profile type or path form.
pub fn seccomp_choice(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<SeccompChoice, SpecError> {
    let Some(sc) = sc else {
        return Ok(SeccompChoice::Unconfined);
    };
    if let Some(SecurityProfile {
        profile_type,
        localhost_ref,
    }) = sc.seccomp.as_ref()
    {
        let field = "linux.security_context.seccomp";
        return match ProfileType::try_from(*profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(SeccompChoice::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(SeccompChoice::Unconfined),
            Ok(ProfileType::Localhost) => Ok(SeccompChoice::Localhost(localhost_ref.clone())),
            Err(_) => Err(SpecError::invalid(
                field,
                format!("unknown profile_type {profile_type}"),
            )),
        };
    }
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok(SeccompChoice::Unconfined),
        "runtime/default" | "docker/default" => Ok(SeccompChoice::RuntimeDefault),
        p => match p.strip_prefix("localhost/") {
            Some(rest) => Ok(SeccompChoice::Localhost(rest.to_string())),
            None => Err(SpecError::invalid(
                "linux.security_context.seccomp_profile_path",
                format!("unknown profile {p:?}"),
            )),
        },
    }
}

/// Builds `linux.seccomp` for a choice; `None` means no filter. Privileged containers get no filter (CRI:
/// "Seccomp restrictions are not applied").
pub(crate) fn seccomp(
    choice: &SeccompChoice,
    privileged: bool,
    caps: &HashSet<Capability>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    match choice {
        SeccompChoice::Unconfined => Ok(None),
        SeccompChoice::RuntimeDefault => default_seccomp_profile(caps).map(Some),
        SeccompChoice::Localhost(path) => load_localhost_profile(path).map(Some),
    }
}

fn load_localhost_profile(path: &str) -> Result<LinuxSeccomp, SpecError> {
    let field = "linux.security_context.seccomp.localhost_ref";
    crate::mounts::validate_abs_path(field, path)?;
    let p = Path::new(path);
    let data = std::fs::read(p).map_err(|source| SpecError::HostPath {
        field: field.to_string(),
        path: p.to_path_buf(),
        source,
    })?;
    // Docker-format profiles carry conditional rules (`includes`/`excludes` on capabilities, arch, kernel) that
    // an OCI `LinuxSeccomp` cannot express; applying them unconditionally would silently change the policy, so
    // such profiles are rejected. `archMap` is ignored (runc uses the native architecture).
    let value: serde_json::Value =
        serde_json::from_slice(&data).map_err(|source| SpecError::SeccompProfile {
            path: p.to_path_buf(),
            source,
        })?;
    if let Some(sys) = value.get("syscalls").and_then(|s| s.as_array()) {
        for (i, rule) in sys.iter().enumerate() {
            for key in ["includes", "excludes"] {
                if rule
                    .get(key)
                    .and_then(|v| v.as_object())
                    .is_some_and(|o| !o.is_empty())
                {
                    return Err(SpecError::unsupported(
                        field,
                        format!("{path}: syscalls[{i}].{key} (Docker conditional rules) is not supported"),
                    ));
                }
            }
        }
    }
    serde_json::from_value(value).map_err(|source| SpecError::SeccompProfile {
        path: p.to_path_buf(),
        source,
    })
}

/// A group of syscalls the default profile blocks unless the container holds one of `unless_caps`.
struct BlockRule {
    unless_caps: &'static [Capability],
    syscalls: &'static [&'static str],
}

/// krio's `RuntimeDefault` seccomp profile.
///
/// Design: default action ALLOW, and an explicit deny-list answering `EPERM`. This is deliberately simpler than
/// Docker's allow-list (which is ~400 names long and needs per-kernel maintenance) while blocking the same
/// dangerous families Docker's default blocks: kernel module / kexec / reboot, clock setting, mount and namespace
/// manipulation, swap, accounting, kernel keyring, ptrace and cross-process memory access, BPF and perf,
/// userfaultfd, handle-based file access, io_uring, and obsolete syscalls. Like Docker's conditional rules, a
/// group is allowed again when the container holds the capability that legitimately grants it (e.g. `mount` with
/// `CAP_SYS_ADMIN`). Not replicated from Docker: argument filters on `clone`/`personality`/`socket` (namespace
/// creation via `clone` flags is still gated by the kernel's own capability checks).
/// Unknown syscall names are skipped by runc, so the list can mention syscalls absent on older kernels.
const DEFAULT_BLOCK_RULES: &[BlockRule] = &[
    BlockRule {
        unless_caps: &[],
        syscalls: &[
            "kexec_load",
            "kexec_file_load",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "uselib",
            "_sysctl",
            "sysfs",
            "ustat",
            "vm86",
            "vm86old",
            "nfsservctl",
            "create_module",
            "get_kernel_syms",
            "query_module",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
    },
    BlockRule {
        unless_caps: &[Capability::SysAdmin],
        syscalls: &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "name_to_handle_at",
        ],
    },
    BlockRule {
        unless_caps: &[Capability::DacReadSearch],
        syscalls: &["open_by_handle_at"],
    },
    BlockRule {
        unless_caps: &[Capability::SysModule],
        syscalls: &["init_module", "finit_module", "delete_module"],
    },
    BlockRule {
        unless_caps: &[Capability::SysRawio],
        syscalls: &["iopl", "ioperm"],
    },
    BlockRule {
        unless_caps: &[Capability::SysTime],
        syscalls: &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    },
    BlockRule {
        unless_caps: &[Capability::SysBoot],
        syscalls: &["reboot"],
    },
    BlockRule {
        unless_caps: &[Capability::SysPacct],
        syscalls: &["acct"],
    },
    BlockRule {
        unless_caps: &[Capability::Syslog, Capability::SysAdmin],
        syscalls: &["syslog"],
    },
    BlockRule {
        unless_caps: &[Capability::SysPtrace],
        syscalls: &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
        ],
    },
    BlockRule {
        unless_caps: &[Capability::Bpf, Capability::SysAdmin],
        syscalls: &["bpf"],
    },
    BlockRule {
        unless_caps: &[Capability::Perfmon, Capability::SysAdmin],
        syscalls: &["perf_event_open"],
    },
];

/// Errno returned for blocked syscalls (`EPERM`).
const BLOCKED_ERRNO: u32 = 1;

/// Builds krio's `RuntimeDefault` profile (see [`DEFAULT_BLOCK_RULES`]) for a container holding `caps`.
pub(crate) fn default_seccomp_profile(
    caps: &HashSet<Capability>,
) -> Result<LinuxSeccomp, SpecError> {
    let names: Vec<String> = DEFAULT_BLOCK_RULES
        .iter()
        .filter(|r| !r.unless_caps.iter().any(|c| caps.contains(c)))
        .flat_map(|r| r.syscalls.iter().map(|s| s.to_string()))
        .collect();
    let rule: LinuxSyscall = LinuxSyscallBuilder::default()
        .names(names)
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(BLOCKED_ERRNO)
        .build()
        .map_err(SpecError::build("seccomp syscall rule"))?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(native_architectures())
        .syscalls(vec![rule])
        .build()
        .map_err(SpecError::build("seccomp profile"))
}

/// The architectures the default profile covers: the native one plus its compat ABIs (as Docker's `archMap`),
/// so 32-bit syscalls are filtered by name too instead of bypassing the deny-list.
fn native_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1::Capability as CriCaps;

    fn sc_caps(add: &[&str], drop: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        }
    }

    fn set(c: &[Capability]) -> HashSet<Capability> {
        c.iter().copied().collect()
    }

    #[test]
    fn caps_table() {
        let default = set(DEFAULT_CAPABILITIES);
        let all = set(ALL_CAPABILITIES);
        let mut plus_admin = default.clone();
        plus_admin.insert(Capability::SysAdmin);
        let mut minus_chown = default.clone();
        minus_chown.remove(&Capability::Chown);
        let mut all_minus_chown = all.clone();
        all_minus_chown.remove(&Capability::Chown);
        let cases: Vec<(&[&str], &[&str], HashSet<Capability>)> = vec![
            (&[], &[], default.clone()),
            (&["SYS_ADMIN"], &[], plus_admin.clone()),
            (&["cap_sys_admin"], &[], plus_admin),
            (&[], &["CHOWN"], minus_chown),
            (&["ALL"], &[], all.clone()),
            (&["all"], &["CAP_CHOWN"], all_minus_chown),
            (&[], &["ALL"], HashSet::new()),
            (&["NET_ADMIN"], &["ALL"], set(&[Capability::NetAdmin])),
            (&["ALL"], &["ALL"], HashSet::new()),
        ];
        for (add, drop, want) in cases {
            let got =
                capabilities(Some(&sc_caps(add, drop)), false, &all, DEFAULT_CAPABILITIES).unwrap();
            assert_eq!(got, want, "add={add:?} drop={drop:?}");
        }
        assert_eq!(
            capabilities(None, false, &all, DEFAULT_CAPABILITIES).unwrap(),
            default
        );
        // Privileged ignores drops.
        assert_eq!(
            capabilities(
                Some(&sc_caps(&[], &["ALL"])),
                true,
                &all,
                DEFAULT_CAPABILITIES
            )
            .unwrap(),
            all
        );
        let e = capabilities(
            Some(&sc_caps(&["NOPE"], &[])),
            false,
            &all,
            DEFAULT_CAPABILITIES,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("add_capabilities[0]"), "{e}");
        let e = capabilities(
            Some(&sc_caps(&[], &["CHOWN", "x"])),
            false,
            &all,
            DEFAULT_CAPABILITIES,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("drop_capabilities[1]"), "{e}");
    }

    #[test]
    fn caps_limited_by_the_bounding_set() {
        // A host without CAP_SYS_RESOURCE and CAP_NET_RAW (a default one).
        let mut bounding = set(ALL_CAPABILITIES);
        bounding.remove(&Capability::SysResource);
        bounding.remove(&Capability::NetRaw);
        assert_eq!(
            capabilities(None, true, &bounding, DEFAULT_CAPABILITIES).unwrap(),
            bounding
        );
        assert_eq!(
            capabilities(
                Some(&sc_caps(&["ALL"], &[])),
                false,
                &bounding,
                DEFAULT_CAPABILITIES
            )
            .unwrap(),
            bounding
        );
        let mut default = set(DEFAULT_CAPABILITIES);
        default.remove(&Capability::NetRaw);
        assert_eq!(
            capabilities(None, false, &bounding, DEFAULT_CAPABILITIES).unwrap(),
            default
        );
        let e = capabilities(
            Some(&sc_caps(&["CHOWN", "sys_resource"], &[])),
            false,
            &bounding,
            DEFAULT_CAPABILITIES,
        )
        .unwrap_err();
        assert!(
            matches!(e, SpecError::CapabilityUnavailable { .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("add_capabilities[1]") && msg.contains("CAP_SYS_RESOURCE"),
            "{msg}"
        );
    }

    #[test]
    fn capability_masks() {
        assert_eq!(capability_mask(&set(ALL_CAPABILITIES)), (1u64 << 41) - 1);
        assert_eq!(
            capabilities_in_mask(0x01ff_feff_ffff),
            set(ALL_CAPABILITIES)
                .into_iter()
                .filter(|c| *c != Capability::SysResource)
                .collect()
        );
        assert_eq!(capabilities_in_mask(1 << 21), set(&[Capability::SysAdmin]));
        assert_eq!(capabilities_in_mask(1 << 39), set(&[Capability::Bpf]));
        assert!(daemon_bounding_set().contains(&Capability::Chown));
    }

    #[test]
    fn masked_paths_rules() {
        let (m, r) = masked_and_readonly_paths(None, false).unwrap();
        assert!(m.contains(&"/proc/kcore".to_string()));
        assert!(r.contains(&"/proc/sys".to_string()));
        let (m, r) = masked_and_readonly_paths(None, true).unwrap();
        assert!(m.is_empty() && r.is_empty());
        let sc = LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/x".into()],
            ..Default::default()
        };
        let (m, r) = masked_and_readonly_paths(Some(&sc), false).unwrap();
        assert_eq!(m, vec!["/proc/x"]);
        assert_eq!(r.len(), DEFAULT_READONLY_PATHS.len());
        let sc = LinuxContainerSecurityContext {
            readonly_paths: vec!["proc/rel".into()],
            ..Default::default()
        };
        assert!(masked_and_readonly_paths(Some(&sc), false).is_err());
    }

    #[test]
    fn seccomp_choices() {
        let mk = |t: ProfileType, r: &str| LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        };
        assert_eq!(seccomp_choice(None).unwrap(), SeccompChoice::Unconfined);
        assert_eq!(
            seccomp_choice(Some(&mk(ProfileType::RuntimeDefault, ""))).unwrap(),
            SeccompChoice::RuntimeDefault
        );
        assert_eq!(
            seccomp_choice(Some(&mk(ProfileType::Localhost, "/p.json"))).unwrap(),
            SeccompChoice::Localhost("/p.json".into())
        );
        #[allow(deprecated)]
        let legacy = LinuxContainerSecurityContext {
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        };
        assert_eq!(
            seccomp_choice(Some(&legacy)).unwrap(),
            SeccompChoice::RuntimeDefault
        );
    }

    #[test]
    fn default_profile_respects_caps() {
        let p = default_seccomp_profile(&set(DEFAULT_CAPABILITIES)).unwrap();
        let names = p.syscalls().as_ref().unwrap()[0].names().clone();
        for s in [
            "mount",
            "ptrace",
            "bpf",
            "kexec_load",
            "unshare",
            "init_module",
            "reboot",
        ] {
            assert!(names.contains(&s.to_string()), "{s} must be blocked");
        }
        let mut caps = set(DEFAULT_CAPABILITIES);
        caps.insert(Capability::SysAdmin);
        let p = default_seccomp_profile(&caps).unwrap();
        let names = p.syscalls().as_ref().unwrap()[0].names().clone();
        assert!(!names.contains(&"mount".to_string()));
        assert!(names.contains(&"kexec_load".to_string()));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(json["syscalls"][0]["action"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn localhost_profile() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[],"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        let p = seccomp(
            &SeccompChoice::Localhost(good.display().to_string()),
            false,
            &HashSet::new(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        let cond = dir.path().join("cond.json");
        std::fs::write(
            &cond,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#,
        )
        .unwrap();
        assert!(load_localhost_profile(&cond.display().to_string()).is_err());
        assert!(load_localhost_profile("relative.json").is_err());
        assert!(load_localhost_profile("/nonexistent/x.json").is_err());
        // Privileged: no filter at all.
        assert!(
            seccomp(&SeccompChoice::RuntimeDefault, true, &HashSet::new())
                .unwrap()
                .is_none()
        );
    }
}
