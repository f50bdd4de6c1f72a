//! `PodSandboxStatus` and `ListPodSandbox`.

use std::collections::HashMap;

use krio_cri::v1 as cri;

use crate::error::Result;
use crate::state::SandboxRecord;
use crate::{ids, Krio};

impl Krio {
    /// CRI `PodSandboxStatus`: state, creation time, IPs, namespace options, labels and
    /// annotations. `verbose` adds `info` (the record as JSON).
    ///
    /// Errors: `InvalidArgument` for a malformed id, `NotFound` for an unknown one.
    pub(crate) fn pod_sandbox_status(
        &self,
        req: cri::PodSandboxStatusRequest,
    ) -> Result<cri::PodSandboxStatusResponse> {
        ids::validate("pod_sandbox_id", &req.pod_sandbox_id)?;
        let rec = self
            .sandboxes
            .get("pod_sandbox_id", &req.pod_sandbox_id)?
            .snapshot();
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "info".to_string(),
                serde_json::to_string(&rec).unwrap_or_default(),
            );
        }
        let status = sandbox_status_of(&rec);
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: Vec::new(),
            timestamp: 0,
        })
    }

    /// CRI `ListPodSandbox`, filtered by id (full or prefix), state and label selector (all
    /// given labels must match).
    pub(crate) fn list_pod_sandbox(
        &self,
        req: cri::ListPodSandboxRequest,
    ) -> Result<cri::ListPodSandboxResponse> {
        let filter = req.filter.unwrap_or_default();
        let mut items: Vec<cri::PodSandbox> = self
            .sandboxes
            .all()
            .iter()
            .map(|s| s.snapshot())
            .filter(|r| matches_sandbox(r, &filter))
            .map(|r| cri::PodSandbox {
                id: r.id().to_string(),
                metadata: r.config().metadata.clone(),
                state: r.state().to_cri() as i32,
                created_at: r.created_at(),
                labels: r.config().labels.clone(),
                annotations: r.config().annotations.clone(),
                runtime_handler: r.runtime_handler().to_string(),
            })
            .collect();
        items.sort_by_key(|p| std::cmp::Reverse(p.created_at));
        Ok(cri::ListPodSandboxResponse { items })
    }
}

fn matches_sandbox(r: &SandboxRecord, f: &cri::PodSandboxFilter) -> bool {
    (f.id.is_empty() || r.id().starts_with(&f.id))
        && f.state
            .as_ref()
            .is_none_or(|s| s.state == r.state().to_cri() as i32)
        && labels_match(&r.config().labels, &f.label_selector)
}

/// Whether every selector label is present with the same value.
pub(crate) fn labels_match(
    labels: &HashMap<String, String>,
    selector: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A sandbox record in CRI form (`PodSandboxStatus`), also sent with container events.
pub(crate) fn sandbox_status_of(rec: &SandboxRecord) -> cri::PodSandboxStatus {
    let mut ips = rec.ips().iter();
    cri::PodSandboxStatus {
        id: rec.id().to_string(),
        metadata: rec.config().metadata.clone(),
        state: rec.state().to_cri() as i32,
        created_at: rec.created_at(),
        network: Some(cri::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(rec.ns_options()),
            }),
        }),
        labels: rec.config().labels.clone(),
        annotations: rec.config().annotations.clone(),
        runtime_handler: rec.runtime_handler().to_string(),
    }
}
