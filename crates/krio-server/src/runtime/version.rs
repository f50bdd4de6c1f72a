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

    /// CRI `Status`. `RuntimeReady` is true when the default handler's binary is present and the
    /// state directory is writable; each configured handler also gets a condition of its own,
    /// `RuntimeHandlerReady/<name>`, false (reason `RuntimeHandlerNotReady`, the message naming
    /// the binary) when its binary is missing, so a missing optional runtime (runsc) does not
    /// make the node NotReady. `NetworkReady` is true when a valid CNI network configuration
    /// exists (re-read on every call, so a configuration written later is picked up without a
    /// restart). `runtime_handlers` lists every handler with its features, plus the default
    /// handler's again under the name "" (the CRI's default handler). `verbose` adds JSON
    /// documents to `info` (what `krioctl status` shows): the effective `config`; `handlers`,
    /// each runtime handler's binary, `--root`, arguments, readiness and probed features;
    /// `network`, the CNI network ADD would use now; `counts`, pods and containers by CRI state
    /// and images; `inflight`, the CRI calls being served, the pod and container creations
    /// running (which outlive their callers) and the pulls.
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
            for (key, value) in self.introspection(network.as_ref().err(), &handler_problems) {
                info.insert(key.to_string(), value.to_string());
            }
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
            runtime_handlers: self.runtime_handlers(),
            // Merge and Strict are applied when the spec is built; ContainerStatus.user reports
            // the identity the container's process really has.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
            }),
        })
    }

    /// `StatusResponse.runtime_handlers`: one entry per configured handler, by name (sorted),
    /// followed by a copy of the default handler's entry named "" (CRI `RuntimeHandler.name`:
    /// "An empty string denotes the default handler"). Kubelet (and critest) look a pod's
    /// features up under the pod's `runtime_handler`, which is "" for a pod without a
    /// RuntimeClass, so without that entry the default handler's user namespaces and recursive
    /// read-only mounts would look unsupported. containerd's CRI plugin does the same: it
    /// appends a copy of its default runtime's entry with the name cleared.
    fn runtime_handlers(&self) -> Vec<cri::RuntimeHandler> {
        let mut list: Vec<cri::RuntimeHandler> = self
            .handlers
            .iter()
            .map(|(name, h)| cri::RuntimeHandler {
                name: name.clone(),
                features: Some(cri::RuntimeHandlerFeatures {
                    // krio stages recursive read-only mounts itself (mount_setattr), so
                    // every handler gets them, runc 1.1 included.
                    recursive_read_only_mounts: crate::rootfs::recursive_read_only_supported(),
                    // The runtime joins the pod's user namespace by path; krio makes it
                    // and the id-mapped rootfs (runc 1.1 has no id-mapped mounts).
                    user_namespaces: h.user_namespaces(),
                }),
            })
            .collect();
        if let Some(default) = list
            .iter()
            .find(|h| h.name == self.cfg.default_runtime)
            .cloned()
        {
            list.push(cri::RuntimeHandler {
                name: String::new(),
                ..default
            });
        }
        list
    }

    /// The `handlers`, `network`, `counts` and `inflight` documents of a verbose `Status`;
    /// `handler_problems` is each handler's name and why it is not ready (`None` when it is).
    fn introspection(
        &self,
        network_problem: Option<&String>,
        handler_problems: &[(String, Option<String>)],
    ) -> Vec<(&'static str, serde_json::Value)> {
        use serde_json::json;
        let handlers: Vec<serde_json::Value> = self
            .handlers
            .iter()
            .zip(handler_problems)
            .map(|((name, h), (_, problem))| {
                json!({
                    "name": name,
                    "binary": h.binary(name).unwrap_or_else(|_| h.cfg.path.clone()),
                    "root": self.cfg.runtime_root(name),
                    "runtime_args": h.cfg.runtime_args,
                    "default": *name == self.cfg.default_runtime,
                    "ready": problem.is_none(),
                    "message": problem.clone().unwrap_or_default(),
                    "features": h.features,
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
                .entry(s.snapshot().state().to_cri().as_str_name().to_string())
                .or_default() += 1;
        }
        let mut containers: BTreeMap<String, u64> = BTreeMap::new();
        for c in self.containers.all() {
            let state = c.with_snapshot(|r| r.state().to_cri().as_str_name().to_string());
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
