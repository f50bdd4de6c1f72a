//! CNI (Container Network Interface) client, following the CNI spec (SPEC.md) versions 0.4.0 and
//! 1.0.0 (0.3.x configs are accepted too): network config selection, plugin chaining with
//! `prevResult`, DEL in reverse order from a cached config/result, CHECK.
//!
//! Loopback is not handled here: [`crate::ns::pin_namespaces`] brings `lo` up when it creates the
//! network namespace.

mod cache;
pub mod config;
mod exec;
mod result;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

pub use config::NetworkConfigList;
pub use result::NetworkStatus;

use exec::{exec_plugin, find_plugin, plugin_stdin, Invocation, Op};

use crate::NetError;

/// The default per-plugin-call timeout (see [`Cni::with_plugin_timeout`]).
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// File name written by [`install_default_config`].
pub const DEFAULT_CONFIG_FILE: &str = "10-krio-bridge.conflist";

/// Where CNI configs and plugins live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// Directory of network configs (usually `/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Plugin binary directories, searched in order (usually `/usr/lib/cni`, `/opt/cni/bin`);
    /// also passed to plugins as `CNI_PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// Directory for per-sandbox cached configs and results (e.g. `/var/lib/krio/cni`).
    pub cache_dir: PathBuf,
}

/// Transport protocol of a port mapping (CRI `Protocol`), serialised lower-case for the
/// `portMappings` capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// `"tcp"`, `"udp"` or `"sctp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A host port forwarded to the pod (CRI `PortMapping`; CNI `portMappings` capability convention).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The protocol.
    pub protocol: Protocol,
    /// Port inside the pod.
    pub container_port: u16,
    /// Port on the host; 0 means "no host port" and the mapping is not passed to plugins.
    pub host_port: u16,
    /// Host address to bind; `None` means all addresses.
    pub host_ip: Option<IpAddr>,
}

/// The pod attachment request: CRI `PodSandboxConfig.metadata` plus the runtime's netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// Sandbox id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`); `[A-Za-z0-9][A-Za-z0-9_.-]*`, at
    /// most 128 bytes; also names the cache file.
    pub id: String,
    /// Pod name (`K8S_POD_NAME`).
    pub name: String,
    /// Pod namespace (`K8S_POD_NAMESPACE`).
    pub namespace: String,
    /// Pod UID (`K8S_POD_UID`).
    pub uid: String,
    /// The pinned network namespace (`CNI_NETNS`), absolute.
    pub netns: PathBuf,
    /// Interface name inside the pod (`CNI_IFNAME`), usually `eth0`; at most 15 bytes.
    pub ifname: String,
    /// Host port mappings (only those with `host_port != 0` are used).
    pub port_mappings: Vec<PortMapping>,
}

/// A CNI client for one config dir / plugin path / cache dir.
#[derive(Debug, Clone)]
pub struct Cni {
    cfg: CniConfig,
    timeout: Duration,
    /// The last `status` answer and the fingerprint of the directories it was computed from.
    status_cache: std::sync::Arc<std::sync::Mutex<Option<CachedStatus>>>,
}

/// A `status` answer with the fingerprint it was computed from.
type CachedStatus = (Vec<DirStamp>, Result<(), String>);

/// What `status` depends on, cheaply: each config file's name, size and mtime, and the mtime
/// of every directory involved (a plugin added or removed changes its directory's mtime).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirStamp {
    path: PathBuf,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: PathBuf) -> Option<DirStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&path).ok()?;
    Some(DirStamp {
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        path,
    })
}

impl Cni {
    /// Creates a client; nothing is read until a method is called.
    pub fn new(cfg: CniConfig) -> Self {
        Cni {
            cfg,
            timeout: DEFAULT_PLUGIN_TIMEOUT,
            status_cache: Default::default(),
        }
    }

    /// Sets the timeout for each single plugin execution (default [`DEFAULT_PLUGIN_TIMEOUT`]).
    pub fn with_plugin_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &CniConfig {
        &self.cfg
    }

    /// Loads the network that ADD would use now: the first valid config in `conf_dir` in lexical
    /// order (re-read on every call). Errors: [`NetError::NoNetworkConfig`], [`NetError::Io`].
    pub fn default_network(&self) -> Result<NetworkConfigList, NetError> {
        config::load_default_network(&self.cfg.conf_dir)
    }

    /// CRI `NetworkReady` condition: `Ok(())` when a valid network config exists and all its plugin
    /// binaries are found in `bin_dirs`; otherwise `Err(reason)` suitable for the condition message.
    ///
    /// The answer is cached until a config file or a plugin directory changes (names, sizes and
    /// mtimes are compared on every call, which costs a directory read and a few `stat`s instead
    /// of parsing every file), so a configuration written later is still picked up at once.
    pub fn status(&self) -> Result<(), String> {
        let mut fingerprint: Vec<DirStamp> = Vec::new();
        fingerprint.extend(stamp(self.cfg.conf_dir.clone()));
        if let Ok(entries) = std::fs::read_dir(&self.cfg.conf_dir) {
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            fingerprint.extend(files.into_iter().filter_map(stamp));
        }
        fingerprint.extend(self.cfg.bin_dirs.iter().cloned().filter_map(stamp));
        let mut cache = self.status_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((fp, answer)) = cache.as_ref() {
            if *fp == fingerprint {
                return answer.clone();
            }
        }
        let answer = self.compute_status();
        *cache = Some((fingerprint, answer.clone()));
        answer
    }

    fn compute_status(&self) -> Result<(), String> {
        let list = self.default_network().map_err(|e| e.to_string())?;
        for i in 0..list.plugins.len() {
            find_plugin(list.plugin_type(i), &self.cfg.bin_dirs)
                .map_err(|e| format!("network {:?} ({}): {e}", list.name, list.source.display()))?;
        }
        Ok(())
    }

    /// Attaches the pod to the default network (spec "ADD": every plugin of the list in order, each
    /// getting the previous plugin's result as `prevResult`).
    ///
    /// The config and (after success) the result are cached under `cache_dir/<id>.json` before the
    /// first plugin runs, so [`Cni::del`] can clean up even after a crash. On failure every plugin is
    /// run with DEL (reverse order) to undo the partial attachment.
    ///
    /// Errors: [`NetError::InvalidArgument`] for a bad [`PodNetwork`] field,
    /// [`NetError::NoNetworkConfig`], [`NetError::PluginNotFound`], [`NetError::Add`] wrapping the
    /// plugin failure, cache I/O errors.
    #[tracing::instrument(level = "info", name = "cni", skip_all, fields(otel.name = "CNI ADD", netns = %pod.netns.display()))]
    pub async fn add(&self, pod: &PodNetwork) -> Result<NetworkStatus, NetError> {
        validate_pod(pod, true)?;
        let list = self.default_network()?;
        let bins = self.resolve_plugins(&list)?;
        let caps = capability_args(&pod.port_mappings);
        let args = cni_args(pod);
        let mut entry = cache::CacheEntry::new(
            &pod.id,
            &pod.ifname,
            &list.name,
            list.to_json(),
            &args,
            caps.clone(),
        );
        cache::write(&self.cfg.cache_dir, &entry)?;
        let inv = self.invocation(pod, path_str(&pod.netns), &args);

        let mut prev: Option<Value> = None;
        for (i, bin) in bins.iter().enumerate() {
            let ty = list.plugin_type(i);
            let stdin = plugin_stdin(&list, i, prev.as_ref(), &caps);
            let out = exec_plugin(Op::Add, ty, bin, &stdin, &inv)
                .await
                .and_then(|out| {
                    let v = out.ok_or_else(|| NetError::PluginOutput {
                        plugin: ty.to_owned(),
                        command: "ADD",
                        reason: "empty result".into(),
                    })?;
                    if !v.is_object() {
                        return Err(NetError::PluginOutput {
                            plugin: ty.to_owned(),
                            command: "ADD",
                            reason: "result is not a JSON object".into(),
                        });
                    }
                    Ok(v)
                });
            match out {
                Ok(v) => prev = Some(v),
                Err(e) => return Err(self.rollback(pod, &list, &inv, &caps, prev, e).await),
            }
        }
        let raw = prev.unwrap_or_else(|| json!({}));
        let ips = match result::parse_ips(&raw) {
            Ok(ips) => ips,
            Err(reason) => {
                let e = NetError::PluginOutput {
                    plugin: list
                        .plugin_type(list.plugins.len().saturating_sub(1))
                        .to_owned(),
                    command: "ADD",
                    reason,
                };
                return Err(self.rollback(pod, &list, &inv, &caps, Some(raw), e).await);
            }
        };
        entry.result = Some(raw.clone());
        if let Err(e) = cache::write(&self.cfg.cache_dir, &entry) {
            return Err(self.rollback(pod, &list, &inv, &caps, Some(raw), e).await);
        }
        Ok(NetworkStatus { ips, raw })
    }

    async fn rollback(
        &self,
        pod: &PodNetwork,
        list: &NetworkConfigList,
        inv: &Invocation,
        caps: &Map<String, Value>,
        prev: Option<Value>,
        cause: NetError,
    ) -> NetError {
        let prev = prev.filter(|_| list.supports_check());
        let mut rollback = self.del_plugins(list, inv, caps, prev.as_ref()).await;
        if rollback.is_empty() {
            if let Err(e) = cache::remove(&self.cfg.cache_dir, &pod.id) {
                rollback.push(e);
            }
        }
        NetError::Add {
            id: pod.id.clone(),
            source: Box::new(cause),
            rollback,
        }
    }

    /// Detaches the pod (spec "DEL"): every plugin in reverse order, continuing past failures.
    ///
    /// Uses the cached config, CNI_ARGS, port mappings and (for cniVersion >= 0.4.0) the cached
    /// result as `prevResult`, so it works after a restart or a config change; without a cache entry
    /// the current default network is used, and when there is none either this is a no-op. When
    /// `pod.netns` is no longer a live namespace pin, `CNI_NETNS` is passed empty (plugins then only
    /// release IPAM and host-side state). Idempotent; the cache entry is removed only on full success.
    ///
    /// Errors: [`NetError::InvalidArgument`], [`NetError::Del`] listing every plugin failure, cache
    /// I/O errors.
    ///
    /// Call it before unpinning the namespace where possible: some plugins (e.g. `bridge` 1.1 with
    /// `ipMasq`) can only find and remove their per-pod iptables rules while the netns exists.
    #[tracing::instrument(level = "info", name = "cni", skip_all, fields(otel.name = "CNI DEL", netns = %pod.netns.display()))]
    pub async fn del(&self, pod: &PodNetwork) -> Result<(), NetError> {
        validate_pod(pod, false)?;
        let (list, args, caps, prev, ifname) = match cache::read(&self.cfg.cache_dir, &pod.id)? {
            Some(entry) => {
                let list = config::parse_conflist(
                    entry.config.to_string().as_bytes(),
                    &cache::path(&self.cfg.cache_dir, &pod.id),
                )?;
                let prev = entry.result.filter(|_| list.supports_check());
                (
                    list,
                    entry.cni_args,
                    entry.capability_args,
                    prev,
                    entry.if_name,
                )
            }
            None => match self.default_network() {
                Ok(list) => (
                    list,
                    cni_args(pod),
                    capability_args(&pod.port_mappings),
                    None,
                    pod.ifname.clone(),
                ),
                Err(NetError::NoNetworkConfig { .. }) => {
                    tracing::debug!(id = %pod.id, "CNI DEL: no cache entry and no network config; nothing to do");
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
        };
        let netns = if crate::ns::is_namespace_pin(&pod.netns) {
            path_str(&pod.netns)
        } else {
            String::new()
        };
        let mut inv = self.invocation(pod, netns, &args);
        inv.ifname = ifname;
        let errors = self.del_plugins(&list, &inv, &caps, prev.as_ref()).await;
        if !errors.is_empty() {
            return Err(NetError::Del {
                id: pod.id.clone(),
                errors,
            });
        }
        cache::remove(&self.cfg.cache_dir, &pod.id)
    }

    async fn del_plugins(
        &self,
        list: &NetworkConfigList,
        inv: &Invocation,
        caps: &Map<String, Value>,
        prev: Option<&Value>,
    ) -> Vec<NetError> {
        let mut errors = Vec::new();
        for i in (0..list.plugins.len()).rev() {
            let ty = list.plugin_type(i);
            let bin = match find_plugin(ty, &self.cfg.bin_dirs) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let stdin = plugin_stdin(list, i, prev, caps);
            if let Err(e) = exec_plugin(Op::Del, ty, &bin, &stdin, inv).await {
                tracing::warn!(id = %inv.container_id, plugin = ty, error = %e, "CNI DEL failed");
                errors.push(e);
            }
        }
        errors
    }

    /// Verifies the attachment (spec "CHECK", cniVersion >= 0.4.0): every plugin in order with the
    /// cached result as `prevResult`. A list with `disableCheck: true` passes without running plugins.
    ///
    /// Errors: [`NetError::CheckUnavailable`] (no cached result, version < 0.4.0, netns gone),
    /// [`NetError::InvalidArgument`], [`NetError::PluginNotFound`], the first plugin failure.
    #[tracing::instrument(level = "info", name = "cni", skip_all, fields(otel.name = "CNI CHECK", netns = %pod.netns.display()))]
    pub async fn check(&self, pod: &PodNetwork) -> Result<(), NetError> {
        validate_pod(pod, true)?;
        let unavailable = |reason: String| NetError::CheckUnavailable {
            id: pod.id.clone(),
            reason,
        };
        let entry = cache::read(&self.cfg.cache_dir, &pod.id)?
            .ok_or_else(|| unavailable("no cached ADD result".into()))?;
        let list = config::parse_conflist(
            entry.config.to_string().as_bytes(),
            &cache::path(&self.cfg.cache_dir, &pod.id),
        )?;
        let prev = entry
            .result
            .ok_or_else(|| unavailable("ADD did not complete".into()))?;
        if !list.supports_check() {
            return Err(unavailable(format!(
                "cniVersion {} does not support CHECK (needs >= 0.4.0)",
                list.cni_version
            )));
        }
        if list.disable_check {
            return Ok(());
        }
        if !crate::ns::is_namespace_pin(&pod.netns) {
            return Err(unavailable(format!(
                "{} is not a network namespace",
                pod.netns.display()
            )));
        }
        let bins = self.resolve_plugins(&list)?;
        let mut inv = self.invocation(pod, path_str(&pod.netns), &entry.cni_args);
        inv.ifname = entry.if_name;
        for (i, bin) in bins.iter().enumerate() {
            let stdin = plugin_stdin(&list, i, Some(&prev), &entry.capability_args);
            exec_plugin(Op::Check, list.plugin_type(i), bin, &stdin, &inv).await?;
        }
        Ok(())
    }

    /// The cached ADD status of sandbox `id` (e.g. to answer `PodSandboxStatus` after a restart);
    /// `Ok(None)` when nothing (or no completed ADD) is cached.
    ///
    /// Errors: [`NetError::InvalidArgument`] for a bad id, [`NetError::Cache`] / [`NetError::Io`].
    pub fn cached_status(&self, id: &str) -> Result<Option<NetworkStatus>, NetError> {
        validate_id(id)?;
        let Some(entry) = cache::read(&self.cfg.cache_dir, id)? else {
            return Ok(None);
        };
        let Some(raw) = entry.result else {
            return Ok(None);
        };
        let ips = result::parse_ips(&raw).map_err(|reason| NetError::Cache {
            path: cache::path(&self.cfg.cache_dir, id),
            reason,
        })?;
        Ok(Some(NetworkStatus { ips, raw }))
    }

    fn resolve_plugins(&self, list: &NetworkConfigList) -> Result<Vec<PathBuf>, NetError> {
        (0..list.plugins.len())
            .map(|i| find_plugin(list.plugin_type(i), &self.cfg.bin_dirs))
            .collect()
    }

    fn invocation(&self, pod: &PodNetwork, netns: String, args: &str) -> Invocation {
        Invocation {
            container_id: pod.id.clone(),
            netns,
            ifname: pod.ifname.clone(),
            args: args.to_owned(),
            bin_dirs: self.cfg.bin_dirs.clone(),
            timeout: self.timeout,
        }
    }
}

/// Writes krio's default network config to `conf_dir/10-krio-bridge.conflist` when `conf_dir` has no
/// config file (`.conflist`, `.conf`, `.json`) at all: cniVersion 1.0.0 network `krio` with the
/// `bridge` plugin (bridge `krio0`, isGateway, ipMasq, hairpinMode, host-local IPAM on
/// 10.88.0.0/16 with a default route) and `portmap` (capability `portMappings`, snat).
/// Loopback is handled by [`crate::ns::pin_namespaces`].
///
/// Returns `Ok(true)` when written, `Ok(false)` when a config already existed. The file is written
/// atomically (temp file + rename) with mode 0644; `conf_dir` is created if missing.
/// Errors: [`NetError::Io`].
pub fn install_default_config(conf_dir: &Path) -> Result<bool, NetError> {
    if !config::config_files(conf_dir)?.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(conf_dir).map_err(|source| NetError::Io {
        op: "create CNI config dir",
        path: conf_dir.to_path_buf(),
        source,
    })?;
    let doc = default_config_json();
    let text = serde_json::to_string_pretty(&doc).map_err(|e| NetError::InvalidConfig {
        path: conf_dir.join(DEFAULT_CONFIG_FILE),
        reason: e.to_string(),
    })?;
    let tmp = conf_dir.join(format!(".{DEFAULT_CONFIG_FILE}.tmp"));
    let dst = conf_dir.join(DEFAULT_CONFIG_FILE);
    std::fs::write(&tmp, text + "\n").map_err(|source| NetError::Io {
        op: "write CNI config",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &dst).map_err(|source| NetError::Io {
        op: "rename CNI config to",
        path: dst,
        source,
    })?;
    Ok(true)
}

/// The default conflist document written by [`install_default_config`].
pub fn default_config_json() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "krio",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "krio0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "ranges": [[{ "subnet": "10.88.0.0/16", "gateway": "10.88.0.1" }]]
                }
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true
            }
        ]
    })
}

/// `CNI_ARGS` per the Kubernetes convention:
/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`.
pub fn cni_args(pod: &PodNetwork) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.id, pod.uid
    )
}

/// The runtime capability arguments offered to plugins (`portMappings` when any host port is set).
fn capability_args(mappings: &[PortMapping]) -> Map<String, Value> {
    let pm: Vec<Value> = mappings
        .iter()
        .filter(|m| m.host_port != 0)
        .map(|m| {
            json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": m.protocol.as_str(),
                "hostIP": m.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    let mut caps = Map::new();
    if !pm.is_empty() {
        caps.insert("portMappings".into(), Value::Array(pm));
    }
    caps
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn invalid(field: &'static str, reason: String) -> NetError {
    NetError::InvalidArgument { field, reason }
}

/// Sandbox ids: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 bytes (used as a file name).
fn validate_id(id: &str) -> Result<(), NetError> {
    let mut b = id.bytes();
    let ok = id.len() <= 128
        && b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "PodNetwork.id",
            format!("{id:?} must match [A-Za-z0-9][A-Za-z0-9_.-]* and be at most 128 bytes"),
        ))
    }
}

fn validate_pod(pod: &PodNetwork, need_netns: bool) -> Result<(), NetError> {
    validate_id(&pod.id)?;
    let ifname_ok = !pod.ifname.is_empty()
        && pod.ifname.len() < 16
        && pod.ifname != "."
        && pod.ifname != ".."
        && pod
            .ifname
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'/' && c != b':');
    if !ifname_ok {
        return Err(invalid(
            "PodNetwork.ifname",
            format!("{:?} is not a valid interface name", pod.ifname),
        ));
    }
    for (field, v) in [
        ("PodNetwork.name", &pod.name),
        ("PodNetwork.namespace", &pod.namespace),
        ("PodNetwork.uid", &pod.uid),
    ] {
        if v.len() > 253
            || v.bytes()
                .any(|c| c == b';' || c == b'=' || c.is_ascii_control())
        {
            return Err(invalid(
                field,
                format!("{v:?} must not contain ';', '=' or control characters (max 253 bytes)"),
            ));
        }
    }
    if need_netns && !pod.netns.is_absolute() {
        return Err(invalid(
            "PodNetwork.netns",
            format!("{} is not an absolute path", pod.netns.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodNetwork {
        PodNetwork {
            id: "0123abcd".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            netns: "/run/krio/ns/net".into(),
            ifname: "eth0".into(),
            port_mappings: vec![],
        }
    }

    #[test]
    fn cni_args_format() {
        assert_eq!(
            cni_args(&pod()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=0123abcd;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn pod_validation() {
        assert!(validate_pod(&pod(), true).is_ok());
        for (f, field) in [
            (
                Box::new(|p: &mut PodNetwork| p.id = "../x".into()) as Box<dyn Fn(&mut PodNetwork)>,
                "PodNetwork.id",
            ),
            (Box::new(|p| p.id = String::new()), "PodNetwork.id"),
            (Box::new(|p| p.id = "a".repeat(129)), "PodNetwork.id"),
            (Box::new(|p| p.ifname = "a/b".into()), "PodNetwork.ifname"),
            (Box::new(|p| p.ifname = "a".repeat(16)), "PodNetwork.ifname"),
            (Box::new(|p| p.name = "a;b=c".into()), "PodNetwork.name"),
            (
                Box::new(|p| p.namespace = "a=b".into()),
                "PodNetwork.namespace",
            ),
            (Box::new(|p| p.uid = "x\n".into()), "PodNetwork.uid"),
            (Box::new(|p| p.netns = "rel".into()), "PodNetwork.netns"),
        ] {
            let mut p = pod();
            f(&mut p);
            match validate_pod(&p, true) {
                Err(NetError::InvalidArgument { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn capability_args_skip_zero_host_port() {
        let caps = capability_args(&[
            PortMapping {
                protocol: Protocol::Tcp,
                container_port: 80,
                host_port: 8080,
                host_ip: None,
            },
            PortMapping {
                protocol: Protocol::Udp,
                container_port: 53,
                host_port: 0,
                host_ip: None,
            },
            PortMapping {
                protocol: Protocol::Sctp,
                container_port: 9,
                host_port: 9009,
                host_ip: Some("127.0.0.1".parse().unwrap()),
            },
        ]);
        assert_eq!(
            caps["portMappings"],
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"hostPort": 9009, "containerPort": 9, "protocol": "sctp", "hostIP": "127.0.0.1"}
            ])
        );
        assert!(capability_args(&[]).is_empty());
    }

    #[test]
    fn default_config_install() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("net.d");
        assert!(install_default_config(&dir).unwrap());
        assert!(!install_default_config(&dir).unwrap());
        let l = config::load_default_network(&dir).unwrap();
        assert_eq!(l.name, "krio");
        assert_eq!(l.plugin_type(0), "bridge");
        assert_eq!(l.plugin_type(1), "portmap");
        assert_eq!(l.plugins[0]["bridge"], "krio0");
        // An existing config of any kind prevents installation.
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(d2.path().join("99-x.conf"), "{}").unwrap();
        assert!(!install_default_config(d2.path()).unwrap());
    }

    #[test]
    fn status_reports_missing_config_and_plugins() {
        let d = tempfile::tempdir().unwrap();
        let cni = Cni::new(CniConfig {
            conf_dir: d.path().join("net.d"),
            bin_dirs: vec![d.path().join("bin")],
            cache_dir: d.path().join("cache"),
        });
        assert!(cni
            .status()
            .unwrap_err()
            .contains("no valid CNI network config"));
        install_default_config(&d.path().join("net.d")).unwrap();
        let e = cni.status().unwrap_err();
        assert!(e.contains("not found"), "{e}");
    }
}
