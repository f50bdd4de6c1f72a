//! `ContainerStatus` and `ListContainers`.

use std::collections::HashMap;

use krio_cri::v1 as cri;

use super::sandbox_list::labels_match;
use crate::error::Result;
use crate::state::{Container, ContainerRecord};
use crate::{ids, Krio};

impl Krio {
    /// The container's current record: the snapshot, moved to Exited when the monitor has
    /// written the exit file (or is gone without one). When no operation holds the container
    /// the change is published at once and written to disk in the background: a status or
    /// list call never waits for a disk.
    fn current(&self, c: &Container) -> ContainerRecord {
        let mut snap = c.snapshot();
        if c.watched.load(std::sync::atomic::Ordering::Acquire) {
            return snap;
        }
        if self.refresh_exit(&mut snap) {
            if let Ok(mut rec) = c.record.try_lock() {
                if self.refresh_exit(&mut rec) {
                    c.publish(&rec);
                    crate::persist::write_json_detached(
                        &self.container_record_path(rec.id()),
                        &*rec,
                    );
                }
            }
        }
        snap
    }

    /// CRI `ContainerStatus`: state, exit code, created/started/finished times (nanoseconds
    /// since the epoch), `log_path`, image, labels, annotations, mounts. `verbose` adds `info`
    /// (pid, sandbox id, runtime handler, record as JSON).
    ///
    /// Errors: `InvalidArgument` for a malformed id, `NotFound` for an unknown one.
    pub(crate) fn container_status(
        &self,
        req: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse> {
        ids::validate("container_id", &req.container_id)?;
        let c = self.containers.get("container_id", &req.container_id)?;
        let rec = self.current(&c);
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "pid": rec.pid(),
                    "sandboxID": rec.sandbox_id(),
                    "runtimeHandler": rec.runtime_handler(),
                    "monitorPid": rec.monitor_pid(),
                    "record": &rec,
                })
                .to_string(),
            );
        }
        let status = container_status_of(&rec);
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    /// CRI `ListContainers`, filtered by id (full or prefix), state, sandbox id (full or
    /// prefix) and label selector.
    pub(crate) fn list_containers(
        &self,
        req: cri::ListContainersRequest,
    ) -> Result<cri::ListContainersResponse> {
        let f = req.filter.unwrap_or_default();
        let mut containers: Vec<cri::Container> = self
            .containers
            .all()
            .iter()
            .filter(|c| {
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
            })
            .filter_map(|c| {
                // Without a watcher, look for the exit file (and record it) first.
                if !c.watched.load(std::sync::atomic::Ordering::Acquire) {
                    self.current(c);
                }
                c.with_snapshot(|r| {
                    let wanted = f
                        .state
                        .as_ref()
                        .is_none_or(|s| s.state == r.state().to_cri() as i32)
                        && labels_match(&r.config().labels, &f.label_selector);
                    wanted.then(|| cri::Container {
                        id: r.id().to_string(),
                        pod_sandbox_id: r.sandbox_id().to_string(),
                        metadata: r.config().metadata.clone(),
                        image: Some(image_spec(r)),
                        image_ref: r.image_digest_ref().to_string(),
                        state: r.state().to_cri() as i32,
                        created_at: r.created_at(),
                        labels: r.config().labels.clone(),
                        annotations: r.config().annotations.clone(),
                        image_id: r.image_id().to_string(),
                    })
                })
            })
            .collect();
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(cri::ListContainersResponse { containers })
    }
}

fn image_spec(rec: &ContainerRecord) -> cri::ImageSpec {
    let mut spec = rec.config().image.clone().unwrap_or_default();
    if spec.user_specified_image.is_empty() {
        spec.user_specified_image = spec.image.clone();
    }
    spec.image = rec.image_id().to_string();
    spec
}

/// A container record in CRI form (`ContainerStatus`), also sent with container events.
pub(crate) fn container_status_of(rec: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: rec.id().to_string(),
        metadata: rec.config().metadata.clone(),
        state: rec.state().to_cri() as i32,
        created_at: rec.created_at(),
        started_at: rec.started_at(),
        finished_at: rec.exit().map_or(0, |e| e.finished_at),
        exit_code: rec.exit().map_or(0, |e| e.code),
        image: Some(image_spec(rec)),
        image_ref: rec.image_digest_ref().to_string(),
        reason: rec
            .exit()
            .as_ref()
            .map_or_else(String::new, |e| e.reason.as_str().to_string()),
        message: rec
            .exit()
            .as_ref()
            .map_or_else(String::new, |e| e.message.clone()),
        labels: rec.config().labels.clone(),
        annotations: rec.config().annotations.clone(),
        mounts: rec.config().mounts.clone(),
        log_path: rec.log_path().to_string(),
        resources: rec
            .config()
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|linux| cri::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
        image_id: rec.image_id().to_string(),
        user: rec.user().map(|u| u.to_cri()),
        // The effective stop signal (request, else image, else SIGTERM), as containerd reports
        // it, so the reader sees what StopContainer will send.
        stop_signal: super::container_stop::cri_signal(Some(
            rec.stop_signal().unwrap_or("SIGTERM"),
        )),
    }
}
