//! `version` and `info`.

use krio_cri::v1::{StatusRequest, VersionRequest};
use serde_json::{Map, Value};

use super::{out, Ctx};
use crate::cli::InfoArgs;
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

/// `krioctl info`: the Status RPC with `verbose`, printed as one JSON object
/// with `status` and every `info` key parsed as JSON at the top level (crictl's shape).
pub async fn info(ctx: &mut Ctx, a: InfoArgs) -> Result<(), Error> {
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
    let format = match a.output {
        None | Some(Format::Table) => Format::Json,
        Some(f) => f,
    };
    out(&render(&Value::Object(m), format).map_err(Error::Output)?)
}
