//! The statistics event printed by `<runtime> events --stats <id>`: one JSON object in the shape of runc's
//! `types.Event` (`{"type":"stats","id":...,"data":{...}}`), which gVisor's runsc follows too.
//!
//! What the figures mean depends on the runtime. Under runsc 20221219 (Debian's package), for a container inside
//! a shared gVisor sandbox, measured here:
//! - `data.cpu.usage.total` is the container's own CPU time, nanoseconds, an estimate: runsc takes the CPU time
//!   of the sandbox's host cgroup and gives each container the share that the Sentry's own accounting of the
//!   container's live tasks has of the sandbox's live tasks (tick-based: an idle container gets exactly 0, and
//!   runsc omits the key). When no live task of the sandbox has used CPU by the Sentry's count, runsc instead
//!   splits the cgroup's CPU time equally between the containers that have live tasks.
//! - `data.memory.usage.usage` and `data.pids.current` are the same for every container of the sandbox: the
//!   Sentry's total memory accounting and its total task count.

use serde::Deserialize;

/// One `events --stats` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StatsEvent {
    /// The event type: `stats`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The container id the event is about.
    pub id: String,
    /// The figures; absent when the runtime had none.
    pub data: Option<EventStats>,
}

/// The figures of a [`StatsEvent`] (runc's `types.Stats`, the parts runsc fills).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EventStats {
    /// CPU time.
    pub cpu: Option<EventCpu>,
    /// Memory use.
    pub memory: Option<EventMemory>,
    /// Tasks.
    pub pids: Option<EventPids>,
}

/// `data.cpu`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EventCpu {
    /// `data.cpu.usage`.
    pub usage: EventCpuUsage,
}

/// `data.cpu.usage`: cumulative CPU time, nanoseconds. Go's encoder omits zero values, so an absent field with
/// the rest of the object present means 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EventCpuUsage {
    /// Total CPU time, nanoseconds.
    pub total: u64,
    /// CPU time in user mode, nanoseconds (runc; runsc leaves it out).
    pub user: u64,
    /// CPU time in kernel mode, nanoseconds (runc; runsc leaves it out).
    pub kernel: u64,
}

/// `data.memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EventMemory {
    /// `data.memory.usage`: memory in use.
    pub usage: EventMemoryEntry,
}

/// A memory figure with its limit (`data.memory.usage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EventMemoryEntry {
    /// Bytes in use.
    pub usage: u64,
    /// Limit in bytes; 0 when the runtime reports none.
    pub limit: u64,
}

/// `data.pids`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EventPids {
    /// Number of tasks.
    pub current: u64,
}

impl StatsEvent {
    /// Cumulative CPU time of the container in nanoseconds, when the event has a `data.cpu` object (an absent
    /// `usage.total` in it means 0, as Go's encoder omits zero values).
    pub fn cpu_total_ns(&self) -> Option<u64> {
        self.data
            .as_ref()
            .and_then(|d| d.cpu.as_ref())
            .map(|c| c.usage.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Printed by runsc 20221219 (`runsc --root R --platform=ptrace --network=host events --stats <id>`) for
    // containers of one gVisor sandbox: `busy` ran `while :; do :; done`, `idle` ran `sleep`; the `split`
    // samples were taken after `busy` was killed, when the root container (`podx`, a `sleep`) and `idle` got
    // half of the cgroup's CPU time each.
    const BUSY: &str = include_str!("../testdata/runsc-20221219-events-stats-busy.json");
    const IDLE: &str = include_str!("../testdata/runsc-20221219-events-stats-idle.json");
    const IDLE_SPLIT: &str =
        include_str!("../testdata/runsc-20221219-events-stats-idle-split.json");
    const ROOT_SPLIT: &str =
        include_str!("../testdata/runsc-20221219-events-stats-root-split.json");

    #[test]
    fn runsc_events_are_read() {
        let busy: StatsEvent = serde_json::from_str(BUSY).unwrap();
        assert_eq!((busy.kind.as_str(), busy.id.as_str()), ("stats", "busy"));
        assert_eq!(busy.cpu_total_ns(), Some(14_126_575_536));
        let data = busy.data.as_ref().unwrap();
        assert_eq!(data.memory.as_ref().unwrap().usage.usage, 6_066_176);
        assert_eq!(data.pids.as_ref().unwrap().current, 3);

        // An idle container: `"usage":{}` is zero CPU time, not an unknown one.
        let idle: StatsEvent = serde_json::from_str(IDLE).unwrap();
        assert_eq!(idle.cpu_total_ns(), Some(0));
        // Memory and tasks are the sandbox's: the same in both containers' events.
        assert_eq!(idle.data.as_ref().unwrap().memory, data.memory);

        let a: StatsEvent = serde_json::from_str(IDLE_SPLIT).unwrap();
        let b: StatsEvent = serde_json::from_str(ROOT_SPLIT).unwrap();
        assert_eq!(a.cpu_total_ns(), Some(9_425_279_509));
        assert_eq!(b.cpu_total_ns(), Some(9_425_540_498));
    }

    #[test]
    fn missing_parts_are_none_or_zero() {
        let e: StatsEvent = serde_json::from_str(r#"{"type":"stats","id":"x"}"#).unwrap();
        assert_eq!(e.cpu_total_ns(), None);
        let e: StatsEvent =
            serde_json::from_str(r#"{"type":"stats","id":"x","data":{"memory":{}}}"#).unwrap();
        assert_eq!(e.cpu_total_ns(), None);
        let e: StatsEvent = serde_json::from_str(
            r#"{"type":"stats","id":"x","data":{"cpu":{"usage":{"total":5,"percpu":[5]}},"new":1}}"#,
        )
        .unwrap();
        assert_eq!(e.cpu_total_ns(), Some(5));
        assert!(
            serde_json::from_str::<StatsEvent>("loading sandbox: file does not exist").is_err()
        );
    }
}
