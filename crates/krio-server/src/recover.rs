//! Start-up recovery: rebuild memory from the records on disk, reconcile with the monitors'
//! exit files and the runtime, and clean up whatever a crash left half-made.

use std::path::Path;

use crate::state::{
    Container, ContainerRecord, ContainerState, Sandbox, SandboxRecord, SandboxState,
};
use crate::{ids, persist, Krio};

impl Krio {
    /// Loads every sandbox and container record. A sandbox whose namespaces are gone (after a
    /// reboot) becomes NotReady. A container whose create never finished (no pid) is torn
    /// down. A container the runtime no longer knows and that left no exit file is marked
    /// Exited with reason `Unknown`. Directories without a record are removed.
    pub(crate) async fn recover(&self) {
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
        for id in child_ids(&self.cfg.root.join("sandboxes")) {
            match persist::read_json::<SandboxRecord>(&self.sandbox_record_path(&id)) {
                Ok(Some(rec)) if rec.state == SandboxState::Creating => {
                    tracing::warn!(sandbox = %id, "undoing a sandbox whose creation was cut short");
                    self.undo_half_made_sandbox(&rec).await;
                }
                Ok(Some(mut rec)) => {
                    let netns_gone = rec
                        .netns
                        .as_deref()
                        .is_some_and(|p| !krio_net::ns::is_namespace_pin(p));
                    let init_gone = rec
                        .pod_init
                        .is_some_and(|init| !krio_monitor::pod_init_running(&init));
                    if rec.state == SandboxState::Ready && (netns_gone || init_gone) {
                        // Name only what is actually gone: the network namespace pin, the pod
                        // init (which holds the pod's PID namespace), or both.
                        let what = match (netns_gone, init_gone) {
                            (true, true) => "network namespace and pod init gone",
                            (true, false) => "network namespace gone",
                            _ => "pod init (PID namespace) gone",
                        };
                        tracing::warn!(sandbox = %id, netns_gone, init_gone, "{what}; sandbox not ready");
                        rec.state = SandboxState::NotReady;
                        let _ = persist::write_json(&self.sandbox_record_path(&id), &rec);
                    }
                    let name = SandboxRecord::reserved_name(&rec.config);
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
                .find("id", &rec.sandbox_id)
                .ok()
                .flatten()
                .is_some();
            if !sandbox_known || (rec.state == ContainerState::Created && rec.pid == 0) {
                tracing::warn!(container = %id, "tearing down half-made or orphaned container");
                if let Err(e) = self.teardown_container(&rec).await {
                    tracing::error!(container = %id, error = %e, "teardown failed");
                }
                continue;
            }
            let rec = self.reconcile(rec).await;
            if let Some(sb) = self.sandboxes.find("id", &rec.sandbox_id).ok().flatten() {
                let name = crate::runtime::container_name(&rec.config, &sb.snapshot().config);
                let _ = self.containers.reserve(&name, &id);
            }
            self.containers.insert(id.clone(), Container::new(rec));
        }
        for id in child_ids(&self.cfg.state_dir.join("containers")) {
            if self.containers.find("id", &id).ok().flatten().is_none()
                && !self.container_data_dir(&id).exists()
            {
                let _ = crate::rootfs::unmount(&self.container_run_dir(&id).join("rootfs"));
                let _ = std::fs::remove_dir_all(self.container_run_dir(&id));
            }
        }
        tracing::info!(
            sandboxes = self.sandboxes.all().len(),
            containers = self.containers.all().len(),
            "state recovered"
        );
    }

    /// Brings a recovered container record up to date with its exit file and the runtime.
    async fn reconcile(&self, mut rec: ContainerRecord) -> ContainerRecord {
        if self.refresh_exit(&mut rec) {
            let _ = persist::write_json(&self.container_record_path(&rec.id), &rec);
            return rec;
        }
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return rec;
        }
        let state = match self.runtime(&rec.runtime_handler) {
            Ok(rt) => rt.state(&rec.id).await.ok(),
            Err(_) => None,
        };
        if rec.state == ContainerState::Created
            && state
                .as_ref()
                .is_some_and(|s| s.status == krio_oci::RuntimeStatus::Running)
        {
            // Killed between `runtime start` and recording it: the container runs.
            tracing::warn!(container = %rec.id, "container was started while krio went down");
            rec.state = ContainerState::Running;
            rec.started_at = crate::state::now_ns();
            let _ = persist::write_json(&self.container_record_path(&rec.id), &rec);
        }
        if state.is_none() {
            tracing::warn!(container = %rec.id, "container vanished while krio was down");
            rec.state = ContainerState::Exited;
            rec.exit_code = 255;
            rec.finished_at = crate::state::now_ns();
            rec.reason = "Unknown".to_string();
            rec.message = "the container's process was gone when krio restarted".to_string();
            let _ = persist::write_json(&self.container_record_path(&rec.id), &rec);
        }
        rec
    }
}

impl Krio {
    /// Undoes a sandbox whose `RunPodSandbox` never finished: pod init, CNI, pins, cgroup and
    /// directories. A pod init started just before the crash, before the record named it, is
    /// found by the namespace its pin holds.
    async fn undo_half_made_sandbox(&self, rec: &SandboxRecord) {
        let mut rec = rec.clone();
        if rec.pod_init.is_none() {
            let pin = self.sandbox_run_dir(&rec.id).join("ns").join("pid");
            if let Some(init) = find_pod_init(&pin) {
                rec.pod_init = Some(init);
                rec.pidns = Some(pin);
            }
        }
        for e in self.teardown_sandbox_network(&rec).await {
            tracing::warn!(sandbox = %rec.id, error = %e, "undoing half-made sandbox");
        }
        self.remove_pod_cgroup(&rec);
        let _ = std::fs::remove_dir_all(self.sandbox_run_dir(&rec.id));
        let _ = std::fs::remove_dir_all(self.cfg.root.join("sandboxes").join(&rec.id));
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
