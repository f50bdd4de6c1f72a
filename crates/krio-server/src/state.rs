//! In-memory objects (sandboxes and containers) and their on-disk records.
//!
//! Each object is an `Arc` with its own async lock, so a slow operation on one pod never
//! blocks calls about another: the global maps are held only for lookups and inserts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use krio_cri::v1 as cri;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServerError};
use crate::ids;

/// Lifecycle state of a sandbox (CRI `PodSandboxState`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SandboxState {
    /// Namespaces pinned and network set up (`SANDBOX_READY`).
    Ready,
    /// Stopped: containers killed, network torn down, namespaces unpinned (`SANDBOX_NOTREADY`).
    NotReady,
    /// Being set up by `RunPodSandbox`; only ever seen on disk, after a crash (reported as
    /// `SANDBOX_NOTREADY`), and undone on recovery.
    Creating,
}

impl SandboxState {
    /// The CRI enum value.
    pub fn to_cri(self) -> cri::PodSandboxState {
        match self {
            SandboxState::Ready => cri::PodSandboxState::SandboxReady,
            SandboxState::NotReady | SandboxState::Creating => {
                cri::PodSandboxState::SandboxNotready
            }
        }
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The state an object was in when a [`TransitionError`] refused to move it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectState {
    /// A sandbox's state.
    Sandbox(SandboxState),
    /// A container's state.
    Container(ContainerState),
}

impl ObjectState {
    /// The kind of object: `sandbox` or `container` (as [`ServerError::NotFound`] names them).
    pub fn kind(self) -> &'static str {
        match self {
            ObjectState::Sandbox(_) => "sandbox",
            ObjectState::Container(_) => "container",
        }
    }
}

impl std::fmt::Display for ObjectState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectState::Sandbox(s) => std::fmt::Display::fmt(s, f),
            ObjectState::Container(s) => std::fmt::Display::fmt(s, f),
        }
    }
}

/// A lifecycle transition of a sandbox or container record (the methods of
/// [`SandboxRecord`] and [`ContainerRecord`] that change a state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Sandbox Creating -> Ready ([`SandboxRecord::mark_ready`]).
    Ready,
    /// Container Created: the runtime made its process ([`ContainerRecord::record_processes`]).
    RecordProcesses,
    /// Container Created -> Running ([`ContainerRecord::mark_started`]).
    Start,
    /// Container Created, Running or Unknown -> Exited ([`ContainerRecord::mark_exited`]).
    Exit,
    /// Container Created from a checkpoint, never restored -> Exited
    /// ([`ContainerRecord::mark_not_restored`]).
    EndUnrestored,
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transition::Ready => "become Ready",
            Transition::RecordProcesses => "record the processes of a new container",
            Transition::Start => "start",
            Transition::Exit => "record an exit",
            Transition::EndUnrestored => "end without being restored from its checkpoint",
        })
    }
}

/// A transition refused because the object's current state does not allow it. Maps to
/// gRPC `FAILED_PRECONDITION` ([`ServerError::Transition`]); the message names the kind, the
/// id, the state and the transition, e.g. `container 3f2a… is Exited: cannot start`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {id} is {state}: cannot {transition}", state.kind())]
pub struct TransitionError {
    /// The object's id (64 hex).
    pub id: String,
    /// Its state, which stays as it was; [`ObjectState::kind`] names the kind of object.
    pub state: ObjectState,
    /// What was refused.
    pub transition: Transition,
}

impl TransitionError {
    /// The kind of object refused: `sandbox` or `container`.
    pub fn kind(&self) -> &'static str {
        self.state.kind()
    }
}

/// The persisted record of a sandbox (`<root>/sandboxes/<id>/sandbox.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox id (64 hex).
    id: String,
    /// The `RunPodSandbox` config, verbatim.
    config: cri::PodSandboxConfig,
    /// Runtime handler name (resolved; never empty).
    runtime_handler: String,
    /// Creation time, nanoseconds since the epoch.
    created_at: i64,
    /// Current state.
    state: SandboxState,
    /// Pinned network namespace, when the pod does not use the host's.
    netns: Option<PathBuf>,
    /// Pinned IPC namespace, when the pod does not use the host's.
    ipcns: Option<PathBuf>,
    /// Pinned UTS namespace, when the pod does not use the host's network.
    utsns: Option<PathBuf>,
    /// Pinned PID namespace shared by the pod's containers (`pid` mode POD), held by the
    /// pod's init process.
    #[serde(default)]
    pidns: Option<PathBuf>,
    /// The pod init holding `pidns`.
    #[serde(default)]
    pod_init: Option<krio_monitor::PodInit>,
    /// Pinned user namespace of a pod whose `userns_options` mode is POD; it owns the pod's
    /// network, IPC and UTS namespaces, and every container joins it.
    #[serde(default)]
    userns: Option<PathBuf>,
    /// Pod IPs, primary first.
    ips: Vec<String>,
    /// Cgroup parent of the pod's containers.
    cgroup_parent: String,
    /// The pod has a runtime sandbox that its containers join (the handler's `pod_sandbox = "pod"`):
    /// a root container with the pod's id under the handler's runtime, bundle in `<run dir>/sandbox/`.
    /// Set (and written) before that container is made, so a teardown or a recovery removes it.
    #[serde(default)]
    runtime_sandbox: bool,
}

impl SandboxRecord {
    /// The record of a sandbox `RunPodSandbox` is about to set up: Creating, with nothing
    /// pinned, no IPs, no cgroup parent yet.
    pub fn new(
        id: String,
        config: cri::PodSandboxConfig,
        runtime_handler: String,
        created_at: i64,
    ) -> Self {
        SandboxRecord {
            id,
            config,
            runtime_handler,
            created_at,
            state: SandboxState::Creating,
            netns: None,
            ipcns: None,
            utsns: None,
            pidns: None,
            pod_init: None,
            userns: None,
            ips: Vec::new(),
            cgroup_parent: String::new(),
            runtime_sandbox: false,
        }
    }

    /// Sandbox id (64 hex).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `RunPodSandbox` config, verbatim (but for resources `UpdatePodSandboxResources`
    /// recorded since).
    pub fn config(&self) -> &cri::PodSandboxConfig {
        &self.config
    }

    /// Runtime handler name (resolved; never empty).
    pub fn runtime_handler(&self) -> &str {
        &self.runtime_handler
    }

    /// Creation time, nanoseconds since the epoch.
    pub fn created_at(&self) -> i64 {
        self.created_at
    }

    /// Current state.
    pub fn state(&self) -> SandboxState {
        self.state
    }

    /// Pinned network namespace, when the pod does not use the host's.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Pinned IPC namespace, when the pod does not use the host's.
    pub fn ipcns(&self) -> Option<&Path> {
        self.ipcns.as_deref()
    }

    /// Pinned UTS namespace, when the pod does not use the host's network.
    pub fn utsns(&self) -> Option<&Path> {
        self.utsns.as_deref()
    }

    /// Pinned PID namespace shared by the pod's containers (`pid` mode POD), held by the
    /// pod's init process.
    pub fn pidns(&self) -> Option<&Path> {
        self.pidns.as_deref()
    }

    /// The pod init holding [`SandboxRecord::pidns`].
    pub fn pod_init(&self) -> Option<krio_monitor::PodInit> {
        self.pod_init
    }

    /// Pinned user namespace of a pod whose `userns_options` mode is POD.
    pub fn userns(&self) -> Option<&Path> {
        self.userns.as_deref()
    }

    /// Pod IPs, primary first.
    pub fn ips(&self) -> &[String] {
        &self.ips
    }

    /// Cgroup parent of the pod's containers (empty until set up).
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// Whether the pod has a runtime sandbox that its containers join (the handler's
    /// `pod_sandbox = "pod"`).
    pub fn runtime_sandbox(&self) -> bool {
        self.runtime_sandbox
    }

    /// Sets the cgroup parent of the pod's containers (set up by `RunPodSandbox`).
    pub fn set_cgroup_parent(&mut self, parent: String) {
        self.cgroup_parent = parent;
    }

    /// Records the namespaces pinned for the pod (set up by `RunPodSandbox`).
    pub fn set_pinned(&mut self, pinned: krio_net::ns::PinnedNamespaces) {
        self.netns = pinned.net;
        self.ipcns = pinned.ipc;
        self.utsns = pinned.uts;
        self.userns = pinned.user;
    }

    /// Records the pod init and the PID namespace `pin` it holds.
    pub fn set_pod_init(&mut self, init: krio_monitor::PodInit, pin: PathBuf) {
        self.pod_init = Some(init);
        self.pidns = Some(pin);
    }

    /// Records the pod's IPs, primary first (the CNI result).
    pub fn set_ips(&mut self, ips: Vec<String>) {
        self.ips = ips;
    }

    /// Records that the pod has a runtime sandbox; set before it is made, so that a teardown
    /// or a recovery removes it.
    pub fn set_runtime_sandbox(&mut self) {
        self.runtime_sandbox = true;
    }

    /// Records pod-level resources (CRI `UpdatePodSandboxResources`) in the config's
    /// `linux.overhead` and `linux.resources`; `None` leaves the recorded value as it is.
    pub fn update_resources(
        &mut self,
        overhead: Option<cri::LinuxContainerResources>,
        resources: Option<cri::LinuxContainerResources>,
    ) {
        let linux = self.config.linux.get_or_insert_with(Default::default);
        if let Some(o) = overhead {
            linux.overhead = Some(o);
        }
        if let Some(r) = resources {
            linux.resources = Some(r);
        }
    }

    /// Creating -> Ready: `RunPodSandbox` set everything up.
    ///
    /// Errors: [`TransitionError`] from any other state (a pod once stopped is never ready
    /// again; the CRI has it removed and run anew).
    pub fn mark_ready(&mut self) -> Result<(), TransitionError> {
        match self.state {
            SandboxState::Creating => {
                self.state = SandboxState::Ready;
                Ok(())
            }
            _ => Err(self.refuse(Transition::Ready)),
        }
    }

    /// -> NotReady, from any state: the pod was stopped, or what it needs (its network
    /// namespace, its pod init) is gone. Idempotent; returns whether the state changed.
    pub fn mark_not_ready(&mut self) -> bool {
        let changed = self.state != SandboxState::NotReady;
        self.state = SandboxState::NotReady;
        changed
    }

    fn refuse(&self, transition: Transition) -> TransitionError {
        TransitionError {
            id: self.id.clone(),
            state: ObjectState::Sandbox(self.state),
            transition,
        }
    }

    /// The reserved name: `<name>_<namespace>_<uid>_<attempt>`, as CRI-O and containerd build it.
    pub fn reserved_name(config: &cri::PodSandboxConfig) -> String {
        let m = config.metadata.clone().unwrap_or_default();
        format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
    }

    /// Namespace mode of the pod (`NamespaceOption`), defaulting to POD for all.
    pub fn ns_options(&self) -> cri::NamespaceOption {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default()
    }
}

/// The latest committed copy of an object's record, readable without waiting for an
/// operation in progress on the object.
#[derive(Debug)]
pub struct Snapshot<R>(Mutex<R>);

impl<R: Clone> Snapshot<R> {
    /// A snapshot holding `record`.
    pub fn new(record: R) -> Self {
        Snapshot(Mutex::new(record))
    }

    /// Runs `f` on the snapshot without copying it.
    pub fn with<T>(&self, f: impl FnOnce(&R) -> T) -> T {
        match self.0.lock() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }

    /// A copy of the snapshot.
    pub fn get(&self) -> R {
        self.with(R::clone)
    }

    /// Replaces the snapshot with a copy of `record`.
    pub fn set(&self, record: &R) {
        match self.0.lock() {
            Ok(mut g) => *g = record.clone(),
            Err(p) => *p.into_inner() = record.clone(),
        }
    }
}

/// A live sandbox: its record behind a per-object lock.
#[derive(Debug)]
pub struct Sandbox {
    /// Sandbox id (immutable).
    pub id: String,
    /// The record; held across a whole operation on this pod.
    pub record: tokio::sync::Mutex<SandboxRecord>,
    /// A snapshot for lock-free listing, refreshed after each change.
    pub snapshot: Snapshot<SandboxRecord>,
    /// The pod's lifecycle gate: held shared by `CreateContainer` (from its check of the pod's
    /// state until the container is registered) and `StartContainer`, and exclusively by
    /// `StopPodSandbox` and `RemovePodSandbox`. A create racing a stop therefore either
    /// finishes before the stop lists the pod's containers (and is stopped with them), or
    /// finds the pod NotReady and fails with nothing made. Taken before any container's lock.
    pub gate: tokio::sync::RwLock<()>,
}

impl Sandbox {
    /// Wraps a record.
    pub fn new(record: SandboxRecord) -> Arc<Self> {
        Arc::new(Sandbox {
            id: record.id.clone(),
            snapshot: Snapshot::new(record.clone()),
            record: tokio::sync::Mutex::new(record),
            gate: tokio::sync::RwLock::new(()),
        })
    }

    /// Fails unless the pod is Ready, for an operation that adds to it or starts in it (to
    /// be called with [`Sandbox::gate`] held shared, so the answer holds until the gate is
    /// released).
    ///
    /// Errors: [`ServerError::FailedPrecondition`] naming the sandbox and its state.
    pub fn ensure_ready(&self) -> Result<()> {
        let state = self.snapshot.with(|r| r.state);
        if state == SandboxState::Ready {
            Ok(())
        } else {
            Err(ServerError::FailedPrecondition(format!(
                "sandbox {} is {state:?}, not Ready",
                self.id
            )))
        }
    }

    /// A copy of the latest committed record, without waiting for an operation in progress.
    pub fn snapshot(&self) -> SandboxRecord {
        self.snapshot.get()
    }

    /// Publishes `record` as the latest snapshot.
    pub fn publish(&self, record: &SandboxRecord) {
        self.snapshot.set(record);
    }
}

/// Lifecycle state of a container (CRI `ContainerState`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ContainerState {
    /// Created by the runtime, process not started (`CONTAINER_CREATED`).
    Created,
    /// Process running (`CONTAINER_RUNNING`).
    Running,
    /// Process exited; exit code recorded (`CONTAINER_EXITED`).
    Exited,
    /// State could not be determined (`CONTAINER_UNKNOWN`).
    Unknown,
}

impl ContainerState {
    /// The CRI enum value.
    pub fn to_cri(self) -> cri::ContainerState {
        match self {
            ContainerState::Created => cri::ContainerState::ContainerCreated,
            ContainerState::Running => cri::ContainerState::ContainerRunning,
            ContainerState::Exited => cri::ContainerState::ContainerExited,
            ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Why a container exited: CRI `ContainerStatus.reason` of an exited container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The process exited with code 0 (`Completed`).
    Completed,
    /// The process exited with another code or was killed by a signal (`Error`).
    Error,
    /// The kernel's OOM killer killed it (`OOMKilled`): the monitor saw it, or the memory
    /// cgroup counted an OOM kill and the process died of SIGKILL.
    OOMKilled,
    /// Its monitor died without recording the exit; krio killed what was left and recorded
    /// code 255 itself (`MonitorLost`).
    MonitorLost,
    /// The process was gone (or stopped without an exit status) when krio restarted, so its
    /// exit is not known; code 255 (`Unknown`).
    Unknown,
    /// Created from a checkpoint and stopped before StartContainer restored it: nothing ever
    /// ran (`NotRestored`).
    NotRestored,
    /// A reason this version of krio does not write, read from a record (another version's),
    /// kept verbatim.
    Other(String),
}

impl ExitReason {
    /// The CRI reason string, as `ContainerStatus.reason` reports it and the record stores it.
    pub fn as_str(&self) -> &str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OOMKilled => "OOMKilled",
            ExitReason::MonitorLost => "MonitorLost",
            ExitReason::Unknown => "Unknown",
            ExitReason::NotRestored => "NotRestored",
            ExitReason::Other(s) => s,
        }
    }

    /// The reason a record's string names ([`ExitReason::Other`] for one krio does not write).
    pub fn parse(s: &str) -> ExitReason {
        match s {
            "Completed" => ExitReason::Completed,
            "Error" => ExitReason::Error,
            "OOMKilled" => ExitReason::OOMKilled,
            "MonitorLost" => ExitReason::MonitorLost,
            "Unknown" => ExitReason::Unknown,
            "NotRestored" => ExitReason::NotRestored,
            other => ExitReason::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a container's process ended (CRI `ContainerStatus` `exit_code`, `finished_at`,
/// `reason` and `message` of an exited container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128+n for a process killed by signal n, 255 when not known.
    pub code: i32,
    /// When it ended, nanoseconds since the epoch.
    pub finished_at: i64,
    /// Why it ended.
    pub reason: ExitReason,
    /// Human readable detail; empty when the reason says it all.
    pub message: String,
}

/// The persisted record of a container (`<root>/containers/<id>/container.json`).
///
/// On disk the exit is four loose fields (`exit_code`, `finished_at`, `reason`, `message`;
/// zero and empty until exited), as every earlier krio wrote them (a private wire form, `ContainerWire`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "ContainerWire", into = "ContainerWire")]
pub struct ContainerRecord {
    /// Container id (64 hex).
    id: String,
    /// Owning sandbox id.
    sandbox_id: String,
    /// The `CreateContainer` config, verbatim.
    config: cri::ContainerConfig,
    /// The image as the request named it (`config.image.image`).
    image_ref: String,
    /// Resolved image id (`sha256:<config digest>`).
    image_id: String,
    /// A repo digest of the image when known (`name@sha256:...`), else the image id.
    image_digest_ref: String,
    /// Runtime handler name.
    runtime_handler: String,
    /// Absolute log path, or empty when the pod has no `log_directory` / container no `log_path`.
    log_path: String,
    /// Creation time, nanoseconds since the epoch.
    created_at: i64,
    /// Start time, nanoseconds since the epoch (0 until started).
    started_at: i64,
    /// Current state.
    state: ContainerState,
    /// How the process ended; set exactly when `state` is Exited.
    exit: Option<Exit>,
    /// Pid of the container's init process on the host (0 when unknown).
    pid: i32,
    /// Pid of its krio-monitor.
    monitor_pid: i32,
    /// The container's cgroup (`linux.cgroupsPath`, cgroupfs form).
    cgroups_path: String,
    /// The container joins its pod's runtime sandbox ([`SandboxRecord::runtime_sandbox`]): its
    /// monitor runs `runtime start` when asked (SIGUSR2, see `krio_monitor::MonitorConfig::start_on_signal`),
    /// and `pid` is the sandbox's process, not the container's own.
    subcontainer: bool,
    /// The image's `StopSignal` (`SIGTERM`, `TERM` or a number), if it sets one.
    stop_signal: Option<String>,
    /// The identity the container's first process really has, read from its
    /// `/proc/<pid>/status` once the runtime created it (CRI `ContainerStatus.user`).
    user: Option<ProcessUser>,
    /// Image ids of the container's image volumes (CRI `Mount.image`), in mount order; an
    /// image in this list is in use, like `image_id`.
    volume_image_ids: Vec<String>,
    /// For a container created from a checkpoint archive: its CRIU image directory (under the
    /// container's data directory). Such a container has no monitor until StartContainer runs
    /// `runtime restore` from it (then this is cleared). Set only by the record's final write
    /// at create, so a create cut short is still torn down on restart.
    restore_from: Option<std::path::PathBuf>,
}

/// A container record as it is stored on disk: the exit as loose fields, zero and empty while
/// the container has not exited. The field names, order and defaults are those of every
/// record krio has written, so a record from an earlier version loads with the same meaning.
#[derive(Serialize, Deserialize)]
struct ContainerWire {
    id: String,
    sandbox_id: String,
    config: cri::ContainerConfig,
    image_ref: String,
    image_id: String,
    image_digest_ref: String,
    runtime_handler: String,
    log_path: String,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    state: ContainerState,
    reason: String,
    message: String,
    pid: i32,
    monitor_pid: i32,
    #[serde(default)]
    cgroups_path: String,
    #[serde(default)]
    subcontainer: bool,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    user: Option<ProcessUser>,
    #[serde(default)]
    volume_image_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restore_from: Option<std::path::PathBuf>,
}

impl From<ContainerWire> for ContainerRecord {
    /// The exit fields mean something only in an Exited record (no krio wrote them in any
    /// other state).
    fn from(w: ContainerWire) -> Self {
        let exit = (w.state == ContainerState::Exited).then(|| Exit {
            code: w.exit_code,
            finished_at: w.finished_at,
            reason: ExitReason::parse(&w.reason),
            message: w.message,
        });
        ContainerRecord {
            id: w.id,
            sandbox_id: w.sandbox_id,
            config: w.config,
            image_ref: w.image_ref,
            image_id: w.image_id,
            image_digest_ref: w.image_digest_ref,
            runtime_handler: w.runtime_handler,
            log_path: w.log_path,
            created_at: w.created_at,
            started_at: w.started_at,
            state: w.state,
            exit,
            pid: w.pid,
            monitor_pid: w.monitor_pid,
            cgroups_path: w.cgroups_path,
            subcontainer: w.subcontainer,
            stop_signal: w.stop_signal,
            user: w.user,
            volume_image_ids: w.volume_image_ids,
            restore_from: w.restore_from,
        }
    }
}

impl From<ContainerRecord> for ContainerWire {
    fn from(r: ContainerRecord) -> Self {
        let (exit_code, finished_at, reason, message) = match r.exit {
            Some(e) => (
                e.code,
                e.finished_at,
                e.reason.as_str().to_string(),
                e.message,
            ),
            None => (0, 0, String::new(), String::new()),
        };
        ContainerWire {
            id: r.id,
            sandbox_id: r.sandbox_id,
            config: r.config,
            image_ref: r.image_ref,
            image_id: r.image_id,
            image_digest_ref: r.image_digest_ref,
            runtime_handler: r.runtime_handler,
            log_path: r.log_path,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at,
            exit_code,
            state: r.state,
            reason,
            message,
            pid: r.pid,
            monitor_pid: r.monitor_pid,
            cgroups_path: r.cgroups_path,
            subcontainer: r.subcontainer,
            stop_signal: r.stop_signal,
            user: r.user,
            volume_image_ids: r.volume_image_ids,
            restore_from: r.restore_from,
        }
    }
}

/// A process's uid, gid and supplementary groups, as `/proc/<pid>/status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUser {
    /// Real uid (first `Uid:` field).
    pub uid: u32,
    /// Real gid (first `Gid:` field).
    pub gid: u32,
    /// Supplementary groups (`Groups:`), in the kernel's (sorted) order.
    pub groups: Vec<u32>,
}

impl ProcessUser {
    /// Parses the `Uid:`, `Gid:` and `Groups:` lines of a `/proc/<pid>/status` text; `None`
    /// when a line is missing or malformed.
    pub fn parse(status: &str) -> Option<ProcessUser> {
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).map(|v| {
                v.split_whitespace()
                    .map(str::parse::<u32>)
                    .collect::<Vec<_>>()
            })
        };
        let first = |name: &str| field(name)?.into_iter().next()?.ok();
        Some(ProcessUser {
            uid: first("Uid:")?,
            gid: first("Gid:")?,
            groups: field("Groups:")?
                .into_iter()
                .collect::<Result<_, _>>()
                .ok()?,
        })
    }

    /// Reads the identity of process `pid`; `None` when it is gone or unreadable.
    pub fn of_pid(pid: i32) -> Option<ProcessUser> {
        if pid <= 0 {
            return None;
        }
        ProcessUser::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    /// The same identity as seen inside a user namespace with the one `uid` and `gid` mapping
    /// given (a pod with `userns_options` mode POD): host ids in the mapped range become the
    /// ids they map, others the overflow id 65534, as the kernel shows them inside.
    pub fn in_user_namespace(&self, uid: krio_net::IdMap, gid: krio_net::IdMap) -> ProcessUser {
        let inside = |m: krio_net::IdMap, id: u32| {
            id.checked_sub(m.host_id)
                .filter(|off| *off < m.length)
                .map_or(65534, |off| m.container_id + off)
        };
        ProcessUser {
            uid: inside(uid, self.uid),
            gid: inside(gid, self.gid),
            groups: self.groups.iter().map(|g| inside(gid, *g)).collect(),
        }
    }

    /// As CRI `ContainerUser` (`linux` only).
    pub fn to_cri(&self) -> cri::ContainerUser {
        cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: i64::from(self.uid),
                gid: i64::from(self.gid),
                supplemental_groups: self.groups.iter().map(|g| i64::from(*g)).collect(),
            }),
        }
    }
}

/// A live container: its record behind a per-object lock.
#[derive(Debug)]
pub struct Container {
    /// Container id (immutable).
    pub id: String,
    /// Owning sandbox id (immutable).
    pub sandbox_id: String,
    /// The record; held across a whole operation on this container.
    pub record: tokio::sync::Mutex<ContainerRecord>,
    /// A snapshot for lock-free listing, refreshed after each change.
    pub snapshot: Snapshot<ContainerRecord>,
    /// Set while an exit watcher holds a pidfd of the monitor: the watcher then records the
    /// exit as it happens, and readers need not look for the exit file themselves.
    pub watched: std::sync::atomic::AtomicBool,
    /// The earliest deadline any `StopContainer` in progress or waiting has asked for: a stop
    /// waiting for the process to exit gives up and kills when this passes, so a later stop
    /// with a shorter timeout (kubelet's force delete) shortens the one in progress. `None`
    /// when no stop is under way.
    pub stop_deadline: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What `CreateContainer` decides about a new container: the parts of its record that never
/// change ([`ContainerRecord::new`]).
#[derive(Debug, Clone)]
pub struct NewContainer {
    /// Container id (64 hex).
    pub id: String,
    /// Owning sandbox id.
    pub sandbox_id: String,
    /// The `CreateContainer` config, verbatim.
    pub config: cri::ContainerConfig,
    /// The image as the request named it (`config.image.image`).
    pub image_ref: String,
    /// Resolved image id (`sha256:<config digest>`).
    pub image_id: String,
    /// A repo digest of the image when known (`name@sha256:...`), else the image id.
    pub image_digest_ref: String,
    /// Runtime handler name.
    pub runtime_handler: String,
    /// Absolute log path, or empty.
    pub log_path: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// The container's cgroup (`linux.cgroupsPath`, cgroupfs form).
    pub cgroups_path: String,
    /// The container joins its pod's runtime sandbox.
    pub subcontainer: bool,
    /// The stop signal recorded at create (`SIGTERM`, `TERM` or a number), if any.
    pub stop_signal: Option<String>,
    /// Image ids of the container's image volumes, in mount order.
    pub volume_image_ids: Vec<String>,
}

impl ContainerRecord {
    /// The record of a container `CreateContainer` is about to make: Created, with no process
    /// yet (pid 0, which tells recovery that the create never finished).
    pub fn new(n: NewContainer) -> Self {
        ContainerRecord {
            id: n.id,
            sandbox_id: n.sandbox_id,
            config: n.config,
            image_ref: n.image_ref,
            image_id: n.image_id,
            image_digest_ref: n.image_digest_ref,
            runtime_handler: n.runtime_handler,
            log_path: n.log_path,
            created_at: n.created_at,
            started_at: 0,
            state: ContainerState::Created,
            exit: None,
            pid: 0,
            monitor_pid: 0,
            cgroups_path: n.cgroups_path,
            subcontainer: n.subcontainer,
            stop_signal: n.stop_signal,
            user: None,
            volume_image_ids: n.volume_image_ids,
            restore_from: None,
        }
    }

    /// Container id (64 hex).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Owning sandbox id.
    pub fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    /// The `CreateContainer` config, verbatim (but for resources `UpdateContainerResources`
    /// recorded since).
    pub fn config(&self) -> &cri::ContainerConfig {
        &self.config
    }

    /// The image as the request named it (`config.image.image`).
    pub fn image_ref(&self) -> &str {
        &self.image_ref
    }

    /// Resolved image id (`sha256:<config digest>`).
    pub fn image_id(&self) -> &str {
        &self.image_id
    }

    /// A repo digest of the image when known (`name@sha256:...`), else the image id.
    pub fn image_digest_ref(&self) -> &str {
        &self.image_digest_ref
    }

    /// Runtime handler name.
    pub fn runtime_handler(&self) -> &str {
        &self.runtime_handler
    }

    /// Absolute log path, or empty when the pod has no `log_directory` / container no `log_path`.
    pub fn log_path(&self) -> &str {
        &self.log_path
    }

    /// Creation time, nanoseconds since the epoch.
    pub fn created_at(&self) -> i64 {
        self.created_at
    }

    /// Start time, nanoseconds since the epoch (0 until started).
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// Current state.
    pub fn state(&self) -> ContainerState {
        self.state
    }

    /// How the process ended; `Some` exactly when the state is Exited.
    pub fn exit(&self) -> Option<&Exit> {
        self.exit.as_ref()
    }

    /// Pid of the container's init process on the host (0 when unknown).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Pid of its krio-monitor (0 before it was spawned).
    pub fn monitor_pid(&self) -> i32 {
        self.monitor_pid
    }

    /// The container's cgroup (`linux.cgroupsPath`, cgroupfs form).
    pub fn cgroups_path(&self) -> &str {
        &self.cgroups_path
    }

    /// Whether the container joins its pod's runtime sandbox (then [`ContainerRecord::pid`]
    /// is the sandbox's process).
    pub fn subcontainer(&self) -> bool {
        self.subcontainer
    }

    /// The stop signal recorded at create (`SIGTERM`, `TERM` or a number), if any.
    pub fn stop_signal(&self) -> Option<&str> {
        self.stop_signal.as_deref()
    }

    /// The identity the container's first process really has (CRI `ContainerStatus.user`).
    pub fn user(&self) -> Option<&ProcessUser> {
        self.user.as_ref()
    }

    /// Image ids of the container's image volumes (CRI `Mount.image`), in mount order.
    pub fn volume_image_ids(&self) -> &[String] {
        &self.volume_image_ids
    }

    /// For a container created from a checkpoint archive and not restored yet: its CRIU image
    /// directory.
    pub fn restore_from(&self) -> Option<&Path> {
        self.restore_from.as_deref()
    }

    /// Whether this is a container created from a checkpoint that StartContainer has not
    /// restored yet (nothing runs for it).
    pub fn restore_pending(&self) -> bool {
        self.restore_from.is_some()
            && self.state == ContainerState::Created
            && self.monitor_pid == 0
    }

    /// Records the identity of the container's first process.
    pub fn set_user(&mut self, user: Option<ProcessUser>) {
        self.user = user;
    }

    /// Records the CRIU image directory a container created from a checkpoint is restored
    /// from at StartContainer.
    pub fn set_restore_from(&mut self, dir: PathBuf) {
        self.restore_from = Some(dir);
    }

    /// Records new resources (CRI `UpdateContainerResources`) in the config's
    /// `linux.resources`.
    pub fn update_resources(&mut self, resources: cri::LinuxContainerResources) {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(resources);
    }

    /// Records the pids of the container's init (`pid`) and of its monitor once the runtime
    /// made the process (at create, or for a restore at start).
    ///
    /// Errors: [`TransitionError`] unless the container is Created.
    pub fn record_processes(&mut self, pid: i32, monitor_pid: i32) -> Result<(), TransitionError> {
        if self.state != ContainerState::Created {
            return Err(self.refuse(Transition::RecordProcesses));
        }
        self.pid = pid;
        self.monitor_pid = monitor_pid;
        Ok(())
    }

    /// Whether [`ContainerRecord::mark_started`] is allowed now: to be asked before the
    /// runtime is, so that nothing is started that the record could not say runs.
    ///
    /// Errors: [`TransitionError`] unless the container is Created (CRI
    /// `CONTAINER_CREATED`): a running or exited container is never started again.
    pub fn check_start(&self) -> Result<(), TransitionError> {
        if self.state == ContainerState::Created {
            Ok(())
        } else {
            Err(self.refuse(Transition::Start))
        }
    }

    /// Created -> Running at `started_at` (nanoseconds since the epoch). A container restored
    /// from a checkpoint has nothing left to restore from.
    ///
    /// Errors: [`TransitionError`] unless the container is Created.
    pub fn mark_started(&mut self, started_at: i64) -> Result<(), TransitionError> {
        self.check_start()?;
        self.state = ContainerState::Running;
        self.started_at = started_at;
        self.restore_from = None;
        Ok(())
    }

    /// Created, Running or Unknown -> Exited with `exit`. A container whose start was never
    /// recorded (it exited before StartContainer saw it run, or was killed while Created)
    /// gets `started_at` = the exit's `finished_at`, so no exit is ever reported before a start.
    ///
    /// Errors: [`TransitionError`] when the container has exited already: an exit is final,
    /// and the first one recorded stays.
    pub fn mark_exited(&mut self, exit: Exit) -> Result<(), TransitionError> {
        if self.state == ContainerState::Exited {
            return Err(self.refuse(Transition::Exit));
        }
        if self.started_at == 0 {
            self.started_at = exit.finished_at;
        }
        self.state = ContainerState::Exited;
        self.exit = Some(exit);
        Ok(())
    }

    /// A container created from a checkpoint and stopped before StartContainer restored it
    /// (nothing ever ran): Exited at `finished_at` with code 0, reason `NotRestored`, never
    /// started, and nothing left to restore from.
    ///
    /// Errors: [`TransitionError`] unless a restore is pending
    /// ([`ContainerRecord::restore_pending`]).
    pub fn mark_not_restored(&mut self, finished_at: i64) -> Result<(), TransitionError> {
        if !self.restore_pending() {
            return Err(self.refuse(Transition::EndUnrestored));
        }
        self.state = ContainerState::Exited;
        self.exit = Some(Exit {
            code: 0,
            finished_at,
            reason: ExitReason::NotRestored,
            message: String::new(),
        });
        self.restore_from = None;
        Ok(())
    }

    fn refuse(&self, transition: Transition) -> TransitionError {
        TransitionError {
            id: self.id.clone(),
            state: ObjectState::Container(self.state),
            transition,
        }
    }
}

impl Container {
    /// Wraps a record.
    pub fn new(record: ContainerRecord) -> Arc<Self> {
        Arc::new(Container {
            id: record.id.clone(),
            sandbox_id: record.sandbox_id.clone(),
            snapshot: Snapshot::new(record.clone()),
            record: tokio::sync::Mutex::new(record),
            watched: std::sync::atomic::AtomicBool::new(false),
            stop_deadline: std::sync::Mutex::new(None),
        })
    }

    /// Asks every stop of this container in progress to kill by `deadline` at the latest
    /// (keeps an earlier deadline already asked for).
    pub fn shorten_stop(&self, deadline: tokio::time::Instant) {
        let mut d = self
            .stop_deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *d = Some(d.map_or(deadline, |cur| cur.min(deadline)));
    }

    /// The earliest stop deadline asked for, if any.
    pub fn stop_deadline(&self) -> Option<tokio::time::Instant> {
        *self
            .stop_deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the stop deadline (a stop finished).
    pub fn clear_stop_deadline(&self) {
        *self
            .stop_deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Runs `f` on the latest committed record without copying it.
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&ContainerRecord) -> R) -> R {
        self.snapshot.with(f)
    }

    /// A copy of the latest committed record.
    pub fn snapshot(&self) -> ContainerRecord {
        self.snapshot.get()
    }

    /// Publishes `record` as the latest snapshot.
    pub fn publish(&self, record: &ContainerRecord) {
        self.snapshot.set(record);
    }
}

/// A map of live objects keyed by id, plus name reservations.
#[derive(Debug)]
pub struct Registry<T> {
    kind: &'static str,
    objects: RwLock<HashMap<String, Arc<T>>>,
    names: Mutex<HashMap<String, String>>,
}

impl<T> Registry<T> {
    /// An empty registry for objects of `kind` (`sandbox` or `container`).
    pub fn new(kind: &'static str) -> Self {
        Registry {
            kind,
            objects: RwLock::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<T>>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<T>>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `name` for `id`.
    ///
    /// Errors: [`ServerError::AlreadyExists`] naming the holder when another id has it.
    pub fn reserve(&self, name: &str, id: &str) -> Result<()> {
        let mut names = self.names();
        match names.get(name) {
            Some(holder) if holder != id => Err(ServerError::AlreadyExists {
                kind: self.kind,
                name: name.to_string(),
                id: holder.clone(),
            }),
            _ => {
                names.insert(name.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    /// Releases `name` if `id` holds it.
    pub fn release(&self, name: &str, id: &str) {
        let mut names = self.names();
        if names.get(name).is_some_and(|h| h == id) {
            names.remove(name);
        }
    }

    /// Inserts an object.
    pub fn insert(&self, id: String, obj: Arc<T>) {
        self.write().insert(id, obj);
    }

    /// Removes an object by exact id.
    pub fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    /// Whether an object with exactly this id exists.
    pub fn contains(&self, id: &str) -> bool {
        self.read().contains_key(id)
    }

    /// All objects.
    pub fn all(&self) -> Vec<Arc<T>> {
        self.read().values().cloned().collect()
    }

    /// Looks an object up by full id or unique prefix; `Ok(None)` when absent.
    ///
    /// Errors: [`ServerError::InvalidArgument`] for a malformed or ambiguous id.
    pub fn find(&self, field: &'static str, id: &str) -> Result<Option<Arc<T>>> {
        let map = self.read();
        if let Some(o) = map.get(id) {
            return Ok(Some(o.clone()));
        }
        Ok(ids::resolve(field, id, map.keys())?.and_then(|k| map.get(&k).cloned()))
    }

    /// Like [`Registry::find`] but absent is [`ServerError::NotFound`].
    pub fn get(&self, field: &'static str, id: &str) -> Result<Arc<T>> {
        self.find(field, id)?.ok_or_else(|| ServerError::NotFound {
            kind: self.kind,
            id: id.to_string(),
        })
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Creations in progress, by reserved name, so a retried request can be answered with the
/// object its first attempt made.
///
/// kubelet gives up on a slow `RunPodSandbox` or `CreateContainer` after its deadline and sends
/// the same request again. krio runs every creation on a task of its own, so a caller that goes
/// away never cancels it halfway; the finished id stays here until a retry takes it (the same
/// thing CRI-O does with its resource cache).
#[derive(Debug, Default)]
pub struct Pending {
    map: Mutex<HashMap<String, tokio::sync::watch::Receiver<PendingState>>>,
}

/// Name of the test-only environment variable read by [`test_create_delay`].
pub const TEST_DELAY_CREATE_ENV: &str = "KRIO_TEST_DELAY_CREATE_MS";

/// **Test-only hook.** The delay in `KRIO_TEST_DELAY_CREATE_MS` (milliseconds), read once per
/// process: when set, every sandbox and container creation ([`Pending::run`]) waits that long
/// before its first step, on the task that outlives its caller. End-to-end tests use it to make a
/// client give up while a creation is still running, so that the retry's join of the running
/// creation is exercised deterministically. `None` (no delay) when unset or not a number; never
/// set it outside tests.
pub fn test_create_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var(TEST_DELAY_CREATE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    })
}

/// Name of the test-only environment variable read by [`kill_point`].
pub const TEST_KILL_AT_ENV: &str = "KRIO_TEST_KILL_AT";

/// Every kill point [`kill_point`] knows, `<operation>:<step>`: after the named step of a
/// multi-step operation, before the next.
pub const KILL_POINTS: &[&str] = &[
    "PullImage:downloading",
    "PullImage:unpacking",
    "RunPodSandbox:record-creating",
    "RunPodSandbox:namespaces-pinned",
    "RunPodSandbox:network-added",
    "RunPodSandbox:record-ready",
    "CreateContainer:record-written",
    "CreateContainer:rootfs-mounted",
    "CreateContainer:bundle-written",
    "CreateContainer:monitor-spawned",
    "CreateContainer:record-final",
    "StartContainer:runtime-started",
    "StopContainer:signal-sent",
    "StopContainer:exited",
    "StopPodSandbox:containers-stopped",
    "StopPodSandbox:network-down",
    "RemovePodSandbox:containers-removed",
    "RemovePodSandbox:cgroup-and-dirs-removed",
    "RemoveContainer:torn-down",
    "RemoveImage:checked",
    "RemoveImage:removed",
];

/// **Test-only hook.** When `KRIO_TEST_KILL_AT` (read once per process) names `step` (one of
/// [`KILL_POINTS`]), the daemon logs it and SIGKILLs itself there, so an end-to-end test can
/// restart it and check that nothing a client was told is lost and nothing is left without an
/// owner. Does nothing when unset; never set it outside tests.
pub fn kill_point(step: &'static str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(TEST_KILL_AT_ENV).ok());
    if at.as_deref() == Some(step) {
        debug_assert!(KILL_POINTS.contains(&step), "unlisted kill point {step}");
        tracing::error!(
            step,
            "test-only kill point reached (KRIO_TEST_KILL_AT): SIGKILL"
        );
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// The state of one pending creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingState {
    /// Still running.
    Running,
    /// Finished with this id.
    Done(String),
    /// Failed; everything it made was undone and the name released.
    Failed,
}

/// What [`Pending::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// This request creates the object; report the outcome through the sender.
    Create(tokio::sync::watch::Sender<PendingState>),
    /// An earlier request with the same name is running or finished unclaimed: wait for it.
    Join(tokio::sync::watch::Receiver<PendingState>),
}

impl Pending {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::watch::Receiver<PendingState>>>
    {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The names whose creation is still running (not finished, not failed), sorted.
    pub fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, rx)| *rx.borrow() == PendingState::Running)
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Joins a pending creation of `name`, or reserves the name with `reserve` and starts one.
    /// The check and the reservation happen under one lock, so two identical requests can
    /// never both create.
    ///
    /// A finished creation is handed over only while `alive` says its object still exists:
    /// the entry of one that has since been removed is dropped, so a later request is never
    /// given the id of a removed object.
    ///
    /// Errors: whatever `reserve` returns (`AlreadyExists` when a finished object holds the name).
    pub fn begin(
        &self,
        name: &str,
        reserve: impl FnOnce() -> Result<()>,
        alive: impl Fn(&str) -> bool,
    ) -> Result<Begin> {
        let mut map = self.lock();
        if let Some(rx) = map.get(name) {
            let usable = match &*rx.borrow() {
                PendingState::Running => true,
                PendingState::Done(id) => alive(id),
                PendingState::Failed => false,
            };
            if usable {
                return Ok(Begin::Join(rx.clone()));
            }
            map.remove(name);
        }
        reserve()?;
        let (tx, rx) = tokio::sync::watch::channel(PendingState::Running);
        map.insert(name.to_string(), rx);
        Ok(Begin::Create(tx))
    }

    /// Creates an object once per reserved name: reserves `name` with `reserve` and runs
    /// `work` on its own task (so a caller that gives up never cancels it halfway), or, when a
    /// creation of the same name is running or finished unclaimed, waits for it and returns its
    /// id. `kind` names the object in errors.
    ///
    /// `alive` tells whether an object id still exists (see [`Pending::begin`]).
    ///
    /// Errors: whatever `reserve` or `work` return; `FailedPrecondition` when the joined
    /// attempt failed or its object was removed meanwhile (the retry may simply be sent
    /// again); [`ServerError::Task`] when the task panicked.
    pub async fn run<F>(
        &self,
        kind: &str,
        name: &str,
        reserve: impl FnOnce() -> Result<()>,
        alive: impl Fn(&str) -> bool,
        work: F,
    ) -> Result<String>
    where
        F: std::future::Future<Output = Result<String>> + Send + 'static,
    {
        let tx = match self.begin(name, reserve, &alive)? {
            Begin::Create(tx) => tx,
            Begin::Join(rx) => {
                return match Pending::wait(rx).await {
                    Some(id) if alive(&id) => {
                        self.forget(name, &id);
                        Ok(id)
                    }
                    Some(_) => Err(ServerError::FailedPrecondition(format!(
                        "the {kind} {name} an earlier attempt created was removed; retry"
                    ))),
                    None => Err(ServerError::FailedPrecondition(format!(
                        "an earlier attempt to create {kind} {name} failed; retry"
                    ))),
                };
            }
        };
        let delay = test_create_delay().map(|d| (d, kind.to_string(), name.to_string()));
        // The creation's task carries the span of the call that started it (its RPC span).
        let span = tracing::Span::current();
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Some((delay, kind, name)) = delay {
                    tracing::warn!(
                        kind = %kind,
                        name = %name,
                        delay_ms = delay.as_millis() as u64,
                        "test-only delay before creating (KRIO_TEST_DELAY_CREATE_MS)"
                    );
                    tokio::time::sleep(delay).await;
                }
                let result = work.await;
                let _ = tx.send(match &result {
                    Ok(id) => PendingState::Done(id.clone()),
                    Err(_) => PendingState::Failed,
                });
                result
            },
            span,
        ));
        // Only reached when the caller is still there (a caller that gave up dropped this
        // future): the entry then stays for a retry to take, until the object is removed.
        let result = task.await.map_err(|e| ServerError::Task(e.to_string()))?;
        self.finish(name);
        result
    }

    /// Forgets `name` (its caller has the result).
    pub fn finish(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Forgets `name` if its entry is a finished creation of `id` (the object was handed out
    /// or is being removed); an entry of another creation of the same name stays.
    pub fn forget(&self, name: &str, id: &str) {
        let mut map = self.lock();
        let finished_here = map
            .get(name)
            .is_some_and(|rx| matches!(&*rx.borrow(), PendingState::Done(d) if d == id));
        if finished_here {
            map.remove(name);
        }
    }

    /// Number of entries (running, or finished and not yet taken).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no entries.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Waits for a joined creation; `Some(id)` when it succeeded.
    pub async fn wait(mut rx: tokio::sync::watch::Receiver<PendingState>) -> Option<String> {
        loop {
            match rx.borrow_and_update().clone() {
                PendingState::Done(id) => return Some(id),
                PendingState::Failed => return None,
                PendingState::Running => {}
            }
            if rx.changed().await.is_err() {
                return match rx.borrow().clone() {
                    PendingState::Done(id) => Some(id),
                    _ => None,
                };
            }
        }
    }
}

#[cfg(test)]
mod record_tests;

#[cfg(test)]
mod tests {
    #[test]
    fn process_user_from_proc_status() {
        let status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGid:\t3000\t3000\t3000\t3000\n\
                      FDSize:\t64\nGroups:\t3000 50000 \n";
        let u = super::ProcessUser::parse(status).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone()),
            (1000, 3000, vec![3000, 50000])
        );
        let l = u.to_cri().linux.unwrap();
        assert_eq!(
            (l.uid, l.gid, l.supplemental_groups),
            (1000, 3000, vec![3000, 50000])
        );
        let none =
            super::ProcessUser::parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n").unwrap();
        assert!(none.groups.is_empty());
        assert!(super::ProcessUser::parse("Uid:\t0\n").is_none());
        assert!(super::ProcessUser::parse("Uid:\tx\nGid:\t0\nGroups:\n").is_none());
        let me = super::ProcessUser::of_pid(std::process::id() as i32).unwrap();
        assert_eq!(me.uid, rustix::process::getuid().as_raw());
        assert!(super::ProcessUser::of_pid(0).is_none());
        // Seen inside a user namespace mapping 0..65536 to 300000..365536.
        let map = krio_net::IdMap {
            container_id: 0,
            host_id: 300_000,
            length: 65536,
        };
        let host = super::ProcessUser {
            uid: 301_000,
            gid: 300_000,
            groups: vec![300_005, 0, 400_000],
        };
        assert_eq!(
            host.in_user_namespace(map, map),
            super::ProcessUser {
                uid: 1000,
                gid: 0,
                groups: vec![5, 65534, 65534],
            }
        );
    }

    use super::*;

    #[tokio::test]
    async fn pending_hands_the_result_to_a_retry() {
        let p = Pending::default();
        let Begin::Create(tx) = p.begin("n", || Ok(()), |_| true).unwrap() else {
            panic!()
        };
        let Begin::Join(rx) = p
            .begin("n", || panic!("must not reserve twice"), |_| true)
            .unwrap()
        else {
            panic!()
        };
        let waiter = tokio::spawn(Pending::wait(rx));
        tx.send(PendingState::Done("id1".into())).unwrap();
        assert_eq!(waiter.await.unwrap(), Some("id1".into()));
        // An abandoned, finished creation is still handed to the next retry...
        let Begin::Join(rx) = p.begin("n", || panic!(), |_| true).unwrap() else {
            panic!()
        };
        assert_eq!(Pending::wait(rx).await, Some("id1".into()));
        // ...until its caller took it; then the name goes back to the registry's rules.
        p.finish("n");
        assert!(p
            .begin(
                "n",
                || Err(ServerError::FailedPrecondition("taken".into())),
                |_| true
            )
            .is_err());
    }

    #[tokio::test]
    async fn a_failed_creation_lets_the_retry_start_afresh() {
        let p = Pending::default();
        let Begin::Create(tx) = p.begin("n", || Ok(()), |_| true).unwrap() else {
            panic!()
        };
        tx.send(PendingState::Failed).unwrap();
        assert!(matches!(
            p.begin("n", || Ok(()), |_| true).unwrap(),
            Begin::Create(_)
        ));
    }

    #[tokio::test]
    async fn a_removed_object_is_never_handed_to_a_later_create() {
        let p = Pending::default();
        let Begin::Create(tx) = p.begin("n", || Ok(()), |_| true).unwrap() else {
            panic!()
        };
        // The caller gave up; the creation finished on its own and nobody took the id.
        tx.send(PendingState::Done("old".into())).unwrap();
        assert_eq!(p.len(), 1);
        // The object was removed (before its removal could forget the entry): a later
        // create starts afresh instead of being handed "old".
        let Begin::Create(tx) = p.begin("n", || Ok(()), |id| id != "old").unwrap() else {
            panic!("handed the id of a removed object")
        };
        tx.send(PendingState::Done("new".into())).unwrap();
        // A removal forgets the finished entry of its own id, not another one's.
        p.forget("n", "old");
        assert_eq!(p.len(), 1);
        p.forget("n", "new");
        assert!(p.is_empty());
    }
}
