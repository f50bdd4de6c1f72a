//! `create`, `start`, `ps`, `inspect`, `stop`, `rm`, `exec`, `run`.

use std::collections::HashMap;
use std::io::Write;

use krio_cri::v1::{
    Container, ContainerConfig, ContainerFilter, ContainerStateValue, ContainerStatus,
    ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest, ExecSyncRequest,
    ListContainersRequest, PodSandboxConfig, RemoveContainerRequest, StartContainerRequest,
    StopContainerRequest,
};
use regex::Regex;
use serde_json::{Map, Value};

use super::images::{image_status, pull};
use super::pods::{list_pods, remove_pod, resolve_pod, run_pod, stop_pod};
use super::{auth_config, now_ns, out, parse_labels, pick_targets, Batch, Ctx};
use crate::cli::{
    CreateArgs, ExecArgs, IdsArgs, InspectArgs, PsArgs, PullAuth, RmArgs, RunArgs, StopArgs,
};
use crate::config::{load_container_config, load_pod_config};
use crate::error::Error;
use crate::output::{message_json, render, with_info, Format, Kind};
use crate::resolve::resolve_prefix;
use crate::table::{ago, container_state_name, trunc_id, Table};

fn json_err(e: serde_json::Error) -> Error {
    Error::Output(e.to_string())
}

/// ListContainers with an optional filter.
///
/// Errors: [`Error::Rpc`] / [`Error::Timeout`].
pub async fn list_containers(
    ctx: &mut Ctx,
    filter: Option<ContainerFilter>,
) -> Result<Vec<Container>, Error> {
    let mut rt = ctx.rt().await?;
    let req = ListContainersRequest { filter };
    let resp = ctx
        .call("ListContainers", ctx.timeout(), req, move |r| async move {
            rt.list_containers(r).await
        })
        .await?;
    Ok(resp.containers)
}

/// Resolves a container ID prefix against ListContainers.
///
/// Errors: [`Error::Resolve`] or the list call's error.
pub async fn resolve_container(ctx: &mut Ctx, prefix: &str) -> Result<String, Error> {
    let cs = list_containers(ctx, None).await?;
    Ok(resolve_prefix(
        "container",
        prefix,
        cs.iter().map(|c| c.id.as_str()),
    )?)
}

/// ContainerStatus by full ID.
///
/// Errors: [`Error::Rpc`] / [`Error::Timeout`].
pub async fn container_status(
    ctx: &mut Ctx,
    id: &str,
    verbose: bool,
) -> Result<ContainerStatusResponse, Error> {
    let mut rt = ctx.rt().await?;
    let req = ContainerStatusRequest {
        container_id: id.to_string(),
        verbose,
    };
    ctx.call("ContainerStatus", ctx.timeout(), req, move |r| async move {
        rt.container_status(r).await
    })
    .await
}

/// The status message of a ContainerStatus response.
///
/// Errors: [`Error::Response`] if the runtime sent none.
pub fn status_of(resp: ContainerStatusResponse) -> Result<ContainerStatus, Error> {
    resp.status.ok_or(Error::Response {
        op: "ContainerStatus",
        message: "the response carries no status".into(),
    })
}

/// Pulls the container's image unless the runtime already has it (crictl's
/// default for `create` and `run`).
async fn ensure_image(
    ctx: &mut Ctx,
    config: &ContainerConfig,
    sandbox: &PodSandboxConfig,
    auth: &PullAuth,
) -> Result<(), Error> {
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image.is_empty() {
        return Err(Error::invalid(
            "container config",
            "field `image.image` is empty",
        ));
    }
    if image_status(ctx, &image).await?.is_none() {
        pull(ctx, &image, auth_config(auth)?, Some(sandbox.clone())).await?;
    }
    Ok(())
}

async fn create_container(
    ctx: &mut Ctx,
    pod_id: &str,
    config: ContainerConfig,
    sandbox: PodSandboxConfig,
) -> Result<String, Error> {
    let mut rt = ctx.rt().await?;
    let req = CreateContainerRequest {
        pod_sandbox_id: pod_id.to_string(),
        config: Some(config),
        sandbox_config: Some(sandbox),
    };
    let resp = ctx
        .call(
            "CreateContainer",
            ctx.lifecycle_timeout(),
            req,
            move |r| async move { rt.create_container(r).await },
        )
        .await?;
    Ok(resp.container_id)
}

async fn start_container(ctx: &mut Ctx, id: &str) -> Result<(), Error> {
    let mut rt = ctx.rt().await?;
    let req = StartContainerRequest {
        container_id: id.to_string(),
    };
    ctx.call(
        "StartContainer",
        ctx.lifecycle_timeout(),
        req,
        move |r| async move { rt.start_container(r).await },
    )
    .await?;
    Ok(())
}

async fn stop_container(ctx: &mut Ctx, id: &str, grace: i64) -> Result<(), Error> {
    let mut rt = ctx.rt().await?;
    let req = StopContainerRequest {
        container_id: id.to_string(),
        timeout: grace,
    };
    let deadline =
        ctx.lifecycle_timeout() + std::time::Duration::from_secs(u64::try_from(grace).unwrap_or(0));
    ctx.call("StopContainer", deadline, req, move |r| async move {
        rt.stop_container(r).await
    })
    .await?;
    Ok(())
}

async fn remove_container(ctx: &mut Ctx, id: &str) -> Result<(), Error> {
    let mut rt = ctx.rt().await?;
    let req = RemoveContainerRequest {
        container_id: id.to_string(),
    };
    ctx.call(
        "RemoveContainer",
        ctx.lifecycle_timeout(),
        req,
        move |r| async move { rt.remove_container(r).await },
    )
    .await?;
    Ok(())
}

/// `krioctl create POD CONTAINER_CONFIG POD_CONFIG`: prints the container ID.
pub async fn create(ctx: &mut Ctx, a: CreateArgs) -> Result<(), Error> {
    let config = load_container_config(&a.container_config)?;
    let sandbox = load_pod_config(&a.pod_config)?;
    let pod_id = resolve_pod(ctx, &a.pod_id).await?;
    if !a.no_pull {
        ensure_image(ctx, &config, &sandbox, &a.auth).await?;
    }
    let id = create_container(ctx, &pod_id, config, sandbox).await?;
    out(&format!("{id}\n"))
}

/// `krioctl start CONTAINER...`: prints each ID.
pub async fn start(ctx: &mut Ctx, a: IdsArgs) -> Result<(), Error> {
    let mut batch = Batch::new(a.ids.len());
    for c in &a.ids {
        let r = async {
            let id = resolve_container(ctx, c).await?;
            start_container(ctx, &id).await?;
            out(&format!("{id}\n"))
        }
        .await;
        batch.record(r)?;
    }
    batch.finish()
}

/// `krioctl stop [-t SECONDS] CONTAINER...`: prints each ID.
pub async fn stop(ctx: &mut Ctx, a: StopArgs) -> Result<(), Error> {
    if a.grace < 0 {
        return Err(Error::invalid("--timeout", "must not be negative"));
    }
    let mut batch = Batch::new(a.containers.len());
    for c in &a.containers {
        let r = async {
            let id = resolve_container(ctx, c).await?;
            stop_container(ctx, &id, a.grace).await?;
            out(&format!("{id}\n"))
        }
        .await;
        batch.record(r)?;
    }
    batch.finish()
}

/// `krioctl rm [-f] [-a] CONTAINER...`: prints each ID. A running container is
/// refused unless `-f`, which stops it first.
pub async fn rm(ctx: &mut Ctx, a: RmArgs) -> Result<(), Error> {
    let all = list_containers(ctx, None).await?;
    let targets = pick_targets(
        all,
        a.all,
        &a.containers,
        "container",
        "give at least one container ID, or -a",
        |c: &Container| c.id.as_str(),
    )?;
    let mut batch = Batch::new(targets.len());
    for c in &targets {
        let r = async {
            if c.state == 1 {
                if !a.force {
                    return Err(Error::State {
                        message: format!("container {} is running, stop it first or use -f", c.id),
                    });
                }
                stop_container(ctx, &c.id, 0).await?;
            }
            remove_container(ctx, &c.id).await?;
            out(&format!("{}\n", c.id))
        }
        .await;
        batch.record(r)?;
    }
    batch.finish()
}

fn parse_container_state(s: &str) -> Result<i32, Error> {
    let l = s.to_ascii_lowercase();
    match l.strip_prefix("container_").unwrap_or(&l) {
        "created" => Ok(0),
        "running" => Ok(1),
        "exited" => Ok(2),
        "unknown" => Ok(3),
        _ => Err(Error::invalid(
            "--state",
            format!("{s:?}: use created, running, exited or unknown"),
        )),
    }
}

/// Client-side filters and ordering of `ps`: newest first, then `--latest` / `--last`.
pub fn select_containers(
    mut cs: Vec<Container>,
    id: Option<&str>,
    name: Option<&Regex>,
    image: Option<&str>,
    latest: bool,
    last: Option<usize>,
) -> Vec<Container> {
    cs.retain(|c| {
        let cname = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
        let cimage = c.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
        id.is_none_or(|id| c.id.starts_with(id))
            && name.is_none_or(|r| r.is_match(cname))
            && image.is_none_or(|i| cimage.contains(i) || c.image_ref.contains(i))
    });
    cs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let keep = if latest { Some(1) } else { last };
    if let Some(n) = keep {
        cs.truncate(n);
    }
    cs
}

/// Renders the `ps` table (CONTAINER, IMAGE, CREATED, STATE, NAME, ATTEMPT, POD ID, POD);
/// `pod_names` maps sandbox IDs to pod names.
pub fn ps_table(
    cs: &[Container],
    pod_names: &HashMap<String, String>,
    now: i64,
    no_trunc: bool,
) -> String {
    let mut t = Table::new(&[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
    ]);
    for c in cs {
        let md = c.metadata.clone().unwrap_or_default();
        let mut image = c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image.starts_with("sha256:") {
            image = trunc_id(&image, no_trunc);
        }
        t.add_row(vec![
            trunc_id(&c.id, no_trunc),
            image,
            ago(c.created_at, now),
            container_state_name(c.state).to_string(),
            md.name,
            md.attempt.to_string(),
            trunc_id(&c.pod_sandbox_id, no_trunc),
            pod_names
                .get(&c.pod_sandbox_id)
                .cloned()
                .unwrap_or_default(),
        ]);
    }
    t.render()
}

/// `krioctl ps`.
pub async fn ps(ctx: &mut Ctx, a: PsArgs) -> Result<(), Error> {
    let state = match (&a.state, a.all) {
        (Some(s), _) => Some(parse_container_state(s)?),
        (None, true) => None,
        (None, false) => Some(1),
    };
    let name = a
        .name
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| Error::invalid("--name", e.to_string()))?;
    let pod_id = match &a.pod {
        Some(p) => resolve_pod(ctx, p).await?,
        None => String::new(),
    };
    let filter = ContainerFilter {
        id: String::new(),
        state: state.map(|state| ContainerStateValue { state }),
        pod_sandbox_id: pod_id,
        label_selector: parse_labels(&a.label)?,
    };
    let cs = list_containers(ctx, Some(filter)).await?;
    let cs = select_containers(
        cs,
        a.id.as_deref(),
        name.as_ref(),
        a.image.as_deref(),
        a.latest,
        a.last,
    );
    if a.quiet {
        return out(&cs.iter().map(|c| format!("{}\n", c.id)).collect::<String>());
    }
    match a.out.output {
        Format::Table => {
            let pods = list_pods(ctx, None).await?;
            let names: HashMap<String, String> = pods
                .into_iter()
                .map(|p| (p.id, p.metadata.map(|m| m.name).unwrap_or_default()))
                .collect();
            out(&ps_table(&cs, &names, now_ns(), a.out.no_trunc))
        }
        f => {
            let mut m = Map::new();
            m.insert(
                "containers".into(),
                message_json(&cs, Kind::Container).map_err(json_err)?,
            );
            out(&render(&Value::Object(m), f).map_err(Error::Output)?)
        }
    }
}

/// `krioctl inspect CONTAINER...`: ContainerStatus verbose as `{"status":..,"info":..}`.
pub async fn inspect(ctx: &mut Ctx, a: InspectArgs) -> Result<(), Error> {
    let mut batch = Batch::new(a.containers.len());
    for c in &a.containers {
        let r = async {
            let id = resolve_container(ctx, c).await?;
            let resp = container_status(ctx, &id, true).await?;
            let mut m = Map::new();
            m.insert(
                "status".into(),
                message_json(&resp.status, Kind::Container).map_err(json_err)?,
            );
            with_info(&mut m, &resp.info);
            out(&render(&Value::Object(m), a.out.output).map_err(Error::Output)?)
        }
        .await;
        batch.record(r)?;
    }
    batch.finish()
}

/// `krioctl exec -s CONTAINER CMD...` through ExecSync: writes the command's
/// stdout and stderr and returns its exit code.
pub async fn exec(ctx: &mut Ctx, a: ExecArgs) -> Result<i32, Error> {
    if a.interactive || a.tty {
        return Err(Error::invalid(
            "-i/-t",
            "ExecSync (-s) has no stdin or terminal",
        ));
    }
    if a.timeout < 0 {
        return Err(Error::invalid("--timeout", "must not be negative"));
    }
    let id = resolve_container(ctx, &a.container).await?;
    let mut rt = ctx.rt().await?;
    let req = ExecSyncRequest {
        container_id: id,
        cmd: a.cmd,
        timeout: a.timeout,
    };
    let deadline = ctx.lifecycle_timeout()
        + std::time::Duration::from_secs(u64::try_from(a.timeout).unwrap_or(0));
    let deadline = if a.timeout == 0 {
        deadline.max(std::time::Duration::from_secs(3600))
    } else {
        deadline
    };
    let resp = ctx
        .call("ExecSync", deadline, req, move |r| async move {
            rt.exec_sync(r).await
        })
        .await?;
    std::io::stdout()
        .write_all(&resp.stdout)
        .map_err(Error::Write)?;
    std::io::stdout().flush().map_err(Error::Write)?;
    std::io::stderr()
        .write_all(&resp.stderr)
        .map_err(Error::Write)?;
    Ok(resp.exit_code)
}

/// `krioctl run CONTAINER_CONFIG POD_CONFIG`: runp + (pull) + create + start;
/// prints the container ID. On failure the pod (and container) made so far are
/// removed again.
pub async fn run(ctx: &mut Ctx, a: RunArgs) -> Result<(), Error> {
    let config = load_container_config(&a.container_config)?;
    let sandbox = load_pod_config(&a.pod_config)?;
    if !a.no_pull {
        ensure_image(ctx, &config, &sandbox, &a.auth).await?;
    }
    let pod_id = run_pod(ctx, sandbox.clone(), a.runtime).await?;
    let created = create_container(ctx, &pod_id, config, sandbox).await;
    let cid = match created {
        Ok(id) => id,
        Err(e) => {
            undo_pod(ctx, &pod_id).await;
            return Err(e);
        }
    };
    if let Err(e) = start_container(ctx, &cid).await {
        if let Err(e2) = remove_container(ctx, &cid).await {
            eprintln!("krioctl: cleanup: {e2}");
        }
        undo_pod(ctx, &pod_id).await;
        return Err(e);
    }
    out(&format!("{cid}\n"))
}

async fn undo_pod(ctx: &mut Ctx, pod_id: &str) {
    if let Err(e) = stop_pod(ctx, pod_id).await {
        eprintln!("krioctl: cleanup: {e}");
    }
    if let Err(e) = remove_pod(ctx, pod_id).await {
        eprintln!("krioctl: cleanup: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1::{ContainerMetadata, ImageSpec};

    fn ctr(id: &str, name: &str, pod: &str, image: &str, created: i64, state: i32) -> Container {
        Container {
            id: id.into(),
            pod_sandbox_id: pod.into(),
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            state,
            created_at: created,
            ..Default::default()
        }
    }

    #[test]
    fn select_and_table() {
        let cs = vec![
            ctr(
                "c1aaaaaaaaaaaaaaaa",
                "web",
                "p1bbbbbbbbbbbbbbbbb",
                "busybox",
                100_000_000_000,
                1,
            ),
            ctr(
                "c2aaaaaaaaaaaaaaaa",
                "sidecar",
                "p1bbbbbbbbbbbbbbbbb",
                "sha256:0123456789abcdef0",
                200_000_000_000,
                2,
            ),
        ];
        let re = Regex::new("^web$").unwrap();
        let sel = select_containers(cs.clone(), None, Some(&re), None, false, None);
        assert_eq!(sel.len(), 1);
        let sel = select_containers(cs.clone(), None, None, Some("busy"), false, None);
        assert_eq!(sel[0].id, "c1aaaaaaaaaaaaaaaa");
        let sel = select_containers(cs.clone(), None, None, None, true, None);
        assert_eq!(sel[0].id, "c2aaaaaaaaaaaaaaaa");
        let names = HashMap::from([("p1bbbbbbbbbbbbbbbbb".to_string(), "mypod".to_string())]);
        let sel = select_containers(cs, None, None, None, false, None);
        let t = ps_table(&sel, &names, 230_000_000_000, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{:<20}{:<20}{:<20}{:<20}{:<20}{:<20}{:<20}{}",
                "CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "{:<20}{:<20}{:<20}{:<20}{:<20}{:<20}{:<20}{}",
                "c2aaaaaaaaaaa",
                "0123456789abc",
                "30 seconds ago",
                "Exited",
                "sidecar",
                "0",
                "p1bbbbbbbbbbb",
                "mypod"
            )
        );
        assert!(lines[2].contains("Running"));
        assert!(lines[2].contains("busybox"));
    }

    #[test]
    fn states() {
        assert_eq!(parse_container_state("Running").unwrap(), 1);
        assert_eq!(parse_container_state("CONTAINER_EXITED").unwrap(), 2);
        assert!(parse_container_state("ready").is_err());
    }
}
