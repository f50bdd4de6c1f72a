//! CRI v1 `RuntimeService` and `ImageService` handlers for krio.
//!
//! Layout: [`Krio`] holds the daemon's state (sandboxes, containers, image store, runtime
//! handlers). Each CRI RPC is one method in a file of its own under `runtime/` or `image/`,
//! written as validate -> look up -> act -> convert. `service.rs` is the thin tonic adapter,
//! and `error.rs` the one place where errors become gRPC statuses.

pub mod calls;
mod checkpoint_archive;
pub mod config;
pub mod config_doc;
pub mod error;
pub mod handlers;
mod ids;
mod image;
mod metrics;
mod persist;
mod recover;
mod rootfs;
mod runtime;
mod service;
mod state;
mod streaming;
mod sys;
pub mod uds;
mod validate;

#[cfg(test)]
mod fuzz_tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::Config;
pub use error::ServerError;
pub use metrics::serve_metrics;
pub use service::{rpc_span, ImageApi, RuntimeApi};
pub use state::{KILL_POINTS, TEST_KILL_AT_ENV};
pub use streaming::serve_streaming;

use krio_image::ImageStore;
use krio_oci::OciRuntime;
use state::{Container, Pending, Registry, Sandbox};

/// The CRI runtime name reported by `Version`.
pub const RUNTIME_NAME: &str = "krio";
/// The CRI API version krio implements.
pub const CRI_API_VERSION: &str = "v1";

/// The daemon's state: every sandbox, container and image it manages.
pub struct Krio {
    cfg: Config,
    images: ImageStore,
    /// Images held by creates in flight and removals in progress.
    image_use: image::in_use::ImageUse,
    sandboxes: Registry<Sandbox>,
    containers: Registry<Container>,
    pending_sandboxes: Pending,
    pending_containers: Pending,
    runtimes: BTreeMap<String, OciRuntime>,
    /// The configured handlers (same keys as `runtimes`) with their probed features.
    handlers: BTreeMap<String, handlers::Handler>,
    monitor_bin: PathBuf,
    cni: krio_net::cni::Cni,
    daemon_oom_score_adj: i32,
    /// `container.default_capabilities`, parsed once at start.
    default_capabilities: Vec<oci_spec::runtime::Capability>,
    events: tokio::sync::broadcast::Sender<krio_cri::v1::ContainerEventResponse>,
    /// The stats sampler's cache: the last sample per container or pod, refreshed in the
    /// background every `stats_collection_period` seconds.
    stats_cache: runtime::StatsCache,
    metrics: metrics::Metrics,
    /// Set once the daemon begins shutting down; ends event streams.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Tokens of `Exec`/`PortForward` requests waiting for their client.
    streaming: streaming::Streaming,
    /// The CRI calls being served now (see [`calls`]).
    in_flight: Arc<calls::InFlight>,
}

impl std::fmt::Debug for Krio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Krio").field("cfg", &self.cfg).finish()
    }
}

impl Krio {
    /// Opens the stores under `cfg.root` / `cfg.state_dir`, resolves the runtime handlers and
    /// the monitor binary, then recovers the sandboxes and containers of a previous run.
    ///
    /// Errors: [`ServerError::Io`] when a directory cannot be made, [`ServerError::Image`]
    /// when the image store cannot be opened, [`ServerError::FailedPrecondition`] when the
    /// monitor cannot be found. A handler whose binary is missing is kept, not ready (see
    /// [`handlers`]).
    pub async fn new(cfg: Config) -> error::Result<Arc<Self>> {
        for dir in [
            cfg.root.clone(),
            cfg.state_dir.clone(),
            cfg.root.join("sandboxes"),
            cfg.root.join("containers"),
            cfg.state_dir.join("sandboxes"),
            cfg.state_dir.join("containers"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| ServerError::io("creating directory", &dir, e))?;
        }
        let mut registries = krio_image::RegistryConfig::load(
            &cfg.image.registries_conf,
            &cfg.image.insecure_registries,
        )?;
        if !cfg.image.auth_file.as_os_str().is_empty() {
            registries.auth_file = Some(cfg.image.auth_file.clone());
        }
        krio_image::set_test_hook(state::kill_point);
        let images = ImageStore::open_with_additional(
            &cfg.root,
            registries,
            cfg.image.additional_stores.clone(),
        )?;
        config::load_seccomp_profile(&cfg.container.seccomp_profile)
            .map_err(ServerError::FailedPrecondition)?;
        let default_capabilities = cfg
            .default_capabilities()
            .map_err(|e| ServerError::FailedPrecondition(e.to_string()))?;
        let monitor_bin = locate_monitor(&cfg.monitor_path).ok_or_else(|| {
            ServerError::FailedPrecondition(
                "krio-monitor not found next to krio, in monitor_path, or in PATH".to_string(),
            )
        })?;
        // A handler whose binary is missing is kept (Status reports it not ready, and pods
        // with it are refused), so one uninstalled runtime does not stop the node.
        let mut runtimes = BTreeMap::new();
        let mut handler_map = BTreeMap::new();
        for (name, h) in &cfg.runtimes {
            let root = cfg.runtime_root(name);
            std::fs::create_dir_all(&root)
                .map_err(|e| ServerError::io("creating runtime root", &root, e))?;
            let found = handlers::find_executable(&h.path);
            let features = match &found {
                Some(bin) => handlers::probe(bin, &h.runtime_args).await,
                None => {
                    tracing::warn!(handler = %name, binary = %h.path.display(),
                        "runtime handler binary not found: the handler is not ready");
                    handlers::HandlerFeatures::fallback("binary missing at start")
                }
            };
            tracing::info!(handler = %name, features = ?features, "runtime handler");
            let found_tty_by_process = found.is_some() && !features.exec_tty_flag;
            // ExecSync waits for the exec'd process through the monitor binary's exec helper,
            // not for runc's copy of its output (see `OciRuntime::with_exec_helper`).
            let runtime = OciRuntime::new(found.unwrap_or_else(|| h.path.clone()), root)
                .with_args(h.runtime_args.clone())
                // A binary missing at start is assumed to be runc-like.
                .with_tty_by_process(found_tty_by_process)
                .with_exec_helper(&monitor_bin);
            runtimes.insert(name.clone(), runtime);
            handler_map.insert(
                name.clone(),
                handlers::Handler {
                    cfg: h.clone(),
                    features,
                },
            );
        }
        if cfg.cni.install_default_config {
            if let Err(e) = krio_net::cni::install_default_config(&cfg.cni.conf_dir) {
                tracing::warn!(error = %e, "cannot install the default CNI configuration");
            }
        }
        let cni = krio_net::cni::Cni::new(krio_net::cni::CniConfig {
            conf_dir: cfg.cni.conf_dir.clone(),
            bin_dirs: cfg.cni.bin_dirs.clone(),
            cache_dir: cfg.root.join("cni-cache"),
        });
        let daemon_oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let krio = Arc::new(Krio {
            cfg,
            images,
            image_use: Default::default(),
            sandboxes: Registry::new("sandbox"),
            containers: Registry::new("container"),
            pending_sandboxes: Pending::default(),
            pending_containers: Pending::default(),
            runtimes,
            handlers: handler_map,
            monitor_bin,
            cni,
            daemon_oom_score_adj,
            default_capabilities,
            events: tokio::sync::broadcast::channel(runtime::EVENT_BUFFER).0,
            stats_cache: Default::default(),
            metrics: Default::default(),
            shutdown: tokio::sync::watch::channel(false).0,
            streaming: Default::default(),
            in_flight: Default::default(),
        });
        let retry = krio.recover().await;
        krio.retry_recovery(retry);
        krio.start_stats_sampler();
        for s in krio.sandboxes.all() {
            let snap = s.snapshot();
            if snap.state() == state::SandboxState::Ready && snap.pod_init().is_some() {
                krio.watch_pod_init(s);
            }
        }
        for c in krio.containers.all() {
            if matches!(
                c.snapshot().state(),
                state::ContainerState::Created | state::ContainerState::Running
            ) {
                krio.watch_exit(c);
            }
        }
        Ok(krio)
    }

    /// Starts the background stats sampler: every `stats_collection_period` seconds it
    /// samples every live container and ready pod on a blocking thread (cgroup files,
    /// writable-layer walks) into the cache the stats RPCs answer from. It holds the daemon
    /// weakly and ends with it or at shutdown.
    fn start_stats_sampler(self: &Arc<Self>) {
        let period = std::time::Duration::from_secs(self.cfg.stats_collection_period.max(1));
        let weak = Arc::downgrade(self);
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let Some(krio) = weak.upgrade() else { return };
                if let Err(e) = tokio::task::spawn_blocking(move || krio.sample_all()).await {
                    tracing::warn!(error = %e, "stats sampler round failed");
                }
            }
        });
    }

    /// Begins a graceful shutdown: event streams end so the gRPC server can drain. Containers
    /// keep running under their monitors.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The tower layer to put over the CRI gRPC server: it tracks the calls in flight that
    /// `Status` (verbose) reports.
    pub fn calls_layer(&self) -> calls::CallsLayer {
        calls::CallsLayer(self.in_flight.clone())
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn runtime(&self, handler: &str) -> error::Result<&OciRuntime> {
        self.runtimes.get(handler).ok_or_else(|| {
            ServerError::invalid(
                "runtime_handler",
                format!("unknown handler {}", validate::quote(handler)),
            )
        })
    }

    /// Resolves a request's `runtime_handler` (empty means the default) to a handler that is
    /// ready to run pods.
    ///
    /// Errors: `InvalidArgument` naming `runtime_handler` when no such handler is configured;
    /// `FailedPrecondition` naming the binary when the handler's binary is missing.
    fn handler_name(&self, requested: &str) -> error::Result<String> {
        let name = if requested.is_empty() {
            self.cfg.default_runtime.as_str()
        } else {
            requested
        };
        self.runtime(name)?;
        self.handler_binary(name)?;
        Ok(name.to_string())
    }

    /// The configured handler `name`.
    ///
    /// Errors: `InvalidArgument` naming `runtime_handler` when it is not configured.
    fn handler(&self, name: &str) -> error::Result<&handlers::Handler> {
        self.handlers.get(name).ok_or_else(|| {
            ServerError::invalid(
                "runtime_handler",
                format!("unknown handler {}", validate::quote(name)),
            )
        })
    }

    /// The absolute path of handler `name`'s binary, looked up now.
    ///
    /// Errors: `InvalidArgument` for an unknown handler, `FailedPrecondition` naming the binary
    /// when it is missing.
    fn handler_binary(&self, name: &str) -> error::Result<PathBuf> {
        self.handler(name)?
            .binary(name)
            .map_err(ServerError::FailedPrecondition)
    }

    fn sandbox_record_path(&self, id: &str) -> PathBuf {
        self.cfg
            .root
            .join("sandboxes")
            .join(id)
            .join("sandbox.json")
    }

    fn sandbox_run_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("sandboxes").join(id)
    }

    fn container_data_dir(&self, id: &str) -> PathBuf {
        self.cfg.root.join("containers").join(id)
    }

    fn container_record_path(&self, id: &str) -> PathBuf {
        self.container_data_dir(id).join("container.json")
    }

    /// Makes a changed container record current: publishes it as the snapshot readers see
    /// (it already is the record under the container's lock), then writes it to disk on a
    /// blocking thread (the write fsyncs twice).
    ///
    /// Errors: [`ServerError::Io`] when the record cannot be written.
    async fn commit_container(
        &self,
        c: &Container,
        rec: &state::ContainerRecord,
    ) -> error::Result<()> {
        // A container is counted OOM-killed once: when the record that says so replaces one
        // that did not.
        let oom = |r: &state::ContainerRecord| {
            r.exit()
                .as_ref()
                .is_some_and(|e| e.reason == state::ExitReason::OOMKilled)
        };
        if oom(rec) && !c.with_snapshot(oom) {
            self.metrics.observe_oom_kill();
        }
        c.publish(rec);
        persist::write_json_async(&self.container_record_path(rec.id()), rec).await
    }

    /// Like [`Krio::commit_container`], for a sandbox record.
    async fn commit_sandbox(&self, s: &Sandbox, rec: &state::SandboxRecord) -> error::Result<()> {
        s.publish(rec);
        persist::write_json_async(&self.sandbox_record_path(rec.id()), rec).await
    }

    /// The bundle directory (config.json, rootfs mountpoint, exit and pid files).
    fn container_run_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("containers").join(id)
    }
}

/// Runs blocking work (file and mount system calls, fsyncs, directory walks) without stalling
/// the async workers: on the daemon's multi-threaded runtime the current worker hands its
/// other tasks to the rest and becomes a blocking thread for the duration
/// (`tokio::task::block_in_place`); elsewhere (a single-threaded test runtime, no runtime)
/// `f` simply runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn locate_monitor(configured: &Path) -> Option<PathBuf> {
    if !configured.as_os_str().is_empty() {
        return handlers::find_executable(configured);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("krio-monitor")))
        .filter(|p| p.is_file())
        .or_else(|| handlers::find_executable(Path::new("krio-monitor")))
}
