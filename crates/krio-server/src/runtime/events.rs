//! Container events (`GetContainerEvents`) and prompt exit detection.
//!
//! Every container gets a watcher task that waits on a pidfd of its monitor; the monitor exits
//! right after it has written the exit file, so the watcher moves the record to Exited and
//! sends `CONTAINER_STOPPED_EVENT` without anyone polling. Created, started and deleted events
//! are sent by the handlers that make those transitions.

use std::sync::Arc;

use krio_cri::v1 as cri;
use tokio::io::unix::AsyncFd;

use super::container_list::container_status_of;
use super::sandbox_list::sandbox_status_of;
use crate::state::{now_ns, Container, ContainerRecord, ContainerState};
use crate::Krio;

/// How many events a slow `GetContainerEvents` subscriber may fall behind before it misses some.
pub(crate) const EVENT_BUFFER: usize = 1024;

impl Krio {
    /// Sends a container event with the container's and its sandbox's current status to every
    /// `GetContainerEvents` subscriber. Without subscribers this does nothing.
    pub(crate) fn emit(&self, rec: &ContainerRecord, kind: cri::ContainerEventType) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let sandbox = self
            .sandboxes
            .find("pod_sandbox_id", rec.sandbox_id())
            .ok()
            .flatten()
            .map(|s| sandbox_status_of(&s.snapshot()));
        let _ = self.events.send(cri::ContainerEventResponse {
            container_id: rec.id().to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: sandbox,
            containers_statuses: vec![container_status_of(rec)],
        });
    }

    /// A stream of container events from now on (CRI `GetContainerEvents`). A subscriber that
    /// falls more than [`EVENT_BUFFER`] events behind skips the ones it missed.
    pub(crate) fn subscribe(
        &self,
    ) -> impl futures::Stream<Item = cri::ContainerEventResponse> + Send + 'static {
        use futures::StreamExt;
        // The stream ends when the daemon shuts down, so a subscriber (kubelet's evented PLEG
        // keeps one open for good) never holds up a graceful shutdown.
        let mut stop = self.shutdown.subscribe();
        tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe())
            .filter_map(|e| async move { e.ok() })
            .take_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
    }

    /// Starts the exit watcher of a created or running container.
    pub(crate) fn watch_exit(self: &Arc<Self>, c: Arc<Container>) {
        let this = self.clone();
        tokio::spawn(async move {
            let pid = c.snapshot().monitor_pid();
            if pid > 0 {
                wait_for_process(pid, &c.watched).await;
            }
            c.watched.store(false, std::sync::atomic::Ordering::Release);
            let mut rec = c.record.lock().await;
            let changed = this.refresh_exit(&mut rec);
            // A removed container keeps no record on disk.
            if this
                .containers
                .find("container_id", rec.id())
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
            if changed {
                if let Err(e) = this.commit_container(&c, &rec).await {
                    tracing::warn!(container = %rec.id(), error = %e, "persisting exit");
                }
            }
            if rec.state() == ContainerState::Exited {
                tracing::debug!(container = %rec.id(), exit_code = rec.exit().map(|e| e.code), "container exited");
                // In a pod-wide PID namespace the init's death does not end its other
                // processes (the pod init adopts them): end them, as containerd does.
                let shared_pid = this
                    .sandboxes
                    .find("pod_sandbox_id", rec.sandbox_id())
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.snapshot().pidns().is_some());
                if shared_pid {
                    kill_cgroup_processes(rec.cgroups_path());
                }
                this.emit(&rec, cri::ContainerEventType::ContainerStoppedEvent);
            }
        });
    }
}

/// Waits until process `pid` exits, through a pidfd (returns at once when it is already gone).
#[allow(unsafe_code)]
/// `watched` is set while the pidfd is registered.
pub(crate) async fn wait_for_process(pid: i32, watched: &std::sync::atomic::AtomicBool) {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    // SAFETY: the AsyncFd takes ownership of the pidfd (an OwnedFd), so the descriptor stays
    // open and is not reused for anything else while it is registered, and it is closed only
    // when the AsyncFd is dropped, after deregistration: the I/O-safety contract of
    // `register_with_interest`.
    match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(afd) => {
            watched.store(true, std::sync::atomic::Ordering::Release);
            let _ = afd.readable().await;
        }
        Err(e) => {
            tracing::warn!(pid = pid.as_raw_nonzero().get(), error = %e.to_string(), "cannot watch the monitor")
        }
    }
}

impl Krio {
    /// Watches a pod's init: if it dies while the pod is Ready (killed, OOM), the pod's PID
    /// namespace is gone and no container can join it, so the sandbox becomes NotReady and
    /// kubelet recreates it, as after a restart.
    pub(crate) fn watch_pod_init(self: &Arc<Self>, sandbox: Arc<crate::state::Sandbox>) {
        let this = self.clone();
        tokio::spawn(async move {
            let Some(init) = sandbox.snapshot().pod_init() else {
                return;
            };
            wait_for_process(init.pid, &std::sync::atomic::AtomicBool::new(false)).await;
            let mut rec = sandbox.record.lock().await;
            let live = this
                .sandboxes
                .find("pod_sandbox_id", rec.id())
                .ok()
                .flatten()
                .is_some();
            if live && rec.state() == crate::state::SandboxState::Ready {
                tracing::warn!(sandbox = %rec.id(), "pod init died; sandbox not ready");
                rec.mark_not_ready();
                if let Err(e) = this.commit_sandbox(&sandbox, &rec).await {
                    tracing::warn!(sandbox = %rec.id(), error = %e, "persisting state");
                }
            }
        });
    }
}

/// SIGKILLs every process left in a cgroup (v1 `pids` controller or the v2 tree).
pub(crate) fn kill_cgroup_processes(cgroups_path: &str) {
    if cgroups_path.is_empty() {
        return;
    }
    let rel = cgroups_path.trim_start_matches('/');
    for procs in [
        std::path::Path::new("/sys/fs/cgroup/pids")
            .join(rel)
            .join("cgroup.procs"),
        std::path::Path::new("/sys/fs/cgroup")
            .join(rel)
            .join("cgroup.procs"),
    ] {
        let Ok(text) = std::fs::read_to_string(&procs) else {
            continue;
        };
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        return;
    }
}
