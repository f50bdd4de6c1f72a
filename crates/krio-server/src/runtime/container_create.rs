//! `CreateContainer`: validate, look up the sandbox and the image, reserve the name, mount the
//! rootfs, write the bundle, and have a monitor run `runtime create`. A failure undoes every
//! step through the same idempotent teardown that `RemoveContainer` uses.

use std::path::PathBuf;
use std::sync::Arc;

use krio_cri::v1 as cri;
use tracing::Instrument;

use crate::error::{Result, ServerError};
use crate::state::{
    now_ns, Container, ContainerRecord, ContainerState, NewContainer, SandboxRecord,
};
use crate::{ids, persist, rootfs, validate, Krio};

impl Krio {
    /// CRI `CreateContainer`.
    ///
    /// An absolute path in `config.image.image` names a checkpoint archive to restore from
    /// (see `container_restore.rs`).
    ///
    /// Errors: `InvalidArgument` naming the field for a bad config or a malformed checkpoint
    /// archive; `NotFound` for an unknown sandbox, an image that is not present (kubelet
    /// pulls first) or a missing archive; `FailedPrecondition` when
    /// the sandbox is not ready or its handler's binary is missing, or, for a restore, when
    /// `criu check` fails (naming CRIU's reason); `AlreadyExists` when the container name is reserved in the pod;
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
        let Some(archive) = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| super::container_restore::is_archive(i))
        else {
            return self.create_checked(sandbox, config, None).await;
        };
        // A restore from a checkpoint archive (CRI-O's behaviour): the archive is checked in
        // full, and CRIU with it, before anything is made; its scratch copy goes in the end.
        sandbox.ensure_ready()?;
        let unpacked = self.unpack_checkpoint(&archive).await?;
        let scratch = unpacked.dir.clone();
        let result = async {
            let config = self.restored_config(&config, &unpacked)?;
            if super::checkpoint::test_without_criu() {
                tracing::warn!(
                    "{}: restoring without `criu check`",
                    super::checkpoint::TEST_CHECKPOINT_WITHOUT_CRIU_ENV
                );
            } else {
                super::checkpoint::criu_check().await?;
            }
            self.create_checked(sandbox, config, Some(unpacked)).await
        }
        .await;
        super::container_restore::remove_scratch(&scratch);
        result
    }

    /// The rest of `CreateContainer` once the request is checked: `config` is the container's
    /// (for a restore, built from the archive by [`Krio::restored_config`]), `restore` the
    /// unpacked archive of a restore.
    async fn create_checked(
        self: &Arc<Self>,
        sandbox: Arc<crate::state::Sandbox>,
        config: cri::ContainerConfig,
        restore: Option<crate::checkpoint_archive::Unpacked>,
    ) -> Result<cri::CreateContainerResponse> {
        // A quick answer for a pod that is plainly not ready; the check that counts is made
        // again under the pod's gate, on the creating task.
        sandbox.ensure_ready()?;
        let sb = sandbox.snapshot();
        // The pod's handler may have lost its binary since RunPodSandbox.
        self.handler_binary(sb.runtime_handler())?;
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
        // Counted as a user of the image from here until the container is registered (or the
        // create undone), so RemoveImage cannot delete the layers under a container being
        // born; an image removed just before the hold was taken is looked up again.
        let image_hold = self.image_use.begin_create(&image.id)?;
        if self.images.resolve(&image.id).is_none() {
            return Err(ServerError::NotFound {
                kind: "image",
                id: image_ref,
            });
        }
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
        let target_pidns = self.target_pid_namespace(&config, sb.id())?;
        let volume_image_ids = self.volume_images(&config)?;
        // Image volumes' images are held the same way as the container's.
        let volume_holds = volume_image_ids
            .iter()
            .map(|v| self.image_use.begin_create(v))
            .collect::<Result<Vec<_>>>()?;
        let name = super::container_remove::container_name(&config, sb.config());
        let id = ids::new_id()?;
        // The call's span names the id this attempt creates under.
        crate::service::record_ids("", &id);
        let log_path = if sb.config().log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            PathBuf::from(&sb.config().log_directory)
                .join(&config.log_path)
                .to_string_lossy()
                .into_owned()
        };
        let record = ContainerRecord::new(NewContainer {
            id: id.clone(),
            sandbox_id: sb.id().to_string(),
            image_ref,
            image_id: image.id.clone(),
            image_digest_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            runtime_handler: sb.runtime_handler().to_string(),
            log_path,
            created_at: now_ns(),
            cgroups_path: format!("{}/{}", sb.cgroup_parent(), id),
            subcontainer: sb.runtime_sandbox(),
            stop_signal,
            volume_image_ids,
            config,
        });
        let this = self.clone();
        let task_name = name.clone();
        let work = async move {
            let _image_hold = image_hold;
            let _volume_holds = volume_holds;
            let span = tracing::info_span!("create_container", container = %record.id(), name = %task_name);
            // Held shared until the container is registered (or undone): a stop of the pod
            // waits for this create to finish and then stops the container with the others, or
            // runs first and this create finds the pod not ready.
            let _gate = sandbox.gate.read().await;
            if let Err(e) = sandbox.ensure_ready() {
                this.containers.release(&task_name, record.id());
                return Err(e);
            }
            let sb = sandbox.snapshot();
            this.finish_create(
                record,
                &sb,
                &image,
                &task_name,
                target_pidns,
                restore.as_ref(),
            )
            .instrument(span)
            .await
        };
        let container_id = self
            .pending_containers
            .run(
                "container",
                &name,
                || self.containers.reserve(&name, &id),
                |id| self.containers.contains(id),
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
        restore: Option<&crate::checkpoint_archive::Unpacked>,
    ) -> Result<String> {
        let id = record.id().to_string();
        match self
            .setup_container(&mut record, sb, image, target_pidns, restore)
            .await
        {
            Ok(()) => {
                let pending = record.restore_pending();
                let c = Container::new(record);
                self.containers.insert(id.clone(), c.clone());
                self.emit(
                    &c.snapshot(),
                    cri::ContainerEventType::ContainerCreatedEvent,
                );
                // A restore gets its monitor, and its watcher, at StartContainer.
                if !pending {
                    self.watch_exit(c);
                }
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
        restore: Option<&crate::checkpoint_archive::Unpacked>,
    ) -> Result<()> {
        // Directories, the first record write, the mounts and the bundle: blocking work, kept
        // off the async workers.
        crate::blocking(|| self.prepare_bundle(rec, sb, image, target_pidns, restore))?;
        if restore.is_some() {
            // `runtime restore` runs at StartContainer, as CRI-O restores there.
            rec.set_restore_from(self.container_data_dir(rec.id()).join("checkpoint"));
        } else {
            self.spawn_monitor(rec, &sb.config().log_directory, None)
                .await?;
            // In a pod with its own user namespace, the ids as seen inside it.
            if let Some((uid, gid)) = super::sandbox_run::pod_user_namespace(sb.config()) {
                let inside = rec.user().map(|u| u.in_user_namespace(uid, gid));
                rec.set_user(inside);
            }
        }
        crate::state::kill_point("CreateContainer:monitor-spawned");
        if !self.rro_staging_needed_until_start(rec) {
            self.release_rro_staging(rec.id());
        }
        persist::write_json_async(&self.container_record_path(rec.id()), rec).await?;
        crate::state::kill_point("CreateContainer:record-final");
        Ok(())
    }

    /// Whether the runtime still reads a container's staged recursive read-only binds
    /// ([`rootfs::rro_staging_dir`]) after `runtime create`: runc, crun and youki bind every
    /// mount into the container's mount namespace during `create`, so the host-side staging
    /// can go right after it. A container that is restored from a checkpoint (its
    /// `runtime restore` runs at StartContainer), that joins its pod's runtime sandbox
    /// (`runtime start` at StartContainer), or whose handler makes runtime sandboxes (runsc:
    /// its gofer serves the container's mounts from the sandbox's start on) keeps it until
    /// StartContainer has returned.
    pub(crate) fn rro_staging_needed_until_start(&self, rec: &ContainerRecord) -> bool {
        rec.restore_from().is_some()
            || rec.subcontainer()
            || self.handler(rec.runtime_handler()).map_or(true, |h| {
                h.cfg.pod_sandbox != crate::config::PodSandboxMode::None
            })
    }

    /// Detaches and removes a container's recursive read-only staging
    /// ([`rootfs::discard_staging`]) once the runtime has bound it into the container's mount
    /// namespace (CRI `Mount.recursive_read_only`; the container keeps its own copy of the
    /// mount tree). Holding it longer would keep everything mounted under the volume's host
    /// path busy on the host (a tmpfs there could not be unmounted) until the container is
    /// removed. Idempotent; a failure is logged, and removal and recovery try again.
    pub(crate) fn release_rro_staging(&self, id: &str) {
        let dir = rootfs::rro_staging_dir(&self.container_run_dir(id));
        if let Err(e) = crate::blocking(|| rootfs::discard_staging(&dir)) {
            tracing::warn!(container = %id, error = %e, "releasing recursive read-only staging");
        }
    }

    /// Spawns the container's monitor, which runs `runtime create` (or, with `restore_from`,
    /// `runtime restore` from that CRIU image directory), and records the pids and the
    /// process's credentials in `rec`. `log_directory` is the pod's.
    ///
    /// Errors: `Internal` when the monitor or the runtime fails.
    pub(crate) async fn spawn_monitor(
        &self,
        rec: &mut ContainerRecord,
        log_directory: &str,
        restore_from: Option<PathBuf>,
    ) -> Result<()> {
        let run_dir = self.container_run_dir(rec.id());
        let runtime = self.runtime(rec.runtime_handler())?;
        let binary = self.handler_binary(rec.runtime_handler())?;
        let mut monitor = krio_monitor::MonitorConfig::new(
            rec.id().to_string(),
            run_dir.clone(),
            binary,
            runtime.root(),
            (!rec.log_path().is_empty()).then(|| PathBuf::from(rec.log_path())),
            run_dir.join("exit.json"),
            run_dir.join("pid"),
        );
        monitor.runtime_log = Some(run_dir.join("runtime.log"));
        monitor.runtime_args = runtime.args().to_vec();
        if !rec.log_path().is_empty() {
            monitor.log_directory = Some(PathBuf::from(log_directory));
        }
        monitor.max_log_line = self.cfg.container.log_line_max;
        monitor.no_pivot = self.cfg.container.no_pivot;
        monitor.max_log_size = self.cfg.container.log_size_max;
        monitor.tty = rec.config().tty;
        monitor.stdin = rec.config().stdin;
        monitor.stdin_once = rec.config().stdin_once;
        monitor.attach_socket = Some(krio_monitor::attach::attach_socket_path(&run_dir));
        monitor.restore_from = restore_from;
        monitor.start_on_signal = rec.subcontainer();
        let bin = self.monitor_bin.clone();
        // The runtime's `create` runs in the monitor; its span covers the wait for it.
        let span = runtime.call_span("create", rec.id());
        let spawned = tokio::task::spawn_blocking(move || krio_monitor::spawn(&monitor, &bin))
            .instrument(span)
            .await
            .map_err(|e| {
                ServerError::io("spawning monitor", &run_dir, std::io::Error::other(e))
            })??;
        rec.record_processes(spawned.container_pid, spawned.monitor_pid)?;
        // `runtime create` returns once the init set its credentials (before it waits to exec
        // the command), so these are the ones the container's process will have.
        rec.set_user(crate::state::ProcessUser::of_pid(rec.pid()));
        Ok(())
    }

    /// The blocking steps of a create: directories, the record written before anything else
    /// is made, the rootfs overlay mount and its checks, the log file, staged read-only
    /// mounts, the OCI spec and the bundle.
    fn prepare_bundle(
        &self,
        rec: &ContainerRecord,
        sb: &SandboxRecord,
        image: &krio_image::ImageRecord,
        target_pidns: Option<PathBuf>,
        restore: Option<&crate::checkpoint_archive::Unpacked>,
    ) -> Result<()> {
        let run_dir = self.container_run_dir(rec.id());
        let data_dir = self.container_data_dir(rec.id());
        for d in [&run_dir, &data_dir] {
            std::fs::create_dir_all(d).map_err(|e| ServerError::io("creating directory", d, e))?;
        }
        // The record goes to disk first, so a daemon killed in the middle finds and cleans
        // the half-made container on restart (state stays Created with pid 0).
        persist::write_json(&self.container_record_path(rec.id()), rec)?;
        crate::state::kill_point("CreateContainer:record-written");
        let lowers = self.images.layer_dirs(image)?;
        let rootfs_dir = run_dir.join("rootfs");
        let upper = data_dir.join("upper");
        if let Some(u) = restore.filter(|u| u.has_rootfs_diff) {
            // The checkpointed writable layer, unpacked like an image layer into the new
            // (empty) upper directory before overlayfs sees it.
            std::fs::create_dir_all(&upper)
                .map_err(|e| ServerError::io("creating directory", &upper, e))?;
            crate::checkpoint_archive::apply_rootfs_diff(
                &u.rootfs_diff(),
                &upper,
                &lowers,
                super::container_restore::FIELD,
            )?;
        }
        match (
            sb.userns(),
            super::sandbox_run::pod_user_namespace(sb.config()),
        ) {
            (Some(userns), Some((uid, gid))) => rootfs::mount_overlay_in_userns(
                &lowers,
                &upper,
                &data_dir.join("work"),
                &rootfs_dir,
                userns,
                (uid.host_id, gid.host_id),
                &rootfs::idmap_staging_dir(&run_dir),
            )?,
            _ => rootfs::mount_overlay(&lowers, &upper, &data_dir.join("work"), &rootfs_dir)?,
        }
        rootfs::check_special_dirs(&rootfs_dir)?;
        if let Some(u) = restore {
            // Files the container had deleted from the image's go through the overlay (which
            // records whiteouts); the CRIU image moves to the container's data directory.
            crate::checkpoint_archive::remove_deleted(&rootfs_dir, &u.deleted)?;
            let dest = data_dir.join("checkpoint");
            std::fs::rename(u.checkpoint_dir(), &dest)
                .map_err(|e| ServerError::io("moving CRIU image to", &dest, e))?;
        }
        crate::state::kill_point("CreateContainer:rootfs-mounted");
        if !rec.log_path().is_empty() {
            // Create the log file now, as the monitor will open it (no link followed below the
            // pod's log directory, nothing but a regular file): a link, FIFO or directory planted
            // at the path is the caller's problem to clear, named in the reply.
            let dir = PathBuf::from(&sb.config().log_directory);
            std::fs::create_dir_all(&dir)
                .map_err(|e| ServerError::io("creating log directory", &dir, e))?;
            krio_monitor::logfile::open_log_file(
                &dir,
                std::path::Path::new(&rec.config().log_path),
            )
            .map_err(|e| {
                ServerError::FailedPrecondition(format!(
                    "config.log_path {}: {e}",
                    crate::validate::quote(&rec.config().log_path)
                ))
            })?;
        }
        let sandbox_dir = self.sandbox_run_dir(sb.id());
        let mut sandbox_mounts = Vec::new();
        for (file, dest) in [
            ("hostname", "/etc/hostname"),
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            let already = rec.config().mounts.iter().any(|m| m.container_path == dest);
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
        let spec_config = self.stage_image_volumes(rec, &run_dir)?;
        let mut spec_config = stage_rro_mounts(&spec_config, &run_dir)?;
        if sb.userns().is_some() {
            // Every container of a pod in a user namespace joins it, whatever its own
            // namespace options say (kubelet copies the pod's; the pod's namespaces are owned by
            // that user namespace and could not be joined from outside it).
            let pod_userns = sb
                .config()
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|sc| sc.namespace_options.as_ref())
                .and_then(|ns| ns.userns_options.clone());
            let linux = spec_config.linux.get_or_insert_with(Default::default);
            let sc = linux.security_context.get_or_insert_with(Default::default);
            let ns = sc
                .namespace_options
                .get_or_insert_with(|| sandbox_namespace_options(sb));
            ns.userns_options = pod_userns;
        }
        if let Some(userns) = sb.userns() {
            stage_idmapped_volumes(rec.config(), &mut spec_config, &run_dir, userns)?;
        }
        let mut spec = krio_oci::build_spec(&krio_oci::SpecInputs {
            container: &spec_config,
            sandbox: &sandbox_config,
            image_config: image_config.as_ref(),
            rootfs: &rootfs_dir,
            namespaces: krio_oci::NamespacePaths {
                network: sb.netns().map(PathBuf::from),
                ipc: sb.ipcns().map(PathBuf::from),
                uts: sb.utsns().map(PathBuf::from),
                pid: target_pidns.or_else(|| sb.pidns().map(PathBuf::from)),
                user: sb.userns().map(PathBuf::from),
            },
            sandbox_mounts,
            cgroups_path: rec.cgroups_path().to_string(),
            daemon_oom_score_adj: self.daemon_oom_score_adj,
            sandbox_id: sb.id(),
            pids_limit: match self.cfg.container.pids_limit {
                0 => None,
                n => Some(n),
            },
            cgroup_v2: krio_oci::host_uses_cgroup_v2(),
            capability_bounding_set: Some(krio_oci::daemon_bounding_set()),
            default_capabilities: Some(&self.default_capabilities),
        })?;
        // RuntimeDefault means the operator's profile when one is configured (CRI-O's
        // `seccomp_profile`); a privileged container has no filter either way.
        if spec.linux().as_ref().is_some_and(|l| l.seccomp().is_some()) {
            let sc = rec
                .config()
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
        let handler = self.handler(rec.runtime_handler())?;
        apply_handler(&mut spec, &handler.cfg, rec.config(), sb, rec.id())?;
        krio_oci::write_bundle(&run_dir, &spec)?;
        crate::state::kill_point("CreateContainer:bundle-written");
        Ok(())
    }
}

impl Krio {
    /// The image id of each image volume (CRI `Mount.image`) of `config`, in mount order.
    ///
    /// Errors: `NotFound` naming `mounts[i].image` for an image that is not present (kubelet
    /// pulls image volumes first, as it pulls the container's image).
    fn volume_images(&self, config: &cri::ContainerConfig) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for m in &config.mounts {
            let Some(spec) = m.image.as_ref().filter(|i| !i.image.is_empty()) else {
                continue;
            };
            let image = self
                .resolve_image(&spec.image)
                .ok_or_else(|| ServerError::NotFound {
                    kind: "image",
                    id: spec.image.clone(),
                })?;
            ids.push(image.id);
        }
        Ok(ids)
    }

    /// The container config with each image volume (CRI `Mount.image`, with its
    /// `image_sub_path`) replaced by a read-only private bind of a host path: the image's layers
    /// are mounted read-only at `<run_dir>/imgvol/<i>` ([`rootfs::mount_image_volume`]) and the
    /// sub-path is resolved inside that mount, never outside it
    /// ([`rootfs::resolve_in_image`]). A volume is always read-only, whatever `readonly` says,
    /// as the CRI requires; the image cannot be removed while the container exists.
    ///
    /// Errors: `InvalidArgument` naming `mounts[i].image_sub_path` when it is absolute, has
    /// `..` or names nothing in the image; `NotFound` when the image has gone; `Internal` when
    /// mounting fails. What was mounted is undone by the container's teardown.
    fn stage_image_volumes(
        &self,
        rec: &ContainerRecord,
        run_dir: &std::path::Path,
    ) -> Result<cri::ContainerConfig> {
        let mut out = rec.config().clone();
        let mut ids = rec.volume_image_ids().iter();
        for (i, m) in out.mounts.iter_mut().enumerate() {
            if m.image.as_ref().is_none_or(|img| img.image.is_empty()) {
                continue;
            }
            let id = ids.next().ok_or_else(|| {
                ServerError::FailedPrecondition(format!(
                    "mounts[{i}].image has no recorded image id"
                ))
            })?;
            let image = self
                .resolve_image(id)
                .ok_or_else(|| ServerError::NotFound {
                    kind: "image",
                    id: id.clone(),
                })?;
            let lowers = self.images.layer_dirs(&image)?;
            let target = rootfs::image_volume_dir(run_dir).join(i.to_string());
            rootfs::mount_image_volume(&lowers, &target)?;
            let source = rootfs::resolve_in_image(
                &target,
                &m.image_sub_path,
                &format!("mounts[{i}].image_sub_path"),
            )?;
            m.host_path = source.to_string_lossy().into_owned();
            m.image = None;
            m.image_sub_path.clear();
            m.readonly = true;
            m.propagation = cri::MountPropagation::PropagationPrivate as i32;
        }
        Ok(out)
    }

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
        if rec.state() != ContainerState::Running
            || !super::container_stop::process_running(rec.pid())
        {
            return Err(not_target("is not running"));
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", rec.pid()))))
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

/// In a pod with its own user namespace: each plain host volume of `config` (not an image
/// volume, not recursive read-only, propagation private) is replaced in `spec_config` by an
/// id-mapped recursive bind staged at `<run_dir>/idmapvol/<i>`
/// ([`rootfs::stage_idmapped_volume`]), so host root's files are root's inside. A volume on a
/// filesystem that cannot be id-mapped, or with host-to-container or bidirectional
/// propagation (a detached copy would not receive or send mount events), is bound as it is.
///
/// Errors: `InvalidArgument` naming `mounts[i].host_path` when it does not exist; `Internal`
/// when staging fails (what was staged is undone by the container's teardown).
fn stage_idmapped_volumes(
    config: &cri::ContainerConfig,
    spec_config: &mut cri::ContainerConfig,
    run_dir: &std::path::Path,
    userns: &std::path::Path,
) -> Result<()> {
    let private = cri::MountPropagation::PropagationPrivate as i32;
    for (i, (m, out)) in config
        .mounts
        .iter()
        .zip(spec_config.mounts.iter_mut())
        .enumerate()
    {
        let plain = m.image.as_ref().is_none_or(|img| img.image.is_empty())
            && !m.recursive_read_only
            && m.propagation == private;
        if !plain {
            continue;
        }
        let source =
            std::fs::canonicalize(&m.host_path).map_err(|e| ServerError::InvalidArgument {
                field: format!("mounts[{i}].host_path"),
                reason: format!("{}: {e}", m.host_path),
            })?;
        let staging = rootfs::idmap_volume_dir(run_dir).join(i.to_string());
        if rootfs::stage_idmapped_volume(&source, &staging, userns)? {
            out.host_path = staging.to_string_lossy().into_owned();
        } else {
            tracing::info!(volume = %source.display(), "filesystem cannot be id-mapped; bound as it is");
        }
    }
    Ok(())
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

/// The pod's namespace options (CRI defaults when it has none).
fn sandbox_namespace_options(sb: &SandboxRecord) -> cri::NamespaceOption {
    sb.config()
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.namespace_options.clone())
        .unwrap_or_default()
}

/// The sandbox config as the spec builder should see it. A sandbox recorded without a pod
/// PID namespace (one made before pods had an init) gives each container its own PID
/// namespace when the pod asked for a shared one.
fn effective_pid_mode(sb: &SandboxRecord) -> cri::PodSandboxConfig {
    let mut config = sb.config().clone();
    if sb.pidns().is_some() {
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

/// Applies what handler `h` changes in a container's spec: the sandbox annotations its
/// `pod_sandbox` mode asks for, the pod's and container's annotations it allows (the
/// container's win over the pod's; krio's own keys are never replaced), and the host's devices
/// for a privileged container unless `privileged_without_host_devices`.
///
/// Errors: `Internal` when the spec has no annotations map to add to (never, after
/// `build_spec`).
pub(crate) fn apply_handler(
    spec: &mut oci_spec::runtime::Spec,
    h: &crate::config::RuntimeHandler,
    config: &cri::ContainerConfig,
    sb: &SandboxRecord,
    container_id: &str,
) -> Result<()> {
    use krio_oci::annotations::{CONTAINER_TYPE, SANDBOX_ID};
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    for (k, v) in sb
        .config()
        .annotations
        .iter()
        .chain(config.annotations.iter())
    {
        if h.allows_annotation(k) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    if h.pod_sandbox == crate::config::PodSandboxMode::PerContainer {
        annotations.insert(CONTAINER_TYPE.to_string(), "sandbox".to_string());
        annotations.insert(SANDBOX_ID.to_string(), container_id.to_string());
    }
    spec.set_annotations(Some(annotations));
    let privileged = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if privileged && !h.privileged_without_host_devices {
        if let Some(linux) = spec.linux_mut() {
            let mut devices = linux.devices().clone().unwrap_or_default();
            for d in krio_oci::host_devices(std::path::Path::new("/dev")) {
                if !devices.iter().any(|e| e.path() == d.path()) {
                    devices.push(d);
                }
            }
            linux.set_devices(Some(devices));
        }
    }
    Ok(())
}

#[cfg(test)]
mod handler_tests {
    use super::*;
    use crate::config::{PodSandboxMode, RuntimeHandler};

    fn spec_for(
        privileged: bool,
    ) -> (oci_spec::runtime::Spec, cri::ContainerConfig, SandboxRecord) {
        let sc = cri::LinuxContainerSecurityContext {
            privileged,
            ..Default::default()
        };
        let mut config = cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        };
        config
            .annotations
            .insert("dev.gvisor.spec.x".into(), "container".into());
        config
            .annotations
            .insert("io.kubernetes.cri.sandbox-id".into(), "forged".into());
        let mut pod = cri::PodSandboxConfig::default();
        pod.annotations
            .insert("dev.gvisor.spec.x".into(), "pod".into());
        pod.annotations.insert("dev.gvisor.pod".into(), "p".into());
        pod.annotations.insert("other".into(), "o".into());
        let mut sb = SandboxRecord::new("pod1".into(), pod, "runsc".into(), 1);
        sb.mark_ready().unwrap();
        let mut spec = oci_spec::runtime::Spec::default();
        let mut a = std::collections::HashMap::new();
        a.insert(
            "io.kubernetes.cri.sandbox-id".to_string(),
            "pod1".to_string(),
        );
        a.insert(
            "io.kubernetes.cri.container-type".to_string(),
            "container".to_string(),
        );
        spec.set_annotations(Some(a));
        (spec, config, sb)
    }

    #[test]
    fn only_allowed_annotations_reach_the_spec_and_krios_own_stay() {
        let (mut spec, config, sb) = spec_for(false);
        let h = RuntimeHandler {
            allowed_annotations: vec!["dev.gvisor.".into(), "io.kubernetes.cri.".into()],
            ..Default::default()
        };
        apply_handler(&mut spec, &h, &config, &sb, "c1").unwrap();
        let a = spec.annotations().clone().unwrap();
        assert_eq!(a["dev.gvisor.spec.x"], "container");
        assert_eq!(a["dev.gvisor.pod"], "p");
        assert!(!a.contains_key("other"));
        assert_eq!(a["io.kubernetes.cri.sandbox-id"], "pod1");
        assert_eq!(a["io.kubernetes.cri.container-type"], "container");
        let (mut spec, config, sb) = spec_for(false);
        apply_handler(&mut spec, &RuntimeHandler::default(), &config, &sb, "c1").unwrap();
        assert_eq!(spec.annotations().as_ref().unwrap().len(), 2);
    }

    #[test]
    fn per_container_sandboxes_name_the_container_as_its_own_sandbox() {
        let (mut spec, config, sb) = spec_for(false);
        let h = RuntimeHandler {
            pod_sandbox: PodSandboxMode::PerContainer,
            ..Default::default()
        };
        apply_handler(&mut spec, &h, &config, &sb, "c1").unwrap();
        let a = spec.annotations().clone().unwrap();
        assert_eq!(a["io.kubernetes.cri.container-type"], "sandbox");
        assert_eq!(a["io.kubernetes.cri.sandbox-id"], "c1");
    }

    #[test]
    fn privileged_containers_get_host_devices_unless_the_handler_says_no() {
        let has_null = |spec: &oci_spec::runtime::Spec| {
            spec.linux()
                .as_ref()
                .and_then(|l| l.devices().clone())
                .unwrap_or_default()
                .iter()
                .any(|d| d.path() == std::path::Path::new("/dev/null"))
        };
        for (privileged, without, expect) in [
            (true, false, true),
            (true, true, false),
            (false, false, false),
        ] {
            let (mut spec, config, sb) = spec_for(privileged);
            let h = RuntimeHandler {
                privileged_without_host_devices: without,
                ..Default::default()
            };
            apply_handler(&mut spec, &h, &config, &sb, "c1").unwrap();
            assert_eq!(
                has_null(&spec),
                expect,
                "privileged {privileged} without {without}"
            );
        }
    }
}
