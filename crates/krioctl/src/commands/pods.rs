//! `runp`, `pods`, `inspectp`, `stopp`, `rmp`.

use krio_cri::v1::{
    ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxStateValue,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use regex::Regex;
use serde_json::{Map, Value};

use super::{now_ns, out, parse_labels, pick_targets, Batch, Ctx};
use crate::cli::{IdsArgs, InspectpArgs, PodsArgs, RmpArgs, RunpArgs};
use crate::config::load_pod_config;
use crate::error::Error;
use crate::output::{message_json, render, with_info, Format, Kind};
use crate::resolve::resolve_prefix;
use crate::table::{ago, pod_state_name, trunc_id, Table};

fn json_err(e: serde_json::Error) -> Error {
    Error::Output(e.to_string())
}

/// ListPodSandbox with an optional filter.
///
/// Errors: [`Error::Rpc`] / [`Error::Timeout`].
pub async fn list_pods(
    ctx: &mut Ctx,
    filter: Option<PodSandboxFilter>,
) -> Result<Vec<PodSandbox>, Error> {
    let mut rt = ctx.rt().await?;
    let req = ListPodSandboxRequest { filter };
    let resp = ctx
        .call("ListPodSandbox", ctx.timeout(), req, move |r| async move {
            rt.list_pod_sandbox(r).await
        })
        .await?;
    Ok(resp.items)
}

/// Resolves a pod sandbox ID prefix against ListPodSandbox.
///
/// Errors: [`Error::Resolve`] (not found, ambiguous) or the list call's error.
pub async fn resolve_pod(ctx: &mut Ctx, prefix: &str) -> Result<String, Error> {
    let pods = list_pods(ctx, None).await?;
    Ok(resolve_prefix(
        "pod sandbox",
        prefix,
        pods.iter().map(|p| p.id.as_str()),
    )?)
}

/// RunPodSandbox; returns the new sandbox ID.
///
/// Errors: [`Error::Rpc`] / [`Error::Timeout`].
pub async fn run_pod(
    ctx: &mut Ctx,
    config: PodSandboxConfig,
    handler: Option<String>,
) -> Result<String, Error> {
    let mut rt = ctx.rt().await?;
    let req = RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: handler.unwrap_or_default(),
    };
    let resp = ctx
        .call(
            "RunPodSandbox",
            ctx.lifecycle_timeout(),
            req,
            move |r| async move { rt.run_pod_sandbox(r).await },
        )
        .await?;
    Ok(resp.pod_sandbox_id)
}

/// StopPodSandbox by full ID.
///
/// Errors: [`Error::Rpc`] / [`Error::Timeout`].
pub async fn stop_pod(ctx: &mut Ctx, id: &str) -> Result<(), Error> {
    let mut rt = ctx.rt().await?;
    let req = StopPodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    };
    ctx.call(
        "StopPodSandbox",
        ctx.lifecycle_timeout(),
        req,
        move |r| async move { rt.stop_pod_sandbox(r).await },
    )
    .await?;
    Ok(())
}

/// RemovePodSandbox by full ID.
///
/// Errors: [`Error::Rpc`] / [`Error::Timeout`].
pub async fn remove_pod(ctx: &mut Ctx, id: &str) -> Result<(), Error> {
    let mut rt = ctx.rt().await?;
    let req = RemovePodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    };
    ctx.call(
        "RemovePodSandbox",
        ctx.lifecycle_timeout(),
        req,
        move |r| async move { rt.remove_pod_sandbox(r).await },
    )
    .await?;
    Ok(())
}

/// `krioctl runp CONFIG`: prints the sandbox ID.
pub async fn runp(ctx: &mut Ctx, a: RunpArgs) -> Result<(), Error> {
    let config = load_pod_config(&a.config)?;
    let id = run_pod(ctx, config, a.runtime).await?;
    out(&format!("{id}\n"))
}

fn parse_pod_state(s: &str) -> Result<i32, Error> {
    match s.to_ascii_lowercase().as_str() {
        "ready" | "sandbox_ready" => Ok(0),
        "notready" | "sandbox_notready" => Ok(1),
        _ => Err(Error::invalid(
            "--state",
            format!("{s:?}: use ready or notready"),
        )),
    }
}

fn regex(what: &'static str, s: &Option<String>) -> Result<Option<Regex>, Error> {
    s.as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| Error::invalid(what, e.to_string()))
}

/// Applies the client-side filters and ordering of `pods`: newest first,
/// then `--latest` / `--last`.
pub fn select_pods(
    mut pods: Vec<PodSandbox>,
    id: Option<&str>,
    name: Option<&Regex>,
    namespace: Option<&Regex>,
    latest: bool,
    last: Option<usize>,
) -> Vec<PodSandbox> {
    pods.retain(|p| {
        let md = p.metadata.clone().unwrap_or_default();
        id.is_none_or(|id| p.id.starts_with(id))
            && name.is_none_or(|r| r.is_match(&md.name))
            && namespace.is_none_or(|r| r.is_match(&md.namespace))
    });
    pods.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let keep = if latest { Some(1) } else { last };
    if let Some(n) = keep {
        pods.truncate(n);
    }
    pods
}

/// Renders the `pods` table (POD ID, CREATED, STATE, NAME, NAMESPACE, ATTEMPT, RUNTIME).
pub fn pods_table(pods: &[PodSandbox], now: i64, no_trunc: bool) -> String {
    let mut t = Table::new(&[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]);
    for p in pods {
        let md = p.metadata.clone().unwrap_or_default();
        let handler = if p.runtime_handler.is_empty() {
            "(default)".to_string()
        } else {
            p.runtime_handler.clone()
        };
        t.add_row(vec![
            trunc_id(&p.id, no_trunc),
            ago(p.created_at, now),
            pod_state_name(p.state).to_string(),
            md.name,
            md.namespace,
            md.attempt.to_string(),
            handler,
        ]);
    }
    t.render()
}

/// `krioctl pods`.
pub async fn pods(ctx: &mut Ctx, a: PodsArgs) -> Result<(), Error> {
    let state = a.state.as_deref().map(parse_pod_state).transpose()?;
    let labels = parse_labels(&a.label)?;
    let name = regex("--name", &a.name)?;
    let namespace = regex("--namespace", &a.namespace)?;
    let filter = PodSandboxFilter {
        id: String::new(),
        state: state.map(|state| PodSandboxStateValue { state }),
        label_selector: labels,
    };
    let pods = list_pods(ctx, Some(filter)).await?;
    let pods = select_pods(
        pods,
        a.id.as_deref(),
        name.as_ref(),
        namespace.as_ref(),
        a.latest,
        a.last,
    );
    if a.quiet {
        return out(&pods
            .iter()
            .map(|p| format!("{}\n", p.id))
            .collect::<String>());
    }
    match a.out.output {
        Format::Table => out(&pods_table(&pods, now_ns(), a.out.no_trunc)),
        f => {
            let mut m = Map::new();
            m.insert(
                "items".into(),
                message_json(&pods, Kind::Pod).map_err(json_err)?,
            );
            out(&render(&Value::Object(m), f).map_err(Error::Output)?)
        }
    }
}

async fn inspect_one(ctx: &mut Ctx, prefix: &str, format: Format) -> Result<(), Error> {
    let id = resolve_pod(ctx, prefix).await?;
    let mut rt = ctx.rt().await?;
    let req = PodSandboxStatusRequest {
        pod_sandbox_id: id,
        verbose: true,
    };
    let resp = ctx
        .call(
            "PodSandboxStatus",
            ctx.timeout(),
            req,
            move |r| async move { rt.pod_sandbox_status(r).await },
        )
        .await?;
    let mut m = Map::new();
    m.insert(
        "status".into(),
        message_json(&resp.status, Kind::Pod).map_err(json_err)?,
    );
    with_info(&mut m, &resp.info);
    if !resp.containers_statuses.is_empty() {
        m.insert(
            "containersStatuses".into(),
            message_json(&resp.containers_statuses, Kind::Container).map_err(json_err)?,
        );
    }
    out(&render(&Value::Object(m), format).map_err(Error::Output)?)
}

/// `krioctl inspectp POD...`.
pub async fn inspectp(ctx: &mut Ctx, a: InspectpArgs) -> Result<(), Error> {
    let mut batch = Batch::new(a.pods.len());
    for p in &a.pods {
        let r = inspect_one(ctx, p, a.out.output).await;
        batch.record(r)?;
    }
    batch.finish()
}

/// `krioctl stopp POD...`: prints "Stopped sandbox ID".
pub async fn stopp(ctx: &mut Ctx, a: IdsArgs) -> Result<(), Error> {
    let mut batch = Batch::new(a.ids.len());
    for p in &a.ids {
        let r = async {
            let id = resolve_pod(ctx, p).await?;
            stop_pod(ctx, &id).await?;
            out(&format!("Stopped sandbox {id}\n"))
        }
        .await;
        batch.record(r)?;
    }
    batch.finish()
}

/// `krioctl rmp POD... [-f] [-a]`: prints "Removed sandbox ID". A ready pod is
/// refused unless `-f`, which stops it first.
pub async fn rmp(ctx: &mut Ctx, a: RmpArgs) -> Result<(), Error> {
    let all = list_pods(ctx, None).await?;
    let targets = pick_targets(
        all,
        a.all,
        &a.pods,
        "pod sandbox",
        "give at least one pod ID, or -a",
        |p: &PodSandbox| p.id.as_str(),
    )?;
    let mut batch = Batch::new(targets.len());
    for pod in &targets {
        let r = async {
            if pod.state == 0 {
                if !a.force {
                    return Err(Error::State {
                        message: format!(
                            "pod sandbox {} is running, stop it first or use -f",
                            pod.id
                        ),
                    });
                }
                stop_pod(ctx, &pod.id).await?;
            }
            remove_pod(ctx, &pod.id).await?;
            out(&format!("Removed sandbox {}\n", pod.id))
        }
        .await;
        batch.record(r)?;
    }
    batch.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1::PodSandboxMetadata;

    fn pod(id: &str, name: &str, ns: &str, created: i64, state: i32) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: ns.into(),
                uid: "u".into(),
                attempt: 1,
            }),
            state,
            created_at: created,
            ..Default::default()
        }
    }

    #[test]
    fn select_sorts_and_filters() {
        let pods = vec![
            pod("aaa1", "web", "default", 10, 0),
            pod("bbb2", "db", "prod", 30, 1),
            pod("aaa3", "web-2", "prod", 20, 0),
        ];
        let ids = |v: Vec<PodSandbox>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(
            ids(select_pods(pods.clone(), None, None, None, false, None)),
            ["bbb2", "aaa3", "aaa1"]
        );
        assert_eq!(
            ids(select_pods(
                pods.clone(),
                Some("aaa"),
                None,
                None,
                false,
                None
            )),
            ["aaa3", "aaa1"]
        );
        let re = Regex::new("^web").unwrap();
        let ns = Regex::new("prod").unwrap();
        assert_eq!(
            ids(select_pods(
                pods.clone(),
                None,
                Some(&re),
                Some(&ns),
                false,
                None
            )),
            ["aaa3"]
        );
        assert_eq!(
            ids(select_pods(pods.clone(), None, None, None, true, None)),
            ["bbb2"]
        );
        assert_eq!(
            ids(select_pods(pods, None, None, None, false, Some(2))),
            ["bbb2", "aaa3"]
        );
    }

    #[test]
    fn table() {
        let mut p = pod("0123456789abcdef", "web", "default", 0, 0);
        p.runtime_handler = "runc".into();
        let q = pod("fedcba9876543210", "db", "prod", 0, 1);
        let t = pods_table(&[p, q], 90_000_000_000, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{:<20}{:<21}{:<20}{:<20}{:<20}{:<20}{}",
                "POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "{:<20}{:<21}{:<20}{:<20}{:<20}{:<20}{}",
                "0123456789abc", "About a minute ago", "Ready", "web", "default", "1", "runc"
            )
        );
        assert!(lines[2].contains("NotReady"));
        assert!(lines[2].ends_with("(default)"));
    }

    #[test]
    fn states() {
        assert_eq!(parse_pod_state("Ready").unwrap(), 0);
        assert_eq!(parse_pod_state("notready").unwrap(), 1);
        assert!(parse_pod_state("running").is_err());
    }
}
