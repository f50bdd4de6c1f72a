//! The krio daemon: serves CRI v1 (`RuntimeService` and `ImageService`) over gRPC on a unix
//! socket. All defaults are built in; `/etc/krio/krio.toml` and `krio.d/*.toml` override them.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use krio_server::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use krio_server::{ImageApi, Krio, RuntimeApi};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

mod install;
mod otel;
mod systemd;
use systemd::ServiceEnv;

/// krio: a Kubernetes container runtime (CRI v1).
#[derive(Debug, Parser)]
#[command(name = "krio", version, about)]
struct Cli {
    /// Configuration file; drop-ins are read from `krio.d/` beside it.
    #[arg(long, short = 'c', default_value = DEFAULT_CONFIG_PATH, env = "KRIO_CONFIG")]
    config: PathBuf,
    /// CRI socket path (overrides `listen`).
    #[arg(long)]
    listen: Option<PathBuf>,
    /// Persistent data directory (overrides `root`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Volatile state directory (overrides `state_dir`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// CNI configuration directory (overrides `cni.conf_dir`).
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// Log filter, e.g. `info` or `krio_server=debug` (overrides `log_level`).
    #[arg(long)]
    log_level: Option<String>,
    /// Log line format, `text` or `json` (overrides `log_format`).
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Serve Prometheus metrics on this `ip:port` (overrides `metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the effective configuration as TOML and exit.
    Config {
        /// Print the built-in defaults instead, every setting with a comment describing it.
        #[arg(long, conflicts_with = "docs")]
        default: bool,
        /// Print the settings reference as a Markdown table (the one in docs/configuration.md).
        #[arg(long)]
        docs: bool,
    },
    /// Install krio on this node: binaries, systemd units, a commented config, a CNI network.
    Install(install::InstallArgs),
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let explicit = cli.config.as_os_str() != DEFAULT_CONFIG_PATH;
    let mut cfg = Config::load(&cli.config, explicit)?;
    if let Some(v) = &cli.listen {
        cfg.listen = v.clone();
    }
    if let Some(v) = &cli.root {
        cfg.root = v.clone();
    }
    if let Some(v) = &cli.state_dir {
        cfg.state_dir = v.clone();
    }
    if let Some(v) = &cli.cni_conf_dir {
        cfg.cni.conf_dir = v.clone();
    }
    if let Some(v) = &cli.log_level {
        cfg.log_level = v.clone();
    }
    match cli.log_format.as_deref() {
        Some("json") => cfg.log_format = LogFormat::Json,
        Some(_) => cfg.log_format = LogFormat::Text,
        None => {}
    }
    if let Some(v) = &cli.metrics_listen {
        cfg.metrics_listen = v.clone();
    }
    cfg.validate()?;
    tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .with_context(|| format!("invalid log_level {:?}", cfg.log_level))?;
    Ok(cfg)
}

/// Takes an exclusive lock on `<dir>/krio.lock`, held for the life of the process, so two
/// daemons never manage the same directories.
fn lock_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("krio.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "{} is in use by another krio ({}: {e})",
            dir.display(),
            path.display()
        )
    })
}

fn main() -> std::process::ExitCode {
    // Before any thread or handler exists: whatever signals our parent ignored or blocked must
    // not reach the runtime, plugins and containers we start.
    krio_monitor::reset_inherited_signals();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Many errors already print their cause; add each cause only once.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(": ");
                    msg.push_str(&cause);
                }
            }
            eprintln!("krio: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // First, while the process has one thread and no descriptors of its own: what a service
    // manager passed (readiness socket, activated listener), removed from the environment.
    let service = ServiceEnv::take()?;
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Config { default: true, .. }) => {
            print!("{}", krio_server::config_doc::default_toml(false));
            return Ok(());
        }
        Some(Command::Config { docs: true, .. }) => {
            print!("{}", krio_server::config_doc::markdown_table());
            return Ok(());
        }
        Some(Command::Install(args)) => return install::install(&args, &cli.config),
        _ => {}
    }
    let cfg = load_config(&cli)?;
    match &cli.command {
        Some(Command::Config { .. }) => {
            print!("{}", cfg.to_toml());
            return Ok(());
        }
        Some(Command::Install(_)) | None => {}
    }
    // Two workers match the nodes krio is built for and keep the daemon small; blocking work
    // (unpacking, namespace pinning) goes to tokio's blocking pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (log_filter, exporter) = init_logging(&cfg, rt.handle())?;
    for note in &service.notes {
        tracing::warn!("{note}");
    }
    let result = rt.block_on(serve(cli, cfg, service, log_filter));
    // After the server stopped, while the runtime (which makes the export requests) still
    // runs: the spans of the last calls are sent before the process exits.
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    result
}

/// Handle to change the log filter while running.
type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// Sets up logging to stderr in `log_format` with a `log_level` filter that SIGHUP can replace,
/// and, with `[tracing]` enabled, the OpenTelemetry layer (its own filter: the `krio*` crates'
/// spans at `info` and above, whatever `log_level` says) whose exporter runs on `runtime`.
///
/// Errors: the trace exporter cannot be built.
fn init_logging(
    cfg: &Config,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<(FilterHandle, Option<otel::Exporter>)> {
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    if !cfg.tracing.enabled {
        registry.init();
        return Ok((handle, None));
    }
    let (exporter, layer) = otel::Exporter::new(&cfg.tracing, runtime.clone())?;
    let spans = Targets::new().with_target("krio", tracing::Level::INFO);
    registry.with(layer.with_filter(spans)).init();
    tracing::info!(endpoint = %cfg.tracing.endpoint, "exporting traces over OTLP/HTTP");
    Ok((handle, Some(exporter)))
}

/// SIGHUP: reads the configuration again (files and flags, as at start) and applies what can
/// change at run time, which is `log_level`; every other changed setting is named in a warning,
/// as it needs a restart. A configuration that does not load changes nothing and is logged.
fn reload_config(cli: &Cli, running: &mut Config, filter: &FilterHandle) {
    let new = match load_config(cli) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: configuration not reloaded"
            );
            return;
        }
    };
    let changed = running.changed_keys(&new);
    let (applied, restart): (Vec<String>, Vec<String>) =
        changed.into_iter().partition(|k| k == "log_level");
    if !applied.is_empty() {
        match EnvFilter::try_new(&new.log_level).map(|f| filter.reload(f)) {
            Ok(Ok(())) => running.log_level = new.log_level.clone(),
            Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: cannot change the log filter"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: invalid log_level"),
        }
    }
    tracing::info!(reloaded = ?applied, log_level = %running.log_level, "SIGHUP: configuration reloaded");
    if !restart.is_empty() {
        tracing::warn!(
            not_reloaded = ?restart,
            "SIGHUP: these settings changed but take effect only after a restart"
        );
    }
}

/// Sends `state` to the service manager, if there is one; a failure is logged, never fatal.
fn notify(service: &ServiceEnv, state: &str) {
    if let Some(n) = &service.notifier {
        match n.notify(state) {
            Ok(()) => tracing::debug!(socket = n.address(), state, "notified the service manager"),
            Err(e) => {
                tracing::warn!(socket = n.address(), state, error = %e, "cannot notify the service manager")
            }
        }
    }
}

/// The CRI listener: the socket the service manager passed, else `listen`, bound here (a stale
/// socket file is replaced; a live one is an error). Returns whether krio owns the file.
fn cri_listener(
    listen: &Path,
    passed: Option<(std::os::unix::net::UnixListener, String)>,
) -> anyhow::Result<(UnixListener, bool)> {
    if let Some((l, name)) = passed {
        l.set_nonblocking(true)
            .context("making the passed CRI socket non-blocking")?;
        let path = l
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_else(|| "(unnamed)".to_string());
        tracing::info!(fd_name = %name, socket = %path, "using the CRI socket passed by socket activation");
        return Ok((
            UnixListener::from_std(l).context("registering the passed CRI socket")?,
            false,
        ));
    }
    if let Some(dir) = listen.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if listen.exists() {
        if std::os::unix::net::UnixStream::connect(listen).is_ok() {
            anyhow::bail!("{} is in use by another process", listen.display());
        }
        std::fs::remove_file(listen)
            .with_context(|| format!("removing stale {}", listen.display()))?;
    }
    let listener =
        UnixListener::bind(listen).with_context(|| format!("binding {}", listen.display()))?;
    std::fs::set_permissions(listen, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", listen.display()))?;
    Ok((listener, true))
}

async fn serve(
    cli: Cli,
    cfg: Config,
    mut service: ServiceEnv,
    log_filter: FilterHandle,
) -> anyhow::Result<()> {
    let mut running = cfg.clone();
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload_config(&cli, &mut running, &log_filter);
        }
    });
    let _root_lock = lock_dir(&cfg.root)?;
    let _state_lock = lock_dir(&cfg.state_dir)?;
    let listen = cfg.listen.clone();
    let tracing_on = cfg.tracing.enabled;
    let metrics_listen = cfg.metrics_listen.clone();
    let krio = Krio::new(cfg).await.context("initializing krio")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Metrics first: a busy metrics address fails start-up before the CRI socket exists.
    if !metrics_listen.is_empty() {
        let addr = metrics_listen
            .parse()
            .with_context(|| format!("metrics_listen {metrics_listen:?}"))?;
        let mut stop = stop_rx.clone();
        krio_server::serve_metrics(krio.clone(), addr, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .with_context(|| format!("serving metrics on {metrics_listen}"))?;
    }
    // The streaming server too: Exec, Attach and PortForward answer with URLs on it.
    let mut stop = stop_rx.clone();
    krio_server::serve_streaming(krio.clone(), async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await
    .context("starting the streaming server")?;
    let (listener, own_socket) = cri_listener(&listen, service.listener.take())?;
    tracing::info!(socket = %listen.display(), version = env!("CARGO_PKG_VERSION"), "krio serving CRI v1");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopping = krio.clone();
    // The listener is bound and the server below accepts from its backlog: READY=1 now means a
    // client that connects after it is served.
    let service = std::sync::Arc::new(service);
    notify(
        &service,
        &format!(
            "READY=1\nSTATUS=serving CRI v1\nMAINPID={}",
            std::process::id()
        ),
    );
    let on_stop = service.clone();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        notify(&on_stop, "STOPPING=1\nSTATUS=shutting down");
        let _ = stop_tx.send(true);
        stopping.begin_shutdown();
        tracing::info!("shutting down; containers keep running under their monitors");
    };

    tonic::transport::Server::builder()
        .trace_fn(if tracing_on {
            otel::rpc_span
        } else {
            krio_server::rpc_span
        })
        .layer(krio.calls_layer())
        .add_service(RuntimeApi(krio.clone()).server())
        .add_service(ImageApi(krio).server())
        .serve_with_incoming_shutdown(
            // Any :authority is accepted on the unix socket (see krio_server::uds).
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                |conn| conn.map(krio_server::uds::UdsConnection::new),
            ),
            shutdown,
        )
        .await
        .context("serving gRPC")?;
    // A passed socket's file belongs to the service manager, which keeps listening on it.
    if own_socket {
        let _ = std::fs::remove_file(&listen);
    }
    Ok(())
}
