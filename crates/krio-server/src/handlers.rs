//! Runtime handlers (Kubernetes RuntimeClass): each configured `[runtimes.NAME]` with its
//! runtime wrapper, whether its binary is there, and the features probed from it.
//!
//! A handler whose binary is missing does not stop the daemon: `Status` reports it not ready and
//! `RunPodSandbox`/`CreateContainer` with it fail with `FailedPrecondition` naming the binary. The
//! binary is looked up again on each of those calls, so installing it later needs no restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::RuntimeHandler;

/// How long `<runtime> features` may take before the probe gives up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler's runtime says it supports, from `<runtime> features` (OCI runtime-spec
/// `features.md`), or the fallback when the runtime has no such command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HandlerFeatures {
    /// Where the answers come from: `runtime features`, or why the fallback was used.
    pub source: String,
    /// The runtime knows the `rro` mount option (recursive read-only) itself. krio does not
    /// need it: it stages recursive read-only mounts for every handler (see `rootfs`).
    pub rro_mount_option: bool,
    /// The runtime can create user namespaces with id-mapped mounts (`linux.namespaces` has
    /// `user` and `linux.mountExtensions.idmap.enabled` is true).
    pub user_namespaces: bool,
    /// The runtime can put a container in a user namespace given by path, with
    /// `linux.uidMappings`/`gidMappings` (`linux.namespaces` lists `user`; runc 1.1 does,
    /// without id-mapped mounts). krio makes the id-mapped rootfs itself, so this is what
    /// pods with `userns_options` mode POD need.
    pub join_user_namespace: bool,
    /// The runtime's `exec` has `--tty` (runc's, from `exec --help`); without it (runsc) a
    /// terminal exec passes the process as a `--process` file.
    pub exec_tty_flag: bool,
}

impl HandlerFeatures {
    /// Reads the JSON printed by `<runtime> features`. Unknown or absent keys mean "not supported".
    pub fn parse(json: &[u8]) -> Option<HandlerFeatures> {
        let v: serde_json::Value = serde_json::from_slice(json).ok()?;
        if !v.is_object() {
            return None;
        }
        let strings = |p: &str| -> Vec<String> {
            v.pointer(p)
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let idmap = v
            .pointer("/linux/mountExtensions/idmap/enabled")
            .and_then(|b| b.as_bool())
            .unwrap_or(false);
        Some(HandlerFeatures {
            source: "runtime features".to_string(),
            rro_mount_option: strings("/mountOptions").iter().any(|o| o == "rro"),
            user_namespaces: idmap && strings("/linux/namespaces").iter().any(|n| n == "user"),
            join_user_namespace: strings("/linux/namespaces").iter().any(|n| n == "user"),
            exec_tty_flag: false,
        })
    }

    /// The features when the runtime cannot be asked: nothing beyond the OCI runtime spec 1.0.
    pub fn fallback(why: impl Into<String>) -> HandlerFeatures {
        HandlerFeatures {
            source: why.into(),
            rro_mount_option: false,
            user_namespaces: false,
            join_user_namespace: false,
            exec_tty_flag: false,
        }
    }
}

/// Runs `<binary> features` (with the handler's global options) and parses its answer; a
/// runtime without the command (runsc), one that fails or prints something else gets
/// [`HandlerFeatures::fallback`] with the reason. Then reads `<binary> exec --help` for
/// `--tty` ([`HandlerFeatures::exec_tty_flag`]).
pub async fn probe(binary: &Path, args: &[String]) -> HandlerFeatures {
    // Both at once: each is a process start of the runtime, and the daemon serves only after.
    let (mut f, help) = tokio::join!(
        probe_features(binary, args),
        run_probe(binary, args, &["exec", "--help"])
    );
    f.exec_tty_flag = help.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).contains("--tty")
            || String::from_utf8_lossy(&o.stderr).contains("--tty")
    });
    f
}

async fn run_probe(
    binary: &Path,
    args: &[String],
    verb: &[&str],
) -> Result<std::process::Output, String> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env_clear()
        .env("PATH", krio_oci::runtime_env_path())
        .args(args)
        .args(verb)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(format!("cannot run `{}`: {e}", verb.join(" "))),
        Err(_) => Err(format!(
            "`{}` did not answer within {PROBE_TIMEOUT:?}",
            verb.join(" ")
        )),
    }
}

async fn probe_features(binary: &Path, args: &[String]) -> HandlerFeatures {
    let out = match run_probe(binary, args, &["features"]).await {
        Ok(o) => o,
        Err(e) => return HandlerFeatures::fallback(e),
    };
    match HandlerFeatures::parse(&out.stdout) {
        Some(f) if out.status.success() => f,
        _ => HandlerFeatures::fallback(format!(
            "the runtime has no `features` command ({}): assuming OCI runtime spec 1.0 only",
            out.status
        )),
    }
}

/// A configured handler as the daemon holds it.
#[derive(Debug, Clone)]
pub struct Handler {
    /// Its configuration.
    pub cfg: RuntimeHandler,
    /// Features probed at start (the fallback when the binary was missing then).
    pub features: HandlerFeatures,
}

impl Handler {
    /// Whether pods of this handler can run in their own user namespace (CRI `userns_options`
    /// mode POD, Status `user_namespaces`): the runtime joins a user namespace by path
    /// ([`HandlerFeatures::join_user_namespace`]), it runs the pod's containers itself (not one
    /// sandbox per container, as runsc here) and the kernel id-maps overlayfs mounts.
    pub fn user_namespaces(&self) -> bool {
        self.features.join_user_namespace
            && self.cfg.pod_sandbox != crate::config::PodSandboxMode::PerContainer
            && crate::rootfs::idmapped_overlay_supported()
    }

    /// The runtime binary, looked up now: `Ok(absolute path)` or `Err(message naming the
    /// configured path)` when it is missing or not a file.
    pub fn binary(&self, name: &str) -> Result<PathBuf, String> {
        find_executable(&self.cfg.path).ok_or_else(|| {
            format!(
                "runtime handler {name:?}: binary {} not found{}",
                self.cfg.path.display(),
                if self.cfg.path.is_absolute() {
                    ""
                } else {
                    " in PATH"
                }
            )
        })
    }
}

/// `p` itself when it has a directory part, else the first `PATH` entry holding it; only
/// regular files count.
pub(crate) fn find_executable(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 || p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_json_is_read_and_missing_keys_mean_no() {
        let runc_1_1 = br#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.0.2-dev",
            "mountOptions":["ro","rw","bind"],"linux":{"namespaces":["cgroup","ipc","user"]}}"#;
        let f = HandlerFeatures::parse(runc_1_1).unwrap();
        assert_eq!(f.source, "runtime features");
        assert!(!f.rro_mount_option);
        // `user` without id-mapped mounts: the runtime joins a user namespace, krio id-maps.
        assert!(!f.user_namespaces && f.join_user_namespace);
        let newer = br#"{"mountOptions":["rro"],"linux":{"namespaces":["user"],
            "mountExtensions":{"idmap":{"enabled":true}}}}"#;
        let f = HandlerFeatures::parse(newer).unwrap();
        assert!(f.rro_mount_option && f.user_namespaces);
        assert_eq!(HandlerFeatures::parse(b"Usage: runsc <flags>"), None);
        assert_eq!(HandlerFeatures::parse(b"[1]"), None);
    }

    #[tokio::test]
    async fn a_runtime_without_features_gets_the_fallback_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("rt");
        krio_testutil::write_executable(&bin, "#!/bin/sh\necho \"Usage: rt\" >&2\nexit 2\n");
        let f = probe(&bin, &[]).await;
        assert!(!f.rro_mount_option && !f.user_namespaces && !f.join_user_namespace);
        assert!(f.source.contains("no `features` command"), "{}", f.source);
        let ok = dir.path().join("ok");
        krio_testutil::write_executable(
            &ok,
            "#!/bin/sh\n[ \"$1 $2\" = \"--x=1 features\" ] || exit 9\necho '{\"mountOptions\":[\"rro\"]}'\n",
        );
        let f = probe(&ok, &["--x=1".to_string()]).await;
        assert!(f.rro_mount_option, "{f:?}");
        assert!(!f.exec_tty_flag, "{f:?}");
        let tty = dir.path().join("tty");
        krio_testutil::write_executable(
            &tty,
            "#!/bin/sh
[ \"$1\" = exec ] && echo '   --tty, -t   allocate a pseudo-TTY'
",
        );
        assert!(probe(&tty, &[]).await.exec_tty_flag);
        let missing = probe(&dir.path().join("missing"), &[]).await;
        assert!(missing.source.contains("cannot run"), "{}", missing.source);
    }
}
