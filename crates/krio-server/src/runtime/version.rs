//! `Version`, `Status` and `RuntimeConfig`.

use std::collections::{BTreeMap, HashMap};

use krio_cri::v1 as cri;

use crate::config::CgroupDriver;
use crate::error::Result;
use crate::{Krio, CRI_API_VERSION, RUNTIME_NAME};

impl Krio {
    /// CRI `Version`: runtime name `krio`, the crate version, API version `v1`.
    pub(crate) fn version(&self, _req: cri::VersionRequest) -> cri::VersionResponse {
        cri::VersionResponse {
            version: "0.1.0".to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: CRI_API_VERSION.to_string(),
        }
    }

    /// CRI `Status`: `RuntimeReady` is true when every runtime handler's binary is still
    /// present and the state directories are writable; `NetworkReady` is true when a valid
    /// CNI network configuration exists (re-read on every call, so a configuration written
    /// later is picked up without a restart). `verbose` adds JSON documents to `info` (what
    /// `krioctl status` shows): the effective `config`; `handlers`, each runtime handler's
    /// binary, `--root` and readiness; `network`, the CNI network ADD would use now; `counts`,
    /// pods and containers by CRI state and images; `inflight`, the CRI calls being served,
    /// the pod and container creations running (which outlive their callers) and the pulls.
    pub(crate) fn status(&self, req: cri::StatusRequest) -> Result<cri::StatusResponse> {
        let runtime_problem = self
            .runtimes
            .iter()
            .find(|(_, r)| !r.binary().is_file())
            .map(|(name, r)| {
                format!(
                    "runtime handler {name:?}: {} is missing",
                    r.binary().display()
                )
            })
            .or_else(|| {
                // access(2) with W_OK also reports a read-only file system (EROFS).
                rustix::fs::access(&self.cfg.state_dir, rustix::fs::Access::WRITE_OK)
                    .err()
                    .map(|e| {
                        format!(
                            "state dir {} not writable: {e}",
                            self.cfg.state_dir.display()
                        )
                    })
            });
        let network = self.cni.status();
        let condition = |kind: &str, problem: Option<String>, reason: &str| cri::RuntimeCondition {
            r#type: kind.to_string(),
            status: problem.is_none(),
            reason: if problem.is_some() {
                reason.to_string()
            } else {
                String::new()
            },
            message: problem.unwrap_or_default(),
        };
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "config".to_string(),
                serde_json::to_string(&self.cfg).unwrap_or_default(),
            );
            for (key, value) in self.introspection(network.as_ref().err()) {
                info.insert(key.to_string(), value.to_string());
            }
        }
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", runtime_problem, "RuntimeNotReady"),
                    condition("NetworkReady", network.err(), "NetworkPluginNotReady"),
                ],
            }),
            info,
            runtime_handlers: self
                .runtimes
                .keys()
                .map(|name| cri::RuntimeHandler {
                    name: name.clone(),
                    features: Some(cri::RuntimeHandlerFeatures {
                        // krio stages recursive read-only mounts itself (mount_setattr), so
                        // every handler gets them, runc 1.1 included.
                        recursive_read_only_mounts: crate::rootfs::recursive_read_only_supported(),
                        user_namespaces: false,
                    }),
                })
                .collect(),
            // Merge and Strict are applied when the spec is built; ContainerStatus.user reports
            // the identity the container's process really has.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
            }),
        })
    }

    /// The `handlers`, `network`, `counts` and `inflight` documents of a verbose `Status`.
    fn introspection(
        &self,
        network_problem: Option<&String>,
    ) -> Vec<(&'static str, serde_json::Value)> {
        use serde_json::json;
        let handlers: Vec<serde_json::Value> = self
            .runtimes
            .iter()
            .map(|(name, r)| {
                let binary = r.binary();
                json!({
                    "name": name,
                    "binary": binary,
                    "root": r.root(),
                    "default": *name == self.cfg.default_runtime,
                    "ready": binary.is_file(),
                })
            })
            .collect();
        let network = match self.cni.default_network() {
            Ok(n) => json!({
                "name": n.name,
                "cniVersion": n.cni_version,
                "file": n.source,
                "plugins": (0..n.plugins.len()).map(|i| n.plugin_type(i)).collect::<Vec<_>>(),
                "confDir": self.cfg.cni.conf_dir,
                "ready": network_problem.is_none(),
                "problem": network_problem,
            }),
            Err(e) => json!({
                "confDir": self.cfg.cni.conf_dir,
                "ready": false,
                "problem": network_problem.cloned().unwrap_or_else(|| e.to_string()),
            }),
        };
        let mut pods: BTreeMap<String, u64> = BTreeMap::new();
        for s in self.sandboxes.all() {
            *pods
                .entry(s.snapshot().state.to_cri().as_str_name().to_string())
                .or_default() += 1;
        }
        let mut containers: BTreeMap<String, u64> = BTreeMap::new();
        for c in self.containers.all() {
            let state = c.with_snapshot(|r| r.state.to_cri().as_str_name().to_string());
            *containers.entry(state).or_default() += 1;
        }
        let counts = json!({
            "pods": pods.values().sum::<u64>(),
            "podsByState": pods,
            "containers": containers.values().sum::<u64>(),
            "containersByState": containers,
            "images": self.images.list().len(),
        });
        let inflight = json!({
            "calls": self.in_flight.snapshot(),
            "podCreations": self.pending_sandboxes.running(),
            "containerCreations": self.pending_containers.running(),
            "pulls": self.images.pulls_in_flight(),
        });
        vec![
            ("handlers", serde_json::Value::Array(handlers)),
            ("network", network),
            ("counts", counts),
            ("inflight", inflight),
        ]
    }

    /// CRI `RuntimeConfig`: reports the configured cgroup driver.
    pub(crate) fn runtime_config(&self) -> cri::RuntimeConfigResponse {
        let driver = match self.cfg.cgroup_driver {
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        };
        cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }
    }
}
