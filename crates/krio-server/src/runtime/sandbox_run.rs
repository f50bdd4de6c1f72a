//! `RunPodSandbox`: validate, reserve the name, pin namespaces, write the pod's files, set up
//! the network, record the sandbox. A failure undoes every step already done.

use std::path::Path;
use std::sync::Arc;

use krio_cri::v1 as cri;
use krio_net::ns::{self, NsKind};
use tracing::Instrument;

use crate::error::{Result, ServerError};
use crate::state::{now_ns, Sandbox, SandboxRecord};
use crate::{ids, persist, validate, Krio};

/// `NamespaceMode::NODE`: the pod uses the host's namespace.
pub(crate) const NS_NODE: i32 = cri::NamespaceMode::Node as i32;

impl Krio {
    /// CRI `RunPodSandbox`.
    ///
    /// Errors: `InvalidArgument` naming the field for a bad config or unknown handler;
    /// `AlreadyExists` when the pod's name (name, namespace, uid, attempt) is reserved;
    /// `FailedPrecondition` when the pod needs a network and none is configured.
    pub(crate) async fn run_pod_sandbox(
        self: &Arc<Self>,
        req: cri::RunPodSandboxRequest,
    ) -> Result<cri::RunPodSandboxResponse> {
        let config = req
            .config
            .ok_or_else(|| ServerError::invalid("config", "is required"))?;
        validate::sandbox_config(&config)?;
        let handler = self.handler_name(&req.runtime_handler)?;
        if pod_user_namespace(&config).is_some() {
            if !self.handler(&handler)?.user_namespaces() {
                return Err(ServerError::FailedPrecondition(format!(
                    "config.linux.security_context.namespace_options.userns_options: runtime \
                     handler {} cannot run pods in a user namespace (Status reports its \
                     user_namespaces feature)",
                    validate::quote(&handler)
                )));
            }
            for dir in [&self.cfg.state_dir, &self.cfg.root] {
                check_traversable(dir)?;
            }
        }
        let name = SandboxRecord::reserved_name(&config);
        let id = ids::new_id()?;
        // The call's span names the id this attempt creates under.
        crate::service::record_ids(&id, "");
        let record = SandboxRecord::new(id.clone(), config, handler, now_ns());
        let this = self.clone();
        let task_name = name.clone();
        let work = async move {
            let span =
                tracing::info_span!("run_pod_sandbox", sandbox = %record.id(), name = %task_name);
            this.create_sandbox(record, &task_name)
                .instrument(span)
                .await
        };
        let pod_sandbox_id = self
            .pending_sandboxes
            .run(
                "sandbox",
                &name,
                || self.sandboxes.reserve(&name, &id),
                |id| self.sandboxes.contains(id),
                work,
            )
            .await?;
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id })
    }

    async fn create_sandbox(
        self: &Arc<Self>,
        mut record: SandboxRecord,
        name: &str,
    ) -> Result<String> {
        let id = record.id().to_string();
        match self.setup_sandbox(&mut record).await {
            Ok(()) => {
                let watch_init = record.pod_init().is_some();
                let sandbox = Sandbox::new(record);
                self.sandboxes.insert(id.clone(), sandbox.clone());
                if watch_init {
                    self.watch_pod_init(sandbox);
                }
                tracing::info!(sandbox = %id, "sandbox ready");
                Ok(id)
            }
            Err(e) => {
                for undo in self.teardown_sandbox_network(&record).await {
                    tracing::warn!(sandbox = %id, error = %undo, "undo after failed run");
                }
                if let Err(undo) = crate::blocking(|| self.remove_pod_cgroup(&record)) {
                    tracing::warn!(sandbox = %id, error = %undo, "undo after failed run");
                }
                for dir in [
                    self.sandbox_run_dir(&id),
                    self.cfg.root.join("sandboxes").join(&id),
                ] {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                self.sandboxes.release(name, &id);
                Err(e)
            }
        }
    }

    async fn setup_sandbox(&self, rec: &mut SandboxRecord) -> Result<()> {
        let run_dir = self.sandbox_run_dir(rec.id());
        let data_dir = self.cfg.root.join("sandboxes").join(rec.id());
        for d in [&run_dir, &data_dir] {
            std::fs::create_dir_all(d).map_err(|e| ServerError::io("creating directory", d, e))?;
        }
        let opts = rec.ns_options();
        let host_network = opts.network == NS_NODE;
        let mut kinds = Vec::new();
        if !host_network {
            kinds.push(NsKind::Net);
            kinds.push(NsKind::Uts);
        }
        if opts.ipc != NS_NODE {
            kinds.push(NsKind::Ipc);
        }
        let hostname = pod_hostname(rec.config(), host_network);
        if !host_network && !kinds.is_empty() {
            if let Err(reason) = self.cni.status() {
                return Err(ServerError::FailedPrecondition(format!(
                    "network is not ready: {reason}"
                )));
            }
        }
        let cgroup_parent = rec
            .config()
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("{}/pod-{}", self.cfg.cgroup_parent, &rec.id()[..12]));
        rec.set_cgroup_parent(cgroup_parent);
        // The record goes to disk before anything is made and again before the network is
        // set up, so a daemon killed halfway finds it (state Creating) and undoes it all.
        persist::write_json_async(&self.sandbox_record_path(rec.id()), rec).await?;
        crate::state::kill_point("RunPodSandbox:record-creating");
        let userns = pod_user_namespace(rec.config());
        if !kinds.is_empty() || userns.is_some() {
            let ns_dir = run_dir.join("ns");
            let host = (!host_network).then(|| hostname.clone());
            let pinned = tokio::task::spawn_blocking(move || match userns {
                Some((uid, gid)) => {
                    ns::pin_namespaces_in_userns(&ns_dir, &kinds, host.as_deref(), uid, gid)
                }
                None => ns::pin_namespaces(&ns_dir, &kinds, host.as_deref()),
            })
            .await
            .map_err(|e| {
                ServerError::io("pinning namespaces", &run_dir, std::io::Error::other(e))
            })??;
            rec.set_pinned(pinned);
            crate::state::kill_point("RunPodSandbox:namespaces-pinned");
        }
        if self.owns_pod_cgroup(rec) {
            create_pod_cgroup(rec.cgroup_parent())?;
        }
        if opts.pid == cri::NamespaceMode::Pod as i32 {
            // A PID namespace cannot be pinned without a live init: the pod gets a minimal one
            // (krio-monitor pod-init) that reaps orphans, instead of a pause container. In a pod
            // with its own user namespace the PID namespace must be owned by it (the containers
            // join the user namespace first, then this PID namespace, and mount a /proc for it).
            let ns_dir = run_dir.join("ns");
            std::fs::create_dir_all(&ns_dir)
                .map_err(|e| ServerError::io("creating directory", &ns_dir, e))?;
            let pin = ns_dir.join("pid");
            let bin = self.monitor_bin.clone();
            let pin2 = pin.clone();
            let userns = rec.userns().map(Path::to_path_buf);
            let init = tokio::task::spawn_blocking(move || {
                krio_monitor::spawn_pod_init(&bin, &pin2, userns.as_deref())
            })
            .await
            .map_err(|e| ServerError::io("starting pod init", &pin, std::io::Error::other(e)))??;
            rec.set_pod_init(init, pin);
        }
        if let Some(netns) = rec.netns().map(Path::to_path_buf) {
            persist::write_json_async(&self.sandbox_record_path(rec.id()), rec).await?;
            let status = self.cni.add(&self.pod_network(rec, &netns)).await?;
            rec.set_ips(status.ips.iter().map(|ip| ip.to_string()).collect());
            crate::state::kill_point("RunPodSandbox:network-added");
        }
        write_pod_files(&run_dir, rec.config(), &hostname, rec.ips(), host_network)?;
        if let Some((uid, gid)) = userns {
            // The pod's root owns its hosts, hostname and resolv.conf, as it would without a
            // user namespace (these bind mounts are not id-mapped).
            for f in ["hostname", "hosts", "resolv.conf"] {
                let p = run_dir.join(f);
                std::os::unix::fs::chown(&p, Some(uid.host_id), Some(gid.host_id))
                    .map_err(|e| ServerError::io("handing to the pod's root", &p, e))?;
            }
        }
        if self.handler(rec.runtime_handler())?.cfg.pod_sandbox
            == crate::config::PodSandboxMode::Pod
        {
            // Recorded first, so that a failure or a crash from here on removes it.
            rec.set_runtime_sandbox();
            persist::write_json_async(&self.sandbox_record_path(rec.id()), rec).await?;
            self.start_runtime_sandbox(rec, &hostname).await?;
        }
        rec.mark_ready()?;
        persist::write_json_async(&self.sandbox_record_path(rec.id()), rec).await?;
        crate::state::kill_point("RunPodSandbox:record-ready");
        Ok(())
    }

    /// The CNI view of a pod: ids, names, netns and port mappings with a host port.
    pub(crate) fn pod_network(
        &self,
        rec: &SandboxRecord,
        netns: &Path,
    ) -> krio_net::cni::PodNetwork {
        let m = rec.config().metadata.clone().unwrap_or_default();
        krio_net::cni::PodNetwork {
            id: rec.id().to_string(),
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            netns: netns.to_path_buf(),
            ifname: "eth0".to_string(),
            port_mappings: rec
                .config()
                .port_mappings
                .iter()
                // validate::port_mapping refused anything malformed at RunPodSandbox; a mapping
                // without a host port is not passed to the plugins (as containerd does).
                .filter(|p| p.host_port > 0)
                .filter_map(|p| {
                    Some(krio_net::cni::PortMapping {
                        protocol: match cri::Protocol::try_from(p.protocol).ok()? {
                            cri::Protocol::Tcp => krio_net::cni::Protocol::Tcp,
                            cri::Protocol::Udp => krio_net::cni::Protocol::Udp,
                            cri::Protocol::Sctp => krio_net::cni::Protocol::Sctp,
                        },
                        container_port: u16::try_from(p.container_port).ok()?,
                        host_port: u16::try_from(p.host_port).ok()?,
                        host_ip: if p.host_ip.is_empty() {
                            None
                        } else {
                            Some(p.host_ip.parse().ok()?)
                        },
                    })
                })
                .collect(),
        }
    }

    /// Tears down the namespaces of a sandbox: removes the pod's runtime sandbox (if it has one),
    /// kills the pod init (and with it anything left in the pod's PID namespace), CNI DEL (from
    /// the cached result), then unpins the namespaces. Keeps going past failures and returns all
    /// of them; idempotent.
    pub(crate) async fn teardown_sandbox_network(&self, rec: &SandboxRecord) -> Vec<ServerError> {
        let mut errors = self.stop_runtime_sandbox(rec).await;
        if let (Some(init), Some(pin)) = (rec.pod_init(), rec.pidns().map(Path::to_path_buf)) {
            match tokio::task::spawn_blocking(move || krio_monitor::stop_pod_init(&init, &pin))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e.into()),
                Err(e) => errors.push(ServerError::Task(e.to_string())),
            }
        }
        if let Some(netns) = rec.netns() {
            if let Err(e) = self.cni.del(&self.pod_network(rec, netns)).await {
                errors.push(e.into());
            }
        }
        let ns_dir = self.sandbox_run_dir(rec.id()).join("ns");
        match tokio::task::spawn_blocking(move || ns::unpin_namespaces(&ns_dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e.into()),
            Err(e) => errors.push(ServerError::io(
                "unpinning namespaces",
                self.sandbox_run_dir(rec.id()),
                std::io::Error::other(e),
            )),
        }
        errors
    }
}

/// The uid and gid mappings of a pod whose CRI `userns_options` mode is POD (checked by
/// `validate::user_namespace`: one mapping each, from container id 0), `None` otherwise.
pub(crate) fn pod_user_namespace(config: &cri::PodSandboxConfig) -> Option<(ns::IdMap, ns::IdMap)> {
    let u = config
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()?
        .userns_options
        .as_ref()?;
    if u.mode != cri::NamespaceMode::Pod as i32 {
        return None;
    }
    let one = |m: &[cri::IdMapping]| {
        m.first().map(|m| ns::IdMap {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        })
    };
    Some((one(&u.uids)?, one(&u.gids)?))
}

/// Checks that `dir` and every directory above it can be searched by anyone (the `x` bit for
/// others): a container's root in a user namespace is an unprivileged host id, and the runtime
/// reaches the container's rootfs and the pod's files below krio's directories as that id.
///
/// Errors: `FailedPrecondition` naming the first directory that others cannot search.
fn check_traversable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in dir.ancestors() {
        let Ok(md) = std::fs::metadata(d) else {
            continue;
        };
        if md.permissions().mode() & 0o001 == 0 {
            return Err(ServerError::FailedPrecondition(format!(
                "{} is not searchable by others (mode {:o}); pods in a user namespace need \
                 every directory above krio's root and state_dir to be (e.g. mode 0711)",
                d.display(),
                md.permissions().mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// Creates the pod cgroup in every mounted hierarchy (each cgroup v1 controller and the v2
/// tree), so pod-level limits have a home before the first container starts. runc fills in
/// the cpuset values of parents it needs.
///
/// Errors: [`ServerError::Io`] when a directory cannot be made in a hierarchy that exists.
fn create_pod_cgroup(parent: &str) -> Result<()> {
    let rel = parent.trim_start_matches('/');
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Ok(());
    };
    let is_v2_root = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let hierarchies: Vec<std::path::PathBuf> = if is_v2_root {
        vec![std::path::PathBuf::from("/sys/fs/cgroup")]
    } else {
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    };
    for h in hierarchies {
        let dir = h.join(rel);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServerError::io("creating pod cgroup", &dir, e))?;
    }
    Ok(())
}

/// The pod's hostname: the requested one, else the pod name (kubelet always sets it); the
/// node's for host-network pods.
fn pod_hostname(config: &cri::PodSandboxConfig, host_network: bool) -> String {
    if host_network {
        return nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
    }
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    // A pod name is a DNS subdomain; keep what is valid in a hostname.
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned.trim_matches('-').to_string()
}

/// Writes `hostname`, `hosts` and `resolv.conf` for the pod's containers to mount.
/// Without a DNS config the host's resolv.conf is used, as containerd and CRI-O do.
fn write_pod_files(
    dir: &Path,
    config: &cri::PodSandboxConfig,
    hostname: &str,
    ips: &[String],
    host_network: bool,
) -> Result<()> {
    persist::write_atomic(&dir.join("hostname"), format!("{hostname}\n").as_bytes())?;
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        let mut h = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n",
        );
        for ip in ips {
            h.push_str(&format!("{ip}\t{hostname}\n"));
        }
        h
    };
    persist::write_atomic(&dir.join("hosts"), hosts.as_bytes())?;
    let resolv = match &config.dns_config {
        Some(dns)
            if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) =>
        {
            let mut r = String::new();
            if !dns.searches.is_empty() {
                r.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for s in &dns.servers {
                r.push_str(&format!("nameserver {s}\n"));
            }
            if !dns.options.is_empty() {
                r.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            r
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    persist::write_atomic(&dir.join("resolv.conf"), resolv.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = cri::PodSandboxConfig {
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            ..Default::default()
        };
        write_pod_files(dir.path(), &config, "web-0", &["10.88.0.5".into()], false).unwrap();
        let r = std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap();
        assert_eq!(
            r,
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
        let h = std::fs::read_to_string(dir.path().join("hosts")).unwrap();
        assert!(h.contains("10.88.0.5\tweb-0\n"));
        let n = std::fs::read_to_string(dir.path().join("hostname")).unwrap();
        assert_eq!(n, "web-0\n");
    }

    #[test]
    fn hostname_falls_back_to_pod_name() {
        let mut config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "my_pod".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_hostname(&config, false), "my-pod");
        config.hostname = "explicit".into();
        assert_eq!(pod_hostname(&config, false), "explicit");
    }
}
