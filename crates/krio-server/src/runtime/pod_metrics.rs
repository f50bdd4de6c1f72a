//! `ListMetricDescriptors`, `ListPodSandboxMetrics` and `StreamPodSandboxMetrics`: the
//! cAdvisor metrics that kubelet's `/metrics/cadvisor` serves when it takes pod and
//! container statistics from the runtime, for CPU, memory, network and the writable layer's
//! filesystem usage; and the network counters of a pod (`NetworkUsage` in pod stats).
//!
//! Label keys: `id` (the cgroup path, as cAdvisor's `id`), `name` (the container or sandbox
//! id) and `image`, then `interface` for network metrics and `device` for filesystem ones.
//! kubelet adds `namespace`, `pod` and `container` itself. Values are integers (the CRI's
//! `UInt64Value`), so CPU seconds are whole seconds.
//!
//! Network counters come from `/proc/<pid>/net/dev` of a running container of the pod, after
//! checking that the process is in the pod's pinned network namespace (same inode), so a
//! recycled pid is never read. A pod with no running container has no network counters: it
//! has no process to read them through (krio pods have no pause process).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use krio_cri::v1 as cri;

use crate::state::{now_ns, ContainerRecord, ContainerState, SandboxRecord, SandboxState};
use crate::Krio;

/// Label keys of container metrics.
const BASE: &[&str] = &["id", "name", "image"];

/// (name, help, extra label key, type) of every metric krio reports.
const METRICS: &[(&str, &str, Option<&str>, cri::MetricType)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed, in whole seconds.",
        None,
        cri::MetricType::Counter,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage, including page cache, in bytes.",
        None,
        cri::MetricType::Gauge,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set (usage minus inactive file pages), in bytes.",
        None,
        cri::MetricType::Gauge,
    ),
    (
        "container_memory_rss",
        "Anonymous resident memory, in bytes.",
        None,
        cri::MetricType::Gauge,
    ),
    (
        "container_memory_failures_total",
        "Cumulative count of page faults.",
        None,
        cri::MetricType::Counter,
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit, in bytes (0 when unlimited).",
        None,
        cri::MetricType::Gauge,
    ),
    (
        "container_fs_usage_bytes",
        "Bytes used by the container's writable layer.",
        Some("device"),
        cri::MetricType::Gauge,
    ),
    (
        "container_fs_inodes_total",
        "Inodes used by the container's writable layer.",
        Some("device"),
        cri::MetricType::Gauge,
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative bytes received.",
        Some("interface"),
        cri::MetricType::Counter,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative packets received.",
        Some("interface"),
        cri::MetricType::Counter,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative errors while receiving.",
        Some("interface"),
        cri::MetricType::Counter,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative packets dropped while receiving.",
        Some("interface"),
        cri::MetricType::Counter,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative bytes transmitted.",
        Some("interface"),
        cri::MetricType::Counter,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative packets transmitted.",
        Some("interface"),
        cri::MetricType::Counter,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative errors while transmitting.",
        Some("interface"),
        cri::MetricType::Counter,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative packets dropped while transmitting.",
        Some("interface"),
        cri::MetricType::Counter,
    ),
];

/// Counters of one network interface, from `/proc/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Iface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`), leaving out `lo`.
pub(crate) fn parse_net_dev(text: &str) -> Vec<Iface> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            if v.len() < 12 {
                return None;
            }
            Some(Iface {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// The interfaces of the pod's network namespace, read through a running container of the
/// pod that is in it; `None` for host-network pods and pods with no running container.
pub(crate) fn pod_interfaces(
    sb: &SandboxRecord,
    containers: &[ContainerRecord],
) -> Option<Vec<Iface>> {
    let netns = std::fs::metadata(sb.netns()?).ok()?;
    containers
        .iter()
        .filter(|c| {
            c.sandbox_id() == sb.id() && c.state() == ContainerState::Running && c.pid() > 0
        })
        .find_map(|c| {
            let proc = Path::new("/proc").join(c.pid().to_string());
            let ns = std::fs::metadata(proc.join("ns/net")).ok()?;
            if (ns.dev(), ns.ino()) != (netns.dev(), netns.ino()) {
                return None;
            }
            Some(parse_net_dev(
                &std::fs::read_to_string(proc.join("net/dev")).ok()?,
            ))
        })
}

/// The pod's `NetworkUsage`: `eth0` (the interface CNI plugins create) as the default.
pub(crate) fn network_usage(ifaces: &[Iface], now: i64) -> cri::NetworkUsage {
    let usage = |i: &Iface| cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: Some(cri::UInt64Value { value: i.rx_bytes }),
        rx_errors: Some(cri::UInt64Value { value: i.rx_errors }),
        tx_bytes: Some(cri::UInt64Value { value: i.tx_bytes }),
        tx_errors: Some(cri::UInt64Value { value: i.tx_errors }),
    };
    cri::NetworkUsage {
        timestamp: now,
        default_interface: ifaces
            .iter()
            .find(|i| i.name == "eth0")
            .or_else(|| ifaces.first())
            .map(usage),
        interfaces: ifaces.iter().map(usage).collect(),
    }
}

fn metric(name: &str, now: i64, labels: &[&str], value: u64) -> cri::Metric {
    let kind = METRICS
        .iter()
        .find(|m| m.0 == name)
        .map_or(cri::MetricType::Gauge, |m| m.3);
    cri::Metric {
        name: name.to_string(),
        timestamp: now,
        metric_type: kind as i32,
        label_values: labels.iter().map(|s| s.to_string()).collect(),
        value: Some(cri::UInt64Value { value }),
    }
}

fn network_metrics(out: &mut Vec<cri::Metric>, now: i64, base: &[&str], ifaces: &[Iface]) {
    for i in ifaces {
        let mut labels = base.to_vec();
        labels.push(&i.name);
        for (name, v) in [
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_packets_total", i.rx_packets),
            ("container_network_receive_errors_total", i.rx_errors),
            (
                "container_network_receive_packets_dropped_total",
                i.rx_dropped,
            ),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_packets_total", i.tx_packets),
            ("container_network_transmit_errors_total", i.tx_errors),
            (
                "container_network_transmit_packets_dropped_total",
                i.tx_dropped,
            ),
        ] {
            out.push(metric(name, now, &labels, v));
        }
    }
}

/// A container's metrics from its `ContainerStats`.
fn container_metrics(
    rec: &ContainerRecord,
    stats: &cri::ContainerStats,
    now: i64,
) -> Vec<cri::Metric> {
    let v = |x: &Option<cri::UInt64Value>| x.as_ref().map(|v| v.value);
    let base = [rec.cgroups_path(), rec.id(), rec.image_ref()];
    let mut out = Vec::new();
    if let Some(cpu) = &stats.cpu {
        if let Some(ns) = v(&cpu.usage_core_nano_seconds) {
            out.push(metric(
                "container_cpu_usage_seconds_total",
                now,
                &base,
                ns / 1_000_000_000,
            ));
        }
    }
    if let Some(m) = &stats.memory {
        for (name, x) in [
            ("container_memory_usage_bytes", v(&m.usage_bytes)),
            (
                "container_memory_working_set_bytes",
                v(&m.working_set_bytes),
            ),
            ("container_memory_rss", v(&m.rss_bytes)),
            ("container_memory_failures_total", v(&m.page_faults)),
        ] {
            if let Some(x) = x {
                out.push(metric(name, now, &base, x));
            }
        }
    }
    let limit = rec
        .config()
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map_or(0, |r| r.memory_limit_in_bytes.max(0) as u64);
    out.push(metric(
        "container_spec_memory_limit_bytes",
        now,
        &base,
        limit,
    ));
    if let Some(fs) = &stats.writable_layer {
        let device = fs.fs_id.as_ref().map_or("", |f| f.mountpoint.as_str());
        let mut labels = base.to_vec();
        labels.push(device);
        if let Some(b) = v(&fs.used_bytes) {
            out.push(metric("container_fs_usage_bytes", now, &labels, b));
        }
        if let Some(i) = v(&fs.inodes_used) {
            out.push(metric("container_fs_inodes_total", now, &labels, i));
        }
    }
    out
}

impl Krio {
    /// CRI `ListMetricDescriptors`: every metric `ListPodSandboxMetrics` reports.
    pub(crate) fn list_metric_descriptors(&self) -> cri::ListMetricDescriptorsResponse {
        cri::ListMetricDescriptorsResponse {
            descriptors: METRICS
                .iter()
                .map(|(name, help, extra, _)| cri::MetricDescriptor {
                    name: name.to_string(),
                    help: help.to_string(),
                    label_keys: BASE
                        .iter()
                        .chain(extra.iter())
                        .map(|s| s.to_string())
                        .collect(),
                })
                .collect(),
        }
    }

    /// CRI `ListPodSandboxMetrics`: for every ready pod, its network metrics and its created
    /// and running containers' CPU, memory and filesystem metrics.
    pub(crate) fn list_pod_sandbox_metrics(&self) -> cri::ListPodSandboxMetricsResponse {
        let containers = self.live_containers();
        let now = now_ns();
        let pod_metrics = self
            .sandboxes
            .all()
            .iter()
            .map(|s| s.snapshot())
            .filter(|s| s.state() == SandboxState::Ready)
            .map(|sb| {
                let mut metrics = Vec::new();
                if let Some(ifaces) = pod_interfaces(&sb, &containers) {
                    let base = [sb.cgroup_parent(), sb.id(), ""];
                    network_metrics(&mut metrics, now, &base, &ifaces);
                }
                cri::PodSandboxMetrics {
                    pod_sandbox_id: sb.id().to_string(),
                    metrics,
                    container_metrics: containers
                        .iter()
                        .filter(|c| c.sandbox_id() == sb.id())
                        .map(|c| cri::ContainerMetrics {
                            container_id: c.id().to_string(),
                            metrics: container_metrics(c, &self.container_stats_of(c), now),
                        })
                        .collect(),
                }
            })
            .collect();
        cri::ListPodSandboxMetricsResponse { pod_metrics }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    9146      71    1    2    0     0          0         0     1782      23    3    4    0     0       0          0
";

    #[test]
    fn net_dev_counters() {
        let got = parse_net_dev(NET_DEV);
        assert_eq!(
            got,
            vec![Iface {
                name: "eth0".into(),
                rx_bytes: 9146,
                rx_packets: 71,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 1782,
                tx_packets: 23,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
        let usage = network_usage(&got, 5);
        assert_eq!(
            usage.default_interface.unwrap().rx_bytes.unwrap().value,
            9146
        );
        let mut m = Vec::new();
        network_metrics(&mut m, 5, &["id", "name", ""], &got);
        assert_eq!(m.len(), 8);
        assert_eq!(m[0].label_values, ["id", "name", "", "eth0"]);
        assert_eq!(m[0].metric_type, cri::MetricType::Counter as i32);
    }

    #[test]
    fn every_metric_has_a_descriptor_with_matching_labels() {
        for (name, _, extra, _) in METRICS {
            assert!(name.starts_with("container_"), "{name}");
            let _ = extra;
        }
        let names: std::collections::BTreeSet<_> = METRICS.iter().map(|m| m.0).collect();
        assert_eq!(names.len(), METRICS.len(), "duplicate metric names");
    }
}
