//! Command-line definitions (crictl's verbs, flags and defaults).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// The default runtime endpoint (the krio daemon's socket).
pub const DEFAULT_ENDPOINT: &str = "unix:///run/krio/krio.sock";

const ABOUT: &str =
    "A crictl-style client for the CRI v1 API of any container runtime (krio, containerd, CRI-O).";
const LONG_ABOUT: &str = "\
A crictl-style client for the CRI v1 API of any container runtime (krio, containerd, CRI-O).

Global flags go before the command, as with crictl:
    krioctl -r unix:///run/containerd/containerd.sock ps -a

IDs may be given as unique prefixes. Config files for runp/create/run are crictl's
JSON or YAML PodSandboxConfig / ContainerConfig files (snake_case field names).

Timeouts: read-only calls use --timeout; lifecycle calls (runp, create, start, stop,
stopp, rm, rmp, exec) use at least 30s (stop adds its grace period); pulls at least 10m.

`exec`, `attach` and `port-forward` stream through the runtime's streaming server (SPDY or
WebSocket, --transport); `exec -s` runs the command through ExecSync. `attach` joins a
container's main process (-i for its stdin, -t for its terminal).";

/// Parses a Go-style duration ("2s", "500ms", "1m30s", "1h") or a bare number
/// of seconds.
///
/// Errors: a message naming the bad input.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("duration {s:?} must not be negative"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit (ns, us, ms, s, m, h)"))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("duration {s:?}: bad number {num:?}"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("duration {s:?}: unknown unit {unit:?}")),
        };
        total += Duration::from_secs_f64(value * scale);
        rest = next;
    }
    Ok(total)
}

/// krioctl's command line.
#[derive(Debug, Parser)]
#[command(name = "krioctl", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Runtime service endpoint (unix:///path or /path).
    #[arg(short = 'r', long, env = "CONTAINER_RUNTIME_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub runtime_endpoint: String,
    /// Image service endpoint; defaults to the runtime endpoint.
    #[arg(short = 'i', long, env = "IMAGE_SERVICE_ENDPOINT")]
    pub image_endpoint: Option<String>,
    /// Timeout of connects and calls (e.g. 2s, 500ms, 1m).
    #[arg(short = 't', long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print each request and response to stderr.
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// PEM file of the CA that signed the runtime's streaming certificate, to verify `https`
    /// streaming URLs (exec, attach, port-forward).
    #[arg(long, value_name = "FILE")]
    pub stream_ca: Option<PathBuf>,
    /// Accept any certificate on `https` streaming URLs, as crictl does (encrypted, but the
    /// server is not authenticated).
    #[arg(long)]
    pub stream_insecure_skip_verify: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `-o` for list commands.
#[derive(Debug, Args)]
pub struct ListOutput {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    /// Show full IDs.
    #[arg(long)]
    pub no_trunc: bool,
}

/// `-o` for inspect commands (json or yaml).
#[derive(Debug, Args)]
pub struct InspectOutput {
    /// Output format (json or yaml).
    #[arg(short = 'o', long = "output", value_enum, default_value = "json")]
    pub output: Format,
}

/// Registry credentials for pulls.
#[derive(Debug, Args, Default)]
pub struct PullAuth {
    /// Registry credentials as USERNAME[:PASSWORD].
    #[arg(long)]
    pub creds: Option<String>,
    /// Registry auth as base64 of USERNAME:PASSWORD.
    #[arg(long, conflicts_with = "creds")]
    pub auth: Option<String>,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the runtime's name and version.
    Version(InfoArgs),
    /// Show the runtime's status and verbose information (Status, verbose).
    Info(InfoArgs),
    /// Show what the daemon is doing: readiness, handlers, CNI network, counts, operations in
    /// flight and the effective configuration (Status, verbose).
    Status(InfoArgs),
    /// Pull an image.
    Pull(PullArgs),
    /// List images.
    #[command(alias = "image", alias = "img")]
    Images(ImagesArgs),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Show the status of one or more images.
    Inspecti(InspectiArgs),
    /// Show image filesystem usage.
    Imagefsinfo(InfoArgs),
    /// Show the runtime's own configuration (RuntimeConfig: the cgroup driver).
    RuntimeConfig(InfoArgs),
    /// List pod and container metrics (ListPodSandboxMetrics), optionally for some pods.
    Metricsp(MetricspArgs),
    /// Checkpoint one or more containers (CheckpointContainer).
    Checkpoint(CheckpointArgs),
    /// Update the resources of one or more containers (UpdateContainerResources).
    Update(UpdateArgs),
    /// Run a new pod sandbox from a config file; prints its ID.
    Runp(RunpArgs),
    /// List pod sandboxes.
    Pods(PodsArgs),
    /// Show the status of one or more pod sandboxes.
    Inspectp(InspectpArgs),
    /// Stop one or more pod sandboxes.
    Stopp(IdsArgs),
    /// Remove one or more pod sandboxes.
    Rmp(RmpArgs),
    /// Create a container in a pod sandbox; prints its ID.
    Create(CreateArgs),
    /// Start one or more created containers.
    Start(IdsArgs),
    /// List containers.
    Ps(PsArgs),
    /// Show the status of one or more containers.
    Inspect(InspectArgs),
    /// Print a container's logs (decoding the CRI log file).
    #[command(alias = "log")]
    Logs(LogsArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Run a command in a running container (streamed; -s for ExecSync).
    Exec(ExecArgs),
    /// Attach to the main process of a running container (streamed).
    Attach(AttachArgs),
    /// Forward local ports to ports inside a pod sandbox.
    #[command(name = "port-forward")]
    PortForward(PortForwardArgs),
    /// List container resource usage (ListContainerStats)
    Stats(StatsArgs),
    /// List pod sandbox resource usage (ListPodSandboxStats)
    Statsp(StatspArgs),
    /// Stream container events (GetContainerEvents) until interrupted
    Events(EventsArgs),
    /// Run a container in a new pod sandbox (runp + create + start); prints the container ID.
    Run(RunArgs),
}

/// `version`, `info`, `imagefsinfo`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format (`version` defaults to text; table means text).
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
}

/// `metricsp`.
#[derive(Debug, Args)]
pub struct MetricspArgs {
    /// Only these pod sandboxes (ID prefixes); all when none is given.
    pub pods: Vec<String>,
    /// Output format (json or yaml; table means json).
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

/// `update`: crictl's flags; each left out keeps its zero value ("not specified").
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// CPU CFS period, microseconds.
    #[arg(long)]
    pub cpu_period: Option<i64>,
    /// CPU CFS quota, microseconds.
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_share: Option<i64>,
    /// CPUs to run on (e.g. 0-3,5).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use (e.g. 0,1).
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit, bytes.
    #[arg(long)]
    pub memory: Option<i64>,
    /// Memory plus swap limit, bytes.
    #[arg(long)]
    pub memory_swap: Option<i64>,
    /// Annotations to send with the update, as KEY=VALUE (repeatable).
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Containers (ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Write the checkpoint archive to this file (CheckpointContainerRequest.location; a
    /// relative path is taken from the current directory). `-e` as in crictl.
    #[arg(long, short = 'e')]
    pub export: Option<PathBuf>,
    /// Containers (ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image reference.
    pub image: String,
    /// Credentials.
    #[command(flatten)]
    pub auth: PullAuth,
    /// A pod sandbox config file to pass with the pull.
    #[arg(short = 'p', long)]
    pub pod_config: Option<PathBuf>,
}

/// `images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images matching this reference.
    pub repo: Option<String>,
    /// Only print image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Verbose listing.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Output options.
    #[command(flatten)]
    pub out: ListOutput,
}

/// `rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images (references or IDs).
    pub images: Vec<String>,
    /// Remove all images.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Remove all images not used by any container.
    #[arg(short = 'q', long)]
    pub prune: bool,
}

/// `inspecti`.
#[derive(Debug, Args)]
pub struct InspectiArgs {
    /// Images (references or IDs).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Output options.
    #[command(flatten)]
    pub out: InspectOutput,
}

/// `runp`.
#[derive(Debug, Args)]
pub struct RunpArgs {
    /// The PodSandboxConfig file (JSON or YAML).
    pub config: PathBuf,
    /// Runtime handler to use.
    #[arg(short = 'r', long)]
    pub runtime: Option<String>,
}

/// `pods`.
#[derive(Debug, Args)]
pub struct PodsArgs {
    /// Filter by pod ID (prefix).
    #[arg(long)]
    pub id: Option<String>,
    /// Filter by pod name (regular expression).
    #[arg(long)]
    pub name: Option<String>,
    /// Filter by pod namespace (regular expression).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Filter by state: ready or notready.
    #[arg(short = 's', long)]
    pub state: Option<String>,
    /// Filter by label KEY=VALUE (repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Only print pod IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show only the most recently created pod.
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Show the N most recently created pods.
    #[arg(short = 'n', long)]
    pub last: Option<usize>,
    /// Output options.
    #[command(flatten)]
    pub out: ListOutput,
}

/// `inspectp`.
#[derive(Debug, Args)]
pub struct InspectpArgs {
    /// Pod sandbox IDs (prefixes).
    #[arg(required = true)]
    pub pods: Vec<String>,
    /// Output options.
    #[command(flatten)]
    pub out: InspectOutput,
}

/// `stopp`, `start`.
#[derive(Debug, Args)]
pub struct IdsArgs {
    /// IDs (prefixes).
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `rmp`.
#[derive(Debug, Args)]
pub struct RmpArgs {
    /// Pod sandbox IDs (prefixes).
    pub pods: Vec<String>,
    /// Stop the pod first if it is running.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove all pods.
    #[arg(short = 'a', long)]
    pub all: bool,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The pod sandbox ID (prefix).
    pub pod_id: String,
    /// The ContainerConfig file (JSON or YAML).
    pub container_config: PathBuf,
    /// The PodSandboxConfig file the pod was run with.
    pub pod_config: PathBuf,
    /// Do not pull the image if it is missing.
    #[arg(long)]
    pub no_pull: bool,
    /// Credentials for the pull.
    #[command(flatten)]
    pub auth: PullAuth,
}

/// `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print container IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter by pod sandbox ID (prefix).
    #[arg(short = 'p', long)]
    pub pod: Option<String>,
    /// Filter by state: created, running, exited, unknown.
    #[arg(short = 's', long)]
    pub state: Option<String>,
    /// Filter by container name (regular expression).
    #[arg(long)]
    pub name: Option<String>,
    /// Filter by label KEY=VALUE (repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Filter by container ID (prefix).
    #[arg(long)]
    pub id: Option<String>,
    /// Filter by image (substring of the image reference).
    #[arg(long)]
    pub image: Option<String>,
    /// Show only the most recently created container.
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Show the N most recently created containers.
    #[arg(short = 'n', long)]
    pub last: Option<usize>,
    /// Output options.
    #[command(flatten)]
    pub out: ListOutput,
}

/// `stats` (crictl's flags).
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Container ID (prefix) to show; also `--id`.
    pub container: Option<String>,
    /// Show all containers, not only running ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Filter by container ID (prefix).
    #[arg(long)]
    pub id: Option<String>,
    /// Filter by pod sandbox ID (prefix).
    #[arg(short = 'p', long)]
    pub pod: Option<String>,
    /// Filter by label KEY=VALUE (repeatable).
    #[arg(short = 'l', long)]
    pub label: Vec<String>,
    /// Refresh every `--seconds` until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Interval between samples with `--watch`, in seconds.
    #[arg(short = 's', long, default_value_t = 1)]
    pub seconds: u64,
    /// Output options.
    #[command(flatten)]
    pub out: ListOutput,
}

/// `statsp` (crictl's flags).
#[derive(Debug, Args)]
pub struct StatspArgs {
    /// Filter by pod sandbox ID (prefix).
    #[arg(long)]
    pub id: Option<String>,
    /// Filter by label KEY=VALUE (repeatable).
    #[arg(short = 'l', long)]
    pub label: Vec<String>,
    /// Refresh every `--seconds` until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Interval between samples with `--watch`, in seconds.
    #[arg(short = 's', long, default_value_t = 1)]
    pub seconds: u64,
    /// Output options.
    #[command(flatten)]
    pub out: ListOutput,
}

/// `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Output format (json or yaml), one document per event.
    #[arg(short = 'o', long = "output", value_enum, default_value = "json")]
    pub output: Format,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    pub count: Option<usize>,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Container IDs (prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Output options.
    #[command(flatten)]
    pub out: InspectOutput,
}

/// `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Container ID (prefix).
    pub container: String,
    /// Follow the log until the container exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Show only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

/// `stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "timeout", default_value_t = 0)]
    pub grace: i64,
    /// Container IDs (prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Container IDs (prefixes).
    pub containers: Vec<String>,
    /// Stop the container first if it is running.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove all containers.
    #[arg(short = 'a', long)]
    pub all: bool,
}

/// The streaming transport (crictl's `--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// SPDY/3.1 (`v4.channel.k8s.io` and older).
    Spdy,
    /// WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`).
    Websocket,
}

/// `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run the command through ExecSync and print its output when it ends.
    #[arg(short = 's', long)]
    pub sync: bool,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run the command on a terminal (its stderr comes on stdout). The terminal size is that
    /// of krioctl's terminal, or COLUMNS x LINES from the environment.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Seconds before the command is killed (0: no limit); ExecSync only.
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    /// Streaming transport.
    #[arg(long, value_enum, default_value = "spdy")]
    pub transport: Transport,
    /// Container ID (prefix).
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// `attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Pass stdin to the container (it must have been created with stdin).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// The container has a terminal: one output stream, and krioctl's terminal size (or
    /// COLUMNS x LINES from the environment) is sent, then every change of it.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Streaming transport.
    #[arg(long, value_enum, default_value = "spdy")]
    pub transport: Transport,
    /// Container ID (prefix).
    pub container: String,
}

/// `port-forward`.
#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// Pod sandbox ID (prefix).
    pub pod: String,
    /// `[LOCAL_PORT:]REMOTE_PORT`; LOCAL_PORT 0 or absent picks a free port. Each forward
    /// prints `Forwarding from ADDRESS:LOCAL -> REMOTE` once it listens.
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// Streaming transport.
    #[arg(long, value_enum, default_value = "spdy")]
    pub transport: Transport,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The ContainerConfig file.
    pub container_config: PathBuf,
    /// The PodSandboxConfig file.
    pub pod_config: PathBuf,
    /// Runtime handler to use.
    #[arg(short = 'r', long)]
    pub runtime: Option<String>,
    /// Do not pull the image if it is missing.
    #[arg(long)]
    pub no_pull: bool,
    /// Credentials for the pull.
    #[command(flatten)]
    pub auth: PullAuth,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn globals_before_verb_and_verb_flags_reuse_letters() {
        let c = Cli::try_parse_from([
            "krioctl",
            "-r",
            "/tmp/s.sock",
            "-t",
            "5s",
            "stop",
            "-t",
            "10",
            "abc",
        ])
        .unwrap();
        assert_eq!(c.runtime_endpoint, "/tmp/s.sock");
        assert_eq!(c.timeout, Duration::from_secs(5));
        match c.command {
            Command::Stop(s) => {
                assert_eq!(s.grace, 10);
                assert_eq!(s.containers, vec!["abc"]);
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["krioctl", "exec", "abc", "ls", "-l"]).unwrap();
        match c.command {
            Command::Exec(e) => assert_eq!(e.cmd, vec!["ls", "-l"]),
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from([
            "krioctl",
            "--stream-ca",
            "/ca.pem",
            "attach",
            "-i",
            "-t",
            "--transport",
            "websocket",
            "abc",
        ])
        .unwrap();
        assert_eq!(
            c.stream_ca.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert!(!c.stream_insecure_skip_verify);
        match c.command {
            Command::Attach(a) => {
                assert!(a.interactive && a.tty);
                assert_eq!(a.transport, Transport::Websocket);
                assert_eq!(a.container, "abc");
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from([
            "krioctl", "ps", "-a", "-o", "json", "--label", "a=b", "--label", "c=d",
        ])
        .unwrap();
        match c.command {
            Command::Ps(p) => {
                assert!(p.all);
                assert_eq!(p.out.output, Format::Json);
                assert_eq!(p.label.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
