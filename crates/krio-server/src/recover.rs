//! Start-up recovery: rebuild memory from the records on disk, reconcile with the monitors'
//! exit files and the runtime, and clean up whatever a crash left half-made.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use krio_oci::RuntimeStatus;

use crate::error::Result;
use crate::state::{
    now_ns, Container, ContainerRecord, ContainerState, Exit, ExitReason, Sandbox, SandboxRecord,
    SandboxState, TransitionError,
};
use crate::{ids, persist, Krio};

impl Krio {
    /// Loads every sandbox and container record. A sandbox whose namespaces are gone (after a
    /// reboot) becomes NotReady. A container whose create never finished (no pid) is torn
    /// down. A container the runtime no longer knows and that left no exit file is marked
    /// Exited with reason `Unknown`. Directories without a record are removed.
    /// Returns what must be tried again ([`Krio::retry_recovery`]): containers the runtime
    /// could not tell about (an error other than "not found"; their records are left as they
    /// were) and corrected records that could not be persisted.
    pub(crate) async fn recover(&self) -> Vec<Retry> {
        let mut retry = Vec::new();
        // Scratch directories of `runc exec` calls a killed daemon left behind.
        for (handler, runtime) in &self.runtimes {
            match runtime.clean_exec_scratch() {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(handler = %handler, removed = n, "removed leftover exec scratch directories")
                }
                Err(e) => {
                    tracing::warn!(handler = %handler, error = %e, "cleaning exec scratch directories")
                }
            }
        }
        // Archives a killed daemon was unpacking for a restore.
        let scratch = crate::runtime::restore_scratch_root(&self.cfg.root);
        if scratch.exists() {
            if let Err(e) = std::fs::remove_dir_all(&scratch) {
                tracing::warn!(path = %scratch.display(), error = %e, "removing restore scratch");
            }
        }
        for id in child_ids(&self.cfg.root.join("sandboxes")) {
            match persist::read_json::<SandboxRecord>(&self.sandbox_record_path(&id)) {
                Ok(Some(rec)) if rec.state() == SandboxState::Creating => {
                    tracing::warn!(sandbox = %id, "undoing a sandbox whose creation was cut short");
                    self.undo_half_made_sandbox(&rec).await;
                }
                Ok(Some(mut rec)) => {
                    let netns_gone = rec
                        .netns()
                        .is_some_and(|p| !krio_net::ns::is_namespace_pin(p));
                    let init_gone = rec
                        .pod_init()
                        .is_some_and(|init| !krio_monitor::pod_init_running(&init));
                    if rec.state() == SandboxState::Ready && (netns_gone || init_gone) {
                        // Name only what is actually gone: the network namespace pin, the pod
                        // init (which holds the pod's PID namespace), or both.
                        let what = match (netns_gone, init_gone) {
                            (true, true) => "network namespace and pod init gone",
                            (true, false) => "network namespace gone",
                            _ => "pod init (PID namespace) gone",
                        };
                        tracing::warn!(sandbox = %id, netns_gone, init_gone, "{what}; sandbox not ready");
                        rec.mark_not_ready();
                        if let Err(e) =
                            persist::write_json_async(&self.sandbox_record_path(&id), &rec).await
                        {
                            tracing::error!(sandbox = %id, error = %e, "persisting the corrected record; will retry");
                            retry.push(Retry::Sandbox(id.clone()));
                        }
                    }
                    let name = SandboxRecord::reserved_name(rec.config());
                    if let Err(e) = self.sandboxes.reserve(&name, &id) {
                        tracing::warn!(sandbox = %id, error = %e, "duplicate sandbox name on recovery");
                    }
                    self.sandboxes.insert(id.clone(), Sandbox::new(rec));
                }
                Ok(None) => {
                    tracing::warn!(sandbox = %id, "removing half-made sandbox");
                    let ns_dir = self.sandbox_run_dir(&id).join("ns");
                    let _ = krio_net::ns::unpin_namespaces(&ns_dir);
                    let _ = std::fs::remove_dir_all(self.sandbox_run_dir(&id));
                    let _ = std::fs::remove_dir_all(self.cfg.root.join("sandboxes").join(&id));
                }
                Err(e) => tracing::error!(sandbox = %id, error = %e, "unreadable sandbox record"),
            }
        }
        // Run directories of sandboxes that have no record at all.
        for id in child_ids(&self.cfg.state_dir.join("sandboxes")) {
            if self.sandboxes.find("id", &id).ok().flatten().is_none() {
                let _ = krio_net::ns::unpin_namespaces(&self.sandbox_run_dir(&id).join("ns"));
                let _ = std::fs::remove_dir_all(self.sandbox_run_dir(&id));
            }
        }

        for id in child_ids(&self.cfg.root.join("containers")) {
            let rec = match persist::read_json::<ContainerRecord>(&self.container_record_path(&id))
            {
                Ok(Some(rec)) => rec,
                Ok(None) => {
                    tracing::warn!(container = %id, "removing container directory without record");
                    let _ = crate::rootfs::unmount(&self.container_run_dir(&id).join("rootfs"));
                    self.release_rro_staging(&id);
                    let _ = std::fs::remove_dir_all(self.container_run_dir(&id));
                    let _ = std::fs::remove_dir_all(self.container_data_dir(&id));
                    continue;
                }
                Err(e) => {
                    tracing::error!(container = %id, error = %e, "unreadable container record");
                    continue;
                }
            };
            let sandbox_known = self
                .sandboxes
                .find("id", rec.sandbox_id())
                .ok()
                .flatten()
                .is_some();
            let pending_restore = rec.restore_pending();
            if !sandbox_known
                || (rec.state() == ContainerState::Created && rec.pid() == 0 && !pending_restore)
            {
                tracing::warn!(container = %id, "tearing down half-made or orphaned container");
                if let Err(e) = self.teardown_container(&rec).await {
                    tracing::error!(container = %id, error = %e, "teardown failed");
                }
                continue;
            }
            let mut rec = rec;
            // A restore waiting for StartContainer has nothing in the runtime to ask about.
            if !pending_restore && self.reconcile(&mut rec).await {
                retry.push(Retry::Container(id.clone()));
            }
            // A recursive read-only staging left by a daemon killed between `runtime
            // create` (or start) and its release: the runtime has its own copy by now.
            if rec.state() != ContainerState::Created || !self.rro_staging_needed_until_start(&rec)
            {
                self.release_rro_staging(&id);
            }
            if let Some(sb) = self.sandboxes.find("id", rec.sandbox_id()).ok().flatten() {
                let name = crate::runtime::container_name(rec.config(), sb.snapshot().config());
                let _ = self.containers.reserve(&name, &id);
            }
            self.containers.insert(id.clone(), Container::new(rec));
        }
        for id in child_ids(&self.cfg.state_dir.join("containers")) {
            if self.containers.find("id", &id).ok().flatten().is_none()
                && !self.container_data_dir(&id).exists()
            {
                let _ = crate::rootfs::unmount(&self.container_run_dir(&id).join("rootfs"));
                self.release_rro_staging(&id);
                let _ = std::fs::remove_dir_all(self.container_run_dir(&id));
            }
        }
        tracing::info!(
            sandboxes = self.sandboxes.all().len(),
            containers = self.containers.all().len(),
            retries = retry.len(),
            "state recovered"
        );
        retry
    }

    /// Brings a recovered container record up to date with its exit file and the runtime
    /// (see [`reconcile_record`]). Returns whether it must be tried again later: the runtime
    /// could not say, or the corrected record could not be persisted (both logged).
    async fn reconcile(&self, rec: &mut ContainerRecord) -> bool {
        let run_dir = self.container_run_dir(rec.id());
        match reconcile_record(rec, self.runtime(rec.runtime_handler()), &run_dir).await {
            Reconciled::Unchanged => false,
            Reconciled::Corrected => {
                match persist::write_json_async(&self.container_record_path(rec.id()), &*rec).await
                {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::error!(container = %rec.id(), error = %e, "persisting the reconciled record; will retry");
                        true
                    }
                }
            }
            Reconciled::Undecided(why) => {
                tracing::warn!(container = %rec.id(), error = %why, "cannot reconcile with the runtime; record left as it is, will retry");
                true
            }
        }
    }

    /// Retries, in the background, what [`Krio::recover`] could not finish: reconciling a
    /// container with the runtime, and persisting a corrected container or sandbox record.
    /// Waits 1 s, then twice as long each round up to a minute, until every item is done or
    /// its object is gone.
    pub(crate) fn retry_recovery(self: &Arc<Self>, mut items: Vec<Retry>) {
        if items.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            while !items.is_empty() {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
                let mut left = Vec::new();
                for item in items {
                    if !this.retry_one(&item).await {
                        left.push(item);
                    }
                }
                items = left;
            }
            tracing::info!("recovery retries done");
        });
    }

    /// One retry; true when done (or the object is gone).
    async fn retry_one(&self, item: &Retry) -> bool {
        match item {
            Retry::Container(id) => {
                let Some(c) = self.containers.find("id", id).ok().flatten() else {
                    return true;
                };
                let mut rec = c.record.lock().await;
                let run_dir = self.container_run_dir(rec.id());
                let rt = self.runtime(rec.runtime_handler());
                if let Reconciled::Undecided(why) = reconcile_record(&mut rec, rt, &run_dir).await {
                    tracing::warn!(container = %id, error = %why, "still cannot reconcile with the runtime");
                    return false;
                }
                match self.commit_container(&c, &rec).await {
                    Ok(()) => {
                        tracing::info!(container = %id, state = ?rec.state(), "container reconciled");
                        true
                    }
                    Err(e) => {
                        tracing::error!(container = %id, error = %e, "persisting the reconciled record");
                        false
                    }
                }
            }
            Retry::Sandbox(id) => {
                let Some(s) = self.sandboxes.find("id", id).ok().flatten() else {
                    return true;
                };
                let rec = s.record.lock().await;
                match self.commit_sandbox(&s, &rec).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(sandbox = %id, error = %e, "persisting the corrected sandbox record");
                        false
                    }
                }
            }
        }
    }
}

/// Something recovery must try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reconcile the container with the runtime and persist its record.
    Container(String),
    /// Persist the sandbox's corrected record.
    Sandbox(String),
}

/// What reconciling one recovered container record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reconciled {
    /// The record was right.
    Unchanged,
    /// The record was corrected (and must be persisted).
    Corrected,
    /// The runtime answered with an error other than "not found" (a timeout, output that
    /// does not parse): the record is left exactly as it was, to be tried again.
    Undecided(String),
}

/// Reconciles a recovered container record with its exit file and the runtime:
/// - an exit file (or a monitor gone without one, see `refresh_exit_in`) means Exited;
/// - runtime `running` for a record still Created means it was started just before the daemon
///   went down: Running;
/// - runtime `stopped`: the exit file is read again (the monitor writes it once it reaps the
///   init); while the monitor lives the record waits for it, else the exit is recorded with
///   code 255 and reason `Unknown`;
/// - runtime "not found" (and only that) means the container vanished: Exited 255, `Unknown`;
/// - any other runtime error leaves the record as it is ([`Reconciled::Undecided`]).
pub(crate) async fn reconcile_record(
    rec: &mut ContainerRecord,
    runtime: Result<&krio_oci::OciRuntime>,
    run_dir: &Path,
) -> Reconciled {
    use crate::runtime::refresh_exit_in;
    if refresh_exit_in(run_dir, rec) {
        return Reconciled::Corrected;
    }
    if !matches!(
        rec.state(),
        ContainerState::Created | ContainerState::Running
    ) {
        return Reconciled::Unchanged;
    }
    if rec.state() == ContainerState::Running && monitor_holds(rec.monitor_pid(), rec.pid()) {
        // The container's process is alive and still the child of its monitor, which writes
        // the exit file when it ends (its watcher records that): as good a proof as the
        // runtime's `running`, without a runtime process per container, which made a restart
        // with many containers take about 7 ms per container.
        return Reconciled::Unchanged;
    }
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => return Reconciled::Undecided(e.to_string()),
    };
    match runtime.state(rec.id()).await {
        Ok(s) => match s.status {
            RuntimeStatus::Running if rec.state() == ContainerState::Created => {
                // Killed between `runtime start` and recording it: the container runs.
                tracing::warn!(container = %rec.id(), "container was started while krio went down");
                corrected(rec.mark_started(now_ns()))
            }
            RuntimeStatus::Stopped => {
                if refresh_exit_in(run_dir, rec) {
                    return Reconciled::Corrected;
                }
                if rec.monitor_pid() > 0 && crate::runtime::process_running(rec.monitor_pid()) {
                    // The monitor is reaping it and writes the exit file next; its watcher
                    // records that.
                    return Reconciled::Unchanged;
                }
                tracing::warn!(container = %rec.id(), "runtime reports the container stopped, with no exit status");
                mark_unknown_exit(
                    rec,
                    "the runtime reported the container stopped when krio restarted, and no exit status was recorded",
                )
            }
            _ => Reconciled::Unchanged,
        },
        Err(krio_oci::RuntimeError::NotFound { .. }) => {
            tracing::warn!(container = %rec.id(), "container vanished while krio was down");
            mark_unknown_exit(rec, "the container's process was gone when krio restarted")
        }
        Err(e) => Reconciled::Undecided(e.to_string()),
    }
}

/// Whether `pid` is a live process whose parent is `monitor_pid`, and that parent is a
/// `krio-monitor` (the container's subreaper): so neither pid was reused by something else.
fn monitor_holds(monitor_pid: i32, pid: i32) -> bool {
    if monitor_pid <= 0 || pid <= 0 || !crate::runtime::process_running(pid) {
        return false;
    }
    let parent = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
        });
    parent == Some(monitor_pid) && is_monitor(monitor_pid)
}

/// Whether process `pid` is a `krio-monitor`: by its command name, or by its `argv[0]`. The
/// monitor re-executes itself through `/proc/self/exe` with `argv[0]` `krio-monitor`, and the
/// kernel names such a process after the path it ran (`exe`), so a monitor started by a
/// krio-monitor that does not rename itself is known only by its `argv[0]`.
fn is_monitor(pid: i32) -> bool {
    const NAME: &str = "krio-monitor";
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() == NAME {
        return true;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    Path::new(std::ffi::OsStr::from_bytes(argv0)).file_name() == Some(std::ffi::OsStr::new(NAME))
}

/// Records an exit whose status nobody knows: code 255, reason `Unknown`, finished now.
fn mark_unknown_exit(rec: &mut ContainerRecord, message: &str) -> Reconciled {
    corrected(rec.mark_exited(Exit {
        code: 255,
        finished_at: now_ns(),
        reason: ExitReason::Unknown,
        message: message.to_string(),
    }))
}

/// [`Reconciled::Corrected`] when a correction was made. Reconciling only asks for
/// transitions out of Created or Running, which are always allowed; were one refused, the
/// record stays as it was (logged).
fn corrected(done: Result<(), TransitionError>) -> Reconciled {
    match done {
        Ok(()) => Reconciled::Corrected,
        Err(e) => {
            tracing::warn!(error = %e, "reconciling with the runtime");
            Reconciled::Unchanged
        }
    }
}

impl Krio {
    /// Undoes a sandbox whose `RunPodSandbox` never finished: pod init, CNI, pins, cgroup and
    /// directories. A pod init started just before the crash, before the record named it, is
    /// found by the namespace its pin holds.
    async fn undo_half_made_sandbox(&self, rec: &SandboxRecord) {
        let mut rec = rec.clone();
        if rec.pod_init().is_none() {
            let pin = self.sandbox_run_dir(rec.id()).join("ns").join("pid");
            if let Some(init) = find_pod_init(&pin) {
                rec.set_pod_init(init, pin);
            }
        }
        for e in self.teardown_sandbox_network(&rec).await {
            tracing::warn!(sandbox = %rec.id(), error = %e, "undoing half-made sandbox");
        }
        if let Err(e) = crate::blocking(|| self.remove_pod_cgroup(&rec)) {
            tracing::warn!(sandbox = %rec.id(), error = %e, "undoing half-made sandbox");
        }
        let _ = std::fs::remove_dir_all(self.sandbox_run_dir(rec.id()));
        let _ = std::fs::remove_dir_all(self.cfg.root.join("sandboxes").join(rec.id()));
    }
}

/// The pod init whose PID namespace `pin` holds, found among the processes named
/// `krio-pod-init` by the namespace's inode.
fn find_pod_init(pin: &Path) -> Option<krio_monitor::PodInit> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(pin).ok()?;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "krio-pod-init" {
            continue;
        }
        let Ok(ns) = std::fs::metadata(e.path().join("ns/pid")) else {
            continue;
        };
        if ns.ino() == want.ino() && ns.dev() == want.dev() {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Field 22 (starttime), counted after the ")" that ends the command name.
            let start_time = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(19)?
                .parse()
                .ok()?;
            return Some(krio_monitor::PodInit { pid, start_time });
        }
    }
    None
}

/// Names of the subdirectories of `dir` that are valid ids.
fn child_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| ids::is_full_id(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1 as cri;

    /// A record of a container in `state`, whose monitor is `monitor_pid`.
    fn record(state: ContainerState, monitor_pid: i32) -> ContainerRecord {
        let mut rec = ContainerRecord::new(crate::state::NewContainer {
            id: "c".repeat(64),
            sandbox_id: "s".repeat(64),
            config: cri::ContainerConfig::default(),
            image_ref: String::new(),
            image_id: String::new(),
            image_digest_ref: String::new(),
            runtime_handler: "runc".into(),
            log_path: String::new(),
            created_at: 1,
            cgroups_path: String::new(),
            subcontainer: false,
            stop_signal: None,
            volume_image_ids: Vec::new(),
        });
        rec.record_processes(0, monitor_pid).unwrap();
        if state != ContainerState::Created {
            rec.mark_started(2).unwrap();
        }
        if state == ContainerState::Exited {
            rec.mark_exited(Exit {
                code: 0,
                finished_at: 3,
                reason: ExitReason::Completed,
                message: String::new(),
            })
            .unwrap();
        }
        assert_eq!(rec.state(), state);
        rec
    }

    /// The state, exit code and CRI reason of a record (0 and "" while not exited).
    fn exited(rec: &ContainerRecord) -> (ContainerState, i32, &str) {
        match rec.exit() {
            Some(e) => (rec.state(), e.code, e.reason.as_str()),
            None => (rec.state(), 0, ""),
        }
    }

    /// `monitor_holds` is the proof that lets recovery skip the runtime: a live process whose
    /// parent is a `krio-monitor`, and nothing less (a live pid under another parent, a parent
    /// that is not a monitor, a dead pid).
    #[test]
    fn a_live_child_of_its_monitor_is_proof_of_running() {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let d = tempfile::tempdir().unwrap();
        let monitor = d.path().join("krio-monitor");
        // The shell itself (not /bin/sh, a relative symlink), under the monitor's name.
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        krio_testutil::copy_executable(&sh, &monitor);
        let mut m = std::process::Command::new(&monitor)
            .args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(m.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let child: i32 = line.trim().parse().unwrap();
        let monitor_pid = m.id() as i32;
        assert!(monitor_holds(monitor_pid, child));
        assert!(
            !monitor_holds(std::process::id() as i32, child),
            "not its parent"
        );
        assert!(
            !monitor_holds(monitor_pid, std::process::id() as i32),
            "not its child"
        );
        assert!(!monitor_holds(0, child));
        assert!(!monitor_holds(monitor_pid, dead_pid()));
        // Named `exe` by the kernel (run through a path ending in `exe`, as the monitor
        // re-executes itself), `krio-monitor` only by its argv[0]: still a monitor.
        let exe = d.path().join("exe");
        krio_testutil::copy_executable(&sh, &exe);
        let mut m2 = std::process::Command::new(&exe)
            .arg0("krio-monitor")
            .args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(m2.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let child2: i32 = line.trim().parse().unwrap();
        let m2_pid = m2.id() as i32;
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{m2_pid}/comm"))
                .unwrap()
                .trim_end(),
            "exe"
        );
        assert!(monitor_holds(m2_pid, child2));
        // The same, with another argv[0]: not a monitor.
        let mut m3 = std::process::Command::new(&exe)
            .args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(m3.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let child3: i32 = line.trim().parse().unwrap();
        assert!(!monitor_holds(m3.id() as i32, child3));
        for (pid, mut m) in [(child2, m2), (child3, m3)] {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            m.wait().unwrap();
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        m.wait().unwrap();
    }

    /// A fake runtime whose every call runs `script` (a shell body), in `dir`.
    fn fake_runtime(dir: &Path, script: &str) -> krio_oci::OciRuntime {
        let bin = dir.join("fake-runc");
        krio_testutil::write_executable(&bin, format!("#!/bin/sh\n{script}\n"));
        krio_oci::OciRuntime::new(bin, dir.join("root"))
    }

    fn state_json(status: &str) -> String {
        format!(
            "echo '{{\"ociVersion\":\"1.0.2\",\"id\":\"{}\",\"pid\":0,\"status\":\"{status}\",\"bundle\":\"/x\"}}'",
            "c".repeat(64)
        )
    }

    /// The pid of a process that has exited (a reaped child).
    fn dead_pid() -> i32 {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        pid
    }

    async fn run(rec: &mut ContainerRecord, script: &str) -> (Reconciled, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let rt = fake_runtime(dir.path(), script);
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let out = reconcile_record(rec, Ok(&rt), &run_dir).await;
        (out, dir)
    }

    #[tokio::test]
    async fn only_not_found_means_vanished() {
        let me = std::process::id() as i32;
        let mut rec = record(ContainerState::Running, me);
        let (out, _d) = run(&mut rec, "echo 'container does not exist' >&2; exit 1").await;
        assert_eq!(out, Reconciled::Corrected);
        assert_eq!(exited(&rec), (ContainerState::Exited, 255, "Unknown"));
        assert!(rec.exit().unwrap().finished_at > 0);
    }

    #[tokio::test]
    async fn other_runtime_errors_leave_the_record_as_it_is() {
        let me = std::process::id() as i32;
        for script in [
            "echo 'timeout talking to the container' >&2; exit 1",
            "echo 'this is not json'",
            "kill -9 $$",
        ] {
            let mut rec = record(ContainerState::Running, me);
            let before = serde_json::to_string(&rec).unwrap();
            let (out, _d) = run(&mut rec, script).await;
            assert!(matches!(out, Reconciled::Undecided(_)), "{script}: {out:?}");
            assert_eq!(serde_json::to_string(&rec).unwrap(), before, "{script}");
        }
        // No runtime at all (an unknown handler): left as it is too.
        let mut rec = record(ContainerState::Running, me);
        let out = reconcile_record(
            &mut rec,
            Err(crate::error::ServerError::invalid(
                "runtime_handler",
                "unknown",
            )),
            Path::new("/nonexistent"),
        )
        .await;
        assert!(matches!(out, Reconciled::Undecided(_)), "{out:?}");
        assert_eq!(rec.state(), ContainerState::Running);
    }

    #[tokio::test]
    async fn stopped_is_read_from_the_exit_file() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        // The runtime says stopped; the monitor (gone now) had written the exit file.
        let rt = fake_runtime(dir.path(), &state_json("stopped"));
        krio_monitor::write_exit_file(
            &run_dir.join("exit.json"),
            &krio_monitor::ExitStatus {
                exit_code: 3,
                signal: None,
                finished_at_ns: 42,
                oom_killed: false,
            },
        )
        .unwrap();
        let mut rec = record(ContainerState::Running, dead_pid());
        assert_eq!(
            reconcile_record(&mut rec, Ok(&rt), &run_dir).await,
            Reconciled::Corrected
        );
        assert_eq!(exited(&rec), (ContainerState::Exited, 3, "Error"));
        assert_eq!(rec.exit().unwrap().finished_at, 42);
    }

    #[tokio::test]
    async fn stopped_without_an_exit_file_is_recorded_or_left_to_a_live_monitor() {
        // No monitor recorded and no exit file: the stop is recorded as such.
        let mut rec = record(ContainerState::Running, 0);
        let (out, _d) = run(&mut rec, &state_json("stopped")).await;
        assert_eq!(out, Reconciled::Corrected);
        assert_eq!(exited(&rec), (ContainerState::Exited, 255, "Unknown"));
        let message = &rec.exit().unwrap().message;
        assert!(message.contains("stopped"), "{message}");
        // A live monitor writes the exit file next: the record waits for it.
        let mut rec = record(ContainerState::Running, std::process::id() as i32);
        let (out, _d) = run(&mut rec, &state_json("stopped")).await;
        assert_eq!(out, Reconciled::Unchanged);
        assert_eq!(rec.state(), ContainerState::Running);
    }

    #[tokio::test]
    async fn a_dead_monitor_without_an_exit_file_is_recorded_as_lost() {
        let mut rec = record(ContainerState::Running, dead_pid());
        // The runtime is never asked: the monitor's loss decides.
        let (out, d) = run(&mut rec, "exit 99").await;
        assert_eq!(out, Reconciled::Corrected);
        assert_eq!(exited(&rec), (ContainerState::Exited, 255, "MonitorLost"));
        assert!(d.path().join("run/exit.json").exists());
    }

    #[tokio::test]
    async fn created_and_running_in_the_runtime_becomes_running() {
        let me = std::process::id() as i32;
        let mut rec = record(ContainerState::Created, me);
        let (out, _d) = run(&mut rec, &state_json("running")).await;
        assert_eq!(out, Reconciled::Corrected);
        assert_eq!(rec.state(), ContainerState::Running);
        assert!(rec.started_at() > 0);
        let mut rec = record(ContainerState::Running, me);
        let (out, _d) = run(&mut rec, &state_json("running")).await;
        assert_eq!(out, Reconciled::Unchanged);
        // An exited record is final: the runtime is not asked.
        let mut rec = record(ContainerState::Exited, me);
        let (out, _d) = run(&mut rec, "exit 99").await;
        assert_eq!(out, Reconciled::Unchanged);
    }
}
