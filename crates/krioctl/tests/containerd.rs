//! Integration test: krioctl against a private, real containerd (Debian's
//! 1.6 with its CRI plugin) under /tmp/krioctl-ctrd-<pid>.
//!
//! Needs root, `containerd`, `ctr`, `containerd-shim-runc-v2`, `runc` and the
//! static busybox at /bin/busybox. Fails loudly if any is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KRIOCTL: &str = env!("CARGO_BIN_EXE_krioctl");
const IMAGE: &str = "docker.io/library/busybox:latest";

fn require(bin: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "prerequisite missing: `{bin}` is not installed (apt-get install containerd runc busybox-static)");
}

struct Containerd {
    dir: PathBuf,
    sock: PathBuf,
    child: Child,
}

impl Containerd {
    fn start() -> Containerd {
        for b in ["containerd", "ctr", "containerd-shim-runc-v2", "runc"] {
            require(b);
        }
        assert!(
            Path::new("/bin/busybox").exists(),
            "prerequisite missing: /bin/busybox (busybox-static)"
        );
        let dir = PathBuf::from(format!("/tmp/krioctl-ctrd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("containerd.sock");
        let default = Command::new("containerd")
            .args(["config", "default"])
            .output()
            .unwrap();
        assert!(default.status.success(), "containerd config default failed");
        let mut cfg = String::from_utf8(default.stdout).unwrap();
        let d = dir.display();
        for (from, to) in [
            (
                "root = \"/var/lib/containerd\"".to_string(),
                format!("root = \"{d}/root\""),
            ),
            (
                "state = \"/run/containerd\"".to_string(),
                format!("state = \"{d}/state\""),
            ),
            (
                "address = \"/run/containerd/containerd.sock\"".to_string(),
                format!("address = \"{}\"", sock.display()),
            ),
            (
                "restrict_oom_score_adj = false".to_string(),
                "restrict_oom_score_adj = true".to_string(),
            ),
            (
                "bin_dir = \"/opt/cni/bin\"".to_string(),
                "bin_dir = \"/usr/lib/cni\"".to_string(),
            ),
            (
                "conf_dir = \"/etc/cni/net.d\"".to_string(),
                format!("conf_dir = \"{d}/cni\""),
            ),
            (
                "path = \"/opt/containerd\"".to_string(),
                format!("path = \"{d}/opt\""),
            ),
            (
                "sandbox_image = \"registry.k8s.io/pause:3.6\"".to_string(),
                format!("sandbox_image = \"{IMAGE}\""),
            ),
        ] {
            assert!(
                cfg.contains(&from),
                "containerd default config lacks {from}"
            );
            cfg = cfg.replacen(&from, &to, 1);
        }
        let cfg_path = dir.join("config.toml");
        fs::write(&cfg_path, cfg).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning containerd");
        let c = Containerd { dir, sock, child };
        // Wait until the CRI plugin answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if c.sock.exists() {
                let o = c.krioctl(&["version"]);
                if o.status.success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up; log:\n{}",
                fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    fn krioctl(&self, args: &[&str]) -> Output {
        Command::new(KRIOCTL)
            .env_remove("CONTAINER_RUNTIME_ENDPOINT")
            .env_remove("IMAGE_SERVICE_ENDPOINT")
            .arg("-r")
            .arg(self.endpoint())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs krioctl and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.krioctl(args);
        assert!(
            o.status.success(),
            "krioctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs krioctl and asserts failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.krioctl(args);
        assert!(
            !o.status.success(),
            "krioctl {args:?} unexpectedly succeeded"
        );
        String::from_utf8(o.stderr).unwrap()
    }

    /// Imports a one-layer busybox image (built here as an OCI archive) into
    /// the k8s.io namespace.
    fn import_busybox(&self) {
        let work = self.dir.join("img");
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let script = format!(
            r#"set -e
cd {work}
mkdir -p rootfs/bin rootfs/tmp blobs/sha256
cp /bin/busybox rootfs/bin/busybox
for a in sh sleep echo cat ls; do ln rootfs/bin/busybox rootfs/bin/$a; done
tar --numeric-owner --owner=0 --group=0 -C rootfs -cf layer.tar bin tmp
diff=$(sha256sum layer.tar | cut -d' ' -f1)
gzip -n layer.tar
ld=$(sha256sum layer.tar.gz | cut -d' ' -f1); ls=$(stat -c %s layer.tar.gz)
mv layer.tar.gz blobs/sha256/$ld
printf '{{"architecture":"{arch}","os":"linux","config":{{"Entrypoint":["/bin/sleep","1000000"],"Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' $diff > config.json
cd_=$(sha256sum config.json | cut -d' ' -f1); cs=$(stat -c %s config.json)
mv config.json blobs/sha256/$cd_
printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}}]}}' $cd_ $cs $ld $ls > manifest.json
md=$(sha256sum manifest.json | cut -d' ' -f1); ms=$(stat -c %s manifest.json)
mv manifest.json blobs/sha256/$md
printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{{"io.containerd.image.name":"{IMAGE}","org.opencontainers.image.ref.name":"latest"}}}}]}}' $md $ms > index.json
echo '{{"imageLayoutVersion":"1.0.0"}}' > oci-layout
tar -cf image.tar oci-layout index.json blobs
"#,
            work = work.display()
        );
        fs::create_dir_all(&work).unwrap();
        let o = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(
            o.status.success(),
            "building the test image: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = Command::new("ctr")
            .arg("-a")
            .arg(&self.sock)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(work.join("image.tar"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ctr import: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims we caused to be started carry our socket path on their command line.
        let needle = self.sock.display().to_string();
        if let Ok(entries) = fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                }
            }
        }
        // Unmount anything left under our directory, deepest first.
        let prefix = self.dir.display().to_string();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn krioctl_against_containerd() {
    let c = Containerd::start();

    // version
    let v = c.ok(&["version"]);
    assert!(v.contains("RuntimeName:  containerd"), "{v}");
    assert!(v.contains("RuntimeApiVersion:  v1"), "{v}");
    assert!(v.starts_with("Version:  "), "{v}");
    // A plain socket path works too, and -o json gives camelCase.
    let o = Command::new(KRIOCTL)
        .arg("-r")
        .arg(&c.sock)
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["runtimeName"], "containerd");

    // info: status conditions plus containerd's verbose info keys, parsed.
    let info: serde_json::Value = serde_json::from_str(&c.ok(&["info"])).unwrap();
    let conds = info["status"]["conditions"].as_array().expect("conditions");
    assert!(conds.iter().any(|c| c["type"] == "RuntimeReady"), "{info}");
    assert!(
        info["config"].is_object(),
        "containerd's `config` info must be parsed JSON: {info}"
    );

    // images / pods / ps on an empty runtime.
    let imgs = c.ok(&["images"]);
    assert_eq!(imgs.lines().count(), 1, "{imgs}");
    assert!(imgs.starts_with("IMAGE "), "{imgs}");
    let j: serde_json::Value = serde_json::from_str(&c.ok(&["images", "-o", "json"])).unwrap();
    assert_eq!(j["images"], serde_json::json!([]));
    let pods = c.ok(&["pods"]);
    assert!(pods.starts_with("POD ID"), "{pods}");
    assert_eq!(pods.lines().count(), 1);
    let j: serde_json::Value = serde_json::from_str(&c.ok(&["pods", "-o", "json"])).unwrap();
    assert_eq!(j["items"], serde_json::json!([]));
    assert!(c.ok(&["ps", "-a"]).starts_with("CONTAINER "));
    assert_eq!(c.ok(&["ps", "-aq"]), "");

    // Errors: gRPC code and message, non-zero exit.
    let e = c.fails(&["inspecti", "no/such:image"]);
    assert!(e.contains("no such image"), "{e}");
    let e = c.fails(&["rmp", "abc"]);
    assert!(e.contains("not found"), "{e}");
    let e = c.fails(&["pull", "127.0.0.1:1/nothing:latest"]);
    assert!(e.contains("PullImage: rpc error: code = "), "{e}");
    let e = c.fails(&["inspect", "deadbeef"]);
    assert!(e.contains("container \"deadbeef\" not found"), "{e}");
    let bad = c.dir.join("bad.json");
    fs::write(&bad, r#"{"metadata": {"name": 7}}"#).unwrap();
    let e = c.fails(&["runp", bad.to_str().unwrap()]);
    assert!(e.contains("metadata.name"), "{e}");
    let e = Command::new(KRIOCTL)
        .args(["-r", "/nonexistent/x.sock", "version"])
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("/nonexistent/x.sock"));

    // A whole lifecycle with an imported busybox image (host network: no CNI).
    c.import_busybox();
    let imgs = c.ok(&["images"]);
    assert!(imgs.contains("docker.io/library/busybox"), "{imgs}");
    assert!(imgs.lines().nth(1).unwrap().contains("latest"), "{imgs}");
    let id = c.ok(&["images", "-q"]);
    assert!(id.starts_with("sha256:"), "{id}");
    let insp: serde_json::Value = serde_json::from_str(&c.ok(&["inspecti", "busybox"])).unwrap();
    assert!(insp["status"]["repoTags"][0]
        .as_str()
        .unwrap()
        .contains("busybox"));

    let logs_dir = c.dir.join("logs");
    let pod_cfg = c.dir.join("pod.yaml");
    fs::write(
        &pod_cfg,
        format!(
            "metadata: {{name: p1, namespace: default, uid: u1, attempt: 1}}\nlog_directory: {}\nlinux:\n  security_context:\n    namespace_options: {{network: NODE}}\n",
            logs_dir.display()
        ),
    )
    .unwrap();
    let ctr_cfg = c.dir.join("ctr.json");
    fs::write(
        &ctr_cfg,
        r#"{"metadata":{"name":"c1"},"image":{"image":"busybox"},
            "command":["/bin/sh","-c","echo hello out; echo oops >&2; echo second; sleep 1; echo late"],
            "log_path":"c1.log","linux":{}}"#,
    )
    .unwrap();
    let pod = c
        .ok(&["runp", pod_cfg.to_str().unwrap()])
        .trim()
        .to_string();
    assert_eq!(pod.len(), 64, "{pod}");
    let pods = c.ok(&["pods"]);
    assert!(pods.contains("p1") && pods.contains("Ready"), "{pods}");
    assert!(pods.contains(&pod[..13]), "{pods}");
    let insp: serde_json::Value = serde_json::from_str(&c.ok(&["inspectp", &pod[..8]])).unwrap();
    assert_eq!(insp["status"]["state"], "SANDBOX_READY", "{insp}");
    assert_eq!(c.ok(&["pods", "-q", "--name", "^p1$"]).trim(), pod);

    let ctr = c
        .ok(&[
            "create",
            &pod[..10],
            ctr_cfg.to_str().unwrap(),
            pod_cfg.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    assert_eq!(c.ok(&["ps", "-a", "-q"]).trim(), ctr);
    assert!(c.ok(&["ps", "-a"]).contains("Created"));
    assert_eq!(c.ok(&["start", &ctr[..12]]).trim(), ctr);
    // Follow until the container exits: every line, split by stream.
    let o = c.krioctl(&["logs", "-f", &ctr[..12]]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello out\nsecond\nlate\n"
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "oops\n");
    let o = c.krioctl(&["logs", "--tail", "1", "-t", &ctr]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.ends_with(" late\n") && out.starts_with("20"), "{out}");
    let insp: serde_json::Value = serde_json::from_str(&c.ok(&["inspect", &ctr])).unwrap();
    assert_eq!(insp["status"]["state"], "CONTAINER_EXITED");
    assert_eq!(insp["status"]["exitCode"], 0);
    let ps = c.ok(&["ps", "-a"]);
    assert!(
        ps.contains("Exited") && ps.contains("c1") && ps.contains("p1"),
        "{ps}"
    );
    assert_eq!(
        c.ok(&["ps", "-q"]),
        "",
        "exited containers are hidden without -a"
    );

    assert_eq!(c.ok(&["rm", &ctr]).trim(), ctr);
    let e = c.fails(&["rmp", &pod]);
    assert!(e.contains("stop it first"), "{e}");
    assert!(c.ok(&["rmp", "-f", &pod]).contains("Removed sandbox"));
    assert_eq!(c.ok(&["pods", "-q"]), "");

    // run = runp + create + start, then exec through ExecSync.
    let ctr_cfg2 = c.dir.join("ctr2.json");
    fs::write(
        &ctr_cfg2,
        r#"{"metadata":{"name":"c2"},"image":{"image":"busybox"},"command":["/bin/sleep","60"],"log_path":"c2.log"}"#,
    )
    .unwrap();
    let ctr2 = c
        .ok(&["run", ctr_cfg2.to_str().unwrap(), pod_cfg.to_str().unwrap()])
        .trim()
        .to_string();
    assert!(c.ok(&["ps"]).contains("Running"));
    let o = c.krioctl(&["exec", &ctr2, "/bin/sh", "-c", "echo in-exec; exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "in-exec\n");
    assert_eq!(c.ok(&["stop", "-t", "1", &ctr2]).trim(), ctr2);
    assert!(c.ok(&["rmp", "-f", "-a"]).contains("Removed sandbox"));
    assert_eq!(c.ok(&["ps", "-aq"]), "");
    assert!(c
        .ok(&["rmi", "busybox"])
        .contains("Deleted: docker.io/library/busybox:latest"));
    assert_eq!(c.ok(&["images", "-q"]), "");
}
