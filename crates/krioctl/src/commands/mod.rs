//! The verbs: one module per object kind, sharing a [`Ctx`] that holds the
//! connections, deadlines and output helpers.

mod containers;
mod images;
mod logs_cmd;
mod pods;
mod runtime;
mod stats;
mod stream_cmd;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use krio_cri::v1::image_service_client::ImageServiceClient;
use krio_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::cli::{Cli, Command, PullAuth};
use crate::client;
use crate::error::Error;
use crate::resolve::resolve_prefix;

/// The least deadline of lifecycle calls (runp, create, start, stop, rm, exec).
pub const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The least deadline of image pulls.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// Connections and settings shared by the verbs.
pub struct Ctx {
    runtime_path: PathBuf,
    image_path: PathBuf,
    timeout: Duration,
    debug: bool,
    /// How `https` streaming URLs are checked.
    pub(crate) stream_tls: krio_stream::client::TlsOptions,
    runtime: Option<RuntimeServiceClient<Channel>>,
    image: Option<ImageServiceClient<Channel>>,
    channel: Option<Channel>,
}

impl Ctx {
    /// Builds a context from the global flags; connects lazily.
    ///
    /// Errors: [`Error::Connect`] for unsupported endpoints.
    pub fn new(cli: &Cli) -> Result<Self, Error> {
        let runtime_path = client::socket_path(&cli.runtime_endpoint)?;
        let image_path = match &cli.image_endpoint {
            Some(e) if !e.is_empty() => client::socket_path(e)?,
            _ => runtime_path.clone(),
        };
        Ok(Ctx {
            runtime_path,
            image_path,
            timeout: cli.timeout,
            debug: cli.debug,
            stream_tls: krio_stream::client::TlsOptions {
                ca_file: cli.stream_ca.clone(),
                insecure_skip_verify: cli.stream_insecure_skip_verify,
            },
            runtime: None,
            image: None,
            channel: None,
        })
    }

    async fn runtime_channel(&mut self) -> Result<Channel, Error> {
        if let Some(ch) = &self.channel {
            return Ok(ch.clone());
        }
        let ch = client::connect(&self.runtime_path, self.timeout).await?;
        self.channel = Some(ch.clone());
        Ok(ch)
    }

    /// The runtime service client (connecting on first use).
    pub async fn rt(&mut self) -> Result<RuntimeServiceClient<Channel>, Error> {
        if let Some(c) = &self.runtime {
            return Ok(c.clone());
        }
        let c = RuntimeServiceClient::new(self.runtime_channel().await?);
        self.runtime = Some(c.clone());
        Ok(c)
    }

    /// The image service client (connecting on first use; shares the runtime
    /// connection when both endpoints are the same).
    pub async fn img(&mut self) -> Result<ImageServiceClient<Channel>, Error> {
        if let Some(c) = &self.image {
            return Ok(c.clone());
        }
        let ch = if self.image_path == self.runtime_path {
            self.runtime_channel().await?
        } else {
            client::connect(&self.image_path, self.timeout).await?
        };
        let c = ImageServiceClient::new(ch);
        self.image = Some(c.clone());
        Ok(c)
    }

    /// The default call deadline (`--timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The deadline of lifecycle calls: at least [`LIFECYCLE_TIMEOUT`].
    pub fn lifecycle_timeout(&self) -> Duration {
        self.timeout.max(LIFECYCLE_TIMEOUT)
    }

    /// The deadline of pulls: at least [`PULL_TIMEOUT`].
    pub fn pull_timeout(&self) -> Duration {
        self.timeout.max(PULL_TIMEOUT)
    }

    /// Runs one CRI call with a deadline, turning its status into
    /// [`Error::Rpc`] / [`Error::Timeout`]; with `--debug` prints the request
    /// and response as JSON to stderr.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        op: &'static str,
        timeout: Duration,
        req: Req,
        f: F,
    ) -> Result<Resp, Error>
    where
        Req: Serialize,
        Resp: Serialize,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        if self.debug {
            eprintln!(
                "DEBU {op} request: {}",
                serde_json::to_string(&req).unwrap_or_default()
            );
        }
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        let resp = match tokio::time::timeout(timeout, f(request)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => return Err(Error::Rpc { op, status }),
            Err(_) => return Err(Error::Timeout { op, after: timeout }),
        };
        if self.debug {
            eprintln!(
                "DEBU {op} response: {}",
                serde_json::to_string(&resp).unwrap_or_default()
            );
        }
        Ok(resp)
    }
}

/// Writes `s` to stdout. Errors: [`Error::Write`].
pub fn out(s: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(s.as_bytes()).map_err(Error::Write)?;
    stdout.flush().map_err(Error::Write)
}

/// Parses repeated `KEY=VALUE` label flags into a selector map.
///
/// Errors: [`Error::Invalid`] naming `--label` for an entry without `=`.
pub fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, Error> {
    let mut m = HashMap::new();
    for l in labels {
        let Some((k, v)) = l.split_once('=') else {
            return Err(Error::invalid("--label", format!("{l:?} is not KEY=VALUE")));
        };
        if k.is_empty() {
            return Err(Error::invalid("--label", format!("{l:?} has an empty key")));
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

/// Builds the CRI `AuthConfig` from `--creds USER[:PASS]` or `--auth BASE64`.
///
/// Errors: [`Error::Invalid`] for an empty user name.
pub fn auth_config(a: &PullAuth) -> Result<Option<krio_cri::v1::AuthConfig>, Error> {
    if let Some(creds) = &a.creds {
        let (user, pass) = creds.split_once(':').unwrap_or((creds.as_str(), ""));
        if user.is_empty() {
            return Err(Error::invalid("--creds", "the user name is empty"));
        }
        return Ok(Some(krio_cri::v1::AuthConfig {
            username: user.to_string(),
            password: pass.to_string(),
            ..Default::default()
        }));
    }
    if let Some(auth) = &a.auth {
        use base64::Engine as _;
        if base64::engine::general_purpose::STANDARD
            .decode(auth)
            .is_err()
        {
            return Err(Error::invalid("--auth", "not base64"));
        }
        return Ok(Some(krio_cri::v1::AuthConfig {
            auth: auth.clone(),
            ..Default::default()
        }));
    }
    Ok(None)
}

/// The objects a bulk command (`rm`, `rmp`) acts on: every one of `all` when `every` (`-a`), else the one
/// each of `prefixes` resolves to (argument order; `id` gives an object's full ID, `kind` names the object
/// kind in resolve errors, e.g. "container" or "pod sandbox").
///
/// Errors: [`Error::Invalid`] for `arguments` with the message `none_given` when there is neither a prefix
/// nor `-a`; a resolve error for a prefix naming no object or several.
pub fn pick_targets<T: Clone>(
    all: Vec<T>,
    every: bool,
    prefixes: &[String],
    kind: &'static str,
    none_given: &'static str,
    id: impl Fn(&T) -> &str,
) -> Result<Vec<T>, Error> {
    if every {
        return Ok(all);
    }
    if prefixes.is_empty() {
        return Err(Error::invalid("arguments", none_given));
    }
    let mut v = Vec::new();
    for p in prefixes {
        let full = resolve_prefix(kind, p, all.iter().map(&id))?;
        if let Some(x) = all.iter().find(|x| id(x) == full) {
            v.push(x.clone());
        }
    }
    Ok(v)
}

/// Current time in nanoseconds since the epoch (for "created ... ago").
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Runs one parsed command line. Returns the process exit status on success
/// (non-zero only for `exec` passing on the command's status).
///
/// Errors: any [`Error`]; `main` prints it and exits 1.
pub async fn run(cli: Cli) -> Result<i32, Error> {
    let mut ctx = Ctx::new(&cli)?;
    match cli.command {
        Command::Version(a) => runtime::version(&mut ctx, a).await.map(|_| 0),
        Command::Info(a) => runtime::info(&mut ctx, a).await.map(|_| 0),
        Command::Status(a) => runtime::status(&mut ctx, a).await.map(|_| 0),
        Command::Imagefsinfo(a) => images::imagefsinfo(&mut ctx, a).await.map(|_| 0),
        Command::RuntimeConfig(a) => runtime::runtime_config(&mut ctx, a).await.map(|_| 0),
        Command::Metricsp(a) => runtime::metricsp(&mut ctx, a).await.map(|_| 0),
        Command::Checkpoint(a) => runtime::checkpoint(&mut ctx, a).await.map(|_| 0),
        Command::Update(a) => runtime::update(&mut ctx, a).await.map(|_| 0),
        Command::Pull(a) => images::pull_cmd(&mut ctx, a).await.map(|_| 0),
        Command::Images(a) => images::images(&mut ctx, a).await.map(|_| 0),
        Command::Rmi(a) => images::rmi(&mut ctx, a).await.map(|_| 0),
        Command::Inspecti(a) => images::inspecti(&mut ctx, a).await.map(|_| 0),
        Command::Runp(a) => pods::runp(&mut ctx, a).await.map(|_| 0),
        Command::Pods(a) => pods::pods(&mut ctx, a).await.map(|_| 0),
        Command::Inspectp(a) => pods::inspectp(&mut ctx, a).await.map(|_| 0),
        Command::Stopp(a) => pods::stopp(&mut ctx, a).await.map(|_| 0),
        Command::Rmp(a) => pods::rmp(&mut ctx, a).await.map(|_| 0),
        Command::Create(a) => containers::create(&mut ctx, a).await.map(|_| 0),
        Command::Start(a) => containers::start(&mut ctx, a).await.map(|_| 0),
        Command::Ps(a) => containers::ps(&mut ctx, a).await.map(|_| 0),
        Command::Inspect(a) => containers::inspect(&mut ctx, a).await.map(|_| 0),
        Command::Logs(a) => logs_cmd::logs(&mut ctx, a).await.map(|_| 0),
        Command::Stop(a) => containers::stop(&mut ctx, a).await.map(|_| 0),
        Command::Rm(a) => containers::rm(&mut ctx, a).await.map(|_| 0),
        Command::Exec(a) if a.sync => containers::exec(&mut ctx, a).await,
        Command::Exec(a) => stream_cmd::exec(&mut ctx, a).await,
        Command::Attach(a) => stream_cmd::attach(&mut ctx, a).await,
        Command::PortForward(a) => stream_cmd::port_forward(&mut ctx, a).await,
        Command::Run(a) => containers::run(&mut ctx, a).await.map(|_| 0),
        Command::Stats(a) => stats::stats(&mut ctx, a).await.map(|_| 0),
        Command::Statsp(a) => stats::statsp(&mut ctx, a).await.map(|_| 0),
        Command::Events(a) => stats::events(&mut ctx, a).await.map(|_| 0),
    }
}

/// Collects the outcomes of a multi-ID verb: each failure is printed to
/// stderr and the verb carries on (as crictl does).
#[derive(Debug)]
pub struct Batch {
    total: usize,
    failed: usize,
}

impl Batch {
    /// A batch of `total` operations.
    pub fn new(total: usize) -> Self {
        Batch { total, failed: 0 }
    }

    /// Records one outcome. With a single operation the error is returned
    /// as is; otherwise it is printed and counted.
    ///
    /// Errors: the operation's error when the batch has one element.
    pub fn record(&mut self, r: Result<(), Error>) -> Result<(), Error> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if self.total <= 1 => Err(e),
            Err(e) => {
                eprintln!("krioctl: {e}");
                self.failed += 1;
                Ok(())
            }
        }
    }

    /// Ends the batch. Errors: [`Error::Partial`] if any operation failed.
    pub fn finish(self) -> Result<(), Error> {
        if self.failed > 0 {
            return Err(Error::Partial {
                failed: self.failed,
                total: self.total,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let m = parse_labels(&["a=b".into(), "c=".into(), "d=e=f".into()]).unwrap();
        assert_eq!(m["a"], "b");
        assert_eq!(m["c"], "");
        assert_eq!(m["d"], "e=f");
        assert!(parse_labels(&["nokey".into()]).is_err());
        assert!(parse_labels(&["=v".into()]).is_err());
    }

    #[test]
    fn auth() {
        let a = auth_config(&PullAuth {
            creds: Some("u:p:q".into()),
            auth: None,
        })
        .unwrap()
        .unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p:q"));
        let a = auth_config(&PullAuth {
            creds: None,
            auth: Some("dTpw".into()),
        })
        .unwrap()
        .unwrap();
        assert_eq!(a.auth, "dTpw");
        assert!(auth_config(&PullAuth {
            creds: None,
            auth: Some("!!".into())
        })
        .is_err());
        assert!(auth_config(&PullAuth::default()).unwrap().is_none());
    }
}
