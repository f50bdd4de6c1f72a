//! Shared harness for krio's end-to-end tests: a real daemon (this crate's binary), real runc,
//! the real local registry (Debian's docker-registry on 127.0.0.1:5000) with images built by
//! `krio-testimg`, and real CNI plugins. Missing prerequisites fail the test loudly.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use krio_cri::v1 as cri;
use krio_cri::v1::image_service_client::ImageServiceClient;
use krio_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// The shared local registry.
pub const REGISTRY: &str = "127.0.0.1:5000";

/// `127.0.0.1:5000/krio-test/<name>:latest`.
pub fn image(name: &str) -> String {
    format!("{REGISTRY}/krio-test/{name}:latest")
}

/// Panics with a clear message unless we are root and the tools exist.
pub fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "krio end-to-end tests need root (run them as root, as CI does)"
    );
    for bin in ["runc", "docker-registry"] {
        assert!(
            which(bin).is_some(),
            "prerequisite {bin} is not installed: run scripts/test.sh, which installs it"
        );
    }
    for p in [
        "/bin/busybox",
        "/usr/lib/cni/loopback",
        "/usr/lib/cni/bridge",
    ] {
        assert!(
            Path::new(p).exists(),
            "prerequisite {p} is missing: run scripts/test.sh, which installs busybox-static and containernetworking-plugins"
        );
    }
    assert!(
        monitor_binary().is_file(),
        "{} is missing: build the workspace first (cargo build --workspace --bins)",
        monitor_binary().display()
    );
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.is_file())
    })
}

/// `target/<profile>/krio-monitor`, beside the daemon binary under test.
pub fn monitor_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_krio"))
        .parent()
        .expect("binary dir")
        .join("krio-monitor")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("repo root")
        .to_path_buf()
}

/// Starts the shared registry (idempotent) and pushes every test image, once per test binary.
pub fn ensure_images() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        require_prerequisites();
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/registry.sh"))
            .args(["start", "5000"])
            .status()
            .expect("running scripts/registry.sh");
        assert!(status.success(), "scripts/registry.sh start 5000 failed");
        let catalog = krio_testimg::Catalog::from_host().expect("building the test image catalog");
        let client = krio_testimg::RegistryClient::new(REGISTRY).expect("registry client");
        for img in catalog.build_all().expect("building test images") {
            client.push_test_image(&img).expect("pushing a test image");
        }
    });
}

/// Which CNI network the daemon gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A loopback-only conflist.
    Loopback,
    /// A bridge network (bridge, host-local IPAM, portmap) with its own bridge and subnet.
    Bridge {
        /// Third octet of the 10.<x>.<y>.0/24 subnet; also names the bridge.
        subnet: u8,
    },
}

/// A runtime handler the lifecycle tests run under: the same test functions, parameterised
/// by handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// runc, the default handler.
    Runc,
    /// gVisor's runsc (Debian's package), ptrace platform, network passthrough inside the pod's
    /// network namespace, each container a gVisor sandbox of its own.
    Runsc,
    /// runsc with one gVisor sandbox per pod ([`RUNSC_POD_TOML`], handler name `runsc-pod`): the
    /// pod's containers join the sandbox of the pod's root container.
    RunscPod,
    /// youki (`cargo install youki --features v1`): not installed by scripts/install-deps.sh
    /// (its build does not fit the suite's time budget), so the `*_under_youki` tests are
    /// `#[ignore]`d in the suite; bench/youki.sh installs youki and runs them with `--ignored`.
    Youki,
}

/// The `[runtimes.youki]` table the tests use: the defaults (`pod_sandbox = "none"`).
pub const YOUKI_TOML: &str = "[runtimes.youki]\npath = \"youki\"\n";

/// The `[runtimes.runsc]` table the tests use, as docs/runtime-handlers.md recommends.
pub const RUNSC_TOML: &str = "[runtimes.runsc]\npath = \"runsc\"\n\
     runtime_args = [\"--platform=ptrace\", \"--network=host\"]\npod_sandbox = \"per-container\"\n\
     privileged_without_host_devices = true\nallowed_annotations = [\"dev.gvisor.\"]\n";

/// A `[runtimes.runsc-pod]` table: runsc as [`RUNSC_TOML`], but with one gVisor sandbox per pod
/// (`pod_sandbox = "pod"`) that every container of the pod joins.
pub const RUNSC_POD_TOML: &str = "[runtimes.runsc-pod]\npath = \"runsc\"\n\
     runtime_args = [\"--platform=ptrace\", \"--network=host\"]\npod_sandbox = \"pod\"\n\
     privileged_without_host_devices = true\nallowed_annotations = [\"dev.gvisor.\"]\n";

impl Handler {
    /// The CRI `runtime_handler` name.
    pub fn name(self) -> &'static str {
        match self {
            Handler::Runc => "runc",
            Handler::Runsc => "runsc",
            Handler::RunscPod => "runsc-pod",
            Handler::Youki => "youki",
        }
    }

    /// The runtime binary the handler runs.
    pub fn binary(self) -> &'static str {
        match self {
            Handler::RunscPod => "runsc",
            h => h.name(),
        }
    }

    /// The daemon configuration that defines the handler (empty for runc, the default).
    pub fn toml(self) -> &'static str {
        match self {
            Handler::Runc => "",
            Handler::Runsc => RUNSC_TOML,
            Handler::RunscPod => RUNSC_POD_TOML,
            Handler::Youki => YOUKI_TOML,
        }
    }

    fn installed(self) -> bool {
        let bin = self.binary();
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false)
    }

    /// Panics with a clear message when the handler's binary is not installed.
    pub fn require(self) {
        let bin = self.binary();
        let how = match self {
            Handler::Youki => "bench/run.sh installs it (cargo install youki --features v1)",
            _ => "run scripts/install-deps.sh (it installs Debian's package)",
        };
        assert!(self.installed(), "{bin} is not installed: {how}");
    }
}

/// A krio daemon running in a private directory tree.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub logs: PathBuf,
    pub config: PathBuf,
    pub cgroup_parent: String,
    /// Extra command-line arguments for the daemon.
    pub extra_args: Vec<String>,
    /// The `runtime_handler` that [`run_pod`] asks for (empty: the default).
    pub handler: String,
    /// Extra environment variables for the daemon (test-only hooks such as
    /// `KRIO_TEST_DELAY_CREATE_MS`).
    pub env: Vec<(String, String)>,
    /// The loop-mounted filesystem holding `root` and `state`, for [`Daemon::start_on_disk`].
    /// Declared before `dir`, so that it is unmounted and detached before the tree is removed.
    pub disk: Option<LoopFs>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon with a loopback-only network.
    pub async fn start() -> Daemon {
        Self::start_with(Network::Loopback).await
    }

    /// Starts a daemon with the given network.
    pub async fn start_with(network: Network) -> Daemon {
        Self::start_with_env(network, &[]).await
    }

    /// Starts a daemon whose pods (through [`run_pod`]) use `handler`; fails loudly when the
    /// handler's binary is missing.
    pub async fn start_handler(handler: Handler, network: Network) -> Daemon {
        handler.require();
        let mut d = Self::start_full(network, &[], handler.toml()).await;
        d.handler = handler.name().to_string();
        d
    }

    /// Starts a daemon with the given network and extra environment variables.
    pub async fn start_with_env(network: Network, env: &[(&str, &str)]) -> Daemon {
        Self::start_full(network, env, "").await
    }

    /// Starts a daemon with the given network, extra environment variables and extra TOML
    /// appended to its configuration file (`[runtimes.NAME]` tables, for instance).
    pub async fn start_full(network: Network, env: &[(&str, &str)], extra_toml: &str) -> Daemon {
        Self::start_inner(network, env, extra_toml, None).await
    }

    /// Starts a daemon (loopback network) whose `root` and `state_dir` are on a fresh ext4
    /// filesystem of `size_mib` MiB, in an image file attached to a loop device and mounted
    /// at `<dir>/disk` (no blocks reserved for root, so the daemon cannot write past "full").
    /// The socket, config and pod logs stay outside it.
    pub async fn start_on_disk(size_mib: u64) -> Daemon {
        Self::start_inner(Network::Loopback, &[], "", Some(size_mib)).await
    }

    async fn start_inner(
        network: Network,
        env: &[(&str, &str)],
        extra_toml: &str,
        disk_mib: Option<u64>,
    ) -> Daemon {
        require_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("krio-e2e-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let disk = disk_mib.map(|mib| LoopFs::new(&d.join("disk.img"), &d.join("disk"), mib));
        let base = match &disk {
            Some(fs) => fs.mountpoint.clone(),
            None => d.clone(),
        };
        let cni = d.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        let conflist = match network {
            Network::Loopback => serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "krio-e2e-lo",
                "plugins": [{"type": "loopback"}]
            }),
            Network::Bridge { subnet } => serde_json::json!({
                "cniVersion": "1.0.0",
                "name": format!("krio-e2e-br{subnet}"),
                "plugins": [
                    {"type": "bridge", "bridge": format!("krioe2e{subnet}"), "isGateway": true,
                     "ipMasq": true, "hairpinMode": true,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.123.{subnet}.0/24")}]],
                              "routes": [{"dst": "0.0.0.0/0"}],
                              "dataDir": d.join("ipam").to_string_lossy()}},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            }),
        };
        std::fs::write(cni.join("10-test.conflist"), conflist.to_string()).unwrap();
        let cgroup_parent = format!(
            "/krio-e2e-{}",
            &d.file_name().unwrap().to_string_lossy()[9..]
        );
        let config = d.join("krio.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{sock}\"\nroot = \"{root}\"\nstate_dir = \"{state}\"\nlog_level = \"krio=debug,krio_server=debug,info\"\n\
                 monitor_path = \"{mon}\"\ncgroup_parent = \"{cg}\"\nstats_collection_period = 1\n[cni]\nconf_dir = \"{cni}\"\ninstall_default_config = false\n\
                 [image]\nregistries_conf = \"{d}/registries.conf\"\n{extra_toml}\n",
                sock = d.join("krio.sock").display(),
                root = base.join("root").display(),
                state = base.join("run").display(),
                mon = monitor_binary().display(),
                cg = cgroup_parent,
                cni = cni.display(),
                d = d.display(),
            ),
        )
        .unwrap();
        let mut daemon = Daemon {
            socket: d.join("krio.sock"),
            root: base.join("root"),
            state: base.join("run"),
            logs: d.join("logs"),
            config,
            cgroup_parent,
            extra_args: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            handler: String::new(),
            disk,
            dir,
        };
        daemon.spawn().await;
        daemon
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_krio"))
            .arg("--config")
            .arg(&self.config)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning krio");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() {
                if let Ok(mut c) = self.try_runtime().await {
                    if c.version(cri::VersionRequest::default()).await.is_ok() {
                        return;
                    }
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "krio exited during start-up with {status}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "krio did not answer within 20s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// [`poll`], with the daemon's log in the panic message when `timeout` passes.
    pub async fn poll<T, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        match krio_testutil::try_poll(timeout, check).await {
            Some(v) => v,
            None => panic!(
                "timed out after {timeout:?} waiting for {what}; daemon log:\n{}",
                self.log()
            ),
        }
    }

    /// The address the daemon serves Prometheus metrics on, read back from its log (start it
    /// with `--metrics-listen 127.0.0.1:0` so that the kernel picks a free port).
    pub async fn metrics_address(&self) -> std::net::SocketAddr {
        self.poll(
            "the metrics address in the daemon log",
            Duration::from_secs(10),
            || {
                let addr = self
                    .log()
                    .lines()
                    .rev()
                    .filter(|l| l.contains("serving Prometheus metrics"))
                    .filter_map(|l| l.split("address=").nth(1))
                    .find_map(|a| a.split_whitespace().next()?.parse().ok());
                std::future::ready(addr)
            },
        )
        .await
    }

    /// Kills the daemon with SIGKILL (containers and monitors keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Waits up to `timeout` for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(krio_testutil::POLL_INTERVAL);
        }
    }

    /// Starts the daemon again on the same directories.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    async fn try_runtime(&self) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(connect(&self.socket).await?))
    }

    /// A `RuntimeService` client.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.try_runtime().await.expect("connecting to krio")
    }

    /// An `ImageService` client.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(connect(&self.socket).await.expect("connecting to krio"))
    }

    /// Every mountpoint under the daemon's directories.
    pub fn mounts(&self) -> Vec<String> {
        let dir = self.dir.path().to_string_lossy().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir))
            .collect()
    }

    /// Every cgroup directory of pod `pod_id` still present in any hierarchy under
    /// `/sys/fs/cgroup` (each cgroup v1 controller and the unified one): the pod cgroup krio
    /// makes, `<cgroup_parent>/pod-<first 12 characters of the id>`, and anything below it
    /// (a runtime's container cgroups). Empty once the pod is removed.
    pub fn pod_cgroups(&self, pod_id: &str) -> Vec<PathBuf> {
        let rel = format!(
            "{}/pod-{}",
            self.cgroup_parent.trim_start_matches('/'),
            &pod_id[..12.min(pod_id.len())]
        );
        cgroup_dirs(&rel)
    }

    /// Asserts that no cgroup directory of the removed pod `pod_id` is left in any hierarchy
    /// (see [`Daemon::pod_cgroups`]).
    pub fn assert_pod_cgroups_gone(&self, pod_id: &str) {
        let left = self.pod_cgroups(pod_id);
        assert!(
            left.is_empty(),
            "cgroups of removed pod {pod_id} left: {left:?}; daemon log:\n{}",
            self.log()
        );
    }

    /// Pids of processes whose command line mentions the daemon's directory (monitors,
    /// runtimes), other than the daemon itself.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let dir = self.dir.path().to_string_lossy().to_string();
        let me = self.child.as_ref().map(|c| c.id() as i32);
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if Some(pid) == me {
                continue;
            }
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&dir) {
                out.push((pid, cmd));
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Clean whatever a failed test left: runtime containers, monitors, mounts, cgroups.
        for (runtime, dir) in [("runc", "runc"), ("runsc", "runsc")] {
            let root = self.state.join("runtime").join(dir);
            if let Ok(entries) = std::fs::read_dir(&root) {
                for e in entries.flatten() {
                    let _ = Command::new(runtime)
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force"])
                        .arg(e.file_name())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        // A SIGKILLed process takes a moment to exit (a gVisor sandbox more than most), and its
        // cgroup refuses rmdir (EBUSY) until it has: kill until none is left, then remove the
        // daemon's whole cgroup parent (this test's own), retrying busy cgroups.
        let deadline = Instant::now() + DROP_CLEANUP_TIMEOUT;
        loop {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("krio e2e harness: processes still running after the test: {left:?}");
                break;
            }
            for (pid, _) in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(krio_testutil::POLL_INTERVAL);
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let mut dirs = cgroup_dirs(&self.cgroup_parent);
        // Children before parents.
        dirs.reverse();
        for dir in dirs {
            while let Err(e) = std::fs::remove_dir(&dir) {
                if e.raw_os_error() != Some(nix::errno::Errno::EBUSY as i32)
                    || Instant::now() >= deadline
                {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        eprintln!("krio e2e harness: cgroup {} left: {e}", dir.display());
                    }
                    break;
                }
                std::thread::sleep(krio_testutil::POLL_INTERVAL);
            }
        }
    }
}

/// How long a dropped [`Daemon`] waits for the processes it killed to exit and for their
/// cgroups to become removable.
const DROP_CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A small ext4 filesystem: an image file attached to a loop device and mounted. Dropping it
/// unmounts it (lazily, so a busy mount never blocks the test's end) and detaches the device
/// (the kernel then detaches it once the last user is gone), also when the test failed.
pub struct LoopFs {
    /// Where the filesystem is mounted.
    pub mountpoint: PathBuf,
    device: Option<String>,
    mounted: bool,
}

impl LoopFs {
    /// Makes an ext4 filesystem of `size_mib` MiB in `image` (no reserved blocks), attaches it
    /// to a free loop device and mounts it at `mountpoint` (created). Panics, naming the step,
    /// when a tool is missing or fails; what was set up by then is undone by the drop.
    pub fn new(image: &Path, mountpoint: &Path, size_mib: u64) -> LoopFs {
        for bin in ["mkfs.ext4", "losetup", "mount"] {
            assert!(
                which(bin).is_some() || Path::new("/usr/sbin").join(bin).is_file()
                    || Path::new("/sbin").join(bin).is_file(),
                "prerequisite {bin} is not installed: run scripts/install-deps.sh (e2fsprogs, mount)"
            );
        }
        let mut fs = LoopFs {
            mountpoint: mountpoint.to_path_buf(),
            device: None,
            mounted: false,
        };
        std::fs::File::create(image)
            .and_then(|f| f.set_len(size_mib << 20))
            .unwrap_or_else(|e| panic!("creating {}: {e}", image.display()));
        run_tool(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(image),
        );
        let out = run_tool(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(image),
        );
        fs.device = Some(out.trim().to_string());
        std::fs::create_dir_all(mountpoint).unwrap();
        run_tool(
            Command::new("mount")
                .args(["-t", "ext4"])
                .arg(fs.device.as_deref().unwrap_or_default())
                .arg(mountpoint),
        );
        fs.mounted = true;
        fs
    }

    /// Bytes an unprivileged writer could still allocate (`statvfs` `f_bavail`).
    pub fn free_bytes(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.mountpoint).expect("statvfs");
        st.blocks_available() as u64 * st.fragment_size() as u64
    }

    /// Fills the filesystem with a new file `<mountpoint>/filler-<n>` until a write fails with
    /// ENOSPC, then gives back the last `leave` bytes of it; returns the filler's path.
    pub fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = (0..)
            .map(|n| self.mountpoint.join(format!("filler-{n}")))
            .find(|p| !p.exists())
            .expect("a free filler name");
        let mut f = std::fs::File::create_new(&path).expect("creating the filler");
        let big = vec![0u8; 1 << 20];
        let mut len = 0u64;
        for chunk in [1 << 20, 1 << 12, 1 << 9] {
            loop {
                match f.write(&big[..chunk]) {
                    Ok(0) => break,
                    Ok(n) => len += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        // Blocks written but not yet allocated fail at sync; the filler's size is what counts.
        let _ = f.sync_all();
        f.set_len(len.saturating_sub(leave))
            .expect("trimming the filler");
        f.sync_all().expect("syncing the filler");
        path
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

/// Runs a set-up tool; panics with its output when it fails. Returns its stdout.
fn run_tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(dev) = &self.device {
            let _ = Command::new("losetup")
                .args(["-d", dev])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The directories of cgroup `rel` (relative to a hierarchy's root, leading `/` optional) and
/// every cgroup below it, in every hierarchy under `/sys/fs/cgroup` (each cgroup v1 controller
/// and the unified one, or the v2 root), parents before children.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    // The root itself is the hierarchy on a cgroup v2 only host.
    let mut out = Vec::new();
    collect_dirs(&root.join(rel), &mut out);
    for e in std::fs::read_dir(root).unwrap().flatten() {
        collect_dirs(&e.path().join(rel), &mut out);
    }
    out
}

/// `p` and every directory below it, if `p` is a directory (parents before children).
fn collect_dirs(p: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(p) else {
        return;
    };
    out.push(p.to_path_buf());
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
}

/// Connects a tonic channel to a unix socket.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// A pod config with a fresh uid and a log directory under the daemon's tree.
pub fn pod_config(d: &Daemon, name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            namespace: "default".to_string(),
            uid: format!("uid-{name}-{}", std::process::id()),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: d.logs.join(name).to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// A container config running `sh -c script` in the given image.
pub fn container_config(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.to_string()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// Pulls `reference` through the daemon.
pub async fn pull(d: &Daemon, reference: &str) -> String {
    d.images()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: reference.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pulling {reference}: {e}; daemon log:\n{}", d.log()))
        .into_inner()
        .image_ref
}

/// Runs a pod and returns its id.
pub async fn run_pod(d: &Daemon, config: &cri::PodSandboxConfig) -> String {
    d.runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: d.handler.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}; daemon log:\n{}", d.log()))
        .into_inner()
        .pod_sandbox_id
}

/// Sends one CreateContainer for `config` in pod `pod_id`, on a new client, with `pod` as the
/// request's `sandbox_config` (`None` leaves the field unset). Returns the new container's id,
/// or the daemon's refusal as it came, for the caller to check code and message.
pub async fn try_create(
    d: &Daemon,
    pod_id: &str,
    pod: Option<&cri::PodSandboxConfig>,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    d.runtime()
        .await
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: pod.cloned(),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

/// Creates and starts a container; returns its id.
pub async fn run_container(
    d: &Daemon,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    let mut rt = d.runtime().await;
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}; daemon log:\n{}", d.log()))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e}; daemon log:\n{}", d.log()));
    id
}

/// The container's status.
pub async fn status(d: &Daemon, id: &str) -> cri::ContainerStatus {
    d.runtime()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("status set")
}

/// Waits (up to 30 s) until the container has exited; returns its final status.
pub async fn wait_exited(d: &Daemon, id: &str) -> cri::ContainerStatus {
    d.poll(
        &format!("container {id} to exit"),
        Duration::from_secs(30),
        || async {
            let s = status(d, id).await;
            (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
        },
    )
    .await
}

/// Waits (up to 30 s) until the container's CRI log has a complete record whose text is
/// `text` (a container's way to say it reached a point of its script).
pub async fn wait_log_line(d: &Daemon, id: &str, text: &str) {
    let path = PathBuf::from(status(d, id).await.log_path);
    d.poll(
        &format!("{text:?} in the log of container {id} ({})", path.display()),
        Duration::from_secs(30),
        || {
            let found = complete_records(&path).iter().any(|r| r.2 == text);
            std::future::ready(found.then_some(()))
        },
    )
    .await
}

/// The complete (newline-terminated) records of a CRI log that may still be written to; none
/// when the file does not exist yet.
pub fn complete_records(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let _ts = parts.next()?;
            let stream = parts.next()?;
            let tag = parts.next()?;
            let msg = parts.next().unwrap_or("");
            Some((stream.to_string(), tag.to_string(), msg.to_string()))
        })
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago: bound with port 0 (the kernel picks),
/// read back and closed. For things the test cannot ask to bind port 0 itself (host ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Polls a condition with a deadline (see `Daemon::poll` for one that shows the daemon log).
#[allow(unused_imports)]
pub use krio_testutil::poll;

/// Parses a CRI log file into (stream, tag, text) records, checking each timestamp.
pub fn read_cri_log(path: &Path) -> Vec<(String, String, String)> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().unwrap();
            let stream = parts
                .next()
                .unwrap_or_else(|| panic!("no stream in {line:?}"));
            let tag = parts.next().unwrap_or_else(|| panic!("no tag in {line:?}"));
            let msg = parts.next().unwrap_or("");
            assert!(
                ts.len() >= 20 && ts.contains('T') && (ts.ends_with('Z') || ts.contains('+')),
                "bad RFC3339Nano timestamp {ts:?} in {line:?}"
            );
            (stream.to_string(), tag.to_string(), msg.to_string())
        })
        .collect()
}

/// The text of every record in an exited container's log, in order.
pub fn log_lines(st: &cri::ContainerStatus) -> Vec<String> {
    read_cri_log(Path::new(&st.log_path))
        .into_iter()
        .map(|r| r.2)
        .collect()
}

/// Sets the pod's PID namespace mode (`NamespaceOption.pid`).
pub fn with_pid_mode(
    mut pod: cri::PodSandboxConfig,
    mode: cri::NamespaceMode,
) -> cri::PodSandboxConfig {
    pod.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = mode as i32;
    pod
}

/// The host pid of a pod's init (`krio-monitor pod-init`), from the sandbox's verbose status.
pub async fn pod_init_pid(d: &Daemon, pod_id: &str) -> i32 {
    let info = d
        .runtime()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let record: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    record["pod_init"]["pid"]
        .as_i64()
        .expect("the pod init is recorded") as i32
}

/// Whether process `pid` is gone, or a zombie waiting for the host's PID 1 to reap it (the pod
/// init is not krio's child).
pub fn pod_init_gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("");
    stat.is_empty() || state == "Z"
}

/// Stops and removes a pod, asserting success.
pub async fn remove_pod(d: &Daemon, pod_id: &str) {
    let mut rt = d.runtime().await;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e}; daemon log:\n{}", d.log()));
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}; daemon log:\n{}", d.log()));
}
