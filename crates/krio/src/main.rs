//! The krio daemon: serves CRI v1 (`RuntimeService` and `ImageService`) over gRPC on a unix
//! socket. All defaults are built in; `/etc/krio/krio.toml` and `krio.d/*.toml` override them.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use krio_server::config::{Config, DEFAULT_CONFIG_PATH};
use krio_server::{ImageApi, Krio, RuntimeApi};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

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
    /// Serve Prometheus metrics on this `ip:port` (overrides `metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the effective configuration as TOML and exit.
    Config,
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
    let cli = Cli::parse();
    let cfg = load_config(&cli)?;
    if let Some(Command::Config) = cli.command {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Two workers match the nodes krio is built for and keep the daemon small; blocking work
    // (unpacking, namespace pinning) goes to tokio's blocking pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(cfg))
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let _root_lock = lock_dir(&cfg.root)?;
    let _state_lock = lock_dir(&cfg.state_dir)?;
    let listen = cfg.listen.clone();
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
    if let Some(dir) = listen.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if listen.exists() {
        if std::os::unix::net::UnixStream::connect(&listen).is_ok() {
            anyhow::bail!("{} is in use by another process", listen.display());
        }
        std::fs::remove_file(&listen)
            .with_context(|| format!("removing stale {}", listen.display()))?;
    }
    let listener =
        UnixListener::bind(&listen).with_context(|| format!("binding {}", listen.display()))?;
    std::fs::set_permissions(&listen, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", listen.display()))?;
    tracing::info!(socket = %listen.display(), version = env!("CARGO_PKG_VERSION"), "krio serving CRI v1");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopping = krio.clone();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
        stopping.begin_shutdown();
        tracing::info!("shutting down; containers keep running under their monitors");
    };

    tonic::transport::Server::builder()
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
    let _ = std::fs::remove_file(&listen);
    Ok(())
}
