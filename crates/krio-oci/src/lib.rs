//! OCI runtime spec generation from CRI configs, and the OCI runtime (runc) wrapper.
//!
//! - [`build_spec`] turns a CRI `ContainerConfig` + `PodSandboxConfig` + image config into an OCI runtime
//!   [`Spec`](oci_spec::runtime::Spec); [`write_bundle`] writes it as `config.json`.
//! - [`OciRuntime`] drives the runtime binary (runc) for every verb except `create`, which the per-container
//!   monitor (`krio-monitor`) performs so that it owns the container's stdio.

mod bundle;
mod error;
mod events;
mod exec_stream;
mod mounts;
mod process;
mod resources;
mod runtime;
mod security;
mod spec;
#[cfg(test)]
mod spec_tests;
mod user;

pub use bundle::{write_bundle, CONFIG_FILE};
pub use error::SpecError;
pub use events::{
    EventCpu, EventCpuUsage, EventMemory, EventMemoryEntry, EventPids, EventStats, StatsEvent,
};
pub use exec_stream::{ExecProcess, ExecStreamOptions, Resizer};
pub use mounts::host_devices;
pub use process::DEFAULT_PATH_ENV;
pub use resources::{clamp_oom_score_adj, resources};
pub use runtime::{
    runtime_env_path, validate_container_id, DeleteOptions, ExecOptions, ExecOutput, KillOptions,
    OciRuntime, RuntimeError, RuntimeState, RuntimeStatus,
};
pub use security::{
    capabilities_in_mask, capability_mask, daemon_bounding_set, parse_capability, seccomp_choice,
    SeccompChoice, ALL_CAPABILITIES, DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
};
pub use spec::{annotations, build_spec, NamespacePaths, SpecInputs};

/// Whether `/sys/fs/cgroup` is a cgroup v2 (unified) mount, i.e. the host runs pure cgroup v2.
///
/// Hybrid hosts (v1 controllers with a small v2 tree at `/sys/fs/cgroup/unified`) return `false`. Any error
/// reading the mount (e.g. no `/sys`) also returns `false`.
pub fn host_uses_cgroup_v2() -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    rustix::fs::statfs("/sys/fs/cgroup")
        // `f_type`'s width differs between architectures, hence the (here redundant) cast.
        .map(|s| {
            #[allow(clippy::unnecessary_cast)]
            let t = s.f_type as i64;
            t == CGROUP2_SUPER_MAGIC
        })
        .unwrap_or(false)
}
