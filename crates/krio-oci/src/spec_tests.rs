//! Table tests of [`crate::build_spec`] as a whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use krio_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};
use oci_spec::runtime::{Capability, LinuxNamespaceType, MountBuilder, Spec};

use crate::{annotations, build_spec, NamespacePaths, SpecError, SpecInputs};

struct Case {
    container: ContainerConfig,
    sandbox: PodSandboxConfig,
    namespaces: NamespacePaths,
    cgroup_v2: bool,
}

fn rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("etc")).unwrap();
    std::fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nweb:x:33:33::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(d.path().join("etc/group"), "root:x:0:\nweb:x:33:\n").unwrap();
    d
}

fn sc() -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Pod as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn case() -> Case {
    Case {
        container: ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "busybox:latest".into(),
                ..Default::default()
            }),
            command: vec!["/bin/sh".into()],
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    oom_score_adj: -997,
                    ..Default::default()
                }),
                security_context: Some(sc()),
            }),
            ..Default::default()
        },
        sandbox: PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "pod".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "pod-host".into(),
            linux: Some(LinuxPodSandboxConfig {
                sysctls: HashMap::from([(
                    "net.ipv4.ip_unprivileged_port_start".into(),
                    "0".into(),
                )]),
                ..Default::default()
            }),
            ..Default::default()
        },
        namespaces: NamespacePaths {
            network: Some("/run/krio/ns/net/p1".into()),
            ipc: Some("/run/krio/ns/ipc/p1".into()),
            uts: Some("/run/krio/ns/uts/p1".into()),
            pid: None,
            user: None,
        },
        cgroup_v2: false,
    }
}

fn build(c: &Case, rootfs: &Path) -> Result<Spec, SpecError> {
    build_spec(&SpecInputs {
        container: &c.container,
        sandbox: &c.sandbox,
        sandbox_id: "sb1",
        image_config: None,
        rootfs,
        namespaces: c.namespaces.clone(),
        sandbox_mounts: vec![MountBuilder::default()
            .destination("/etc/hosts")
            .typ("bind")
            .source("/run/krio/p1/hosts")
            .options(vec!["rbind".to_string(), "ro".to_string()])
            .build()
            .unwrap()],
        cgroups_path: "/krio/p1/c1".into(),
        capability_bounding_set: None,
        default_capabilities: None,
        daemon_oom_score_adj: -500,
        pids_limit: None,
        cgroup_v2: c.cgroup_v2,
    })
}

fn namespaces(s: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    s.linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

fn sec(c: &mut Case) -> &mut LinuxContainerSecurityContext {
    c.container
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
}

#[test]
fn pod_defaults() {
    let r = rootfs();
    let s = build(&case(), r.path()).unwrap();
    let ns = namespaces(&s);
    assert_eq!(
        ns,
        vec![
            (LinuxNamespaceType::Mount, None),
            (
                LinuxNamespaceType::Network,
                Some("/run/krio/ns/net/p1".into())
            ),
            (LinuxNamespaceType::Ipc, Some("/run/krio/ns/ipc/p1".into())),
            (LinuxNamespaceType::Uts, Some("/run/krio/ns/uts/p1".into())),
            (LinuxNamespaceType::Pid, None),
        ]
    );
    // Joined UTS: no hostname in the spec, but HOSTNAME in the env.
    assert_eq!(s.hostname(), &None);
    let p = s.process().as_ref().unwrap();
    assert!(p
        .env()
        .as_ref()
        .unwrap()
        .contains(&"HOSTNAME=pod-host".to_string()));
    assert_eq!(p.oom_score_adj(), Some(-500));
    assert_eq!(p.args().as_ref().unwrap(), &vec!["/bin/sh".to_string()]);
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.rlimits(), &None);
    let caps = p.capabilities().as_ref().unwrap();
    assert!(caps
        .bounding()
        .as_ref()
        .unwrap()
        .contains(&Capability::Chown));
    assert!(!caps
        .bounding()
        .as_ref()
        .unwrap()
        .contains(&Capability::SysAdmin));
    assert!(caps.inheritable().as_ref().unwrap().is_empty());
    let linux = s.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/krio/p1/c1"))
    );
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    assert!(linux.seccomp().is_none(), "unset seccomp is unconfined");
    assert_eq!(
        linux
            .sysctl()
            .as_ref()
            .unwrap()
            .get("net.ipv4.ip_unprivileged_port_start")
            .map(String::as_str),
        Some("0")
    );
    let mounts = s.mounts().as_ref().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m.destination() == Path::new("/etc/hosts")));
    assert!(mounts
        .iter()
        .any(|m| m.destination() == Path::new("/sys/fs/cgroup")));
    let a = s.annotations().as_ref().unwrap();
    assert_eq!(
        a.get(annotations::CONTAINER_TYPE).map(String::as_str),
        Some("container")
    );
    assert_eq!(
        a.get(annotations::SANDBOX_ID).map(String::as_str),
        Some("sb1")
    );
    assert_eq!(
        a.get(annotations::CONTAINER_NAME).map(String::as_str),
        Some("app")
    );
    assert_eq!(
        a.get(annotations::IMAGE_NAME).map(String::as_str),
        Some("busybox:latest")
    );
    assert_eq!(
        a.get(annotations::SANDBOX_NAMESPACE).map(String::as_str),
        Some("default")
    );
    assert_eq!(s.root().as_ref().unwrap().path(), r.path());
    // The spec serialises to something runc understands.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["linux"]["namespaces"][1]["type"], "network");
}

#[test]
fn namespace_modes() {
    let r = rootfs();
    // Host network + host IPC + host PID: those namespaces omitted; net sysctls then rejected.
    let mut c = case();
    sec(&mut c).namespace_options = Some(NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Node as i32,
        ..Default::default()
    });
    assert!(build(&c, r.path())
        .unwrap_err()
        .to_string()
        .contains("sysctl"));
    c.sandbox.linux.as_mut().unwrap().sysctls.clear();
    let s = build(&c, r.path()).unwrap();
    assert_eq!(namespaces(&s), vec![(LinuxNamespaceType::Mount, None)]);
    assert_eq!(s.hostname(), &None);

    // POD pid needs a path.
    let mut c = case();
    sec(&mut c).namespace_options.as_mut().unwrap().pid = NamespaceMode::Pod as i32;
    assert!(matches!(
        build(&c, r.path()),
        Err(SpecError::MissingNamespacePath {
            namespace: "pid",
            ..
        })
    ));
    c.namespaces.pid = Some("/proc/1234/ns/pid".into());
    let s = build(&c, r.path()).unwrap();
    assert!(namespaces(&s).contains(&(LinuxNamespaceType::Pid, Some("/proc/1234/ns/pid".into()))));

    // No sandbox UTS path: own UTS namespace and the hostname is set; cgroup ns on v2.
    let mut c = case();
    c.namespaces.uts = None;
    c.cgroup_v2 = true;
    let s = build(&c, r.path()).unwrap();
    assert_eq!(s.hostname().as_deref(), Some("pod-host"));
    assert!(namespaces(&s).contains(&(LinuxNamespaceType::Cgroup, None)));

    // Invalid mode values are rejected with the field name.
    let mut c = case();
    sec(&mut c).namespace_options.as_mut().unwrap().ipc = 42;
    assert!(build(&c, r.path())
        .unwrap_err()
        .to_string()
        .contains("namespace_options.ipc"));

    // User namespace mode POD joins the pod's user namespace with the CRI mappings; it needs
    // the pod's namespace file, and CONTAINER is unsupported.
    let map = || {
        vec![krio_cri::v1::IdMapping {
            container_id: 0,
            host_id: 200000,
            length: 65536,
        }]
    };
    let mut c = case();
    sec(&mut c)
        .namespace_options
        .as_mut()
        .unwrap()
        .userns_options = Some(krio_cri::v1::UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: map(),
        gids: map(),
    });
    assert!(matches!(
        build(&c, r.path()),
        Err(SpecError::MissingNamespacePath {
            namespace: "user",
            ..
        })
    ));
    c.namespaces.user = Some(PathBuf::from("/run/pod/ns/user"));
    let s = build(&c, r.path()).unwrap();
    let ns = namespaces(&s);
    assert_eq!(
        ns[0],
        (
            LinuxNamespaceType::User,
            Some(PathBuf::from("/run/pod/ns/user"))
        )
    );
    let linux = s.linux().as_ref().unwrap();
    for m in [linux.uid_mappings(), linux.gid_mappings()] {
        let m = m.as_ref().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].container_id(), m[0].host_id(), m[0].size()),
            (0, 200000, 65536)
        );
    }
    let mut c = case();
    sec(&mut c)
        .namespace_options
        .as_mut()
        .unwrap()
        .userns_options = Some(krio_cri::v1::UserNamespace {
        mode: NamespaceMode::Container as i32,
        ..Default::default()
    });
    assert!(matches!(
        build(&c, r.path()),
        Err(SpecError::Unsupported { .. })
    ));

    // Namespace options fall back to the sandbox's when the container has none.
    let mut c = case();
    sec(&mut c).namespace_options = None;
    c.sandbox.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let s = build(&c, r.path()).unwrap();
    assert!(!namespaces(&s)
        .iter()
        .any(|(t, _)| *t == LinuxNamespaceType::Pid));
}

#[test]
fn privileged_rules() {
    let r = rootfs();
    let mut c = case();
    sec(&mut c).privileged = true;
    sec(&mut c).seccomp = Some(krio_cri::v1::SecurityProfile {
        profile_type: 0,
        localhost_ref: String::new(),
    });
    assert!(build(&c, r.path())
        .unwrap_err()
        .to_string()
        .contains("non-privileged sandbox"));
    c.sandbox.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    let s = build(&c, r.path()).unwrap();
    let linux = s.linux().as_ref().unwrap();
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    assert!(linux.seccomp().is_none());
    let caps = s
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    assert!(caps
        .effective()
        .as_ref()
        .unwrap()
        .contains(&Capability::SysAdmin));
    let sys = s
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
}

#[test]
fn security_fields() {
    let r = rootfs();
    let mut c = case();
    {
        let s = sec(&mut c);
        s.run_as_username = "web".into();
        s.no_new_privs = true;
        s.readonly_rootfs = true;
        s.seccomp = Some(krio_cri::v1::SecurityProfile {
            profile_type: 0,
            localhost_ref: String::new(),
        });
    }
    let s = build(&c, r.path()).unwrap();
    let p = s.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (33, 33));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
    assert!(s.linux().as_ref().unwrap().seccomp().is_some());

    // Unknown user name -> error naming the field.
    let mut c = case();
    sec(&mut c).run_as_username = "nobody".into();
    assert!(build(&c, r.path())
        .unwrap_err()
        .to_string()
        .contains("run_as_username"));

    // Ambient caps must be within the capability set.
    let mut c = case();
    sec(&mut c).capabilities = Some(krio_cri::v1::Capability {
        add_ambient_capabilities: vec!["NET_ADMIN".into()],
        ..Default::default()
    });
    assert!(build(&c, r.path()).is_err());
    sec(&mut c).capabilities.as_mut().unwrap().add_capabilities = vec!["NET_ADMIN".into()];
    let s = build(&c, r.path()).unwrap();
    let caps = s
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    assert!(caps
        .ambient()
        .as_ref()
        .unwrap()
        .contains(&Capability::NetAdmin));

    // Bad hostname, relative rootfs, relative cgroups path.
    let mut c = case();
    c.sandbox.hostname = "bad_host\n".into();
    assert!(build(&c, r.path())
        .unwrap_err()
        .to_string()
        .contains("hostname"));
    assert!(build(&case(), Path::new("rel/rootfs"))
        .unwrap_err()
        .to_string()
        .contains("rootfs"));
}
