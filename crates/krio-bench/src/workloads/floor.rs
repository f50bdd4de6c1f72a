//! The `floor` of pod start: what any runtime must at least do to run the benchmark's container,
//! done directly, without a runtime, and timed by the same harness.
//!
//! Per pod: a network namespace pinned by a bind mount (as krio does it, `krio_net::pin_namespaces`,
//! which also brings `lo` up), a CNI ADD of every plugin of the same conflist the runtimes use
//! (plugins invoked as the CNI spec says: `CNI_COMMAND` & co. in the environment, the network
//! configuration on stdin, each plugin's result passed to the next as `prevResult`), an overlay
//! mount of the image's unpacked layer as the rootfs, then `runc create` and `runc start` of a
//! bundle from `runc spec` running the same command. Teardown: `runc delete --force`, CNI DEL (in
//! reverse order, with the ADD result as `prevResult`), unmount and unpin.
//!
//! Everything here blocks (processes and syscalls); call it outside async code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use super::start::StartParams;
use crate::error::{BenchError, Result};
use crate::results::{ms_since, Unit, WorkloadResult};

/// What the floor needs from the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloorConfig {
    /// The image's unpacked filesystem (overlay lower directory; never written).
    pub lower: PathBuf,
    /// Scratch directory for bundles, namespace pins and runc's state (created; must be absolute).
    pub work: PathBuf,
    /// The CNI conflist (`.conflist`) the runtimes use.
    pub conflist: PathBuf,
    /// Directory of the CNI plugin binaries (`CNI_PATH`).
    pub cni_bin: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// The container's command (argv).
    pub command: Vec<String>,
}

/// A pod the floor started.
#[derive(Clone, Debug)]
pub struct FloorPod {
    id: String,
    bundle: PathBuf,
    ns_dir: PathBuf,
    netns: Option<PathBuf>,
    cni_result: Option<Value>,
    mounted: bool,
    created: bool,
}

/// Per-step times of one floor pod start, milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloorStartTimes {
    /// Pinning the network namespace.
    pub netns_ms: f64,
    /// CNI ADD of every plugin.
    pub cni_add_ms: f64,
    /// The overlay mount of the rootfs.
    pub rootfs_mount_ms: f64,
    /// Writing config.json and `runc create`.
    pub runc_create_ms: f64,
    /// `runc start`.
    pub runc_start_ms: f64,
    /// All of it.
    pub total_ms: f64,
}

/// Per-step times of one floor pod teardown, milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloorTeardownTimes {
    /// `runc delete --force`.
    pub runc_delete_ms: f64,
    /// CNI DEL of every plugin.
    pub cni_del_ms: f64,
    /// All of it (including unmount and unpin).
    pub total_ms: f64,
}

fn floor_err(step: &'static str, id: &str, reason: impl std::fmt::Display) -> BenchError {
    BenchError::Floor {
        step,
        context: id.to_owned(),
        reason: reason.to_string(),
    }
}

/// The network configuration given to plugin `index` of `conflist` (CNI spec, "Section 5:
/// Execution of network configurations"): the plugin's object with the list's `name` and
/// `cniVersion`, plus `prevResult` when there is one.
///
/// # Errors
/// A message when the conflist has no `plugins` array or the entry is not an object.
pub fn plugin_conf(
    conflist: &Value,
    index: usize,
    prev: Option<&Value>,
) -> std::result::Result<Value, String> {
    let plugins = conflist["plugins"]
        .as_array()
        .ok_or("the conflist has no \"plugins\" array")?;
    let mut conf = plugins
        .get(index)
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| format!("plugins[{index}] is not an object"))?;
    conf.insert("name".into(), conflist["name"].clone());
    conf.insert("cniVersion".into(), conflist["cniVersion"].clone());
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    Ok(Value::Object(conf))
}

/// Runs one CNI plugin: `CNI_COMMAND=command`, configuration on stdin; returns its stdout as JSON
/// (`Value::Null` when it printed nothing, as DEL may).
fn run_plugin(
    cfg: &FloorConfig,
    command: &str,
    id: &str,
    netns: &Path,
    conf: &Value,
) -> std::result::Result<Value, String> {
    let ty = conf["type"].as_str().ok_or("plugin without \"type\"")?;
    if ty.contains('/') {
        return Err(format!("plugin type {ty:?} contains '/'"));
    }
    let mut child = Command::new(cfg.cni_bin.join(ty))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &cfg.cni_bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {ty}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.to_string().as_bytes())
            .map_err(|e| format!("writing {ty}'s stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {ty}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{ty} {command} failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{ty}'s result is not JSON: {e}"))
}

/// Runs `runc --root <work>/runc ARGS`. Its stderr goes to the file `err` (not a pipe: `runc
/// create` hands its stdio to the container, which would hold a pipe open for as long as it runs).
fn runc(cfg: &FloorConfig, step: &'static str, id: &str, err: &Path, args: &[&str]) -> Result<()> {
    let file = std::fs::File::create(err)
        .map_err(|e| floor_err(step, id, format!("creating {}: {e}", err.display())))?;
    let status = Command::new(&cfg.runc)
        .arg("--root")
        .arg(cfg.work.join("runc"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .map_err(|e| floor_err(step, id, format!("running {}: {e}", cfg.runc.display())))?;
    if !status.success() {
        let text = std::fs::read_to_string(err).unwrap_or_default();
        return Err(floor_err(step, id, format!("{status}: {}", text.trim())));
    }
    Ok(())
}

/// The OCI config of a floor container: `template` (from `runc spec`) with the command, a
/// writable `rootfs` and the network namespace at `netns`; no terminal.
pub fn bundle_config(template: &Value, command: &[String], netns: &Path) -> Value {
    let mut c = template.clone();
    c["process"]["terminal"] = Value::Bool(false);
    c["process"]["args"] = Value::from(command.to_vec());
    c["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
    let netns = netns.display().to_string();
    let mut namespaces: Vec<Value> = c["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["type"] != "network")
        .collect();
    namespaces.push(serde_json::json!({"type": "network", "path": netns}));
    c["linux"]["namespaces"] = Value::Array(namespaces);
    c
}

/// The floor's fixed inputs, read once: the conflist and the `runc spec` template.
#[derive(Clone, Debug)]
pub struct Floor {
    cfg: FloorConfig,
    conflist: Value,
    template: Value,
}

impl Floor {
    /// Reads the conflist and makes the `runc spec` template under `cfg.work`.
    ///
    /// # Errors
    /// [`BenchError::Io`], [`BenchError::Json`], [`BenchError::Floor`] (`runc spec`).
    pub fn new(cfg: FloorConfig) -> Result<Floor> {
        if !cfg.work.is_absolute() || !cfg.lower.is_dir() {
            return Err(BenchError::InvalidParam {
                field: "work/lower",
                reason: format!(
                    "work must be absolute ({}) and lower an existing directory ({})",
                    cfg.work.display(),
                    cfg.lower.display()
                ),
            });
        }
        let text = std::fs::read_to_string(&cfg.conflist)
            .map_err(|e| BenchError::io("reading", &cfg.conflist, e))?;
        let conflist: Value = serde_json::from_str(&text).map_err(|source| BenchError::Json {
            path: cfg.conflist.clone(),
            source,
        })?;
        let tdir = cfg.work.join("spec-template");
        let _ = std::fs::remove_dir_all(&tdir);
        std::fs::create_dir_all(&tdir).map_err(|e| BenchError::io("creating", &tdir, e))?;
        let out = Command::new(&cfg.runc)
            .arg("spec")
            .arg("--bundle")
            .arg(&tdir)
            .output()
            .map_err(|e| floor_err("runc spec", "template", e))?;
        if !out.status.success() {
            return Err(floor_err(
                "runc spec",
                "template",
                String::from_utf8_lossy(&out.stderr),
            ));
        }
        let path = tdir.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| BenchError::io("reading", &path, e))?;
        let template = serde_json::from_str(&text).map_err(|source| BenchError::Json {
            path: path.clone(),
            source,
        })?;
        Ok(Floor {
            cfg,
            conflist,
            template,
        })
    }

    /// Starts floor pod `id` (its container running when this returns). On error the steps
    /// done are undone (best effort).
    ///
    /// # Errors
    /// [`BenchError::Floor`] naming the failed step.
    pub fn start(&self, id: &str) -> Result<(FloorPod, FloorStartTimes)> {
        let mut pod = FloorPod {
            id: id.to_owned(),
            bundle: self.cfg.work.join("bundles").join(id),
            ns_dir: self.cfg.work.join("ns").join(id),
            netns: None,
            cni_result: None,
            mounted: false,
            created: false,
        };
        match self.start_steps(&mut pod) {
            Ok(t) => Ok((pod, t)),
            Err(e) => {
                let _ = self.teardown(pod);
                Err(e)
            }
        }
    }

    fn start_steps(&self, pod: &mut FloorPod) -> Result<FloorStartTimes> {
        let id = pod.id.clone();
        let mut t = FloorStartTimes::default();
        let t0 = Instant::now();
        let pins = krio_net::pin_namespaces(&pod.ns_dir, &[krio_net::NsKind::Net], None)
            .map_err(|e| floor_err("netns", &id, e))?;
        let netns = pins
            .net
            .ok_or_else(|| floor_err("netns", &id, "no network namespace pinned"))?;
        pod.netns = Some(netns.clone());
        t.netns_ms = ms_since(t0);

        let s = Instant::now();
        let n = self.conflist["plugins"].as_array().map_or(0, Vec::len);
        let mut prev: Option<Value> = None;
        for i in 0..n {
            let conf = plugin_conf(&self.conflist, i, prev.as_ref())
                .map_err(|e| floor_err("cni ADD", &id, e))?;
            let res = run_plugin(&self.cfg, "ADD", &id, &netns, &conf)
                .map_err(|e| floor_err("cni ADD", &id, e))?;
            prev = Some(res);
            pod.cni_result = prev.clone();
        }
        t.cni_add_ms = ms_since(s);

        let s = Instant::now();
        let rootfs = pod.bundle.join("rootfs");
        for d in ["rootfs", "upper", "work"] {
            let p = pod.bundle.join(d);
            std::fs::create_dir_all(&p).map_err(|e| floor_err("mount", &id, e))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.cfg.lower.display(),
            pod.bundle.join("upper").display(),
            pod.bundle.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| {
            floor_err(
                "mount",
                &id,
                format!("overlay on {}: {e}", rootfs.display()),
            )
        })?;
        pod.mounted = true;
        t.rootfs_mount_ms = ms_since(s);

        let s = Instant::now();
        let config = bundle_config(&self.template, &self.cfg.command, &netns);
        let cpath = pod.bundle.join("config.json");
        std::fs::write(&cpath, config.to_string()).map_err(|e| floor_err("runc create", &id, e))?;
        let bundle = pod.bundle.display().to_string();
        pod.created = true;
        runc(
            &self.cfg,
            "runc create",
            &id,
            &pod.bundle.join("create.err"),
            &["create", "--bundle", &bundle, &id],
        )?;
        t.runc_create_ms = ms_since(s);

        let s = Instant::now();
        runc(
            &self.cfg,
            "runc start",
            &id,
            &pod.bundle.join("start.err"),
            &["start", &id],
        )?;
        t.runc_start_ms = ms_since(s);
        t.total_ms = ms_since(t0);
        Ok(t)
    }

    /// Tears floor pod down: `runc delete --force`, CNI DEL, unmount, unpin, remove its bundle.
    /// Every step is attempted; the first error is returned.
    ///
    /// # Errors
    /// [`BenchError::Floor`] naming the first failed step.
    pub fn teardown(&self, pod: FloorPod) -> Result<FloorTeardownTimes> {
        let id = pod.id.clone();
        let mut first: Option<BenchError> = None;
        let mut t = FloorTeardownTimes::default();
        let t0 = Instant::now();
        if pod.created {
            let err = pod.bundle.join("delete.err");
            if let Err(e) = runc(
                &self.cfg,
                "runc delete",
                &id,
                &err,
                &["delete", "--force", &id],
            ) {
                first.get_or_insert(e);
            }
        }
        t.runc_delete_ms = ms_since(t0);
        let s = Instant::now();
        if let Some(netns) = &pod.netns {
            let n = self.conflist["plugins"].as_array().map_or(0, Vec::len);
            for i in (0..n).rev() {
                let r = plugin_conf(&self.conflist, i, pod.cni_result.as_ref())
                    .and_then(|conf| run_plugin(&self.cfg, "DEL", &id, netns, &conf));
                if let Err(e) = r {
                    first.get_or_insert(floor_err("cni DEL", &id, e));
                }
            }
        }
        t.cni_del_ms = ms_since(s);
        if pod.mounted {
            if let Err(e) =
                nix::mount::umount2(&pod.bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH)
            {
                first.get_or_insert(floor_err("umount", &id, e));
            }
        }
        if let Err(e) = krio_net::unpin_namespaces(&pod.ns_dir) {
            first.get_or_insert(floor_err("unpin", &id, e));
        }
        let _ = std::fs::remove_dir_all(&pod.bundle);
        t.total_ms = ms_since(t0);
        match first {
            Some(e) => Err(e),
            None => Ok(t),
        }
    }
}

/// Runs the floor with the start workload's sizes: warm-ups, `sequential_runs` pods one after
/// another, then `parallel_rounds` of `parallel_width` pods at once (one thread each). Returns the
/// `start` and `teardown` results under runtime `floor`. Metrics (ms): start — `total`,
/// `parallel_total`, `parallel_round_wall`, `netns`, `cni_add`, `rootfs_mount`, `runc_create`,
/// `runc_start`; teardown — `total`, `parallel_total`, `parallel_round_wall`, `runc_delete`,
/// `cni_del`. Every pod made is torn down, also on failure.
///
/// # Errors
/// [`BenchError::InvalidParam`] for zero sizes; [`BenchError::Floor`] from any step.
pub fn run(
    cfg: FloorConfig,
    round: u32,
    p: StartParams,
) -> Result<(WorkloadResult, WorkloadResult)> {
    if p.sequential_runs == 0 || p.parallel_width == 0 {
        return Err(BenchError::InvalidParam {
            field: "sequential_runs/parallel_width",
            reason: "must be at least 1".to_owned(),
        });
    }
    let floor = Floor::new(cfg)?;
    let mut start = WorkloadResult::new("floor", "start", round);
    let mut down = WorkloadResult::new("floor", "teardown", round);
    for r in [&mut start, &mut down] {
        r.param("sequential_runs", p.sequential_runs);
        r.param("parallel_width", p.parallel_width);
        r.param("parallel_rounds", p.parallel_rounds);
        r.param("command", floor.cfg.command.clone());
        r.param("conflist", floor.cfg.conflist.display().to_string());
    }
    let push_start = |r: &mut WorkloadResult, t: &FloorStartTimes| {
        r.push("netns", Unit::Ms, t.netns_ms);
        r.push("cni_add", Unit::Ms, t.cni_add_ms);
        r.push("rootfs_mount", Unit::Ms, t.rootfs_mount_ms);
        r.push("runc_create", Unit::Ms, t.runc_create_ms);
        r.push("runc_start", Unit::Ms, t.runc_start_ms);
    };
    let pid = std::process::id();
    for i in 0..p.warmup {
        let (pod, _) = floor.start(&format!("floor-{pid}-w{round}-{i}"))?;
        floor.teardown(pod)?;
    }
    for i in 0..p.sequential_runs {
        let (pod, t) = floor.start(&format!("floor-{pid}-s{round}-{i}"))?;
        push_start(&mut start, &t);
        start.push("total", Unit::Ms, t.total_ms);
        let d = floor.teardown(pod)?;
        down.push("runc_delete", Unit::Ms, d.runc_delete_ms);
        down.push("cni_del", Unit::Ms, d.cni_del_ms);
        down.push("total", Unit::Ms, d.total_ms);
    }
    for pr in 0..p.parallel_rounds {
        let t0 = Instant::now();
        let started: Vec<Result<(FloorPod, FloorStartTimes)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..p.parallel_width)
                .map(|i| {
                    let f = &floor;
                    s.spawn(move || f.start(&format!("floor-{pid}-p{round}-{pr}-{i}")))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(floor_err("start", "parallel", "a start thread panicked"))
                    })
                })
                .collect()
        });
        let wall = ms_since(t0);
        let mut pods = Vec::new();
        let mut first_err = None;
        for r in started {
            match r {
                Ok((pod, t)) => {
                    start.push("parallel_total", Unit::Ms, t.total_ms);
                    pods.push(pod);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        start.push("parallel_round_wall", Unit::Ms, wall);
        let t0 = Instant::now();
        let downs: Vec<Result<FloorTeardownTimes>> = std::thread::scope(|s| {
            let hs: Vec<_> = pods
                .into_iter()
                .map(|pod| {
                    let f = &floor;
                    s.spawn(move || f.teardown(pod))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(floor_err(
                            "teardown",
                            "parallel",
                            "a teardown thread panicked",
                        ))
                    })
                })
                .collect()
        });
        down.push("parallel_round_wall", Unit::Ms, ms_since(t0));
        for d in downs {
            match d {
                Ok(d) => down.push("parallel_total", Unit::Ms, d.total_ms),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    start.finish();
    down.finish();
    Ok((start, down))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_conf_follows_the_spec() {
        let list = serde_json::json!({
            "cniVersion": "1.0.0", "name": "net",
            "plugins": [{"type": "bridge", "bridge": "b0"}, {"type": "portmap"}]
        });
        let c = plugin_conf(&list, 0, None).unwrap();
        assert_eq!(
            c,
            serde_json::json!({"type": "bridge", "bridge": "b0", "name": "net", "cniVersion": "1.0.0"})
        );
        let prev = serde_json::json!({"ips": []});
        let c = plugin_conf(&list, 1, Some(&prev)).unwrap();
        assert_eq!(c["prevResult"], prev);
        assert_eq!(c["name"], "net");
        assert!(plugin_conf(&list, 2, None).is_err());
        assert!(plugin_conf(&serde_json::json!({}), 0, None).is_err());
    }

    #[test]
    fn bundle_config_replaces_the_network_namespace() {
        let t = serde_json::json!({
            "process": {"terminal": true, "args": ["sh"]},
            "root": {"path": "rootfs", "readonly": true},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]}
        });
        let c = bundle_config(
            &t,
            &["/bin/sleep".to_owned(), "3600".to_owned()],
            Path::new("/x/net"),
        );
        assert_eq!(c["process"]["terminal"], false);
        assert_eq!(
            c["process"]["args"],
            serde_json::json!(["/bin/sleep", "3600"])
        );
        assert_eq!(c["root"]["readonly"], false);
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns.len(), 3);
        assert_eq!(
            ns.iter().filter(|n| n["type"] == "network").count(),
            1,
            "{ns:?}"
        );
        assert!(ns.contains(&serde_json::json!({"type": "network", "path": "/x/net"})));
    }
}
