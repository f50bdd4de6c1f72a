//! `Version`, `Status` and `RuntimeConfig`.

use std::collections::HashMap;

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

    /// CRI `Status`. `RuntimeReady` is true when the default handler's binary is present and the
    /// state directory is writable; each configured handler also gets a condition of its own,
    /// `RuntimeHandlerReady/<name>`, false (reason `RuntimeHandlerNotReady`, the message naming
    /// the binary) when its binary is missing, so a missing optional runtime (runsc) does not
    /// make the node NotReady. `NetworkReady` is true when a valid CNI network configuration
    /// exists (re-read on every call, so a configuration written later is picked up without a
    /// restart). `runtime_handlers` lists every handler with its features. `verbose` adds the
    /// effective config as `config` and each handler's readiness and probed features as
    /// `handlers` (JSON).
    pub(crate) fn status(&self, req: cri::StatusRequest) -> Result<cri::StatusResponse> {
        let handler_problems: Vec<(String, Option<String>)> = self
            .handlers
            .iter()
            .map(|(name, h)| (name.clone(), h.binary(name).err()))
            .collect();
        let runtime_problem = handler_problems
            .iter()
            .find(|(name, _)| *name == self.cfg.default_runtime)
            .and_then(|(_, p)| p.clone())
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
            let handlers: serde_json::Map<String, serde_json::Value> = self
                .handlers
                .iter()
                .zip(&handler_problems)
                .map(|((name, h), (_, problem))| {
                    (
                        name.clone(),
                        serde_json::json!({
                            "ready": problem.is_none(),
                            "message": problem.clone().unwrap_or_default(),
                            "path": h.cfg.path,
                            "runtime_args": h.cfg.runtime_args,
                            "features": h.features,
                        }),
                    )
                })
                .collect();
            info.insert(
                "handlers".to_string(),
                serde_json::Value::Object(handlers).to_string(),
            );
        }
        let mut conditions = vec![
            condition("RuntimeReady", runtime_problem, "RuntimeNotReady"),
            condition("NetworkReady", network.err(), "NetworkPluginNotReady"),
        ];
        for (name, problem) in &handler_problems {
            conditions.push(condition(
                &format!("RuntimeHandlerReady/{name}"),
                problem.clone(),
                "RuntimeHandlerNotReady",
            ));
        }
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: self
                .handlers
                .keys()
                .map(|name| cri::RuntimeHandler {
                    name: name.clone(),
                    features: Some(cri::RuntimeHandlerFeatures {
                        // krio stages recursive read-only mounts itself (mount_setattr), so
                        // every handler gets them, runc 1.1 included.
                        recursive_read_only_mounts: crate::rootfs::recursive_read_only_supported(),
                        // Whatever the runtime can do (see `handlers` in the verbose info),
                        // krio refuses pods with user namespaces: no handler has them.
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
