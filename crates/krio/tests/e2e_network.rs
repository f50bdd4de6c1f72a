//! End to end (issue #5): pod networking through a real krio daemon, real runc and the real CNI
//! plugins (bridge, host-local, portmap, loopback): pod IPs and pod-to-pod traffic, host ports,
//! DNS and hostname files, host-network pods, a clean teardown, and bad inputs that change nothing.
//!
//! Each test owns one bridge `krioe2e<subnet>` with the subnet `10.123.<subnet>.0/24`
//! (subnets 201..=207 here); traffic only goes to addresses in network namespaces the test made.

// Test code: panicking on unexpected errors is the point (this also covers the shared harness).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use krio_cri::v1 as cri;
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Best-effort removal of what the bridge network of `subnet` may leave on the host: the bridge
/// itself and iptables rules that mention the network or the bridge. Runs on drop, so declare it
/// before the `Daemon` (locals drop in reverse order: the daemon's own cleanup runs first).
struct BridgeCleanup(u8);

impl Drop for BridgeCleanup {
    fn drop(&mut self) {
        let bridge = format!("krioe2e{}", self.0);
        let network = format!("krio-e2e-br{}", self.0);
        for table in ["nat", "filter", "mangle"] {
            let Ok(out) = Command::new("iptables").args(["-t", table, "-S"]).output() else {
                continue;
            };
            for rule in String::from_utf8_lossy(&out.stdout).lines() {
                if !(rule.contains(&bridge) || rule.contains(&network)) {
                    continue;
                }
                if let Some(spec) = rule.strip_prefix("-A ") {
                    let mut args = vec!["-t".to_string(), table.to_string(), "-D".to_string()];
                    args.extend(shell_split(spec));
                    let _ = Command::new("iptables").args(&args).output();
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Splits an `iptables -S` rule into arguments (double quotes group words, as iptables prints
/// comments).
fn shell_split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut has = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                has = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ' ' if !quoted => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        out.push(cur);
    }
    out
}

/// `PodSandboxStatus` of a pod.
async fn pod_status(d: &Daemon, id: &str) -> cri::PodSandboxStatus {
    d.runtime()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("PodSandboxStatus: {e}; daemon log:\n{}", d.log()))
        .into_inner()
        .status
        .expect("status set")
}

/// The pod's IPv4 address from `PodSandboxStatus.network.ip`, asserted to be in the test subnet.
async fn pod_ip(d: &Daemon, id: &str, subnet: u8) -> Ipv4Addr {
    let st = pod_status(d, id).await;
    let ip = st.network.map(|n| n.ip).unwrap_or_default();
    let ip: Ipv4Addr = ip
        .parse()
        .unwrap_or_else(|_| panic!("pod {id} has no IPv4 address: {ip:?}"));
    let o = ip.octets();
    assert!(
        o[0] == 10 && o[1] == 123 && o[2] == subnet && o[3] > 1 && o[3] < 255,
        "pod IP {ip} is not a host address of 10.123.{subnet}.0/24"
    );
    ip
}

/// `RunPodSandbox` that must fail; returns the status.
async fn run_pod_err(d: &Daemon, config: &cri::PodSandboxConfig) -> tonic::Status {
    match d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => panic!(
            "RunPodSandbox succeeded ({}) but should have failed for {config:?}",
            r.into_inner().pod_sandbox_id
        ),
        Err(e) => e,
    }
}

async fn sandbox_ids(d: &Daemon) -> BTreeSet<String> {
    d.runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|s| s.id)
        .collect()
}

fn dir_names(p: &Path) -> BTreeSet<String> {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Host interfaces enslaved to `bridge` (the host ends of the pods' veths).
fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Every veth on the host.
fn veths() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// host-local IPAM allocation files (named by the allocated address) under `<daemon>/ipam`.
fn ipam_allocations(d: &Daemon) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(d.dir.path().join("ipam"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().parse::<IpAddr>().is_ok() {
                out.push(f.path());
            }
        }
    }
    out
}

/// Directories under the daemon's `cgroup_parent` in every cgroup hierarchy (v1 controllers and
/// the unified tree), recursively.
fn cgroups_under_parent(d: &Daemon) -> BTreeSet<PathBuf> {
    fn walk(p: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.insert(e.path());
                walk(&e.path(), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        walk(
            &h.path().join(d.cgroup_parent.trim_start_matches('/')),
            &mut out,
        );
    }
    out
}

/// Mount points under the daemon's directory with their filesystem type.
fn mounts_with_type(d: &Daemon) -> Vec<(String, String)> {
    let dir = d.dir.path().to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let point = l.split(' ').nth(4)?;
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            point
                .starts_with(&dir)
                .then(|| (point.to_string(), fstype.to_string()))
        })
        .collect()
}

/// Runs a container with `script` in the pod, waits for it to exit; returns (exit code, log
/// text with one line per CRI log record).
async fn run_to_exit(
    d: &Daemon,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    script: &str,
) -> (i32, String) {
    let id = run_container(
        d,
        pod_id,
        pod,
        container_config(name, &image("busybox"), script),
    )
    .await;
    let st = wait_exited(d, &id).await;
    let log = read_cri_log(Path::new(&st.log_path))
        .into_iter()
        .map(|(_, _, msg)| msg)
        .collect::<Vec<_>>()
        .join("\n");
    (st.exit_code, log)
}

/// A pod config whose log directory and uid are unique to the test.
fn net_pod(d: &Daemon, name: &str) -> cri::PodSandboxConfig {
    pod_config(d, name)
}

/// One HTTP/1.0 GET to `addr`; the whole response.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: krio\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_get_bridge_addresses_and_reach_each_other() {
    const SUBNET: u8 = 201;
    ensure_images();
    let _cleanup = BridgeCleanup(SUBNET);
    let d = Daemon::start_with(Network::Bridge { subnet: SUBNET }).await;
    pull(&d, &image("busybox")).await;

    let pod_a = net_pod(&d, "net-a");
    let pod_b = net_pod(&d, "net-b");
    let a = run_pod(&d, &pod_a).await;
    let b = run_pod(&d, &pod_b).await;
    let ip_a = pod_ip(&d, &a, SUBNET).await;
    let ip_b = pod_ip(&d, &b, SUBNET).await;
    assert_ne!(ip_a, ip_b);
    assert_eq!(
        bridge_ports(&format!("krioe2e{SUBNET}")).len(),
        2,
        "one veth per pod on the bridge"
    );

    // The pod sees its own address on eth0 and pings the other pod.
    let script = format!("ip -4 -o addr show dev eth0; ping -c1 -W2 {ip_b}");
    let (code, log) = run_to_exit(&d, &a, &pod_a, "pinger", &script).await;
    assert_eq!(code, 0, "ping {ip_b} from pod A failed; log:\n{log}");
    assert!(log.contains(&format!("inet {ip_a}/24")), "log:\n{log}");
    assert!(
        log.contains("1 packets transmitted, 1 packets received"),
        "log:\n{log}"
    );
    // And back.
    let (code, log) = run_to_exit(&d, &b, &pod_b, "pinger", &format!("ping -c1 -W2 {ip_a}")).await;
    assert_eq!(code, 0, "ping {ip_a} from pod B failed; log:\n{log}");

    remove_pod(&d, &a).await;
    remove_pod(&d, &b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_port_reaches_a_server_in_the_pod() {
    const SUBNET: u8 = 202;
    // A free port: the DNAT catches connections to it before any listener would.
    let host_port = free_port();
    ensure_images();
    let _cleanup = BridgeCleanup(SUBNET);
    let d = Daemon::start_with(Network::Bridge { subnet: SUBNET }).await;
    pull(&d, &image("busybox")).await;

    let mut pod = net_pod(&d, "net-hostport");
    pod.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let pod_id = run_pod(&d, &pod).await;
    let ip = pod_ip(&d, &pod_id, SUBNET).await;
    let server = run_container(
        &d,
        &pod_id,
        &pod,
        container_config(
            "httpd",
            &image("busybox"),
            "mkdir -p /www && echo hello-from-krio-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        ),
    )
    .await;

    // The server answers on the pod IP and, through the portmap DNAT, on the host port.
    for addr in [
        SocketAddr::from((ip, 8080)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)),
    ] {
        let got = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match http_get(addr) {
                    Ok(r) if r.contains("hello-from-krio-pod") => return Ok(r),
                    other if Instant::now() >= deadline => return Err(format!("{other:?}")),
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })
        .await
        .unwrap();
        match got {
            Ok(r) => assert!(r.starts_with("HTTP/1."), "{r}"),
            Err(last) => panic!(
                "no answer from the pod's server at {addr}: last attempt {last}; container: {:?}; daemon log:\n{}",
                status(&d, &server).await,
                d.log()
            ),
        }
    }
    let rules = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(
        rules.contains(&format!("--dport {host_port}")),
        "no portmap rule for {host_port}"
    );

    remove_pod(&d, &pod_id).await;
    // After removal the host port is closed and its DNAT rules are gone.
    let closed = tokio::task::spawn_blocking(move || {
        http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port))).is_err()
    })
    .await
    .unwrap();
    assert!(
        closed,
        "host port {host_port} still answers after RemovePodSandbox"
    );
    let rules = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(
        !rules.contains(&format!("--dport {host_port}")) && !rules.contains(&pod_id),
        "iptables rules of the pod remain:\n{rules}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resolv_conf_and_hostname_follow_the_request() {
    const SUBNET: u8 = 203;
    ensure_images();
    let _cleanup = BridgeCleanup(SUBNET);
    let d = Daemon::start_with(Network::Bridge { subnet: SUBNET }).await;
    pull(&d, &image("busybox")).await;

    let mut pod = net_pod(&d, "net-dns");
    pod.hostname = "web-0.krio-e2e".to_string();
    pod.dns_config = Some(cri::DnsConfig {
        // Documentation addresses: written to resolv.conf, never contacted.
        servers: vec!["192.0.2.53".into(), "192.0.2.54".into()],
        searches: vec!["ns1.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into(), "timeout:1".into()],
    });
    let pod_id = run_pod(&d, &pod).await;
    let ip = pod_ip(&d, &pod_id, SUBNET).await;
    let (code, log) = run_to_exit(
        &d,
        &pod_id,
        &pod,
        "dns",
        "cat /etc/resolv.conf; echo ---; hostname; cat /etc/hostname; echo ---; cat /etc/hosts",
    )
    .await;
    assert_eq!(code, 0, "log:\n{log}");
    let mut parts = log.split("---\n");
    let resolv = parts.next().unwrap();
    assert_eq!(
        resolv,
        "search ns1.svc.cluster.local svc.cluster.local\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions ndots:5 timeout:1\n",
        "log:\n{log}"
    );
    let names = parts.next().unwrap();
    assert_eq!(names, "web-0.krio-e2e\nweb-0.krio-e2e\n", "log:\n{log}");
    let hosts = parts.next().unwrap();
    assert!(
        hosts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&ip.to_string().as_str()) && f.contains(&"web-0.krio-e2e")
        }),
        "/etc/hosts lacks '{ip} web-0.krio-e2e':\n{hosts}"
    );
    remove_pod(&d, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_pod_sandbox_leaves_no_trace() {
    const SUBNET: u8 = 204;
    ensure_images();
    let _cleanup = BridgeCleanup(SUBNET);
    let d = Daemon::start_with(Network::Bridge { subnet: SUBNET }).await;
    pull(&d, &image("busybox")).await;
    let bridge = format!("krioe2e{SUBNET}");
    let cgroups_before = cgroups_under_parent(&d);

    let pod = net_pod(&d, "net-teardown");
    let pod_id = run_pod(&d, &pod).await;
    let ip = pod_ip(&d, &pod_id, SUBNET).await;
    let c = run_container(
        &d,
        &pod_id,
        &pod,
        container_config("sleeper", &image("busybox"), "sleep 300"),
    )
    .await;
    assert_eq!(
        status(&d, &c).await.state,
        cri::ContainerState::ContainerRunning as i32
    );

    // While the pod runs: namespace pins, one veth on the bridge, an IPAM allocation, cgroups.
    let mounts = mounts_with_type(&d);
    let pins: Vec<_> = mounts.iter().filter(|(_, t)| t == "nsfs").collect();
    assert!(
        pins.iter().any(|(p, _)| p.contains(&pod_id)),
        "no namespace pin for the pod in {mounts:?}"
    );
    let ports = bridge_ports(&bridge);
    assert_eq!(ports.len(), 1, "veths on {bridge}: {ports:?}");
    let host_veth = ports[0].clone();
    assert!(veths().contains(&host_veth));
    let allocations = ipam_allocations(&d);
    assert!(
        allocations.iter().any(
            |p| p.file_name().map(|n| n.to_string_lossy().into_owned()) == Some(ip.to_string())
        ),
        "no host-local allocation for {ip}: {allocations:?}"
    );
    let pod_cgroups: BTreeSet<PathBuf> = cgroups_under_parent(&d)
        .difference(&cgroups_before)
        .cloned()
        .collect();
    assert!(
        pod_cgroups
            .iter()
            .any(|p| p.to_string_lossy().contains(&pod_id[..12])),
        "no pod cgroup under {}: {pod_cgroups:?}",
        d.cgroup_parent
    );

    remove_pod(&d, &pod_id).await;

    let mounts = mounts_with_type(&d);
    assert!(
        !mounts.iter().any(|(_, t)| t == "nsfs"),
        "namespace pins remain: {mounts:?}"
    );
    assert!(
        !mounts
            .iter()
            .any(|(p, _)| p.contains(&pod_id) || p.contains(&c)),
        "mounts of the pod remain: {mounts:?}"
    );
    assert!(
        bridge_ports(&bridge).is_empty(),
        "veths remain on {bridge}: {:?}",
        bridge_ports(&bridge)
    );
    assert!(
        !veths().contains(&host_veth),
        "host veth {host_veth} remains"
    );
    assert_eq!(
        ipam_allocations(&d),
        Vec::<PathBuf>::new(),
        "host-local allocations remain"
    );
    let left: Vec<PathBuf> = cgroups_under_parent(&d)
        .difference(&cgroups_before)
        .cloned()
        .collect();
    assert!(left.is_empty(), "pod cgroups remain: {left:?}");
    assert!(
        !dir_names(&d.state.join("sandboxes")).contains(&pod_id),
        "the sandbox run dir remains"
    );
    assert!(
        !dir_names(&d.root.join("sandboxes")).contains(&pod_id),
        "the sandbox data dir remains"
    );
    assert!(sandbox_ids(&d).await.is_empty());
    assert!(
        d.processes().is_empty(),
        "processes remain: {:?}",
        d.processes()
    );
}

/// What a rejected request must not change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    sandboxes: BTreeSet<String>,
    run_dirs: BTreeSet<String>,
    data_dirs: BTreeSet<String>,
    mounts: Vec<(String, String)>,
    cgroups: BTreeSet<PathBuf>,
    bridge_ports: Vec<String>,
    ipam: Vec<PathBuf>,
    kernel_panic: String,
}

async fn snapshot(d: &Daemon, subnet: u8) -> Snapshot {
    Snapshot {
        sandboxes: sandbox_ids(d).await,
        run_dirs: dir_names(&d.state.join("sandboxes")),
        data_dirs: dir_names(&d.root.join("sandboxes")),
        mounts: mounts_with_type(d),
        cgroups: cgroups_under_parent(d),
        bridge_ports: bridge_ports(&format!("krioe2e{subnet}")),
        ipam: ipam_allocations(d),
        kernel_panic: std::fs::read_to_string("/proc/sys/kernel/panic").expect("kernel.panic"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_pod_configs_are_rejected_and_change_nothing() {
    const SUBNET: u8 = 205;
    ensure_images();
    let _cleanup = BridgeCleanup(SUBNET);
    let d = Daemon::start_with(Network::Bridge { subnet: SUBNET }).await;
    // One good pod, so the network and directories exist and changes would show.
    let good = net_pod(&d, "net-good");
    let good_id = run_pod(&d, &good).await;
    let ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let before = snapshot(&d, SUBNET).await;
    assert_eq!(before.sandboxes.len(), 1);

    let with_sysctl = |k: &str, v: &str| {
        let mut c = net_pod(&d, "net-bad");
        c.linux
            .get_or_insert_with(Default::default)
            .sysctls
            .insert(k.to_string(), v.to_string());
        c
    };
    let cases: Vec<(&str, cri::PodSandboxConfig, &str)> = vec![
        (
            "non-namespaced sysctl",
            with_sysctl("kernel.panic", "1"),
            "sysctl",
        ),
        (
            "value smuggling a second assignment",
            with_sysctl("net.ipv4.ip_forward", "1\nkernel.panic=1"),
            "sysctl",
        ),
        (
            "invalid hostname",
            {
                let mut c = net_pod(&d, "net-bad");
                c.hostname = "bad_host name!".into();
                c
            },
            "hostname",
        ),
        (
            "relative log directory",
            {
                let mut c = net_pod(&d, "net-bad");
                c.log_directory = "relative/logs".into();
                c
            },
            "log_directory",
        ),
    ];
    for (what, config, field) in cases {
        let err = run_pod_err(&d, &config).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(field),
            "{what}: message does not name {field}: {}",
            err.message()
        );
        let after = snapshot(&d, SUBNET).await;
        assert_eq!(after, before, "{what} changed the node");
    }
    // The smuggled assignment did not reach the host (the pod's own ip_forward is in its netns).
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        ip_forward
    );
    // The daemon keeps serving and the good pod is intact.
    assert_eq!(
        pod_status(&d, &good_id).await.state,
        cri::PodSandboxState::SandboxReady as i32
    );
    remove_pod(&d, &good_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn same_pod_name_twice_is_already_exists_until_removed() {
    const SUBNET: u8 = 206;
    ensure_images();
    let _cleanup = BridgeCleanup(SUBNET);
    let d = Daemon::start_with(Network::Bridge { subnet: SUBNET }).await;
    let pod = net_pod(&d, "net-dup");
    let first = run_pod(&d, &pod).await;
    let before = snapshot(&d, SUBNET).await;

    let err = run_pod_err(&d, &pod).await;
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message().contains("net-dup"),
        "message does not name the pod: {}",
        err.message()
    );
    assert_eq!(
        snapshot(&d, SUBNET).await,
        before,
        "the duplicate changed the node"
    );
    let ids = sandbox_ids(&d).await;
    assert_eq!(ids, BTreeSet::from([first.clone()]));

    remove_pod(&d, &first).await;
    let second = run_pod(&d, &pod).await;
    assert_ne!(second, first);
    pod_ip(&d, &second, SUBNET).await;
    assert_eq!(sandbox_ids(&d).await, BTreeSet::from([second.clone()]));
    remove_pod(&d, &second).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pod_sees_the_host_hostname() {
    const SUBNET: u8 = 207;
    ensure_images();
    let _cleanup = BridgeCleanup(SUBNET);
    let d = Daemon::start_with(Network::Bridge { subnet: SUBNET }).await;
    pull(&d, &image("busybox")).await;
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let veths_before = bridge_ports(&format!("krioe2e{SUBNET}"));

    let mut pod = net_pod(&d, "net-host");
    pod.hostname = String::new();
    pod.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        ..Default::default()
    });
    let pod_id = run_pod(&d, &pod).await;
    let st = pod_status(&d, &pod_id).await;
    assert_eq!(
        st.linux
            .and_then(|l| l.namespaces)
            .and_then(|n| n.options)
            .map(|o| o.network),
        Some(cri::NamespaceMode::Node as i32)
    );
    let (code, log) = run_to_exit(&d, &pod_id, &pod, "uts", "hostname; cat /etc/hostname").await;
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(log, format!("{host}\n{host}"), "log:\n{log}");
    // No CNI attachment for a host-network pod.
    assert_eq!(bridge_ports(&format!("krioe2e{SUBNET}")), veths_before);
    assert!(ipam_allocations(&d).is_empty());
    remove_pod(&d, &pod_id).await;
}
