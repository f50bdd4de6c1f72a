//! The runtime sandbox of a pod whose handler has `pod_sandbox = "pod"` (runsc): a root
//! container named by the pod's id (`io.kubernetes.cri.container-type=sandbox`) that holds the
//! runtime's sandbox (for gVisor, the Sentry and its Gofer) for the pod's life, so that every
//! container of the pod joins it (`container-type=container`, `sandbox-id=<pod id>`).
//!
//! krio has no pause image. The root container's root filesystem is a read-only directory
//! holding one file, `/pause`: a 160-byte static x86-64 ELF program written here, whose only
//! code ignores SIGCHLD (so that the orphans it adopts as a shared PID namespace's init are
//! reaped) and then calls `pause(2)` in a loop. It has no libraries, reads no file and is
//! stopped with SIGKILL.
//! Nothing of the host is visible in that root filesystem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use krio_oci::{DeleteOptions, KillOptions};

use crate::error::{Result, ServerError};
use crate::state::SandboxRecord;
use crate::{persist, Krio};

/// How long the root container's monitor may take to record its exit after SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Load address of the idle program.
const PAUSE_BASE: u64 = 0x40_0000;

/// The idle program's code (x86-64). First `rt_sigaction(SIGCHLD, {SIG_IGN}, NULL, 8)`, with the
/// kernel's `struct sigaction` (handler, flags, restorer, mask: four 8-byte words) pushed on
/// the stack: an init that ignores SIGCHLD explicitly has its exited children reaped by the
/// kernel, so the orphans it adopts in a pod's shared PID namespace leave no zombies (Linux and
/// gVisor both follow POSIX here). Then `pause(2)` in a loop.
const PAUSE_CODE_X86_64: [u8; 40] = [
    0x6a, 0x00, // push 0: sa_mask
    0x6a, 0x00, // push 0: sa_restorer
    0x6a, 0x00, // push 0: sa_flags
    0x6a, 0x01, // push 1: sa_handler = SIG_IGN
    0xb8, 0x0d, 0x00, 0x00, 0x00, // mov eax, 13 (rt_sigaction)
    0xbf, 0x11, 0x00, 0x00, 0x00, // mov edi, 17 (SIGCHLD)
    0x48, 0x89, 0xe6, // mov rsi, rsp
    0x31, 0xd2, // xor edx, edx (no old action)
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8 (size of the signal mask)
    0x0f, 0x05, // syscall
    // The loop: mov eax, 34 (pause); syscall; jmp back to the mov.
    0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7,
];

/// The idle program run as the root container's process: a static ELF64 executable with one
/// `PT_LOAD` segment (read + execute) mapping the whole file, entry right after the headers
/// (64-byte ELF header, one 56-byte program header). `None` on architectures other than x86-64.
pub(crate) fn pause_program() -> Option<Vec<u8>> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let code = &PAUSE_CODE_X86_64;
    let headers: u64 = 64 + 56;
    let size = headers + code.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI, padding.
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(PAUSE_BASE + headers).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&PAUSE_BASE.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&PAUSE_BASE.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&size.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&size.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(code);
    Some(elf)
}

/// The root container's OCI spec: `/pause` as nobody, read-only root, no capabilities, the
/// pod's pinned network, IPC and UTS namespaces (paths), a new mount namespace, the pod's
/// hostname, the cgroup `<pod cgroup parent>/<pod id>`, the sandbox annotations and the pod
/// annotations the handler allows.
///
/// The PID namespace names the pod's pinned one (path) when the pod shares one (pid mode
/// POD), else none (a new one). runsc never joins that path on the host: inside the Sentry it
/// is only a key, and a container whose spec names the same path joins the PID namespace of the
/// container that named it first. The root container always runs in the Sentry's root PID
/// namespace, as its init; naming the pod's path here makes every container of a pod with a
/// shared PID namespace join that one, whose init is `/pause` and lives as long as the pod.
/// Without it the pod's first container would create the namespace and be its init: when it
/// exits, the namespace dies with it (its other processes are killed, and a container started
/// later cannot join it: runsc's "creating process: out of memory", Linux's ENOMEM for a fork
/// into a PID namespace whose init has exited).
fn root_spec(
    rec: &SandboxRecord,
    hostname: &str,
    h: &crate::config::RuntimeHandler,
) -> serde_json::Value {
    use krio_oci::annotations::{CONTAINER_TYPE, SANDBOX_ID};
    let mut namespaces = vec![serde_json::json!({"type": "mount"})];
    for (kind, path) in [
        ("pid", rec.pidns()),
        ("network", rec.netns()),
        ("ipc", rec.ipcns()),
        ("uts", rec.utsns()),
    ] {
        match path {
            Some(p) => namespaces.push(serde_json::json!({"type": kind, "path": p})),
            None if kind == "pid" => namespaces.push(serde_json::json!({"type": kind})),
            None => {}
        }
    }
    let mut annotations = serde_json::Map::new();
    for (k, v) in &rec.config().annotations {
        if h.allows_annotation(k) {
            annotations.insert(k.clone(), v.clone().into());
        }
    }
    annotations.insert(CONTAINER_TYPE.into(), "sandbox".into());
    annotations.insert(SANDBOX_ID.into(), rec.id().to_string().into());
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 65534, "gid": 65534},
            "args": ["/pause"],
            "env": ["PATH=/"],
            "cwd": "/",
            "noNewPrivileges": true,
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": hostname,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "annotations": annotations,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": format!("{}/{}", rec.cgroup_parent(), rec.id()),
        },
    })
}

impl Krio {
    /// The root container's bundle: `<sandbox run dir>/sandbox`.
    pub(crate) fn runtime_sandbox_dir(&self, pod_id: &str) -> PathBuf {
        self.sandbox_run_dir(pod_id).join("sandbox")
    }

    /// Creates and starts the pod's runtime sandbox: writes the bundle, spawns a monitor that
    /// runs `runtime create` with the pod's id, then `runtime start`. The record must already
    /// say `runtime_sandbox` (and be on disk), so that a failure here is undone by
    /// [`Krio::stop_runtime_sandbox`].
    ///
    /// Errors: `FailedPrecondition` on an architecture without the idle program or a missing
    /// runtime binary; `Io` writing the bundle; the monitor's or runtime's error.
    pub(crate) async fn start_runtime_sandbox(
        &self,
        rec: &SandboxRecord,
        hostname: &str,
    ) -> Result<()> {
        let program = pause_program().ok_or_else(|| {
            ServerError::FailedPrecondition(format!(
                "runtime handler {:?}: pod_sandbox = \"pod\" needs krio's idle program, which \
                 exists for x86_64 only",
                rec.runtime_handler()
            ))
        })?;
        let h = self.handler(rec.runtime_handler())?.cfg.clone();
        let runtime = self.runtime(rec.runtime_handler())?.clone();
        let binary = self.handler_binary(rec.runtime_handler())?;
        let bundle = self.runtime_sandbox_dir(rec.id());
        let spec = root_spec(rec, hostname, &h);
        let b = bundle.clone();
        crate::blocking(move || write_bundle(&b, &program, &spec))?;
        let mut monitor = krio_monitor::MonitorConfig::new(
            rec.id().to_string(),
            bundle.clone(),
            binary,
            runtime.root(),
            None,
            bundle.join("exit.json"),
            bundle.join("pid"),
        );
        monitor.runtime_log = Some(bundle.join("runtime.log"));
        monitor.runtime_args = runtime.args().to_vec();
        let bin = self.monitor_bin.clone();
        tokio::task::spawn_blocking(move || krio_monitor::spawn(&monitor, &bin))
            .await
            .map_err(|e| {
                ServerError::io("spawning monitor", &bundle, std::io::Error::other(e))
            })??;
        runtime.start(rec.id()).await?;
        tracing::info!(sandbox = %rec.id(), handler = %rec.runtime_handler(), "runtime sandbox started");
        Ok(())
    }

    /// Removes the pod's runtime sandbox, whatever state it reached: `runtime delete --force`
    /// of every container of the pod still known to the runtime (a container cannot be deleted
    /// once its sandbox is gone), SIGKILL to the root container, a wait for its monitor's exit
    /// file, then `runtime delete --force` of the root. Returns every failure; idempotent, and a
    /// no-op for a pod without one.
    pub(crate) async fn stop_runtime_sandbox(&self, rec: &SandboxRecord) -> Vec<ServerError> {
        let mut errors = Vec::new();
        if !rec.runtime_sandbox() {
            return errors;
        }
        let runtime = match self.runtime(rec.runtime_handler()) {
            Ok(r) => r.clone(),
            Err(e) => return vec![e],
        };
        let force = DeleteOptions { force: true };
        for c in self.containers.all() {
            if c.sandbox_id == rec.id() {
                match runtime.delete(&c.id, &force).await {
                    Ok(()) | Err(krio_oci::RuntimeError::NotFound { .. }) => {}
                    Err(e) => errors.push(e.into()),
                }
            }
        }
        let bundle = self.runtime_sandbox_dir(rec.id());
        let exit = bundle.join("exit.json");
        if runtime.state(rec.id()).await.is_ok() {
            let kill = KillOptions {
                signal: libc::SIGKILL,
                all: false,
            };
            if let Err(e) = runtime.kill(rec.id(), &kill).await {
                tracing::debug!(sandbox = %rec.id(), error = %e, "killing the runtime sandbox");
            }
            if bundle.join("pid").exists()
                && !super::container_stop::wait_exit_file(&exit, STOP_GRACE).await
            {
                tracing::warn!(sandbox = %rec.id(), "the runtime sandbox's monitor recorded no exit");
            }
        }
        match runtime.delete(rec.id(), &force).await {
            Ok(()) | Err(krio_oci::RuntimeError::NotFound { .. }) => {}
            Err(e) => errors.push(e.into()),
        }
        errors
    }
}

/// Writes the root container's bundle: `rootfs/pause` (mode 0755; the directory 0755) and
/// `config.json`.
fn write_bundle(bundle: &Path, program: &[u8], spec: &serde_json::Value) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| ServerError::io("creating", &rootfs, e))?;
    let pause = rootfs.join("pause");
    persist::write_atomic(&pause, program)?;
    std::fs::set_permissions(&pause, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ServerError::io("chmod", &pause, e))?;
    let data = serde_json::to_vec_pretty(spec)
        .map_err(|e| ServerError::io("encoding", bundle, std::io::Error::other(e)))?;
    persist::write_atomic(&bundle.join("config.json"), &data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_idle_program_runs_until_killed() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pause");
        let program = pause_program().unwrap();
        assert_eq!(program.len(), 160);
        krio_testutil::write_executable(&p, program);
        let mut child = std::process::Command::new(&p).spawn().unwrap();
        // It reaches pause(2) (system call 34), where it stays: it catches no signal.
        let syscall = format!("/proc/{}/syscall", child.id());
        let status = format!("/proc/{}/status", child.id());
        krio_testutil::poll_blocking(
            "the idle program to wait in pause(2)",
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&syscall)
                    .ok()
                    .filter(|s| s.starts_with("34 "))
            },
        );
        let running = child.try_wait().unwrap().is_none();
        // SIGCHLD (17) is ignored explicitly: bit 16 of the ignored-signal mask (read before
        // any assertion, so that a failure does not leave the program running).
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        let ignored = text
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok());
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(running, "the idle program exited");
        let ignored = ignored.unwrap_or_else(|| panic!("no SigIgn in {text}"));
        assert_ne!(ignored & (1 << (libc::SIGCHLD - 1)), 0, "{text}");
    }

    #[test]
    fn the_root_spec_names_the_pod_and_its_namespaces() {
        let mut rec = SandboxRecord::new("pod1".into(), Default::default(), "runsc".into(), 1);
        rec.set_pinned(krio_net::ns::PinnedNamespaces {
            net: Some("/run/krio/sandboxes/pod1/ns/net".into()),
            ..Default::default()
        });
        rec.set_cgroup_parent("/krio/pod-1".into());
        rec.set_runtime_sandbox();
        rec.mark_ready().unwrap();
        let s = root_spec(&rec, "web", &Default::default());
        assert_eq!(
            s["annotations"]["io.kubernetes.cri.container-type"],
            "sandbox"
        );
        assert_eq!(s["annotations"]["io.kubernetes.cri.sandbox-id"], "pod1");
        assert_eq!(s["linux"]["cgroupsPath"], "/krio/pod-1/pod1");
        assert_eq!(s["hostname"], "web");
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/krio/sandboxes/pod1/ns/net"));
        assert!(!ns.iter().any(|n| n["type"] == "ipc"));
        // No shared PID namespace: a new one, named by no path.
        let pid: Vec<_> = ns.iter().filter(|n| n["type"] == "pid").collect();
        assert_eq!(pid.len(), 1, "{ns:?}");
        assert!(pid[0].get("path").is_none(), "{ns:?}");
    }

    #[test]
    fn a_shared_pid_namespace_is_named_by_the_root_container() {
        let mut rec = SandboxRecord::new("pod2".into(), Default::default(), "runsc".into(), 1);
        rec.set_pod_init(
            krio_monitor::PodInit {
                pid: 1,
                start_time: 1,
            },
            "/run/krio/sandboxes/pod2/ns/pid".into(),
        );
        rec.set_cgroup_parent("/krio/pod-2".into());
        rec.set_runtime_sandbox();
        rec.mark_ready().unwrap();
        let s = root_spec(&rec, "web", &Default::default());
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        let pid: Vec<_> = ns.iter().filter(|n| n["type"] == "pid").collect();
        assert_eq!(pid.len(), 1, "{ns:?}");
        // The same path the containers' specs name, so that they join the root's namespace.
        assert_eq!(pid[0]["path"], "/run/krio/sandboxes/pod2/ns/pid");
    }
}
