//! Integration tests of CNI with the real Debian containernetworking-plugins (root).
//!
//! Uses a private conflist (bridge `krio-t0`, host-local 10.99.0.0/24) in a temp conf dir; the
//! bridge, iptables rules and host-local state are removed at the end (also on panic).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use krio_net::cni::Protocol;
use krio_net::ns::{pin_namespaces, unpin_namespaces, NsKind};
use krio_net::{Cni, CniConfig, NetError, PodNetwork, PortMapping};

const BIN_DIR: &str = "/usr/lib/cni";
const BRIDGE: &str = "krio-t0";
const HOST_LOCAL_DIR: &str = "/var/lib/cni/networks";

/// A TCP port on 127.0.0.1 that was free a moment ago (bound with port 0, read back, closed):
/// the host port of the test pod, so that no fixed port can collide with anything.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// The tests share one bridge and subnet: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn prerequisites() {
    let mut tools: Vec<String> = ["bridge", "host-local", "portmap", "loopback"]
        .iter()
        .map(|p| format!("{BIN_DIR}/{p}"))
        .collect();
    tools.extend(
        [
            "/usr/bin/nsenter",
            "/usr/sbin/ip",
            "/usr/sbin/iptables",
            "/bin/busybox",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let refs: Vec<&str> = tools.iter().map(String::as_str).collect();
    require(&refs);
}

fn conflist(net: &str, extra: Option<serde_json::Value>) -> String {
    let mut plugins = vec![
        serde_json::json!({
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "routes": [{"dst": "0.0.0.0/0"}],
                "ranges": [[{"subnet": "10.99.0.0/24", "gateway": "10.99.0.1"}]]
            }
        }),
        serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
    ];
    if let Some(e) = extra {
        plugins.push(e);
    }
    serde_json::json!({"cniVersion": "1.0.0", "name": net, "plugins": plugins}).to_string()
}

/// Removes what the plugins may leave on the host for `net` / `ids`, also when a test panics.
struct HostCleanup {
    net: String,
    ids: Vec<String>,
}

impl Drop for HostCleanup {
    fn drop(&mut self) {
        remove_rules_mentioning(&self.ids);
        remove_idle_hostport_chains();
        run("/usr/sbin/ip", &["link", "del", BRIDGE]);
        let _ = std::fs::remove_dir_all(Path::new(HOST_LOCAL_DIR).join(&self.net));
    }
}

/// Deletes every iptables rule (nat and filter) whose text mentions one of `ids`, then flushes and
/// deletes the per-pod `CNI-*` chains those rules jumped to or lived in. Touches nothing else.
fn remove_rules_mentioning(ids: &[String]) {
    for table in ["nat", "filter"] {
        let (_, rules) = run("/usr/sbin/iptables", &["-t", table, "-S"]);
        let mut chains = std::collections::BTreeSet::new();
        for rule in rules.lines().filter(|l| l.starts_with("-A ")) {
            if !ids.iter().any(|id| rule.contains(id.as_str())) {
                continue;
            }
            let args = iptables_split(rule);
            if let Some(c) = args
                .get(1)
                .filter(|c| c.starts_with("CNI-") && !c.starts_with("CNI-HOSTPORT"))
            {
                chains.insert(c.clone());
            }
            if let Some(pos) = args.iter().position(|a| a == "-j") {
                if let Some(t) = args
                    .get(pos + 1)
                    .filter(|c| c.starts_with("CNI-") && !c.starts_with("CNI-HOSTPORT"))
                {
                    chains.insert(t.clone());
                }
            }
            let mut all = vec!["-t".to_string(), table.to_string(), "-D".to_string()];
            all.extend(args.into_iter().skip(1));
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let (ok, out) = run("/usr/sbin/iptables", &refs);
            if !ok {
                eprintln!("cleanup: iptables {refs:?}: {out}");
            }
        }
        for c in chains {
            run("/usr/sbin/iptables", &["-t", table, "-F", &c]);
            run("/usr/sbin/iptables", &["-t", table, "-X", &c]);
        }
    }
}

/// portmap's shared chains (`CNI-HOSTPORT-*` and the jumps to them) once no pod uses them any more
/// (`CNI-HOSTPORT-DNAT` empty), so the tests leave no rules behind; shared with other users otherwise.
fn remove_idle_hostport_chains() {
    let (_, dnat) = run(
        "/usr/sbin/iptables",
        &["-t", "nat", "-S", "CNI-HOSTPORT-DNAT"],
    );
    if dnat.lines().any(|l| l.starts_with("-A ")) {
        return;
    }
    let (_, rules) = run("/usr/sbin/iptables", &["-t", "nat", "-S"]);
    for rule in rules
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains("-j CNI-HOSTPORT-"))
    {
        let args = iptables_split(rule);
        let mut all = vec!["-t".to_string(), "nat".to_string(), "-D".to_string()];
        all.extend(args.into_iter().skip(1));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run("/usr/sbin/iptables", &refs);
    }
    for c in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-SETMARK",
        "CNI-HOSTPORT-MASQ",
    ] {
        run("/usr/sbin/iptables", &["-t", "nat", "-F", c]);
        run("/usr/sbin/iptables", &["-t", "nat", "-X", c]);
    }
}

/// Splits one line of `iptables -S` output into arguments (double quotes with backslash escapes).
fn iptables_split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            _ => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[test]
fn iptables_split_handles_quotes() {
    let v = iptables_split(
        r#"-A POSTROUTING -s 10.99.0.3/32 -m comment --comment "name: \"n\" id: \"x\"" -j CNI-abc"#,
    );
    assert_eq!(v[6], "--comment");
    assert_eq!(v[7], r#"name: "n" id: "x""#);
    assert_eq!(v[9], "CNI-abc");
}

fn pod(id: &str, netns: &Path, ports: Vec<PortMapping>) -> PodNetwork {
    PodNetwork {
        id: id.into(),
        name: format!("pod-{id}"),
        namespace: "krio-test".into(),
        uid: format!("uid-{id}"),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        port_mappings: ports,
    }
}

fn cni_for(root: &Path, extra_bin: Option<&Path>) -> (Cni, PathBuf) {
    let conf_dir = root.join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let mut bin_dirs = Vec::new();
    if let Some(b) = extra_bin {
        bin_dirs.push(b.to_path_buf());
    }
    bin_dirs.push(PathBuf::from(BIN_DIR));
    let cni = Cni::new(CniConfig {
        conf_dir: conf_dir.clone(),
        bin_dirs,
        cache_dir: root.join("cache"),
    })
    .with_plugin_timeout(Duration::from_secs(30));
    (cni, conf_dir)
}

/// IP allocation files host-local keeps for `net` (every entry except `lock` / `last_reserved_ip.*`).
fn host_local_allocations(net: &str) -> Vec<String> {
    match std::fs::read_dir(Path::new(HOST_LOCAL_DIR).join(net)) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn bridge_ports() -> String {
    let (_, out) = run("/usr/sbin/ip", &["-o", "link", "show", "master", BRIDGE]);
    out.trim().to_owned()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rules_mentioning(id: &str) -> Vec<String> {
    let mut v = Vec::new();
    for table in ["nat", "filter"] {
        let (_, rules) = run("/usr/sbin/iptables", &["-t", table, "-S"]);
        v.extend(rules.lines().filter(|l| l.contains(id)).map(str::to_owned));
    }
    v
}

/// Unpins namespace dirs when a test ends early (panics), before the temp dir is removed.
struct UnpinOnDrop(Vec<PathBuf>);
impl Drop for UnpinOnDrop {
    fn drop(&mut self) {
        for d in &self.0 {
            if let Err(e) = unpin_namespaces(d) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_ping_portmap_and_del() {
    prerequisites();
    let _serial = SERIAL.lock().await;
    let tag = std::process::id();
    let net = format!("krio-test-{tag}");
    let (id_a, id_b) = (format!("krionetta{tag}"), format!("krionettb{tag}"));
    let _cleanup = HostCleanup {
        net: net.clone(),
        ids: vec![id_a.clone(), id_b.clone()],
    };
    let tmp = tempdir();
    let (cni, conf_dir) = cni_for(tmp.path(), None);
    assert!(cni.status().is_err(), "empty conf dir must not be ready");
    // Written after the client exists: picked up without restart.
    std::fs::write(conf_dir.join("50-test.conflist"), conflist(&net, None)).unwrap();
    std::fs::write(conf_dir.join("10-broken.conflist"), "{not json").unwrap();
    cni.status().expect("network ready");

    let dir_a = tmp.path().join("a/ns");
    let dir_b = tmp.path().join("b/ns");
    let _unpin = UnpinOnDrop(vec![dir_a.clone(), dir_b.clone()]);
    let pins_a =
        pin_namespaces(&dir_a, &[NsKind::Net, NsKind::Ipc, NsKind::Uts], Some("a")).unwrap();
    let pins_b =
        pin_namespaces(&dir_b, &[NsKind::Net, NsKind::Ipc, NsKind::Uts], Some("b")).unwrap();
    let (net_a, net_b) = (pins_a.net.clone().unwrap(), pins_b.net.clone().unwrap());

    let host_port = free_port();
    let pod_a = pod(
        &id_a,
        &net_a,
        vec![PortMapping {
            protocol: Protocol::Tcp,
            container_port: 80,
            host_port,
            host_ip: None,
        }],
    );
    let pod_b = pod(&id_b, &net_b, vec![]);

    let st_a = cni.add(&pod_a).await.expect("ADD a");
    let st_b = cni.add(&pod_b).await.expect("ADD b");
    let subnet = |ip: &IpAddr| matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 99, 0]);
    assert_eq!(st_a.ips.len(), 1, "{:?}", st_a.raw);
    assert_eq!(st_b.ips.len(), 1, "{:?}", st_b.raw);
    let (ip_a, ip_b) = (st_a.ips[0], st_b.ips[0]);
    assert!(
        subnet(&ip_a) && subnet(&ip_b) && ip_a != ip_b,
        "{ip_a} {ip_b}"
    );
    assert_eq!(st_a.raw["cniVersion"], "1.0.0");
    assert_eq!(cni.cached_status(&id_a).unwrap().unwrap().ips, vec![ip_a]);

    // eth0 exists with that address inside the pod.
    let (ok, out) = nsenter(
        "net",
        &net_a,
        &["/usr/sbin/ip", "-o", "addr", "show", "eth0"],
    );
    assert!(ok && out.contains(&ip_a.to_string()), "{out}");

    // Pod to pod over the bridge, both ways.
    let (ok, out) = nsenter(
        "net",
        &net_a,
        &["/bin/busybox", "ping", "-c1", "-W2", &ip_b.to_string()],
    );
    assert!(ok, "ping a->b: {out}");
    let (ok, out) = nsenter(
        "net",
        &net_b,
        &["/bin/busybox", "ping", "-c1", "-W2", &ip_a.to_string()],
    );
    assert!(ok, "ping b->a: {out}");

    cni.check(&pod_b).await.expect("CHECK b");
    // Pod a has a hostPort: Debian's portmap (before containernetworking/plugins#819 was fixed)
    // fails CHECK on IPv4-only pods looking for an ip6tables chain it never created.
    match cni.check(&pod_a).await {
        Ok(()) => {}
        Err(NetError::Plugin {
            ref plugin,
            command: "CHECK",
            ref msg,
            ..
        }) if plugin == "portmap" && msg.contains("ipv6") => {}
        Err(e) => panic!("CHECK a: {e}"),
    }

    // hostPort: busybox httpd on :80 in pod a, reached through the host port.
    let www = tmp.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello-from-pod-a\n").unwrap();
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _httpd = KillOnDrop(
        Command::new("/usr/bin/nsenter")
            .arg(format!("--net={}", net_a.display()))
            .args(["/bin/busybox", "httpd", "-f", "-p", "80", "-h"])
            .arg(&www)
            .stdin(Stdio::null())
            .spawn()
            .expect("start httpd"),
    );
    // Directly to the pod first (httpd is up), then via the host port.
    let direct = SocketAddr::new(ip_a, 80);
    wait_until("httpd in pod a", || http_get(direct).is_ok());
    let mut last = String::new();
    let mut via_host = None;
    for host in ["127.0.0.1", "192.0.2.2", "10.99.0.1"] {
        let addr = SocketAddr::new(host.parse().unwrap(), host_port);
        match http_get(addr) {
            Ok(body) if body.contains("hello-from-pod-a") => {
                via_host = Some(addr);
                break;
            }
            Ok(body) => last = format!("{addr}: unexpected body {body:?}"),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    let via_host = via_host.unwrap_or_else(|| panic!("hostPort {host_port} not reachable: {last}"));
    eprintln!("hostPort reached via {via_host}");
    assert!(
        via_host.ip().is_loopback(),
        "hostPort via 127.0.0.1 expected, got {via_host}"
    );
    drop(_httpd);

    // DEL a with its netns alive.
    cni.del(&pod_a).await.expect("DEL a");
    assert!(
        rules_mentioning(&id_a).is_empty(),
        "{:#?}",
        rules_mentioning(&id_a)
    );
    let (_, out) = nsenter("net", &net_a, &["/usr/sbin/ip", "-o", "link", "show"]);
    assert!(!out.contains("eth0"), "eth0 must be gone from pod a: {out}");
    cni.del(&pod_a).await.expect("DEL a again (idempotent)");

    // DEL b after its netns was unpinned (the namespace is gone).
    unpin_namespaces(&dir_b).unwrap();
    cni.del(&pod_b).await.expect("DEL b without netns");
    cni.del(&pod_b).await.expect("DEL b again (idempotent)");
    match cni.check(&pod_b).await {
        Err(NetError::CheckUnavailable { .. }) => {}
        other => panic!("CHECK after DEL: {other:?}"),
    }
    assert!(cni.cached_status(&id_b).unwrap().is_none());
    unpin_namespaces(&dir_a).unwrap();

    wait_until("veths to disappear", || bridge_ports().is_empty());
    assert!(
        host_local_allocations(&net).is_empty(),
        "{:?}",
        host_local_allocations(&net)
    );
    assert!(
        mounts_under(tmp.path()).is_empty(),
        "{:#?}",
        mounts_under(tmp.path())
    );
    let cache_left: Vec<_> = std::fs::read_dir(tmp.path().join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(cache_left.is_empty(), "{cache_left:?}");
    let leftover = rules_mentioning(&id_b);
    if !leftover.is_empty() {
        // The bridge plugin cannot find the pod IP to un-masquerade without the netns; krio
        // callers should DEL before unpinning. Reported, then cleaned by HostCleanup.
        eprintln!("note: rules left by bridge DEL without netns: {leftover:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_add_is_rolled_back() {
    prerequisites();
    let _serial = SERIAL.lock().await;
    let tag = std::process::id();
    let net = format!("krio-testfail-{tag}");
    let id = format!("krionettf{tag}");
    let _cleanup = HostCleanup {
        net: net.clone(),
        ids: vec![id.clone()],
    };
    let tmp = tempdir();
    // A third plugin that fails ADD with a CNI error and succeeds DEL.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("krio-fail");
    krio_testutil::write_executable(
        &fake,
        "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"injected failure\"}'\n  exit 1\nfi\n",
    );
    let (cni, conf_dir) = cni_for(tmp.path(), Some(&bin));
    std::fs::write(
        conf_dir.join("10-fail.conflist"),
        conflist(&net, Some(serde_json::json!({"type": "krio-fail"}))),
    )
    .unwrap();

    let dir = tmp.path().join("p/ns");
    let _unpin = UnpinOnDrop(vec![dir.clone()]);
    let pins = pin_namespaces(&dir, &[NsKind::Net], None).unwrap();
    let p = pod(&id, pins.net.as_deref().unwrap(), vec![]);
    match cni.add(&p).await {
        Err(NetError::Add {
            source, rollback, ..
        }) => {
            assert!(rollback.is_empty(), "{rollback:?}");
            match *source {
                NetError::Plugin {
                    code: 11, ref msg, ..
                } => assert_eq!(msg, "injected failure"),
                ref other => panic!("unexpected cause {other:?}"),
            }
        }
        other => panic!("expected Add error, got {other:?}"),
    }
    assert!(
        host_local_allocations(&net).is_empty(),
        "{:?}",
        host_local_allocations(&net)
    );
    let (_, out) = nsenter(
        "net",
        pins.net.as_deref().unwrap(),
        &["/usr/sbin/ip", "-o", "link", "show"],
    );
    assert!(!out.contains("eth0"), "{out}");
    assert!(
        rules_mentioning(&id).is_empty(),
        "{:#?}",
        rules_mentioning(&id)
    );
    assert!(cni.cached_status(&id).unwrap().is_none());
    unpin_namespaces(&dir).unwrap();
    wait_until("veths to disappear", || bridge_ports().is_empty());
    assert!(mounts_under(tmp.path()).is_empty());
}

/// cniVersion 0.4.0 results from the real plugins, CHECK, and DEL from the cache by a new client
/// after the config file was removed (daemon restart + config change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v040_check_and_del_after_restart() {
    prerequisites();
    let _serial = SERIAL.lock().await;
    let tag = std::process::id();
    let net = format!("krio-test04-{tag}");
    let id = format!("krionett04{tag}");
    let _cleanup = HostCleanup {
        net: net.clone(),
        ids: vec![id.clone()],
    };
    let tmp = tempdir();
    let (cni, conf_dir) = cni_for(tmp.path(), None);
    let mut doc: serde_json::Value = serde_json::from_str(&conflist(&net, None)).unwrap();
    doc["cniVersion"] = "0.4.0".into();
    let conf = conf_dir.join("20-v04.conflist");
    std::fs::write(&conf, doc.to_string()).unwrap();

    let dir = tmp.path().join("p/ns");
    let _unpin = UnpinOnDrop(vec![dir.clone()]);
    let pins = pin_namespaces(&dir, &[NsKind::Net], None).unwrap();
    let p = pod(&id, pins.net.as_deref().unwrap(), vec![]);
    let st = cni.add(&p).await.expect("ADD 0.4.0");
    assert_eq!(st.raw["cniVersion"], "0.4.0");
    assert_eq!(st.raw["ips"][0]["version"], "4", "{}", st.raw);
    assert_eq!(st.ips.len(), 1);
    assert!(host_local_allocations(&net).contains(&st.ips[0].to_string()));
    cni.check(&p).await.expect("CHECK 0.4.0");

    // "Restart": a new client, and the config is gone.
    std::fs::remove_file(&conf).unwrap();
    drop(cni);
    let (cni2, _) = cni_for(tmp.path(), None);
    assert!(cni2.status().is_err());
    assert_eq!(cni2.cached_status(&id).unwrap().unwrap().ips, st.ips);
    cni2.del(&p).await.expect("DEL from cache");
    assert!(
        host_local_allocations(&net).is_empty(),
        "{:?}",
        host_local_allocations(&net)
    );
    assert!(
        rules_mentioning(&id).is_empty(),
        "{:#?}",
        rules_mentioning(&id)
    );
    let (_, out) = nsenter(
        "net",
        pins.net.as_deref().unwrap(),
        &["/usr/sbin/ip", "-o", "link", "show"],
    );
    assert!(!out.contains("eth0"), "{out}");
    // No cache and no config: nothing to do.
    cni2.del(&p).await.expect("DEL again");
    unpin_namespaces(&dir).unwrap();
    wait_until("veths to disappear", || bridge_ports().is_empty());
}
