//! The workloads: pod/container specs shared by all, plus start/teardown, calls, memory, pull and
//! the per-handler start and memory workload.
//!
//! Every pod the driver makes carries the label [`LABEL_KEY`] = run id, so a failed run can be cleaned
//! up by label ([`cleanup_labeled`]).

pub mod busy;
pub mod calls;
pub mod floor;
pub mod handler;
pub mod memory;
pub mod pull;
pub mod restart;
pub mod start;
pub mod stream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use krio_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PullImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};

use crate::client::CriClient;
use crate::error::{BenchError, Result};
use crate::results::ms_since;

/// Label put on every pod sandbox the driver creates; its value is the run id.
pub const LABEL_KEY: &str = "krio-bench.run";
/// Kubernetes namespace put in every pod's metadata.
pub const POD_NAMESPACE: &str = "krio-bench";

/// How the driver builds pods and containers. Shared by all workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTemplate {
    /// Image of the workload containers, e.g. `127.0.0.1:5000/krio-test/busybox:latest`.
    pub image: String,
    /// Command of each container (default `["/bin/sleep", "3600"]`).
    pub command: Vec<String>,
    /// Value of [`LABEL_KEY`] on every pod (unique per driver invocation).
    pub run_id: String,
    /// If set, each pod's `log_directory` is `<log_root>/<pod uid>` (created before, removed after).
    pub log_root: Option<PathBuf>,
    /// `cgroup_parent` of every pod (cgroupfs syntax; empty lets the runtime pick).
    pub cgroup_parent: String,
    /// Upper bound on waiting for `CONTAINER_RUNNING` after StartContainer.
    pub running_timeout: Duration,
    /// Run pods in the host network namespace (`NamespaceMode::NODE`), skipping CNI.
    pub host_network: bool,
    /// Create containers with `stdin` open (CRI `ContainerConfig.stdin`, not `stdin_once`), so a
    /// client can attach to it.
    pub stdin: bool,
    /// CRI `RunPodSandboxRequest.runtime_handler` (the RuntimeClass handler); empty means the
    /// runtime's default handler.
    pub runtime_handler: String,
}

impl PodTemplate {
    /// A template with the defaults described on each field.
    pub fn new(image: &str, run_id: &str) -> Self {
        PodTemplate {
            image: image.to_owned(),
            command: vec!["/bin/sleep".to_owned(), "3600".to_owned()],
            run_id: run_id.to_owned(),
            log_root: None,
            cgroup_parent: String::new(),
            running_timeout: Duration::from_secs(30),
            host_network: false,
            stdin: false,
            runtime_handler: String::new(),
        }
    }

    /// The RunPodSandbox config for pod `name` (also used as its uid suffix).
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = format!("{}-{}", self.run_id, name);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.clone(),
                namespace: POD_NAMESPACE.to_owned(),
                attempt: 0,
            }),
            // Host-network pods share the host's UTS namespace: no hostname of their own.
            hostname: if self.host_network {
                String::new()
            } else {
                name.chars().take(63).collect()
            },
            log_directory: self
                .log_root
                .as_ref()
                .map(|r| r.join(&uid).display().to_string())
                .unwrap_or_default(),
            labels: HashMap::from([(LABEL_KEY.to_owned(), self.run_id.clone())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Namespace options as the kubelet sends them for a pod without `shareProcessNamespace`:
    /// network POD (NODE with [`PodTemplate::host_network`]), pid CONTAINER, ipc POD.
    pub fn namespaces(&self) -> NamespaceOption {
        NamespaceOption {
            network: if self.host_network {
                NamespaceMode::Node as i32
            } else {
                NamespaceMode::Pod as i32
            },
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    /// The CreateContainer config for container `name` in a pod.
    pub fn container_config(&self, name: &str) -> ContainerConfig {
        let (cmd, args) = match self.command.split_first() {
            Some((c, a)) => (vec![c.clone()], a.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: cmd,
            args,
            stdin: self.stdin,
            log_path: if self.log_root.is_some() {
                format!("{name}.log")
            } else {
                String::new()
            },
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Per-call latencies of bringing up one pod, milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StartTimes {
    /// RunPodSandbox.
    pub run_pod_sandbox_ms: f64,
    /// Each CreateContainer, in order.
    pub create_container_ms: Vec<f64>,
    /// Each StartContainer, in order.
    pub start_container_ms: Vec<f64>,
    /// From before RunPodSandbox until every container reported RUNNING.
    pub total_ms: f64,
}

/// A pod the driver started.
#[derive(Clone, Debug)]
pub struct StartedPod {
    /// Pod sandbox id from RunPodSandbox.
    pub pod_id: String,
    /// Container ids, in creation order.
    pub container_ids: Vec<String>,
    /// How long each step took.
    pub times: StartTimes,
}

/// Latencies of tearing one pod down, milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TeardownTimes {
    /// StopPodSandbox (stops every container of the pod).
    pub stop_pod_sandbox_ms: f64,
    /// RemovePodSandbox (removes the containers too).
    pub remove_pod_sandbox_ms: f64,
    /// Both together.
    pub total_ms: f64,
}

/// Pulls `image` unless the runtime already has it (warm-up; not timed).
///
/// # Errors
/// [`BenchError::Rpc`] from PullImage.
pub async fn ensure_image(client: &CriClient, image: &str) -> Result<()> {
    let mut c = client.image.clone();
    let st = c
        .image_status(krio_cri::v1::ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(|s| BenchError::rpc("ImageStatus", image, s))?;
    if st.into_inner().image.is_some() {
        return Ok(());
    }
    c.pull_image(PullImageRequest {
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .map_err(|s| BenchError::rpc("PullImage", image, s))?;
    Ok(())
}

/// RunPodSandbox + `containers` × (CreateContainer + StartContainer), then polls ContainerStatus until
/// each container is `CONTAINER_RUNNING`. Times every call.
///
/// On failure the pod (if created) is left for the caller's label cleanup ([`cleanup_labeled`]).
///
/// # Errors
/// [`BenchError::Rpc`] from any call, [`BenchError::NotRunning`] on timeout, [`BenchError::Io`] if the
/// log directory cannot be created.
pub async fn start_pod(
    client: &CriClient,
    tpl: &PodTemplate,
    name: &str,
    containers: usize,
) -> Result<StartedPod> {
    let mut rt = client.runtime.clone();
    let config = tpl.pod_config(name);
    if !config.log_directory.is_empty() {
        std::fs::create_dir_all(&config.log_directory)
            .map_err(|e| BenchError::io("creating", &config.log_directory, e))?;
    }
    let mut times = StartTimes::default();
    let t0 = Instant::now();
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: tpl.runtime_handler.clone(),
        })
        .await
        .map_err(|s| BenchError::rpc("RunPodSandbox", name, s))?
        .into_inner()
        .pod_sandbox_id;
    times.run_pod_sandbox_ms = ms_since(t0);
    let mut container_ids = Vec::with_capacity(containers);
    for i in 0..containers {
        let cname = format!("c{i}");
        let t = Instant::now();
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(tpl.container_config(&cname)),
                sandbox_config: Some(config.clone()),
            })
            .await
            .map_err(|s| BenchError::rpc("CreateContainer", format!("{name}/{cname}"), s))?
            .into_inner()
            .container_id;
        times.create_container_ms.push(ms_since(t));
        let t = Instant::now();
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .map_err(|s| BenchError::rpc("StartContainer", &id, s))?;
        times.start_container_ms.push(ms_since(t));
        container_ids.push(id);
    }
    for id in &container_ids {
        wait_running(client, id, tpl.running_timeout).await?;
    }
    times.total_ms = ms_since(t0);
    Ok(StartedPod {
        pod_id,
        container_ids,
        times,
    })
}

/// Polls ContainerStatus (1 ms apart) until the container is `CONTAINER_RUNNING`.
///
/// # Errors
/// [`BenchError::Rpc`], or [`BenchError::NotRunning`] after `timeout`.
pub async fn wait_running(client: &CriClient, id: &str, timeout: Duration) -> Result<()> {
    let mut rt = client.runtime.clone();
    let t0 = Instant::now();
    loop {
        let st = rt
            .container_status(ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(|s| BenchError::rpc("ContainerStatus", id, s))?
            .into_inner();
        let state = st
            .status
            .map(|s| s.state)
            .unwrap_or(ContainerState::ContainerUnknown as i32);
        if state == ContainerState::ContainerRunning as i32 {
            return Ok(());
        }
        if t0.elapsed() >= timeout {
            return Err(BenchError::NotRunning {
                container_id: id.to_owned(),
                waited_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
                state: ContainerState::try_from(state)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| state.to_string()),
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// StopPodSandbox + RemovePodSandbox, timed.
///
/// # Errors
/// [`BenchError::Rpc`] from either call.
pub async fn teardown_pod(client: &CriClient, pod_id: &str) -> Result<TeardownTimes> {
    let mut rt = client.runtime.clone();
    let t0 = Instant::now();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.to_owned(),
    })
    .await
    .map_err(|s| BenchError::rpc("StopPodSandbox", pod_id, s))?;
    let stop = ms_since(t0);
    let t1 = Instant::now();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.to_owned(),
    })
    .await
    .map_err(|s| BenchError::rpc("RemovePodSandbox", pod_id, s))?;
    Ok(TeardownTimes {
        stop_pod_sandbox_ms: stop,
        remove_pod_sandbox_ms: ms_since(t1),
        total_ms: ms_since(t0),
    })
}

/// Stops and removes every pod carrying [`LABEL_KEY`] (with value `run_id`, or any value if `None`),
/// and removes their log directories under `log_root`. Returns how many pods were removed.
///
/// # Errors
/// [`BenchError::Rpc`] from ListPodSandbox or from tearing a pod down.
pub async fn cleanup_labeled(
    client: &CriClient,
    run_id: Option<&str>,
    log_root: Option<&std::path::Path>,
) -> Result<usize> {
    let mut rt = client.runtime.clone();
    let filter = run_id.map(|r| PodSandboxFilter {
        label_selector: HashMap::from([(LABEL_KEY.to_owned(), r.to_owned())]),
        ..Default::default()
    });
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter })
        .await
        .map_err(|s| BenchError::rpc("ListPodSandbox", "cleanup", s))?
        .into_inner()
        .items;
    let mut n = 0;
    for p in pods.iter().filter(|p| p.labels.contains_key(LABEL_KEY)) {
        teardown_pod(client, &p.id).await?;
        if let (Some(root), Some(md)) = (log_root, p.metadata.as_ref()) {
            remove_log_dir(root, &md.uid);
        }
        n += 1;
    }
    Ok(n)
}

/// Ends a workload run: when `res` is an error, removes every pod of this template's run by label
/// ([`cleanup_labeled`], best effort: the original error matters more than a cleanup error); then sweeps
/// the run's log directories ([`sweep_logs`]). Returns `res` unchanged.
pub async fn finish_run<T>(client: &CriClient, tpl: &PodTemplate, res: Result<T>) -> Result<T> {
    if res.is_err() {
        let _ = cleanup_labeled(client, Some(&tpl.run_id), tpl.log_root.as_deref()).await;
    }
    sweep_logs(tpl);
    res
}

/// Removes every `<log_root>/<run_id>-*` directory of this template's run (best effort): runtimes may
/// re-create a pod's log directory while the pod goes away.
pub fn sweep_logs(tpl: &PodTemplate) {
    let Some(root) = &tpl.log_root else { return };
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let prefix = format!("{}-", tpl.run_id);
    for e in rd.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes the log directory of the pod this template named `name` (`<log_root>/<run_id>-<name>`, best
/// effort); a no-op without a log root.
pub fn drop_pod_logs(tpl: &PodTemplate, name: &str) {
    if let Some(root) = &tpl.log_root {
        remove_log_dir(root, &format!("{}-{}", tpl.run_id, name));
    }
}

/// Removes `<log_root>/<uid>` if it exists (best effort; the uid never contains `/`).
pub fn remove_log_dir(log_root: &std::path::Path, uid: &str) {
    if !uid.is_empty() && !uid.contains('/') && uid != ".." && uid != "." {
        let _ = std::fs::remove_dir_all(log_root.join(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_shapes() {
        let mut t = PodTemplate::new("reg/busybox:latest", "run1");
        let p = t.pod_config("p0");
        assert_eq!(p.labels[LABEL_KEY], "run1");
        assert_eq!(p.metadata.as_ref().unwrap().uid, "run1-p0");
        assert!(p.log_directory.is_empty());
        let c = t.container_config("c0");
        assert_eq!(c.command, vec!["/bin/sleep"]);
        assert_eq!(c.args, vec!["3600"]);
        assert!(c.log_path.is_empty());
        t.log_root = Some(PathBuf::from("/tmp/x"));
        assert_eq!(t.pod_config("p0").log_directory, "/tmp/x/run1-p0");
        assert_eq!(t.container_config("c0").log_path, "c0.log");
        let ns = p
            .linux
            .as_ref()
            .unwrap()
            .security_context
            .clone()
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, NamespaceMode::Container as i32);
        assert_eq!(p.hostname, "p0");
        t.host_network = true;
        let p = t.pod_config("p0");
        assert!(p.hostname.is_empty());
        let ns = p
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
        let c = t
            .container_config("c0")
            .linux
            .unwrap()
            .security_context
            .unwrap();
        assert_eq!(
            c.namespace_options.unwrap().network,
            NamespaceMode::Node as i32
        );
    }
}
