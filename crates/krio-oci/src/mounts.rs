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

/// The propagation of one mount of the host, from a line of `/proc/self/mountinfo` (proc(5)): its mount point
/// and whether its optional fields carry `shared:N` (a member of a peer group) or `master:N` (a slave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostMount {
    pub mount_point: PathBuf,
    pub shared: bool,
    pub slave: bool,
}

/// Decodes the octal escapes (`\040` for a space, `\134` for a backslash, ...) of a mountinfo path field.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/<pid>/mountinfo` text; malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<HostMount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            let optional = &fields[6..sep];
            Some(HostMount {
                mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
                shared: optional.iter().any(|f| f.starts_with("shared:")),
                slave: optional.iter().any(|f| f.starts_with("master:")),
            })
        })
        .collect()
}

/// The mount that `path` (absolute, symlinks resolved) lies on: the one with the deepest mount point above it,
/// the last listed when several share that mount point (the top of the stack).
pub(crate) fn host_mount_of<'a>(table: &'a [HostMount], path: &Path) -> Option<&'a HostMount> {
    let mut best: Option<&HostMount> = None;
    for m in table {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| {
                m.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(m);
        }
    }
    best
}

/// Checks that the host mount under `host` can carry the CRI propagation asked for, as containerd and CRI-O do:
/// bidirectional (`rshared`) needs a shared mount, host-to-container (`rslave`) a shared or slave one. Without
/// it the container's mount would silently receive (or send) nothing.
fn check_source_propagation(
    field: String,
    host: &Path,
    want: RootPropagation,
    table: &[HostMount],
) -> Result<(), SpecError> {
    let Some(m) = host_mount_of(table, host) else {
        return Err(SpecError::MountPropagation {
            field,
            path: host.to_path_buf(),
            mount_point: PathBuf::from("?"),
            need: "a mount listed in /proc/self/mountinfo",
        });
    };
    let (ok, need) = match want {
        RootPropagation::Private => (true, ""),
        RootPropagation::Slave => (m.shared || m.slave, "a shared or slave mount"),
        RootPropagation::Shared => (m.shared, "a shared mount"),
    };
    if !ok {
        return Err(SpecError::MountPropagation {
            field,
            path: host.to_path_buf(),
            mount_point: m.mount_point.clone(),
            need,
        });
    }
    Ok(())
}

/// Converts the CRI `mounts` into bind mounts, sorted so parents are mounted before children (containerd sorts by
/// the number of path components).
///
/// Rules: `container_path` and `host_path` absolute without `..`; `container_path` not `/`; the host path must
/// exist (CRI: "runtimes should report an error") and symlinks in it are resolved on the host (CRI: "follow the
/// symlink and mount the real destination"); options `rbind` + propagation (`rprivate`/`rslave`/`rshared`) +
/// `ro`/`rw`. `selinux_relabel` is ignored (no SELinux on this host). Image volumes and `recursive_read_only`
/// must be staged by the caller (krio-server mounts them and passes a plain bind); id-mapped mounts are
/// rejected as unsupported.
/// `rslave` and `rshared` need the host mount holding `host_path` to be slave-or-shared and shared
/// ([`SpecError::MountPropagation`]); `mountinfo` gives the host's `/proc/self/mountinfo` text and is called
/// only when such a mount is asked for.
pub(crate) fn cri_mounts(
    cfg: &ContainerConfig,
    mountinfo: &mut dyn FnMut() -> std::io::Result<String>,
) -> Result<(Vec<Mount>, RootPropagation), SpecError> {
    let mut table: Option<Vec<HostMount>> = None;
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
            // The daemon mounts the image and hands over a read-only bind of the sub-path.
            return Err(SpecError::unsupported(
                f("image"),
                "image volumes must be staged by the caller",
            ));
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
            // The daemon stages these itself and hands over a read-only bind of the staging point.
            return Err(SpecError::unsupported(
                f("recursive_read_only"),
                "recursive read-only mounts must be staged by the caller",
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
        if p != RootPropagation::Private {
            if table.is_none() {
                let text = mountinfo().map_err(|source| SpecError::HostPath {
                    field: f("propagation"),
                    path: PathBuf::from("/proc/self/mountinfo"),
                    source,
                })?;
                table = Some(parse_mountinfo(&text));
            }
            check_source_propagation(f("propagation"), &host, p, table.as_deref().unwrap_or(&[]))?;
        }
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
        // The host mount holding the tempdir is shared here.
        let canon = std::fs::canonicalize(host.path()).unwrap();
        let shared_root = format!("36 35 98:0 / {} rw - ext4 /dev/sda1 rw\n", "/");
        let shared_tmp = format!(
            "{shared_root}37 36 98:1 / {} rw shared:1 - tmpfs tmpfs rw\n",
            canon.display()
        );
        let mut info = || Ok(shared_tmp.clone());
        let (mounts, prop) = cri_mounts(&cfg, &mut info).unwrap();
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
            let e = cri_mounts(&cfg, &mut info).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }

        // The same mounts when the tempdir lies on a private mount: refused, naming the field and the mount.
        let mut private = || Ok(shared_root.clone());
        let cfg = ContainerConfig {
            mounts: vec![shared_mount_of(&h)],
            ..Default::default()
        };
        let e = cri_mounts(&cfg, &mut private).unwrap_err();
        assert!(matches!(e, SpecError::MountPropagation { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("mounts[0].propagation") && e.contains("shared"),
            "{e}"
        );
        // Private mounts never read the mount table.
        let mut unread =
            || -> std::io::Result<String> { panic!("mountinfo read for a private mount") };
        cri_mounts(
            &ContainerConfig {
                mounts: vec![cm("/a", &h)],
                ..Default::default()
            },
            &mut unread,
        )
        .unwrap();
    }

    fn shared_mount_of(h: &str) -> CriMount {
        CriMount {
            propagation: MountPropagation::PropagationBidirectional as i32,
            ..cm("/data", h)
        }
    }

    #[test]
    fn mountinfo_propagation() {
        let text = "22 1 0:21 / / rw - ext4 /dev/root rw\n\
                    23 22 0:22 / /mnt/a\\040b rw shared:4 - tmpfs t rw\n\
                    24 23 0:23 / /mnt/a\\040b/s rw master:4 - tmpfs t rw\n\
                    25 23 0:24 / /mnt/a\\040b/s rw shared:9 master:4 - tmpfs t rw\n\
                    garbage\n";
        let t = parse_mountinfo(text);
        assert_eq!(t.len(), 4);
        assert_eq!(t[1].mount_point, Path::new("/mnt/a b"));
        let of = |p: &str| host_mount_of(&t, Path::new(p)).unwrap().clone();
        assert!(!of("/etc").shared && !of("/etc").slave);
        assert!(of("/mnt/a b/x").shared);
        // /mnt/a bc is not under /mnt/a b.
        assert!(!of("/mnt/a bc").shared);
        let top = of("/mnt/a b/s/deep");
        assert!(top.shared && top.slave, "{top:?}");
        let f = || "mounts[0].propagation".to_string();
        let slave_only = vec![t[0].clone(), t[2].clone()];
        check_source_propagation(
            f(),
            Path::new("/mnt/a b/s"),
            RootPropagation::Slave,
            &slave_only,
        )
        .unwrap();
        assert!(check_source_propagation(
            f(),
            Path::new("/mnt/a b/s"),
            RootPropagation::Shared,
            &slave_only
        )
        .is_err());
        assert!(
            check_source_propagation(f(), Path::new("/etc"), RootPropagation::Slave, &t).is_err()
        );
        check_source_propagation(f(), Path::new("/etc"), RootPropagation::Private, &t).unwrap();
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

/// The host's device nodes under `dev` (normally `/dev`), as `linux.devices` entries with the same path inside
/// the container: what a privileged container gets (containerd's `WithHostDevices`). Symbolic links, and the
/// directories a container has its own of (`pts`, `shm`, `mqueue`, `fd`) or that are not devices (`.udev`,
/// `.lxc`, `.lxd-mounts`), are skipped, and so is `console` (the container's terminal, if any, is its own).
/// Entries that cannot be read are skipped; the walk does not follow links nor descend more than 8 levels.
pub fn host_devices(dev: &Path) -> Vec<LinuxDevice> {
    fn walk(dir: &Path, rel: &Path, depth: usize, out: &mut Vec<LinuxDevice>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let rel = rel.join(&name);
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let skip = [".lxc", ".lxd-mounts", ".udev", "pts", "shm", "mqueue", "fd"];
                if depth < 8 && !(depth == 0 && skip.iter().any(|s| name == *s)) {
                    walk(&e.path(), &rel, depth + 1, out);
                }
                continue;
            }
            if depth == 0 && name == "console" {
                continue;
            }
            let Ok(st) = rustix::fs::lstat(e.path()) else {
                continue;
            };
            let typ = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                rustix::fs::FileType::CharacterDevice => LinuxDeviceType::C,
                rustix::fs::FileType::BlockDevice => LinuxDeviceType::B,
                _ => continue,
            };
            let path = Path::new("/dev").join(&rel);
            if let Ok(d) = LinuxDeviceBuilder::default()
                .path(path)
                .typ(typ)
                .major(i64::from(rustix::fs::major(st.st_rdev)))
                .minor(i64::from(rustix::fs::minor(st.st_rdev)))
                .file_mode(st.st_mode & 0o777)
                .uid(st.st_uid)
                .gid(st.st_gid)
                .build()
            {
                out.push(d);
            }
        }
    }
    let mut out = Vec::new();
    walk(dev, Path::new(""), 0, &mut out);
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

#[cfg(test)]
mod host_device_tests {
    use super::*;

    #[test]
    fn host_devices_lists_device_nodes_and_skips_the_containers_own() {
        let devs = host_devices(Path::new("/dev"));
        let null = devs
            .iter()
            .find(|d| d.path() == Path::new("/dev/null"))
            .expect("/dev/null listed");
        assert_eq!(
            (null.typ(), null.major(), null.minor()),
            (LinuxDeviceType::C, 1, 3)
        );
        assert!(devs
            .iter()
            .all(|d| !d.path().starts_with("/dev/pts") && d.path() != Path::new("/dev/console")));
    }
}
