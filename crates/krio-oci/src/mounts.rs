//! `mounts` (default filesystems, sandbox files, CRI volume mounts) and CRI devices.

use std::path::{Component, Path, PathBuf};

use krio_cri::v1::{ContainerConfig, MountPropagation};
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    Mount, MountBuilder,
};

use crate::error::SpecError;

/// Validates a path that must be absolute, free of `..` components and NUL bytes.
pub(crate) fn validate_abs_path(field: &str, p: &str) -> Result<(), SpecError> {
    if p.is_empty() || !p.starts_with('/') {
        return Err(SpecError::invalid(
            field,
            format!("{p:?} must be an absolute path"),
        ));
    }
    if p.contains('\0') {
        return Err(SpecError::invalid(field, "contains a NUL byte"));
    }
    if Path::new(p).components().any(|c| c == Component::ParentDir) {
        return Err(SpecError::invalid(
            field,
            format!("{p:?} must not contain '..'"),
        ));
    }
    Ok(())
}

fn mount(dest: &str, typ: &str, source: &str, opts: &[&str]) -> Result<Mount, SpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(SpecError::build("mount"))
}

/// The default filesystems of every container (containerd `defaultMounts` + the CRI plugin's `/sys/fs/cgroup`):
/// `/proc`, `/dev` (tmpfs), `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/sys` and `/sys/fs/cgroup`. `/sys` and
/// `/sys/fs/cgroup` are read-only unless `privileged` (CRI: "Any sysfs and procfs mounts are mounted RW").
pub(crate) fn default_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let ro = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        )?,
    ])
}

/// The rootfs propagation a set of CRI mounts needs (containerd): `rshared` when any mount is bidirectional,
/// `rslave` when any is host-to-container, else `None` (runc's default, `rprivate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RootPropagation {
    Private,
    Slave,
    Shared,
}

/// Converts the CRI `mounts` into bind mounts, sorted so parents are mounted before children (containerd sorts by
/// the number of path components).
///
/// Rules: `container_path` and `host_path` absolute without `..`; `container_path` not `/`; the host path must
/// exist (CRI: "runtimes should report an error") and symlinks in it are resolved on the host (CRI: "follow the
/// symlink and mount the real destination"); options `rbind` + propagation (`rprivate`/`rslave`/`rshared`) +
/// `ro`/`rw`. `selinux_relabel` is ignored (no SELinux on this host). Image volumes, id-mapped mounts and
/// `recursive_read_only` are rejected as unsupported (krio does not advertise them in its runtime features).
pub(crate) fn cri_mounts(
    cfg: &ContainerConfig,
) -> Result<(Vec<Mount>, RootPropagation), SpecError> {
    let mut out: Vec<(usize, Mount)> = Vec::new();
    let mut prop = RootPropagation::Private;
    for (i, m) in cfg.mounts.iter().enumerate() {
        let f = |name: &str| format!("mounts[{i}].{name}");
        validate_abs_path(&f("container_path"), &m.container_path)?;
        if Path::new(&m.container_path).components().count() <= 1 {
            return Err(SpecError::invalid(
                f("container_path"),
                "cannot mount over the container's root",
            ));
        }
        if m.image.as_ref().is_some_and(|img| !img.image.is_empty()) {
            return Err(SpecError::unsupported(f("image"), "image volume mounts"));
        }
        if !m.image_sub_path.is_empty() {
            return Err(SpecError::invalid(
                f("image_sub_path"),
                "is set without mounts[].image",
            ));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(SpecError::unsupported(f("uidMappings"), "id-mapped mounts"));
        }
        if m.recursive_read_only {
            return Err(SpecError::unsupported(
                f("recursive_read_only"),
                "recursive read-only mounts",
            ));
        }
        validate_abs_path(&f("host_path"), &m.host_path)?;
        let host = std::fs::canonicalize(&m.host_path).map_err(|source| SpecError::HostPath {
            field: f("host_path"),
            path: PathBuf::from(&m.host_path),
            source,
        })?;
        let (propagation, p) = match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationPrivate) => ("rprivate", RootPropagation::Private),
            Ok(MountPropagation::PropagationHostToContainer) => ("rslave", RootPropagation::Slave),
            Ok(MountPropagation::PropagationBidirectional) => ("rshared", RootPropagation::Shared),
            Err(_) => {
                return Err(SpecError::invalid(
                    f("propagation"),
                    format!("unknown value {}", m.propagation),
                ))
            }
        };
        prop = prop.max(p);
        let mnt = MountBuilder::default()
            .destination(&m.container_path)
            .typ("bind")
            .source(host)
            .options(vec![
                "rbind".to_string(),
                propagation.to_string(),
                if m.readonly { "ro" } else { "rw" }.to_string(),
            ])
            .build()
            .map_err(SpecError::build("mount"))?;
        out.push((Path::new(&m.container_path).components().count(), mnt));
    }
    out.sort_by_key(|(depth, _)| *depth);
    Ok((out.into_iter().map(|(_, m)| m).collect(), prop))
}

/// Merges mount layers; a mount in a later layer replaces every earlier mount with the same destination
/// (containerd: user mounts override default and sandbox mounts), and also drops earlier mounts *below* it
/// (a CRI mount of `/dev` hides the default `/dev/pts`), as containerd does for `/dev`-style overrides.
pub(crate) fn merge_mounts(layers: Vec<Vec<Mount>>) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for layer in layers {
        let dests: Vec<PathBuf> = layer.iter().map(|m| m.destination().clone()).collect();
        out.retain(|m| {
            !dests
                .iter()
                .any(|d| m.destination() == d || m.destination().starts_with(d))
        });
        out.extend(layer);
    }
    out
}

/// The device cgroup rules every container gets (containerd `WithDefaultUnixDevices`): deny everything, then
/// allow `mknod` of any node and rwm on null, zero, full, tty, random, urandom, console, ptmx, pts/* and tun.
pub(crate) fn default_device_rules(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let rule = |allow: bool,
                typ: Option<LinuxDeviceType>,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().map_err(SpecError::build("device cgroup rule"))
    };
    if privileged {
        // CRI: "The device cgroup does not restrict access to any devices".
        return Ok(vec![rule(
            true,
            Some(LinuxDeviceType::A),
            None,
            None,
            "rwm",
        )?]);
    }
    use LinuxDeviceType::{B, C};
    let mut v = vec![
        rule(false, Some(LinuxDeviceType::A), None, None, "rwm")?,
        rule(true, Some(C), None, None, "m")?,
        rule(true, Some(B), None, None, "m")?,
    ];
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (5, Some(0)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
        (10, Some(200)),
    ] {
        v.push(rule(true, Some(C), Some(major), minor, "rwm")?);
    }
    Ok(v)
}

/// Converts the CRI `devices` into `linux.devices` plus allow rules. The host path is stat'ed (symlinks followed)
/// and must be a character or block device; `permissions` must be a non-empty subset of `rwm`.
pub(crate) fn cri_devices(
    cfg: &ContainerConfig,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut devs = Vec::new();
    let mut rules = Vec::new();
    for (i, d) in cfg.devices.iter().enumerate() {
        let f = |name: &str| format!("devices[{i}].{name}");
        validate_abs_path(&f("container_path"), &d.container_path)?;
        validate_abs_path(&f("host_path"), &d.host_path)?;
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::invalid(
                f("permissions"),
                format!("{perms:?} is not a subset of \"rwm\""),
            ));
        }
        let st = rustix::fs::stat(d.host_path.as_str()).map_err(|e| SpecError::HostPath {
            field: f("host_path"),
            path: PathBuf::from(&d.host_path),
            source: e.into(),
        })?;
        let typ = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::CharacterDevice => LinuxDeviceType::C,
            rustix::fs::FileType::BlockDevice => LinuxDeviceType::B,
            _ => {
                return Err(SpecError::invalid(
                    f("host_path"),
                    format!("{} is not a device node", d.host_path),
                ))
            }
        };
        let major = i64::from(rustix::fs::major(st.st_rdev));
        let minor = i64::from(rustix::fs::minor(st.st_rdev));
        devs.push(
            LinuxDeviceBuilder::default()
                .path(&d.container_path)
                .typ(typ)
                .major(major)
                .minor(minor)
                .file_mode(st.st_mode & 0o777)
                .uid(st.st_uid)
                .gid(st.st_gid)
                .build()
                .map_err(SpecError::build("device"))?,
        );
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(major)
                .minor(minor)
                .access(perms)
                .build()
                .map_err(SpecError::build("device cgroup rule"))?,
        );
    }
    Ok((devs, rules))
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1::{Device, Mount as CriMount};

    fn cm(container: &str, host: &str) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.into(),
            ..Default::default()
        }
    }

    #[test]
    fn path_validation() {
        for ok in ["/a", "/a/b/c", "/a/./b"] {
            validate_abs_path("f", ok).unwrap();
        }
        for bad in ["", "a", "a/b", "/a/../b", "/..", "/a\0"] {
            assert!(validate_abs_path("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cri_mount_table() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path().display().to_string();
        std::os::unix::fs::symlink(host.path(), host.path().join("link")).unwrap();
        let mut ro = cm("/data/ro", &h);
        ro.readonly = true;
        let mut shared = cm("/data", &format!("{h}/link"));
        shared.propagation = MountPropagation::PropagationBidirectional as i32;
        let cfg = ContainerConfig {
            mounts: vec![ro, shared],
            ..Default::default()
        };
        let (mounts, prop) = cri_mounts(&cfg).unwrap();
        assert_eq!(prop, RootPropagation::Shared);
        // Sorted parents first.
        assert_eq!(mounts[0].destination(), Path::new("/data"));
        // Symlink resolved on the host.
        assert_eq!(
            mounts[0].source().as_deref(),
            Some(std::fs::canonicalize(host.path()).unwrap().as_path())
        );
        assert_eq!(
            mounts[0].options().as_ref().unwrap(),
            &vec!["rbind", "rshared", "rw"]
        );
        assert_eq!(
            mounts[1].options().as_ref().unwrap(),
            &vec!["rbind", "rprivate", "ro"]
        );

        let bad: Vec<(CriMount, &str)> = vec![
            (cm("rel", &h), "mounts[0].container_path"),
            (cm("/a/../etc", &h), "mounts[0].container_path"),
            (cm("/", &h), "mounts[0].container_path"),
            (cm("/a", "rel"), "mounts[0].host_path"),
            (cm("/a", "/tmp/../etc"), "mounts[0].host_path"),
            (cm("/a", "/nonexistent/krio-oci"), "mounts[0].host_path"),
            (
                CriMount {
                    propagation: 9,
                    ..cm("/a", &h)
                },
                "mounts[0].propagation",
            ),
            (
                CriMount {
                    recursive_read_only: true,
                    ..cm("/a", &h)
                },
                "mounts[0].recursive_read_only",
            ),
        ];
        for (m, field) in bad {
            let cfg = ContainerConfig {
                mounts: vec![m],
                ..Default::default()
            };
            let e = cri_mounts(&cfg).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
    }

    #[test]
    fn merge_overrides_by_destination() {
        let defaults = default_mounts(false).unwrap();
        let sandbox = vec![mount("/dev/shm", "bind", "/run/shm", &["rbind"]).unwrap()];
        let user = vec![mount("/dev", "bind", "/x", &["rbind"]).unwrap()];
        let merged = merge_mounts(vec![defaults.clone(), sandbox.clone()]);
        assert_eq!(merged.len(), defaults.len());
        let shm = merged
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        let merged = merge_mounts(vec![defaults, sandbox, user]);
        assert!(!merged
            .iter()
            .any(|m| m.destination().starts_with("/dev") && m.typ().as_deref() != Some("bind")));
        assert_eq!(
            merged
                .iter()
                .filter(|m| m.destination().starts_with("/dev"))
                .count(),
            1
        );
    }

    #[test]
    fn sysfs_ro_unless_privileged() {
        let sys = |p: bool| {
            default_mounts(p)
                .unwrap()
                .into_iter()
                .find(|m| m.destination() == Path::new("/sys"))
                .unwrap()
                .options()
                .clone()
                .unwrap()
        };
        assert!(sys(false).contains(&"ro".to_string()));
        assert!(sys(true).contains(&"rw".to_string()));
    }

    #[test]
    fn devices() {
        let cfg = ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/mynull".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        let (d, r) = cri_devices(&cfg).unwrap();
        assert_eq!((d[0].major(), d[0].minor()), (1, 3));
        assert_eq!(r[0].access().as_deref(), Some("rw"));
        let bad = ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/x".into(),
                host_path: "/etc/hostname".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        assert!(cri_devices(&bad).is_err());
        let bad = ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/x".into(),
                host_path: "/dev/null".into(),
                permissions: "rwx".into(),
            }],
            ..Default::default()
        };
        assert!(cri_devices(&bad)
            .unwrap_err()
            .to_string()
            .contains("permissions"));
    }
}
