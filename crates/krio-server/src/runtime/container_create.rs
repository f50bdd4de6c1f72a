//! `CreateContainer`: validate, look up the sandbox and the image, reserve the name, mount the
//! rootfs, write the bundle, and have a monitor run `runtime create`. A failure undoes every
//! step through the same idempotent teardown that `RemoveContainer` uses.

use std::path::PathBuf;
use std::sync::Arc;

use krio_cri::v1 as cri;
use tracing::Instrument;

use crate::error::{Result, ServerError};
use crate::state::{
    now_ns, Container, ContainerRecord, ContainerState, SandboxRecord, SandboxState,
};
use crate::{ids, persist, rootfs, validate, Krio};

impl Krio {
    /// CRI `CreateContainer`.
    ///
    /// Errors: `InvalidArgument` naming the field for a bad config; `NotFound` for an unknown
    /// sandbox or an image that is not present (kubelet pulls first); `FailedPrecondition` when
    /// the sandbox is not ready; `AlreadyExists` when the container name is reserved in the pod;
    /// `Internal` when mounting or the runtime fails.
    pub(crate) async fn create_container(
        self: &Arc<Self>,
        req: cri::CreateContainerRequest,
    ) -> Result<cri::CreateContainerResponse> {
        ids::validate("pod_sandbox_id", &req.pod_sandbox_id)?;
        let config = req
            .config
            .ok_or_else(|| ServerError::invalid("config", "is required"))?;
        validate::container_config(&config)?;
        let sandbox = self.sandboxes.get("pod_sandbox_id", &req.pod_sandbox_id)?;
        let sb = sandbox.snapshot();
        if sb.state != SandboxState::Ready {
            return Err(ServerError::FailedPrecondition(format!(
                "sandbox {} is not ready",
                sb.id
            )));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = self
            .resolve_image(&image_ref)
            .ok_or_else(|| ServerError::NotFound {
                kind: "image",
                id: image_ref.clone(),
            })?;
        let cri_stop_signal = cri::Signal::try_from(config.stop_signal).map_err(|_| {
            ServerError::invalid(
                "config.stop_signal",
                format!("unknown signal {}", config.stop_signal),
            )
        })?;
        let stop_signal = super::container_stop::recorded_stop_signal(
            Some(cri_stop_signal.as_str_name()),
            image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.stop_signal().as_deref()),
        )?;
        let target_pidns = self.target_pid_namespace(&config, &sb.id)?;
        let name = super::container_remove::container_name(&config, &sb.config);
        let id = ids::new_id()?;
        let log_path = if sb.config.log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            PathBuf::from(&sb.config.log_directory)
                .join(&config.log_path)
                .to_string_lossy()
                .into_owned()
        };
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sb.id.clone(),
            image_ref,
            image_id: image.id.clone(),
            image_digest_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            runtime_handler: sb.runtime_handler.clone(),
            log_path,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            state: ContainerState::Created,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            monitor_pid: 0,
            cgroups_path: format!("{}/{}", sb.cgroup_parent, id),
            stop_signal,
            user: None,
            config,
        };
        let this = self.clone();
        let task_name = name.clone();
        let work = async move {
            let span =
                tracing::info_span!("create_container", container = %record.id, name = %task_name);
            this.finish_create(record, &sb, &image, &task_name, target_pidns)
                .instrument(span)
                .await
        };
        let container_id = self
            .pending_containers
            .run(
                "container",
                &name,
                || self.containers.reserve(&name, &id),
                work,
            )
            .await?;
        Ok(cri::CreateContainerResponse { container_id })
    }

    async fn finish_create(
        self: &Arc<Self>,
        mut record: ContainerRecord,
        sb: &SandboxRecord,
        image: &krio_image::ImageRecord,
        name: &str,
        target_pidns: Option<PathBuf>,
    ) -> Result<String> {
        let id = record.id.clone();
        match self
            .setup_container(&mut record, sb, image, target_pidns)
            .await
        {
            Ok(()) => {
                let c = Container::new(record);
                self.containers.insert(id.clone(), c.clone());
                self.emit(
                    &c.snapshot(),
                    cri::ContainerEventType::ContainerCreatedEvent,
                );
                self.watch_exit(c);
                Ok(id)
            }
            Err(e) => {
                if let Err(undo) = self.teardown_container(&record).await {
                    tracing::warn!(container = %id, error = %undo, "undo after failed create");
                }
                self.containers.release(name, &id);
                Err(e)
            }
        }
    }

    async fn setup_container(
        &self,
        rec: &mut ContainerRecord,
        sb: &SandboxRecord,
        image: &krio_image::ImageRecord,
        target_pidns: Option<PathBuf>,
    ) -> Result<()> {
        let run_dir = self.container_run_dir(&rec.id);
        let data_dir = self.container_data_dir(&rec.id);
        for d in [&run_dir, &data_dir] {
            std::fs::create_dir_all(d).map_err(|e| ServerError::io("creating directory", d, e))?;
        }
        // The record goes to disk first, so a daemon killed in the middle finds and cleans
        // the half-made container on restart (state stays Created with pid 0).
        persist::write_json(&self.container_record_path(&rec.id), rec)?;
        let lowers = self.images.layer_dirs(image)?;
        let rootfs_dir = run_dir.join("rootfs");
        rootfs::mount_overlay(
            &lowers,
            &data_dir.join("upper"),
            &data_dir.join("work"),
            &rootfs_dir,
        )?;
        rootfs::check_special_dirs(&rootfs_dir)?;
        if !rec.log_path.is_empty() {
            // Create the log file now, as the monitor will open it (no link followed below the
            // pod's log directory, nothing but a regular file): a link, FIFO or directory planted
            // at the path is the caller's problem to clear, named in the reply.
            let dir = PathBuf::from(&sb.config.log_directory);
            std::fs::create_dir_all(&dir)
                .map_err(|e| ServerError::io("creating log directory", &dir, e))?;
            krio_monitor::logfile::open_log_file(&dir, std::path::Path::new(&rec.config.log_path))
                .map_err(|e| {
                    ServerError::FailedPrecondition(format!(
                        "config.log_path {}: {e}",
                        crate::validate::quote(&rec.config.log_path)
                    ))
                })?;
        }
        let sandbox_dir = self.sandbox_run_dir(&sb.id);
        let mut sandbox_mounts = Vec::new();
        for (file, dest) in [
            ("hostname", "/etc/hostname"),
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            let already = rec.config.mounts.iter().any(|m| m.container_path == dest);
            if !already {
                sandbox_mounts.push(bind_mount(&sandbox_dir.join(file), dest)?);
            }
        }
        let image_config = image.config.config().clone();
        let mut sandbox_config = effective_pid_mode(sb);
        // Daemon-wide default sysctls go in beside the pod's own (which win), so they are
        // checked by the same rules. Those of a namespace the pod shares with the host are
        // left out rather than failing the pod (as CRI-O does).
        if !self.cfg.container.default_sysctls.is_empty() {
            let linux = sandbox_config.linux.get_or_insert_with(Default::default);
            let ns = linux
                .security_context
                .as_ref()
                .and_then(|sc| sc.namespace_options.clone())
                .unwrap_or_default();
            let node = cri::NamespaceMode::Node as i32;
            for (k, v) in &self.cfg.container.default_sysctls {
                let key = k.replace('/', ".");
                let ipc = key.starts_with("kernel.shm")
                    || key.starts_with("kernel.msg")
                    || key == "kernel.sem"
                    || key.starts_with("fs.mqueue.");
                if (ns.network == node && key.starts_with("net.")) || (ns.ipc == node && ipc) {
                    continue;
                }
                linux.sysctls.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let spec_config = stage_rro_mounts(&rec.config, &run_dir)?;
        let mut spec = krio_oci::build_spec(&krio_oci::SpecInputs {
            container: &spec_config,
            sandbox: &sandbox_config,
            image_config: image_config.as_ref(),
            rootfs: &rootfs_dir,
            namespaces: krio_oci::NamespacePaths {
                network: sb.netns.clone(),
                ipc: sb.ipcns.clone(),
                uts: sb.utsns.clone(),
                pid: target_pidns.or_else(|| sb.pidns.clone()),
            },
            sandbox_mounts,
            cgroups_path: rec.cgroups_path.clone(),
            daemon_oom_score_adj: self.daemon_oom_score_adj,
            sandbox_id: &sb.id,
            pids_limit: match self.cfg.container.pids_limit {
                0 => None,
                n => Some(n),
            },
            cgroup_v2: krio_oci::host_uses_cgroup_v2(),
            capability_bounding_set: Some(krio_oci::daemon_bounding_set()),
        })?;
        // RuntimeDefault means the operator's profile when one is configured (CRI-O's
        // `seccomp_profile`); a privileged container has no filter either way.
        if spec.linux().as_ref().is_some_and(|l| l.seccomp().is_some()) {
            let sc = rec
                .config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref());
            if krio_oci::seccomp_choice(sc)? == krio_oci::SeccompChoice::RuntimeDefault {
                if let Some(profile) =
                    crate::config::load_seccomp_profile(&self.cfg.container.seccomp_profile)
                        .map_err(ServerError::FailedPrecondition)?
                {
                    if let Some(linux) = spec.linux_mut() {
                        linux.set_seccomp(Some(profile));
                    }
                }
            }
        }
        // The CRI has no rlimits; the daemon's `default_ulimits` (checked at start) apply.
        let rlimits: Vec<_> = self
            .cfg
            .container
            .default_ulimits
            .iter()
            .filter_map(|u| crate::config::parse_ulimit(u).ok())
            .collect();
        if !rlimits.is_empty() {
            if let Some(process) = spec.process_mut() {
                process.set_rlimits(Some(rlimits));
            }
        }
        krio_oci::write_bundle(&run_dir, &spec)?;
        let runtime = self.runtime(&rec.runtime_handler)?;
        let mut monitor = krio_monitor::MonitorConfig::new(
            rec.id.clone(),
            run_dir.clone(),
            runtime.binary(),
            runtime.root(),
            (!rec.log_path.is_empty()).then(|| PathBuf::from(&rec.log_path)),
            run_dir.join("exit.json"),
            run_dir.join("pid"),
        );
        monitor.runtime_log = Some(run_dir.join("runtime.log"));
        if !rec.log_path.is_empty() {
            monitor.log_directory = Some(PathBuf::from(&sb.config.log_directory));
        }
        monitor.max_log_line = self.cfg.container.log_line_max;
        monitor.no_pivot = self.cfg.container.no_pivot;
        monitor.tty = rec.config.tty;
        monitor.stdin = rec.config.stdin;
        monitor.stdin_once = rec.config.stdin_once;
        monitor.attach_socket = Some(krio_monitor::attach::attach_socket_path(&run_dir));
        let bin = self.monitor_bin.clone();
        let spawned = tokio::task::spawn_blocking(move || krio_monitor::spawn(&monitor, &bin))
            .await
            .map_err(|e| {
                ServerError::io("spawning monitor", &run_dir, std::io::Error::other(e))
            })??;
        rec.pid = spawned.container_pid;
        rec.monitor_pid = spawned.monitor_pid;
        // `runtime create` returns once the init set its credentials (before it waits to exec
        // the command), so these are the ones the container's process will have.
        rec.user = crate::state::ProcessUser::of_pid(rec.pid);
        persist::write_json(&self.container_record_path(&rec.id), rec)?;
        Ok(())
    }
}

impl Krio {
    /// For a container whose PID namespace mode is TARGET (`kubectl debug --target`): the PID
    /// namespace of the target container's init, `/proc/<pid>/ns/pid`, which the new container
    /// joins. `None` for any other mode.
    ///
    /// Errors: `InvalidArgument` naming `target_id` when it is empty or malformed, or not a
    /// running container of the same pod.
    fn target_pid_namespace(
        &self,
        config: &cri::ContainerConfig,
        sandbox_id: &str,
    ) -> Result<Option<PathBuf>> {
        const FIELD: &str = "config.linux.security_context.namespace_options.target_id";
        let Some(ns) = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
        else {
            return Ok(None);
        };
        if ns.pid != cri::NamespaceMode::Target as i32 {
            return Ok(None);
        }
        if ns.target_id.is_empty() {
            return Err(ServerError::invalid(
                FIELD,
                "is required with pid mode TARGET",
            ));
        }
        let not_target = |why: &str| {
            ServerError::invalid(
                FIELD,
                format!("{} {why}", crate::validate::quote(&ns.target_id)),
            )
        };
        let target = self
            .containers
            .find(FIELD, &ns.target_id)?
            .ok_or_else(|| not_target("is not a container"))?;
        if target.sandbox_id != sandbox_id {
            return Err(not_target("is a container of another pod"));
        }
        let mut rec = target.snapshot();
        self.refresh_exit(&mut rec);
        if rec.state != ContainerState::Running || !super::container_stop::process_running(rec.pid)
        {
            return Err(not_target("is not running"));
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", rec.pid))))
    }
}

/// The container config as the spec builder should see it: each CRI mount with
/// `recursive_read_only` is staged ([`rootfs::stage_recursive_read_only`]) under the container's
/// run directory and replaced by a plain read-only private bind of the staging point.
///
/// Errors: `InvalidArgument` naming `mounts[i].host_path` when it does not exist; `Internal`
/// when staging fails (what was staged is undone by the container's teardown).
fn stage_rro_mounts(
    config: &cri::ContainerConfig,
    run_dir: &std::path::Path,
) -> Result<cri::ContainerConfig> {
    let mut out = config.clone();
    for (i, m) in out.mounts.iter_mut().enumerate() {
        if !m.recursive_read_only {
            continue;
        }
        let source =
            std::fs::canonicalize(&m.host_path).map_err(|e| ServerError::InvalidArgument {
                field: format!("mounts[{i}].host_path"),
                reason: format!("{}: {e}", m.host_path),
            })?;
        let staging = rootfs::rro_staging_dir(run_dir).join(i.to_string());
        rootfs::stage_recursive_read_only(&source, &staging)?;
        m.host_path = staging.to_string_lossy().into_owned();
        m.recursive_read_only = false;
        m.readonly = true;
    }
    Ok(out)
}

/// A read-write bind mount of a sandbox file (`rbind`, `rprivate`), as containerd mounts the
/// pod's hosts, hostname and resolv.conf.
fn bind_mount(source: &std::path::Path, dest: &str) -> Result<oci_spec::runtime::Mount> {
    oci_spec::runtime::MountBuilder::default()
        .destination(dest)
        .source(source)
        .typ("bind")
        .options(vec![
            "rbind".to_string(),
            "rprivate".to_string(),
            "rw".to_string(),
        ])
        .build()
        .map_err(|e| ServerError::invalid("mounts", e.to_string()))
}

/// The sandbox config as the spec builder should see it. A sandbox recorded without a pod
/// PID namespace (one made before pods had an init) gives each container its own PID
/// namespace when the pod asked for a shared one.
fn effective_pid_mode(sb: &SandboxRecord) -> cri::PodSandboxConfig {
    let mut config = sb.config.clone();
    if sb.pidns.is_some() {
        return config;
    }
    let linux = config.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    let ns = sc.namespace_options.get_or_insert_with(Default::default);
    if ns.pid == cri::NamespaceMode::Pod as i32 {
        ns.pid = cri::NamespaceMode::Container as i32;
    }
    config
}
