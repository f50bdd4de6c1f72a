//! `stats`, `statsp` and `events`: resource usage and the container event stream, shaped like
//! crictl's output.

use std::time::Duration;

use krio_cri::v1::{
    ContainerStats, ContainerStatsFilter, GetEventsRequest, ListContainerStatsRequest,
    ListPodSandboxStatsRequest, PodSandboxStats, PodSandboxStatsFilter,
};
use serde_json::{Map, Value};

use super::containers::{list_containers, resolve_container};
use super::pods::resolve_pod;
use super::{out, parse_labels, Ctx};
use crate::cli::{EventsArgs, StatsArgs, StatspArgs};
use crate::error::Error;
use crate::output::{message_json, render, Format, Kind};
use crate::table::{human_size, trunc_id, Table};

fn json_err(e: serde_json::Error) -> Error {
    Error::Output(e.to_string())
}

/// CPU percent of one core from `usage_nano_cores` (as crictl shows it).
fn cpu_percent(nano_cores: Option<u64>) -> String {
    format!("{:.2}", nano_cores.unwrap_or(0) as f64 / 1e7)
}

/// crictl's `stats` table: CONTAINER, NAME, CPU %, MEM (working set), DISK (writable layer
/// bytes), INODES.
pub fn stats_table(stats: &[ContainerStats], no_trunc: bool) -> String {
    let mut t = Table::new(&["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]);
    for s in stats {
        let attrs = s.attributes.as_ref();
        let id = attrs.map(|a| a.id.as_str()).unwrap_or_default();
        let name = attrs
            .and_then(|a| a.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mem = s
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        let fs = s.writable_layer.as_ref();
        let disk = fs
            .and_then(|f| f.used_bytes.as_ref())
            .map_or(0, |v| v.value);
        let inodes = fs
            .and_then(|f| f.inodes_used.as_ref())
            .map_or(0, |v| v.value);
        t.add_row(vec![
            trunc_id(id, no_trunc),
            name,
            cpu_percent(
                s.cpu
                    .as_ref()
                    .and_then(|c| c.usage_nano_cores.as_ref())
                    .map(|v| v.value),
            ),
            human_size(mem),
            human_size(disk),
            inodes.to_string(),
        ]);
    }
    t.render()
}

/// crictl's `statsp` table: POD, POD ID, CPU %, MEM.
pub fn statsp_table(stats: &[PodSandboxStats], no_trunc: bool) -> String {
    let mut t = Table::new(&["POD", "POD ID", "CPU %", "MEM"]);
    for s in stats {
        let attrs = s.attributes.as_ref();
        let id = attrs.map(|a| a.id.as_str()).unwrap_or_default();
        let name = attrs
            .and_then(|a| a.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let linux = s.linux.as_ref();
        let cpu = linux
            .and_then(|l| l.cpu.as_ref())
            .and_then(|c| c.usage_nano_cores.as_ref())
            .map(|v| v.value);
        let mem = linux
            .and_then(|l| l.memory.as_ref())
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        t.add_row(vec![
            name,
            trunc_id(id, no_trunc),
            cpu_percent(cpu),
            human_size(mem),
        ]);
    }
    t.render()
}

/// Waits for the next `--watch` sample; false when not watching.
async fn next_sample(watch: bool, seconds: u64) -> bool {
    if watch {
        tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
    }
    watch
}

/// `krioctl stats [ID] [-a] [--id] [-p POD] [-l K=V] [-o table|json|yaml] [-w [-s N]]`:
/// ListContainerStats, by default of running containers only (as crictl).
///
/// Errors: [`Error::Invalid`] for bad flags, [`Error::Resolve`] for unknown IDs, RPC errors.
pub async fn stats(ctx: &mut Ctx, a: StatsArgs) -> Result<(), Error> {
    let id = match a.container.as_ref().or(a.id.as_ref()) {
        Some(p) => resolve_container(ctx, p).await?,
        None => String::new(),
    };
    let pod = match &a.pod {
        Some(p) => resolve_pod(ctx, p).await?,
        None => String::new(),
    };
    let filter = ContainerStatsFilter {
        id,
        pod_sandbox_id: pod,
        label_selector: parse_labels(&a.label)?,
    };
    loop {
        {
            let mut stats = list_container_stats(ctx, filter.clone()).await?;
            if !a.all {
                let running: Vec<String> = list_containers(ctx, None)
                    .await?
                    .into_iter()
                    .filter(|c| c.state == 1)
                    .map(|c| c.id)
                    .collect();
                stats.retain(|s| {
                    s.attributes
                        .as_ref()
                        .is_some_and(|at| running.contains(&at.id))
                });
            }
            match a.out.output {
                Format::Table => out(&stats_table(&stats, a.out.no_trunc))?,
                f => {
                    let mut m = Map::new();
                    m.insert(
                        "stats".into(),
                        message_json(&stats, Kind::Other).map_err(json_err)?,
                    );
                    out(&render(&Value::Object(m), f).map_err(Error::Output)?)?
                }
            }
        }
        if !next_sample(a.watch, a.seconds).await {
            return Ok(());
        }
    }
}

async fn list_container_stats(
    ctx: &mut Ctx,
    filter: ContainerStatsFilter,
) -> Result<Vec<ContainerStats>, Error> {
    let mut rt = ctx.rt().await?;
    let req = ListContainerStatsRequest {
        filter: Some(filter),
    };
    let resp = ctx
        .call(
            "ListContainerStats",
            ctx.timeout(),
            req,
            move |r| async move { rt.list_container_stats(r).await },
        )
        .await?;
    Ok(resp.stats)
}

/// `krioctl statsp [--id POD] [-l K=V] [-o table|json|yaml] [-w [-s N]]`: ListPodSandboxStats.
///
/// Errors: [`Error::Invalid`] for bad flags, [`Error::Resolve`] for unknown IDs, RPC errors.
pub async fn statsp(ctx: &mut Ctx, a: StatspArgs) -> Result<(), Error> {
    let id = match &a.id {
        Some(p) => resolve_pod(ctx, p).await?,
        None => String::new(),
    };
    let filter = PodSandboxStatsFilter {
        id,
        label_selector: parse_labels(&a.label)?,
    };
    loop {
        {
            let mut rt = ctx.rt().await?;
            let req = ListPodSandboxStatsRequest {
                filter: Some(filter.clone()),
            };
            let stats = ctx
                .call(
                    "ListPodSandboxStats",
                    ctx.timeout(),
                    req,
                    move |r| async move { rt.list_pod_sandbox_stats(r).await },
                )
                .await?
                .stats;
            match a.out.output {
                Format::Table => out(&statsp_table(&stats, a.out.no_trunc))?,
                f => {
                    let mut m = Map::new();
                    m.insert(
                        "stats".into(),
                        message_json(&stats, Kind::Other).map_err(json_err)?,
                    );
                    out(&render(&Value::Object(m), f).map_err(Error::Output)?)?
                }
            }
        }
        if !next_sample(a.watch, a.seconds).await {
            return Ok(());
        }
    }
}

/// `krioctl events [-o json|yaml] [--count N]`: GetContainerEvents, one document per event,
/// with the event type by name (`CONTAINER_STARTED_EVENT`), until interrupted or `N` events.
///
/// Errors: RPC errors, or the stream ending with an error status.
pub async fn events(ctx: &mut Ctx, a: EventsArgs) -> Result<(), Error> {
    let mut rt = ctx.rt().await?;
    let mut stream = rt
        .get_container_events(GetEventsRequest {})
        .await
        .map_err(|status| Error::Rpc {
            op: "GetContainerEvents",
            status,
        })?
        .into_inner();
    let mut seen = 0usize;
    while a.count.is_none_or(|n| seen < n) {
        let Some(ev) = stream.message().await.map_err(|status| Error::Rpc {
            op: "GetContainerEvents",
            status,
        })?
        else {
            return Ok(());
        };
        let v = message_json(&ev, Kind::Pod).map_err(json_err)?;
        let text = match a.output {
            Format::Yaml => format!("---\n{}", render(&v, Format::Yaml).map_err(Error::Output)?),
            _ => format!("{}\n", serde_json::to_string(&v).map_err(json_err)?),
        };
        out(&text)?;
        seen += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1::{
        ContainerAttributes, ContainerMetadata, CpuUsage, FilesystemUsage, MemoryUsage, UInt64Value,
    };

    #[test]
    fn stats_table_shows_cpu_memory_and_disk() {
        let s = ContainerStats {
            attributes: Some(ContainerAttributes {
                id: "0123456789abcdef".into(),
                metadata: Some(ContainerMetadata {
                    name: "web".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            cpu: Some(CpuUsage {
                usage_nano_cores: Some(UInt64Value { value: 25_000_000 }),
                ..Default::default()
            }),
            memory: Some(MemoryUsage {
                working_set_bytes: Some(UInt64Value { value: 2 << 20 }),
                ..Default::default()
            }),
            writable_layer: Some(FilesystemUsage {
                used_bytes: Some(UInt64Value { value: 4096 }),
                inodes_used: Some(UInt64Value { value: 7 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = stats_table(&[s], false);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[0], "0123456789abc");
        assert_eq!(row[1], "web");
        assert_eq!(row[2], "2.50");
        assert!(text.starts_with("CONTAINER"), "{text}");
        assert_eq!(row.last(), Some(&"7"));
    }

    #[test]
    fn event_types_are_named() {
        let v = message_json(
            &krio_cri::v1::ContainerEventResponse {
                container_id: "c".into(),
                container_event_type: 1,
                ..Default::default()
            },
            Kind::Pod,
        )
        .unwrap();
        assert_eq!(v["containerEventType"], "CONTAINER_STARTED_EVENT");
        assert_eq!(v["containerId"], "c");
    }
}
