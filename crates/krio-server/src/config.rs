//! krio's configuration: built-in defaults, `/etc/krio/krio.toml` and drop-ins in
//! `/etc/krio/krio.d/*.toml` (applied in lexical order, later files win key by key).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default location of the main configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/krio/krio.toml";

/// The effective configuration of the daemon. Every field has a built-in default, so no
/// file is required; `krio config` prints this structure as TOML.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Path of the CRI unix socket (kubelet's `--container-runtime-endpoint`).
    pub listen: PathBuf,
    /// Persistent data: images, layers, sandbox and container records.
    pub root: PathBuf,
    /// Volatile data (tmpfs): pinned namespaces, bundles, exit files, runtime state.
    pub state_dir: PathBuf,
    /// `tracing` filter, e.g. `info` or `krio=debug`. SIGHUP re-reads it from the files.
    pub log_level: String,
    /// Format of the daemon's log lines on stderr: `text`, or `json` (one object per line).
    pub log_format: LogFormat,
    /// `host:port` to serve Prometheus metrics on (`GET /metrics`); empty disables them.
    pub metrics_listen: String,
    /// Cgroup driver reported by the `RuntimeConfig` RPC. Only `cgroupfs` is implemented;
    /// `systemd` is refused when the configuration is loaded.
    pub cgroup_driver: CgroupDriver,
    /// Parent cgroup for pods whose `cgroup_parent` is empty.
    pub cgroup_parent: String,
    /// Name of the runtime handler used when a request names none (`runtime_handler` empty).
    pub default_runtime: String,
    /// Runtime handlers by name (the CRI `runtime_handler` / Kubernetes RuntimeClass handler).
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    /// Path of the `krio-monitor` binary; empty means "next to the krio binary, else in PATH".
    pub monitor_path: PathBuf,
    /// CNI settings.
    pub cni: CniSection,
    /// Image settings.
    pub image: ImageSection,
    /// IP address the streaming server (exec, attach, port-forward) listens on; the URLs
    /// returned by `Exec`, `Attach` and `PortForward` name it.
    pub stream_address: String,
    /// TCP port of the streaming server; 0 picks a free one at start (CRI-O's default).
    pub stream_port: u16,
    /// PEM certificate chain for serving the streaming server over TLS; empty means plain HTTP.
    pub stream_tls_cert: PathBuf,
    /// PEM private key for `stream_tls_cert`.
    pub stream_tls_key: PathBuf,
    /// Seconds between two rounds of the stats sampler, which reads every live container's and
    /// pod's cgroup and walks the writable layers in the background; `ContainerStats`,
    /// `PodSandboxStats` and their List forms answer from its cache, and `usage_nano_cores` is
    /// the CPU rate between its consecutive samples (CRI-O's `stats_collection_period`). At
    /// least 1.
    pub stats_collection_period: u64,
    /// Defaults applied to every container.
    pub container: ContainerSection,
    /// OpenTelemetry tracing of CRI calls and what they run, exported over OTLP/HTTP.
    pub tracing: TracingSection,
}

/// Format of the daemon's log lines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`tracing_subscriber`'s full format).
    Text,
    /// One JSON object per line, with `timestamp`, `level`, `fields` and `target`.
    Json,
}

/// Cgroup driver, as the CRI `RuntimeConfig` RPC reports it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Direct cgroupfs paths (`/sys/fs/cgroup/...`).
    Cgroupfs,
    /// systemd slices; not implemented yet, refused by [`Config::validate`].
    Systemd,
}

/// One runtime handler: a Kubernetes RuntimeClass `handler`, the CRI `runtime_handler`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The OCI runtime binary (absolute, or looked up in PATH). A handler whose binary is missing is reported not
    /// ready by `Status` and refused by `RunPodSandbox` (FailedPrecondition); the daemon still starts.
    pub path: PathBuf,
    /// The runtime's `--root` state directory; empty means `<state_dir>/runtime/<name>`.
    pub root: PathBuf,
    /// How krio drives the handler: `oci` (a runc-compatible command line).
    pub runtime_type: RuntimeType,
    /// Global options put before every verb of the runtime's command line, after `--root` (runsc's
    /// `--platform=ptrace`, `--network=host`). Each must start with `-`.
    pub runtime_args: Vec<String>,
    /// How the pod's containers map onto the runtime's sandboxes, told to the runtime through the
    /// `io.kubernetes.cri.container-type` and `io.kubernetes.cri.sandbox-id` annotations: `none`, `per-container`
    /// or `pod`.
    pub pod_sandbox: PodSandboxMode,
    /// Privileged containers of this handler do not get the host's devices (containerd's setting of the same
    /// name); they keep the device cgroup's allow-all rule. For sandboxed or VM runtimes, where the host's devices
    /// mean nothing or too much.
    pub privileged_without_host_devices: bool,
    /// Prefixes of pod and container annotations (CRI `annotations`) copied into the OCI spec's `annotations`,
    /// where the runtime reads them (`dev.gvisor.` for runsc). Annotations matching no prefix never reach the
    /// runtime; krio's own `io.kubernetes.cri.*` and `io.krio.*` keys are never overridden.
    pub allowed_annotations: Vec<String>,
}

impl Default for RuntimeHandler {
    fn default() -> Self {
        Self {
            path: PathBuf::from("runc"),
            root: PathBuf::new(),
            runtime_type: RuntimeType::Oci,
            runtime_args: Vec::new(),
            pod_sandbox: PodSandboxMode::None,
            privileged_without_host_devices: false,
            allowed_annotations: Vec::new(),
        }
    }
}

/// How krio drives a runtime handler.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeType {
    /// An OCI runtime with runc's command line (`create`, `start`, `state`, `kill`, `delete`, `exec`): runc,
    /// runsc, youki, crun.
    Oci,
}

/// How a pod's containers map onto the runtime's own sandboxes (docs/architecture.md, "Runtime handlers").
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PodSandboxMode {
    /// Each container is a runtime container of its own; the annotations say `container-type=container` and name
    /// the pod as `sandbox-id` (containerd's values). For runtimes without sandboxes: runc, crun, youki.
    None,
    /// Each container is created as a runtime sandbox of its own (`container-type=sandbox`, `sandbox-id` = the
    /// container's id), as runsc needs when no pause container has started the pod's sandbox first.
    PerContainer,
    /// One runtime sandbox per pod (what runsc is made for): RunPodSandbox creates a root container with the
    /// pod's id (`container-type=sandbox`) running krio's built-in idle process, and every container of the pod
    /// joins it (`container-type=container`, `sandbox-id` = the pod's id). StopPodSandbox removes it.
    Pod,
}

/// CNI settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CniSection {
    /// Network configuration directory (`.conflist`, `.conf`, `.json`).
    pub conf_dir: PathBuf,
    /// Plugin directories, searched in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Install krio's default bridge network into `conf_dir` when it holds no configuration.
    pub install_default_config: bool,
}

impl Default for CniSection {
    fn default() -> Self {
        Self {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            install_default_config: true,
        }
    }
}

/// Defaults applied to every container (CRI-O's `pids_limit`, `default_sysctls`,
/// `default_ulimits`), where the CRI request says nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerSection {
    /// Maximum number of processes in each container (`linux.resources.pids.limit`): 0 sets no limit (the
    /// container's cgroup inherits its parent's), -1 is explicitly unlimited.
    pub pids_limit: i64,
    /// Namespaced sysctls set in every container, e.g. `"net.ipv4.ping_group_range" = "0 2147483647"`; the
    /// pod's own `sysctls` win. Checked like the pod's: only namespaced sysctls, none of a host namespace.
    pub default_sysctls: BTreeMap<String, String>,
    /// Resource limits of every container's process, as `name=soft:hard` (`nofile=1024:4096`; a number may be
    /// `unlimited`), `name` being an `RLIMIT_*` name in lower case without the prefix. Without one, a container
    /// inherits the limits of its monitor (the daemon's).
    pub default_ulimits: Vec<String>,
    /// Longest container log line, in bytes, that the monitor writes as one CRI log record; longer lines are
    /// split into partial (`P`) records (containerd's `max_container_log_line_size`). 1 to 1048576: the monitor
    /// holds at most this much of a line in memory.
    pub log_line_max: usize,
    /// Largest size of a container's CRI log file, in bytes; 0 means no limit (CRI-O's `log_size_max`). The
    /// monitor never lets the file grow past it: before writing records that would, it truncates the file to zero
    /// length and goes on writing, so the file holds the newest output (conmon's behaviour). When kubelet
    /// rotates the log (ReopenContainerLog) the new file gets the same limit. 0, or at least 8192 and at least
    /// `log_line_max + 64` (one record's longest text plus its timestamp, stream and tag).
    pub log_size_max: u64,
    /// Capabilities every unprivileged container starts with, before the CRI request's adds and drops (CRI-O's
    /// `default_capabilities`): names as in the CRI (`CHOWN` or `CAP_CHOWN`, any case). The default is
    /// containerd's set. Capabilities the daemon itself lacks are left out.
    pub default_capabilities: Vec<String>,
    /// Run `runtime create` with `--no-pivot` (the root filesystem is switched with `MS_MOVE` and `chroot`
    /// instead of `pivot_root`), for root filesystems on a ramdisk where `pivot_root` fails. Less isolated: only
    /// for such hosts.
    pub no_pivot: bool,
    /// A seccomp profile file (OCI `linux.seccomp` JSON: `defaultAction`, `syscalls`, ...) used instead of
    /// krio's built-in profile for containers that ask for `RuntimeDefault`; empty means the built-in one.
    /// Read at start and at each container creation.
    pub seccomp_profile: PathBuf,
}

impl Default for ContainerSection {
    fn default() -> Self {
        Self {
            pids_limit: 0,
            default_sysctls: BTreeMap::new(),
            default_ulimits: Vec::new(),
            log_line_max: 16 * 1024,
            log_size_max: 0,
            default_capabilities: krio_oci::DEFAULT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            no_pivot: false,
            seccomp_profile: PathBuf::new(),
        }
    }
}

/// Reads `container.seccomp_profile` (`None` when unset).
///
/// Errors: a message naming the file when it cannot be read or is not an OCI seccomp profile.
pub fn load_seccomp_profile(
    path: &Path,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, String> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read(path)
        .map_err(|e| format!("container.seccomp_profile {}: {e}", path.display()))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("container.seccomp_profile {}: {e}", path.display()))
}

/// Parses a `default_ulimits` entry `name=soft:hard` into the OCI `process.rlimits` entry.
///
/// Errors: a message naming the entry when the name is not a Linux `RLIMIT_*` or the numbers are not
/// numbers (or `unlimited`), or soft exceeds hard.
pub fn parse_ulimit(entry: &str) -> Result<oci_spec::runtime::PosixRlimit, String> {
    let bad = |why: &str| format!("default_ulimits entry {entry:?}: {why}");
    let (name, limits) = entry
        .split_once('=')
        .ok_or_else(|| bad("expected name=soft:hard"))?;
    let (soft, hard) = limits
        .split_once(':')
        .ok_or_else(|| bad("expected name=soft:hard"))?;
    let num = |v: &str| match v.trim() {
        "unlimited" | "-1" => Ok(u64::MAX),
        v => v
            .parse::<u64>()
            .map_err(|_| bad("limits are numbers or `unlimited`")),
    };
    let (soft, hard) = (num(soft)?, num(hard)?);
    if soft > hard {
        return Err(bad("soft limit above hard limit"));
    }
    let json = serde_json::json!({
        "type": format!("RLIMIT_{}", name.trim().to_ascii_uppercase()),
        "soft": soft,
        "hard": hard,
    });
    serde_json::from_value(json)
        .map_err(|_| bad("unknown limit name (nofile, nproc, core, memlock, ...)"))
}

/// OpenTelemetry tracing (docs/architecture.md, "Observing the daemon"): a span for each CRI call, with
/// child spans for the runtime binary's calls, the CNI plugin calls and the steps of a pull, sent in batches
/// to an OTLP/HTTP collector as protobuf. A call whose gRPC metadata carries a W3C `traceparent` (kubelet's,
/// with its tracing on) becomes a child of that remote span. Read at start only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSection {
    /// Export spans. Off by default; then nothing is sent and no exporter runs.
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces URL, used as given (no `/v1/traces` is appended): `http://` or
    /// `https://` (checked against the built-in web PKI roots).
    pub endpoint: String,
    /// Calls without a remote parent are sampled at this rate, in spans per million (1000000: every call,
    /// 0: none). A call with a `traceparent` follows its sampled flag instead, as kubelet decided
    /// (kubelet's `samplingRatePerMillion`). 0 to 1000000.
    pub sampling_rate_per_million: u32,
    /// Longest time, in milliseconds, a finished span waits before its batch is sent (batches hold up to
    /// 512 spans, and at most 2048 wait; more are dropped). 1 to 3600000.
    pub export_interval_ms: u64,
}

impl Default for TracingSection {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4318/v1/traces".to_string(),
            sampling_rate_per_million: 1_000_000,
            export_interval_ms: 5000,
        }
    }
}

impl TracingSection {
    /// Checks the section: an `http`/`https` endpoint with a host (when enabled), a rate of at most a
    /// million, an interval between 1 ms and an hour.
    ///
    /// Errors: [`ConfigError::Invalid`] naming `tracing.<key>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled {
            let uri: http::Uri = self.endpoint.parse().map_err(|e| {
                ConfigError::Invalid(format!(
                    "tracing.endpoint {:?} is not a URL: {e}",
                    self.endpoint
                ))
            })?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
            if !scheme_ok || uri.host().is_none_or(str::is_empty) {
                return Err(ConfigError::Invalid(format!(
                    "tracing.endpoint {:?} is not an http:// or https:// URL with a host",
                    self.endpoint
                )));
            }
        }
        if self.sampling_rate_per_million > 1_000_000 {
            return Err(ConfigError::Invalid(format!(
                "tracing.sampling_rate_per_million {} is above 1000000",
                self.sampling_rate_per_million
            )));
        }
        if !(1..=3_600_000).contains(&self.export_interval_ms) {
            return Err(ConfigError::Invalid(format!(
                "tracing.export_interval_ms {} is not between 1 and 3600000",
                self.export_interval_ms
            )));
        }
        Ok(())
    }
}

/// Image settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSection {
    /// containers-registries.conf(5) file with mirrors, insecure and blocked registries.
    pub registries_conf: PathBuf,
    /// Registries reached over plain HTTP in addition to loopback ones (`host[:port]`).
    pub insecure_registries: Vec<String>,
    /// A docker-style `config.json` with registry credentials, used when a pull request
    /// carries no `AuthConfig`; empty means none.
    pub auth_file: PathBuf,
    /// Images reported as pinned (CRI `Image.pinned`), which kubelet's image garbage collection never
    /// removes: references (`busybox` means `docker.io/library/busybox:latest`), image ids, or prefixes
    /// ending in `*` (`registry.k8s.io/pause*`). An explicit RemoveImage still removes them.
    pub pinned_images: Vec<String>,
    /// Additional read-only image stores (CRI-O's `additional_image_stores`): root directories laid out like
    /// krio's own image store under `root` (`images/`, `layers/`, `blobs/`), for example another krio's `root`
    /// or a directory pre-filled on a node image. Their images are listed, reported pinned and run without a
    /// pull; a pull needs no download for a layer they hold. krio never writes, garbage-collects or removes
    /// anything in them (RemoveImage of such an image is FailedPrecondition). Read at start, in order: krio's
    /// own store wins, then the first store listed.
    pub additional_stores: Vec<PathBuf>,
}

impl Default for ImageSection {
    fn default() -> Self {
        Self {
            registries_conf: PathBuf::from("/etc/containers/registries.conf"),
            insecure_registries: Vec::new(),
            auth_file: PathBuf::new(),
            pinned_images: Vec::new(),
            additional_stores: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut runtimes = BTreeMap::new();
        runtimes.insert("runc".to_string(), RuntimeHandler::default());
        Self {
            listen: PathBuf::from("/run/krio/krio.sock"),
            root: PathBuf::from("/var/lib/krio"),
            state_dir: PathBuf::from("/run/krio"),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            metrics_listen: String::new(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_parent: "/krio".to_string(),
            default_runtime: "runc".to_string(),
            runtimes,
            monitor_path: PathBuf::new(),
            cni: CniSection::default(),
            image: ImageSection::default(),
            stream_address: "127.0.0.1".to_string(),
            stream_port: 0,
            stream_tls_cert: PathBuf::new(),
            stream_tls_key: PathBuf::new(),
            stats_collection_period: 10,
            container: ContainerSection::default(),
            tracing: TracingSection::default(),
        }
    }
}

/// Errors from loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid TOML or has an unknown key or a wrong type.
    #[error("parsing config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, naming the key.
        source: toml::de::Error,
    },
    /// The merged configuration is inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the defaults, then `path` (when it exists, or always when `required`), then every
    /// `*.toml` in the sibling `krio.d/` directory in lexical order. Tables merge key by key.
    ///
    /// Errors: [`ConfigError::Read`] / [`ConfigError::Parse`] naming the file, and
    /// [`ConfigError::Invalid`] when the default runtime is not among the handlers.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let mut merged = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(format!("serializing defaults: {e}")))?;
        let mut files = Vec::new();
        if required || path.exists() {
            files.push(path.to_path_buf());
        }
        if let Some(dir) = path.parent().map(|p| p.join("krio.d")) {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                let mut dropins: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                dropins.sort();
                files.extend(dropins);
            }
        }
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            apply_file(&mut merged, &file, &text)?;
        }
        finish(merged)
    }

    /// The configuration made of the defaults and one file's `text` (`origin` names it in
    /// errors), checked as [`Config::load`] checks it. No file is read.
    ///
    /// Errors: [`ConfigError::Parse`] naming `origin` and the key for malformed TOML, unknown
    /// keys and wrong types; [`ConfigError::Invalid`] as [`Config::validate`].
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let mut merged = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(format!("serializing defaults: {e}")))?;
        apply_file(&mut merged, origin, text)?;
        finish(merged)
    }

    /// Checks cross-field rules: the default runtime exists, paths are absolute, and the
    /// cgroup driver is `cgroupfs` (the systemd driver is refused until it is implemented).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cgroup_driver == CgroupDriver::Systemd {
            // Cgroup paths are built cgroupfs-style (`<parent>/<id>`); reporting systemd to
            // kubelet while doing that would put pods where kubelet does not look.
            return Err(ConfigError::Invalid(
                "cgroup_driver = \"systemd\" is not implemented yet (krio builds cgroupfs \
                 paths); use \"cgroupfs\" and configure kubelet's cgroupDriver to match"
                    .to_string(),
            ));
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(ConfigError::Invalid(format!(
                "default_runtime {:?} is not a key of [runtimes]",
                self.default_runtime
            )));
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "metrics_listen {:?} is not host:port (an IP address and a port)",
                self.metrics_listen
            )));
        }
        if self.stream_address.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "stream_address {:?} is not an IP address",
                self.stream_address
            )));
        }
        if self.stream_tls_cert.as_os_str().is_empty() != self.stream_tls_key.as_os_str().is_empty()
        {
            return Err(ConfigError::Invalid(
                "stream_tls_cert and stream_tls_key must be set together".to_string(),
            ));
        }
        if self.stats_collection_period == 0 {
            return Err(ConfigError::Invalid(
                "stats_collection_period must be at least 1 second".to_string(),
            ));
        }
        if self.container.pids_limit < -1 {
            return Err(ConfigError::Invalid(format!(
                "container.pids_limit {} is below -1",
                self.container.pids_limit
            )));
        }
        if !(1..=1 << 20).contains(&self.container.log_line_max) {
            return Err(ConfigError::Invalid(format!(
                "container.log_line_max {} is not between 1 and 1048576 bytes",
                self.container.log_line_max
            )));
        }
        let size_max = self.container.log_size_max;
        let size_floor = (self.container.log_line_max as u64 + 64).max(8192);
        if size_max != 0 && size_max < size_floor {
            return Err(ConfigError::Invalid(format!(
                "container.log_size_max {size_max} is below {size_floor} bytes (0 means no limit)"
            )));
        }
        self.default_capabilities()?;
        for k in self.container.default_sysctls.keys() {
            let key = k.replace('/', ".");
            let namespaced = ["net.", "kernel.shm", "kernel.msg", "fs.mqueue."]
                .iter()
                .any(|p| key.starts_with(p))
                || key == "kernel.sem";
            if !namespaced {
                return Err(ConfigError::Invalid(format!(
                    "container.default_sysctls: {k:?} is not a namespaced sysctl (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)"
                )));
            }
        }
        for u in &self.container.default_ulimits {
            parse_ulimit(u).map_err(|e| ConfigError::Invalid(format!("container.{e}")))?;
        }
        for (name, h) in &self.runtimes {
            h.validate(name)?;
        }
        self.tracing.validate()?;
        for (i, p) in self.image.additional_stores.iter().enumerate() {
            if !p.is_absolute() || *p == self.root {
                return Err(ConfigError::Invalid(format!(
                    "image.additional_stores[{i}] {} must be an absolute path other than root",
                    p.display()
                )));
            }
        }
        for (name, p) in [
            ("listen", &self.listen),
            ("root", &self.root),
            ("state_dir", &self.state_dir),
        ] {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an absolute path, got {}",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The dotted keys (`log_level`, `cni.conf_dir`, `runtimes.crun.path`) whose values differ
    /// between `self` and `other`, including keys present in only one of them.
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        fn diff(
            prefix: &str,
            a: Option<&toml::Value>,
            b: Option<&toml::Value>,
            out: &mut Vec<String>,
        ) {
            let key = |k: &str| {
                if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                }
            };
            match (a.and_then(|v| v.as_table()), b.and_then(|v| v.as_table())) {
                (Some(ta), Some(tb)) => {
                    let keys: std::collections::BTreeSet<&String> =
                        ta.keys().chain(tb.keys()).collect();
                    for k in keys {
                        diff(&key(k), ta.get(k), tb.get(k), out);
                    }
                }
                _ if a != b => out.push(prefix.to_string()),
                _ => {}
            }
        }
        let mut out = Vec::new();
        diff(
            "",
            toml::Value::try_from(self).ok().as_ref(),
            toml::Value::try_from(other).ok().as_ref(),
            &mut out,
        );
        out
    }

    /// `container.default_capabilities` parsed.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the entry that is not a Linux capability.
    pub fn default_capabilities(&self) -> Result<Vec<oci_spec::runtime::Capability>, ConfigError> {
        self.container
            .default_capabilities
            .iter()
            .enumerate()
            .map(|(i, name)| {
                krio_oci::parse_capability(&format!("container.default_capabilities[{i}]"), name)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))
            })
            .collect()
    }

    /// The `--root` directory of runtime handler `name`.
    pub fn runtime_root(&self, name: &str) -> PathBuf {
        match self.runtimes.get(name) {
            Some(h) if !h.root.as_os_str().is_empty() => h.root.clone(),
            _ => self.state_dir.join("runtime").join(name),
        }
    }
}

impl RuntimeHandler {
    /// Checks handler `name`: a name usable as a directory, a non-empty path, options that are options, no
    /// empty annotation prefix.
    ///
    /// Errors: [`ConfigError::Invalid`] naming `runtimes.<name>.<key>`.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return invalid(format!(
                "runtimes.{name:?}: a handler name is [A-Za-z0-9_.-] and does not start with '.'"
            ));
        }
        if self.path.as_os_str().is_empty() {
            return invalid(format!("runtimes.{name}.path is empty"));
        }
        for a in &self.runtime_args {
            if !a.starts_with('-') || a.contains('\0') {
                return invalid(format!(
                    "runtimes.{name}.runtime_args: {a:?} is not an option (options start with '-')"
                ));
            }
        }
        if self.allowed_annotations.iter().any(String::is_empty) {
            return invalid(format!(
                "runtimes.{name}.allowed_annotations: an empty prefix would let every annotation through"
            ));
        }
        Ok(())
    }

    /// Whether a CRI annotation `key` may reach the OCI spec: it starts with one of `allowed_annotations` and is
    /// not one of krio's own keys (`io.kubernetes.cri.`, `io.krio.`).
    pub fn allows_annotation(&self, key: &str) -> bool {
        !key.starts_with("io.kubernetes.cri.")
            && !key.starts_with("io.krio.")
            && self.allowed_annotations.iter().any(|p| key.starts_with(p))
    }
}

/// Merges one file's `text` over `merged`, refusing it (naming `file`) when it is not valid
/// TOML or, parsed on its own, has an unknown key or a wrong type.
fn apply_file(merged: &mut toml::Value, file: &Path, text: &str) -> Result<(), ConfigError> {
    let value: toml::Value = toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: file.to_path_buf(),
        source,
    })?;
    // Parse each file on its own too, so an unknown key is reported with its file.
    toml::from_str::<Config>(text).map_err(|source| ConfigError::Parse {
        path: file.to_path_buf(),
        source,
    })?;
    merge(merged, value);
    Ok(())
}

/// The merged TOML as a checked [`Config`].
fn finish(merged: toml::Value) -> Result<Config, ConfigError> {
    let cfg: Config = merged
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(&dir.path().join("krio.toml"), false).unwrap();
        assert_eq!(cfg, Config::default());
        assert!(Config::load(&dir.path().join("krio.toml"), true).is_err());
    }

    #[test]
    fn file_and_dropins_merge_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("krio.toml");
        std::fs::write(&main, "root = \"/a\"\n[cni]\nconf_dir = \"/x\"\n").unwrap();
        std::fs::create_dir(dir.path().join("krio.d")).unwrap();
        std::fs::write(dir.path().join("krio.d/10.toml"), "root = \"/b\"\n").unwrap();
        std::fs::write(
            dir.path().join("krio.d/20.toml"),
            "[runtimes.crun]\npath = \"/usr/bin/crun\"\n",
        )
        .unwrap();
        let cfg = Config::load(&main, false).unwrap();
        assert_eq!(cfg.root, PathBuf::from("/b"));
        assert_eq!(cfg.cni.conf_dir, PathBuf::from("/x"));
        assert_eq!(cfg.cni.bin_dirs, CniSection::default().bin_dirs);
        assert!(cfg.runtimes.contains_key("runc") && cfg.runtimes.contains_key("crun"));
        let printed: Config = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(printed, cfg);
    }

    #[test]
    fn ulimits_parse_or_name_the_entry() {
        let r = parse_ulimit("nofile=1024:4096").unwrap();
        assert_eq!(
            (format!("{:?}", r.typ()), r.soft(), r.hard()),
            ("RlimitNofile".to_string(), 1024, 4096)
        );
        assert_eq!(parse_ulimit("core=0:unlimited").unwrap().hard(), u64::MAX);
        for bad in [
            "nofile",
            "nofile=1",
            "nofile=x:1",
            "nofile=9:1",
            "bogus=1:1",
        ] {
            let err = parse_ulimit(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn changed_keys_names_each_difference() {
        let a = Config::default();
        let mut b = a.clone();
        assert!(a.changed_keys(&b).is_empty());
        b.log_level = "debug".into();
        b.log_format = LogFormat::Json;
        b.cni.conf_dir = PathBuf::from("/x");
        b.runtimes.insert("crun".into(), RuntimeHandler::default());
        assert_eq!(
            a.changed_keys(&b),
            ["cni.conf_dir", "log_format", "log_level", "runtimes.crun"]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("krio.toml");
        std::fs::write(&main, "lisen = \"/a\"\n").unwrap();
        let err = Config::load(&main, true).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        std::fs::write(&main, "default_runtime = \"nope\"\n").unwrap();
        assert!(Config::load(&main, true).is_err());
        std::fs::write(&main, "root = \"relative\"\n").unwrap();
        assert!(Config::load(&main, true).is_err());
        std::fs::write(&main, "stream_address = \"localhost\"\n").unwrap();
        assert!(Config::load(&main, true).is_err());
        std::fs::write(&main, "stream_tls_cert = \"/a.pem\"\n").unwrap();
        assert!(Config::load(&main, true).is_err());
        std::fs::write(&main, "cgroup_driver = \"systemd\"\n").unwrap();
        let err = Config::load(&main, true).unwrap_err().to_string();
        assert!(
            err.contains("cgroup_driver") && err.contains("not implemented"),
            "{err}"
        );
        std::fs::write(&main, "cgroup_driver = \"cgroupfs\"\n").unwrap();
        assert_eq!(
            Config::load(&main, true).unwrap().cgroup_driver,
            CgroupDriver::Cgroupfs
        );
        std::fs::write(&main, "stream_address = \"::1\"\nstream_port = 10010\n").unwrap();
        let cfg = Config::load(&main, true).unwrap();
        assert_eq!(
            (cfg.stream_address.as_str(), cfg.stream_port),
            ("::1", 10010)
        );
    }

    #[test]
    fn tracing_section_parses_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("krio.toml");
        assert!(!Config::default().tracing.enabled);
        std::fs::write(
            &main,
            "[tracing]\nenabled = true\nendpoint = \"https://collector.example:4318/v1/traces\"\n\
             sampling_rate_per_million = 250000\nexport_interval_ms = 100\n",
        )
        .unwrap();
        let cfg = Config::load(&main, true).unwrap();
        assert_eq!(
            cfg.tracing,
            TracingSection {
                enabled: true,
                endpoint: "https://collector.example:4318/v1/traces".into(),
                sampling_rate_per_million: 250_000,
                export_interval_ms: 100,
            }
        );
        let printed: Config = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(printed.tracing, cfg.tracing);
        // A bad endpoint matters only when tracing is on.
        std::fs::write(&main, "[tracing]\nendpoint = \"nonsense\"\n").unwrap();
        assert!(Config::load(&main, true).is_ok());
        for (bad, key) in [
            (
                "[tracing]\nenabled = true\nendpoint = \"collector:4318\"\n",
                "tracing.endpoint",
            ),
            (
                "[tracing]\nenabled = true\nendpoint = \"grpc://c:4317\"\n",
                "tracing.endpoint",
            ),
            (
                "[tracing]\nsampling_rate_per_million = 1000001\n",
                "tracing.sampling_rate_per_million",
            ),
            (
                "[tracing]\nexport_interval_ms = 0\n",
                "tracing.export_interval_ms",
            ),
            ("[tracing]\nprotocol = \"grpc\"\n", "protocol"),
        ] {
            std::fs::write(&main, bad).unwrap();
            let err = Config::load(&main, true).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn handler_keys_parse_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("krio.toml");
        std::fs::write(
            &main,
            "[runtimes.runsc]\npath = \"/usr/bin/runsc\"\nruntime_type = \"oci\"\n\
             runtime_args = [\"--platform=ptrace\", \"--network=host\"]\npod_sandbox = \"per-container\"\n\
             privileged_without_host_devices = true\nallowed_annotations = [\"dev.gvisor.\"]\n",
        )
        .unwrap();
        let cfg = Config::load(&main, true).unwrap();
        let h = &cfg.runtimes["runsc"];
        assert_eq!(h.runtime_args, ["--platform=ptrace", "--network=host"]);
        assert_eq!(h.pod_sandbox, PodSandboxMode::PerContainer);
        assert!(h.privileged_without_host_devices);
        assert!(h.allows_annotation("dev.gvisor.spec.mount.x.share"));
        assert!(!h.allows_annotation("other.io/x"));
        assert!(!h.allows_annotation("io.kubernetes.cri.container-type"));
        assert_eq!(cfg.runtimes["runc"], RuntimeHandler::default());
        for (bad, key) in [
            (
                "[runtimes.x]\nruntime_args = [\"platform=ptrace\"]\n",
                "runtimes.x.runtime_args",
            ),
            ("[runtimes.x]\npath = \"\"\n", "runtimes.x.path"),
            (
                "[runtimes.x]\nallowed_annotations = [\"\"]\n",
                "runtimes.x.allowed_annotations",
            ),
            ("[runtimes.\"a/b\"]\npath = \"runc\"\n", "runtimes.\"a/b\""),
            ("[runtimes.x]\nruntime_type = \"vm\"\n", "runtime_type"),
            ("[runtimes.x]\npod_sandbox = \"shared\"\n", "pod_sandbox"),
        ] {
            std::fs::write(&main, bad).unwrap();
            let err = Config::load(&main, true).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }
}
