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

    /// CRI `Status`: `RuntimeReady` is true when every runtime handler's binary is still
    /// present and the state directories are writable; `NetworkReady` is true when a valid
    /// CNI network configuration exists (re-read on every call, so a configuration written
    /// later is picked up without a restart). `verbose` adds the effective config as `config`.
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
