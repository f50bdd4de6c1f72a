//! Plugin execution (CNI spec section 2 "Execution Protocol").

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::config::NetworkConfigList;
use super::result::parse_error;
use crate::NetError;

/// `PATH` for plugins when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Del,
    Check,
}

impl Op {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
            Op::Check => "CHECK",
        }
    }
}

/// The per-call parameters other than the network config (spec "Parameters").
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    pub container_id: String,
    /// `CNI_NETNS`; empty when the namespace no longer exists (DEL only).
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH` search list.
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

/// Finds the executable for plugin `ty` in `bin_dirs` (first match wins, symlinks followed).
pub(crate) fn find_plugin(ty: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, NetError> {
    for dir in bin_dirs {
        let p = dir.join(ty);
        if let Ok(md) = std::fs::metadata(&p) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(NetError::PluginNotFound {
        plugin: ty.to_owned(),
        dirs: bin_dirs.to_vec(),
    })
}

/// Builds the stdin document for plugin `index` of `list` (libcni `buildOneConfig` +
/// `injectRuntimeConfig`): the plugin object plus the list's `name` and `cniVersion`, `prevResult`
/// when given, and `runtimeConfig` holding each capability that the plugin enables in its
/// `capabilities` map and the runtime supplies in `caps`.
pub(crate) fn plugin_stdin(
    list: &NetworkConfigList,
    index: usize,
    prev_result: Option<&Value>,
    caps: &Map<String, Value>,
) -> Value {
    let mut conf = list.plugins.get(index).cloned().unwrap_or_default();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    match prev_result {
        Some(prev) => {
            conf.insert("prevResult".into(), prev.clone());
        }
        None => {
            conf.remove("prevResult");
        }
    }
    let mut runtime = Map::new();
    if let Some(Value::Object(declared)) = conf.get("capabilities") {
        for (cap, enabled) in declared {
            if enabled.as_bool() == Some(true) {
                if let Some(v) = caps.get(cap) {
                    runtime.insert(cap.clone(), v.clone());
                }
            }
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

/// The most bytes of a plugin's stdout kept (a result document is a few KiB); the rest is read
/// and discarded, and such a result is refused.
const MAX_PLUGIN_STDOUT: usize = 1 << 20;

/// The most bytes of a plugin's stderr kept (for the error message and the debug log).
const MAX_PLUGIN_STDERR: usize = 64 << 10;

/// What a plugin run gave back, each stream cut at its limit.
struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    /// Whether stdout went past [`MAX_PLUGIN_STDOUT`].
    stdout_cut: bool,
    stderr: Vec<u8>,
}

/// Reads `pipe` to EOF, keeping the first `limit` bytes and discarding the rest as it comes, so
/// a plugin printing without end costs no memory. Returns the kept bytes and whether any were
/// discarded. A read error ends the stream.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    limit: usize,
) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let (mut kept, mut cut) = (Vec::new(), false);
    let Some(mut pipe) = pipe else {
        return (kept, cut);
    };
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        cut |= n > room;
    }
    (kept, cut)
}

/// Executes one plugin and returns its parsed stdout (`None` when it printed nothing).
///
/// The child's environment is built, not inherited: the daemon's `PATH` (plugins need it for
/// iptables; the system default when the daemon has none) and the `CNI_*` variables (CNI spec
/// section 2 "Parameters"), nothing else. It is killed when `inv.timeout` elapses, and has no
/// inherited fds besides stdio (Rust opens everything `O_CLOEXEC`). Its output is read as it
/// comes and bounded: at most 1 MiB of stdout (more is refused as `PluginOutput`) and 64 KiB of
/// stderr are kept.
#[tracing::instrument(
    level = "info",
    name = "cni_plugin",
    skip_all,
    fields(otel.name = %format_args!("CNI {} {plugin_type}", op.as_str()), plugin = plugin_type)
)]
pub(crate) async fn exec_plugin(
    op: Op,
    plugin_type: &str,
    bin: &Path,
    stdin_doc: &Value,
    inv: &Invocation,
) -> Result<Option<Value>, NetError> {
    let cni_path = inv
        .bin_dirs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let input = serde_json::to_vec(stdin_doc).map_err(|e| NetError::InvalidConfig {
        path: PathBuf::from(plugin_type),
        reason: format!("serialize plugin config: {e}"),
    })?;
    let path = std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", path)
        .env("CNI_COMMAND", op.as_str())
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", &inv.netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_ARGS", &inv.args)
        .env("CNI_PATH", cni_path)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| NetError::PluginExec {
            path: bin.to_path_buf(),
            source,
        })?;
    let stdin = child.stdin.take();
    let run = async move {
        let feed = async move {
            if let Some(mut s) = stdin {
                // A plugin that exits without reading stdin gives EPIPE; its exit status tells.
                let _ = s.write_all(&input).await;
                let _ = s.shutdown().await;
            }
        };
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (_, stdout, stderr, status) = tokio::join!(
            feed,
            read_capped(stdout, MAX_PLUGIN_STDOUT),
            read_capped(stderr, MAX_PLUGIN_STDERR),
            child.wait()
        );
        status.map(|status| Output {
            status,
            stdout: stdout.0,
            stdout_cut: stdout.1,
            stderr: stderr.0,
        })
    };
    let out = match tokio::time::timeout(inv.timeout, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => {
            return Err(NetError::PluginExec {
                path: bin.to_path_buf(),
                source,
            })
        }
        Err(_) => {
            return Err(NetError::PluginTimeout {
                plugin: plugin_type.to_owned(),
                command: op.as_str(),
                timeout: inv.timeout,
            })
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(match parse_error(&out.stdout) {
            Some(e) => NetError::Plugin {
                plugin: plugin_type.to_owned(),
                command: op.as_str(),
                code: e.code,
                msg: e.msg,
                details: e.details,
            },
            None => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let text = [stdout.trim(), stderr.trim()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" / ");
                NetError::Plugin {
                    plugin: plugin_type.to_owned(),
                    command: op.as_str(),
                    code: 0,
                    msg: format!("{} (no error document): {text}", out.status),
                    details: String::new(),
                }
            }
        });
    }
    if !stderr.trim().is_empty() {
        tracing::debug!(plugin = plugin_type, command = op.as_str(), stderr = %stderr.trim(), "CNI plugin stderr");
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if out.stdout_cut {
        return Err(NetError::PluginOutput {
            plugin: plugin_type.to_owned(),
            command: op.as_str(),
            reason: format!("more than {MAX_PLUGIN_STDOUT} bytes on stdout"),
        });
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| NetError::PluginOutput {
        plugin: plugin_type.to_owned(),
        command: op.as_str(),
        reason: format!("not JSON: {e}"),
    })?;
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn plugin_output_is_capped_as_it_is_read() {
        let data = vec![b'x'; 100_000];
        let (kept, cut) = read_capped(Some(&data[..]), 1000).await;
        assert_eq!((kept.len(), cut), (1000, true));
        let (kept, cut) = read_capped(Some(&b"{}"[..]), 1000).await;
        assert_eq!((kept.as_slice(), cut), (&b"{}"[..], false));
        let (kept, cut) = read_capped(None::<&[u8]>, 1000).await;
        assert_eq!((kept.len(), cut), (0, false));
    }

    #[test]
    fn stdin_injection() {
        let list = super::super::config::parse_conflist(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"bridge","prevResult":{"stale":true}},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},"runtimeConfig":{"x":1}}]}"#,
            Path::new("c"),
        )
        .unwrap();
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        caps.insert("bandwidth".into(), json!({"ingressRate": 1}));

        let first = plugin_stdin(&list, 0, None, &caps);
        assert_eq!(first["name"], "n");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none());

        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let second = plugin_stdin(&list, 1, Some(&prev), &caps);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );

        // Without runtime-supplied caps the plugin's own runtimeConfig is left alone.
        let third = plugin_stdin(&list, 1, None, &Map::new());
        assert_eq!(third["runtimeConfig"], json!({"x": 1}));
    }

    #[test]
    fn plugin_lookup() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fake");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        assert!(
            find_plugin("fake", &[d.path().to_path_buf()]).is_err(),
            "not executable"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            find_plugin(
                "fake",
                &[PathBuf::from("/nonexistent"), d.path().to_path_buf()]
            )
            .unwrap(),
            p
        );
    }

    fn inv(dir: &Path) -> Invocation {
        Invocation {
            container_id: "abc".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: "IgnoreUnknown=1".into(),
            bin_dirs: vec![dir.to_path_buf()],
            timeout: Duration::from_secs(5),
        }
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        krio_testutil::write_executable(&p, format!("#!/bin/sh\n{body}\n"));
        p
    }

    #[tokio::test]
    async fn exec_success_error_timeout() {
        let d = tempfile::tempdir().unwrap();
        // Echo env + stdin back as a result.
        let ok = script(
            d.path(),
            "ok",
            r#"in=$(cat); printf '{"cniVersion":"1.0.0","cmd":"%s","id":"%s","args":"%s","path":"%s","in":%s}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_ARGS" "$CNI_PATH" "$in""#,
        );
        let v = exec_plugin(Op::Add, "ok", &ok, &json!({"a": 1}), &inv(d.path()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v["cmd"], "ADD");
        assert_eq!(v["id"], "abc");
        assert_eq!(v["args"], "IgnoreUnknown=1");
        assert_eq!(v["path"], d.path().to_str().unwrap());
        assert_eq!(v["in"], json!({"a": 1}));

        let fail = script(
            d.path(),
            "fail",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"later"}'; exit 1"#,
        );
        match exec_plugin(Op::Del, "fail", &fail, &json!({}), &inv(d.path())).await {
            Err(NetError::Plugin {
                code: 11,
                msg,
                details,
                command: "DEL",
                ..
            }) => {
                assert_eq!(msg, "busy");
                assert_eq!(details, "later");
            }
            other => panic!("unexpected {other:?}"),
        }

        let crash = script(d.path(), "crash", "echo boom >&2; exit 2");
        let e = exec_plugin(Op::Add, "crash", &crash, &json!({}), &inv(d.path()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");

        let empty = script(d.path(), "empty", "cat >/dev/null");
        assert!(
            exec_plugin(Op::Del, "empty", &empty, &json!({}), &inv(d.path()))
                .await
                .unwrap()
                .is_none()
        );

        let garbage = script(d.path(), "garbage", "echo not-json");
        assert!(matches!(
            exec_plugin(Op::Add, "garbage", &garbage, &json!({}), &inv(d.path())).await,
            Err(NetError::PluginOutput { .. })
        ));

        let slow = script(d.path(), "slow", "exec sleep 30");
        let mut i = inv(d.path());
        i.timeout = Duration::from_millis(300);
        let t = std::time::Instant::now();
        assert!(matches!(
            exec_plugin(Op::Add, "slow", &slow, &json!({}), &i).await,
            Err(NetError::PluginTimeout { .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
