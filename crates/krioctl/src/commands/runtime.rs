//! `version`, `info`, `status`, `runtime-config`, `metricsp`, `checkpoint` and `update`.

use krio_cri::v1::{
    CheckpointContainerRequest, LinuxContainerResources, ListPodSandboxMetricsRequest,
    RuntimeConfigRequest, StatusRequest, UpdateContainerResourcesRequest, VersionRequest,
};
use serde_json::{Map, Value};

use super::containers::resolve_container;
use super::pods::resolve_pod;
use super::{out, Ctx};
use crate::cli::{CheckpointArgs, InfoArgs, MetricspArgs, UpdateArgs};
use crate::error::Error;
use crate::output::{message_json, render, Format, Kind};

fn json_err(e: serde_json::Error) -> Error {
    Error::Output(e.to_string())
}

/// `krioctl version`: the Version RPC, printed as crictl does.
pub async fn version(ctx: &mut Ctx, a: InfoArgs) -> Result<(), Error> {
    let mut rt = ctx.rt().await?;
    let req = VersionRequest {
        version: "v1".into(),
    };
    let v = ctx
        .call("Version", ctx.timeout(), req, move |r| async move {
            rt.version(r).await
        })
        .await?;
    match a.output {
        None | Some(Format::Table) => out(&format!(
            "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}\n",
            v.version, v.runtime_name, v.runtime_version, v.runtime_api_version
        )),
        Some(f) => out(
            &render(&message_json(&v, Kind::Other).map_err(json_err)?, f).map_err(Error::Output)?,
        ),
    }
}

/// The Status RPC with `verbose`, as one JSON object with `status` and every `info` key parsed
/// as JSON at the top level (crictl's shape).
async fn status_document(ctx: &mut Ctx) -> Result<Value, Error> {
    let mut rt = ctx.rt().await?;
    let req = StatusRequest { verbose: true };
    let s = ctx
        .call("Status", ctx.timeout(), req, move |r| async move {
            rt.status(r).await
        })
        .await?;
    let mut m = Map::new();
    m.insert(
        "status".into(),
        message_json(&s.status, Kind::Other).map_err(json_err)?,
    );
    if !s.runtime_handlers.is_empty() {
        m.insert(
            "runtimeHandlers".into(),
            message_json(&s.runtime_handlers, Kind::Other).map_err(json_err)?,
        );
    }
    if s.features.is_some() {
        m.insert(
            "features".into(),
            message_json(&s.features, Kind::Other).map_err(json_err)?,
        );
    }
    let mut keys: Vec<&String> = s.info.keys().collect();
    keys.sort();
    for k in keys {
        let v = &s.info[k];
        let parsed = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.clone()));
        m.insert(k.clone(), parsed);
    }
    Ok(Value::Object(m))
}

/// `krioctl info`: the Status RPC with `verbose`, printed as one JSON object
/// with `status` and every `info` key parsed as JSON at the top level (crictl's shape).
pub async fn info(ctx: &mut Ctx, a: InfoArgs) -> Result<(), Error> {
    let doc = status_document(ctx).await?;
    let format = match a.output {
        None | Some(Format::Table) => Format::Json,
        Some(f) => f,
    };
    out(&render(&doc, format).map_err(Error::Output)?)
}

/// `krioctl status`: what the daemon is doing, from the verbose Status RPC: readiness, the
/// handlers, the CNI network, counts of pods, containers and images, the operations in
/// flight, then the effective configuration. `-o json|yaml` prints the whole document
/// (as `info` does).
pub async fn status(ctx: &mut Ctx, a: InfoArgs) -> Result<(), Error> {
    let doc = status_document(ctx).await?;
    match a.output {
        None | Some(Format::Table) => out(&status_text(&doc)),
        Some(f) => out(&render(&doc, f).map_err(Error::Output)?),
    }
}

/// The text form of `krioctl status` for a [`status_document`].
pub fn status_text(doc: &Value) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let str_of = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    if let Some(conds) = doc["status"]["conditions"].as_array() {
        for c in conds {
            let ready = c["status"].as_bool().unwrap_or(false);
            let _ = write!(t, "{:<20}{}", str_of(&c["type"]), ready);
            if !ready {
                let _ = write!(t, " ({}: {})", str_of(&c["reason"]), str_of(&c["message"]));
            }
            t.push('\n');
        }
    }
    for h in doc["handlers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "{:<20}{} {} (root {}){}{}",
            "Handler",
            str_of(&h["name"]),
            str_of(&h["binary"]),
            str_of(&h["root"]),
            if h["ready"].as_bool() == Some(true) {
                ", ready"
            } else {
                ", NOT READY"
            },
            if h["default"].as_bool() == Some(true) {
                ", default"
            } else {
                ""
            },
        );
    }
    let n = &doc["network"];
    let plugins: Vec<String> = n["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .map(str_of)
        .collect();
    let _ = writeln!(
        t,
        "{:<20}{} from {} (plugins: {})",
        "Network",
        str_of(&n["name"]),
        if n["file"].is_null() {
            str_of(&n["confDir"])
        } else {
            str_of(&n["file"])
        },
        plugins.join(", ")
    );
    let by_state = |v: &Value| -> String {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let c = &doc["counts"];
    let _ = writeln!(
        t,
        "{:<20}{} ({})",
        "Pods",
        str_of(&c["pods"]),
        by_state(&c["podsByState"])
    );
    let _ = writeln!(
        t,
        "{:<20}{} ({})",
        "Containers",
        str_of(&c["containers"]),
        by_state(&c["containersByState"])
    );
    let _ = writeln!(t, "{:<20}{}", "Images", str_of(&c["images"]));
    let f = &doc["inflight"];
    let calls: Vec<String> = f["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} ({} ms)", str_of(&c["rpc"]), str_of(&c["age_ms"])))
        .collect();
    let _ = writeln!(t, "{:<20}{}", "Calls in flight", calls.join(", "));
    for (label, key) in [
        ("Pod creations", "podCreations"),
        ("Container creations", "containerCreations"),
        ("Pulls", "pulls"),
    ] {
        let items: Vec<String> = f[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(str_of)
            .collect();
        let _ = writeln!(t, "{label:<20}{}", items.join(", "));
    }
    t.push_str("Config:\n");
    let config = serde_json::to_string_pretty(&doc["config"]).unwrap_or_default();
    for line in config.lines() {
        let _ = writeln!(t, "  {line}");
    }
    t
}

/// JSON unless another format was asked for (table means JSON).
fn json_or(f: Option<Format>) -> Format {
    match f {
        None | Some(Format::Table) => Format::Json,
        Some(f) => f,
    }
}

/// `krioctl runtime-config`: the RuntimeConfig RPC (the runtime's cgroup driver).
pub async fn runtime_config(ctx: &mut Ctx, a: InfoArgs) -> Result<(), Error> {
    let mut rt = ctx.rt().await?;
    let resp = ctx
        .call(
            "RuntimeConfig",
            ctx.timeout(),
            RuntimeConfigRequest {},
            move |r| async move { rt.runtime_config(r).await },
        )
        .await?;
    out(&render(
        &message_json(&resp, Kind::Other).map_err(json_err)?,
        json_or(a.output),
    )
    .map_err(Error::Output)?)
}

/// `krioctl metricsp [POD...]`: ListPodSandboxMetrics, all pods or the given ones (ID
/// prefixes), as `{"podMetrics": [...]}`.
pub async fn metricsp(ctx: &mut Ctx, a: MetricspArgs) -> Result<(), Error> {
    let mut wanted = Vec::new();
    for p in &a.pods {
        wanted.push(resolve_pod(ctx, p).await?);
    }
    let mut rt = ctx.rt().await?;
    let mut resp = ctx
        .call(
            "ListPodSandboxMetrics",
            ctx.timeout(),
            ListPodSandboxMetricsRequest {},
            move |r| async move { rt.list_pod_sandbox_metrics(r).await },
        )
        .await?;
    if !wanted.is_empty() {
        resp.pod_metrics
            .retain(|m| wanted.contains(&m.pod_sandbox_id));
    }
    out(&render(
        &message_json(&resp, Kind::Other).map_err(json_err)?,
        json_or(a.output),
    )
    .map_err(Error::Output)?)
}

/// `krioctl checkpoint [--export FILE] CONTAINER...`: CheckpointContainer for each; prints
/// each ID.
pub async fn checkpoint(ctx: &mut Ctx, a: CheckpointArgs) -> Result<(), Error> {
    let location = match &a.export {
        None => String::new(),
        Some(p) if p.is_absolute() => p.to_string_lossy().into_owned(),
        Some(p) => std::env::current_dir()
            .map_err(|e| Error::invalid("--export", e.to_string()))?
            .join(p)
            .to_string_lossy()
            .into_owned(),
    };
    for c in &a.containers {
        let id = resolve_container(ctx, c).await?;
        let mut rt = ctx.rt().await?;
        let req = CheckpointContainerRequest {
            container_id: id.clone(),
            location: location.clone(),
            timeout: ctx.lifecycle_timeout().as_secs() as i64,
        };
        ctx.call(
            "CheckpointContainer",
            ctx.lifecycle_timeout(),
            req,
            move |r| async move { rt.checkpoint_container(r).await },
        )
        .await?;
        out(&format!("{id}\n"))?;
    }
    Ok(())
}

/// The `LinuxContainerResources` and annotations of `krioctl update`'s flags.
///
/// Errors: an annotation without `=`.
pub fn update_request(
    a: &UpdateArgs,
) -> Result<
    (
        LinuxContainerResources,
        std::collections::HashMap<String, String>,
    ),
    Error,
> {
    let r = LinuxContainerResources {
        cpu_period: a.cpu_period.unwrap_or(0),
        cpu_quota: a.cpu_quota.unwrap_or(0),
        cpu_shares: a.cpu_share.unwrap_or(0),
        cpuset_cpus: a.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: a.cpuset_mems.clone().unwrap_or_default(),
        memory_limit_in_bytes: a.memory.unwrap_or(0),
        memory_swap_limit_in_bytes: a.memory_swap.unwrap_or(0),
        ..Default::default()
    };
    let mut annotations = std::collections::HashMap::new();
    for kv in &a.annotations {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::invalid("--annotation", format!("{kv:?} is not KEY=VALUE")))?;
        annotations.insert(k.to_string(), v.to_string());
    }
    Ok((r, annotations))
}

/// `krioctl update [flags] CONTAINER...`: UpdateContainerResources for each; prints each ID.
pub async fn update(ctx: &mut Ctx, a: UpdateArgs) -> Result<(), Error> {
    let (linux, annotations) = update_request(&a)?;
    for c in &a.containers {
        let id = resolve_container(ctx, c).await?;
        let mut rt = ctx.rt().await?;
        let req = UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(linux.clone()),
            windows: None,
            annotations: annotations.clone(),
        };
        ctx.call(
            "UpdateContainerResources",
            ctx.lifecycle_timeout(),
            req,
            move |r| async move { rt.update_container_resources(r).await },
        )
        .await?;
        out(&format!("{id}\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> UpdateArgs {
        match Cli::try_parse_from(args).unwrap().command {
            Command::Update(a) => a,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn update_flags_become_resources_and_annotations() {
        let a = parse(&[
            "krioctl",
            "update",
            "--memory",
            "1048576",
            "--cpu-quota",
            "5000",
            "--cpuset-cpus",
            "0-1",
            "--annotation",
            "a=b=c",
            "abc",
        ]);
        let (r, ann) = update_request(&a).unwrap();
        assert_eq!(r.memory_limit_in_bytes, 1 << 20);
        assert_eq!(r.cpu_quota, 5000);
        assert_eq!(r.cpu_period, 0);
        assert_eq!(r.cpuset_cpus, "0-1");
        assert_eq!(ann.get("a").map(String::as_str), Some("b=c"));
        let a = parse(&["krioctl", "update", "--annotation", "nokey", "abc"]);
        let e = update_request(&a).unwrap_err().to_string();
        assert!(e.contains("--annotation"), "{e}");
    }
}
