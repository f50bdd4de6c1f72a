//! `RuntimeService` handlers, one file per RPC group.

mod checkpoint;
mod container_create;
mod container_exec;
mod container_list;
mod container_remove;
mod container_restore;
mod container_start;
mod container_stop;
mod container_stream;
mod events;
mod pod_metrics;
mod pod_runtime_sandbox;
mod sandbox_list;
mod sandbox_remove;
mod sandbox_run;
mod sandbox_stop;
mod sandbox_update;
mod stats;
pub(crate) mod streams;
mod version;

#[cfg(test)]
pub(crate) use container_list::container_status_of;
pub(crate) use container_remove::container_name;
pub(crate) use container_restore::scratch_root as restore_scratch_root;
pub(crate) use container_stop::{process_running, refresh_exit_in, StopMode};
pub(crate) use events::EVENT_BUFFER;
pub(crate) use stats::StatsCache;
