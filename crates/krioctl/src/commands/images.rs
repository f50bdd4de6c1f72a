//! `pull`, `images`, `rmi`, `inspecti`, `imagefsinfo`.

use std::collections::HashSet;

use krio_cri::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest,
    ListContainersRequest, ListImagesRequest, PodSandboxConfig, PullImageRequest,
    RemoveImageRequest,
};
use serde_json::{Map, Value};

use super::{auth_config, out, Batch, Ctx};
use crate::cli::{ImagesArgs, InfoArgs, InspectiArgs, PullArgs, RmiArgs};
use crate::config::load_pod_config;
use crate::error::Error;
use crate::output::{message_json, render, with_info, Format, Kind};
use crate::table::{human_size, split_repo_digest, split_repo_tag, trunc_id, Table};

fn json_err(e: serde_json::Error) -> Error {
    Error::Output(e.to_string())
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// PullImage; returns the image reference the runtime reports (`image_ref`).
///
/// Errors: [`Error::Rpc`] / [`Error::Timeout`] (deadline [`Ctx::pull_timeout`]).
pub async fn pull(
    ctx: &mut Ctx,
    image: &str,
    auth: Option<AuthConfig>,
    sandbox_config: Option<PodSandboxConfig>,
) -> Result<String, Error> {
    let mut img = ctx.img().await?;
    let req = PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config,
    };
    let resp = ctx
        .call("PullImage", ctx.pull_timeout(), req, move |r| async move {
            img.pull_image(r).await
        })
        .await?;
    Ok(resp.image_ref)
}

/// ImageStatus (not verbose); `None` when the runtime does not have the image.
///
/// Errors: [`Error::Rpc`] / [`Error::Timeout`].
pub async fn image_status(ctx: &mut Ctx, image: &str) -> Result<Option<Image>, Error> {
    let mut img = ctx.img().await?;
    let req = ImageStatusRequest {
        image: spec(image),
        verbose: false,
    };
    let resp = ctx
        .call("ImageStatus", ctx.timeout(), req, move |r| async move {
            img.image_status(r).await
        })
        .await?;
    Ok(resp.image)
}

/// `krioctl pull IMAGE`: prints "Image is up to date for <ref>" like crictl.
pub async fn pull_cmd(ctx: &mut Ctx, a: PullArgs) -> Result<(), Error> {
    let auth = auth_config(&a.auth)?;
    let sandbox = match &a.pod_config {
        Some(p) => Some(load_pod_config(p)?),
        None => None,
    };
    let r = pull(ctx, &a.image, auth, sandbox).await?;
    out(&format!("Image is up to date for {r}\n"))
}

async fn list_images(ctx: &mut Ctx, filter: Option<&str>) -> Result<Vec<Image>, Error> {
    let mut img = ctx.img().await?;
    let req = ListImagesRequest {
        filter: filter.map(|f| ImageFilter { image: spec(f) }),
    };
    let resp = ctx
        .call("ListImages", ctx.timeout(), req, move |r| async move {
            img.list_images(r).await
        })
        .await?;
    let mut images = resp.images;
    images.sort_by(|a, b| {
        a.repo_tags
            .first()
            .cmp(&b.repo_tags.first())
            .then(a.id.cmp(&b.id))
    });
    Ok(images)
}

/// The (repo, tag) pairs crictl shows for an image: one per repo tag; an
/// untagged image shows its digest repo (or `<none>`) with tag `<none>`.
pub fn repo_tag_pairs(image: &Image) -> Vec<(String, String)> {
    if image.repo_tags.is_empty() {
        let repo = image
            .repo_digests
            .first()
            .map(|d| split_repo_digest(d).0)
            .unwrap_or_else(|| "<none>".into());
        return vec![(repo, "<none>".into())];
    }
    image.repo_tags.iter().map(|t| split_repo_tag(t)).collect()
}

/// Renders the `images` table (IMAGE, TAG, [DIGEST,] IMAGE ID, SIZE).
pub fn images_table(images: &[Image], digests: bool, no_trunc: bool) -> String {
    let mut t = if digests {
        Table::new(&["IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE"])
    } else {
        Table::new(&["IMAGE", "TAG", "IMAGE ID", "SIZE"])
    };
    for image in images {
        let id = trunc_id(&image.id, no_trunc);
        let size = human_size(image.size);
        let digest = image
            .repo_digests
            .first()
            .map(|d| trunc_id(&split_repo_digest(d).1, no_trunc))
            .unwrap_or_else(|| "<none>".into());
        for (repo, tag) in repo_tag_pairs(image) {
            let mut row = vec![repo, tag];
            if digests {
                row.push(digest.clone());
            }
            row.push(id.clone());
            row.push(size.clone());
            t.add_row(row);
        }
    }
    t.render()
}

/// `krioctl images [REPO]`.
pub async fn images(ctx: &mut Ctx, a: ImagesArgs) -> Result<(), Error> {
    let images = list_images(ctx, a.repo.as_deref()).await?;
    if a.quiet {
        let mut seen = HashSet::new();
        let mut s = String::new();
        for i in &images {
            if seen.insert(i.id.clone()) {
                s.push_str(&i.id);
                s.push('\n');
            }
        }
        return out(&s);
    }
    match a.out.output {
        Format::Json | Format::Yaml => {
            let mut m = Map::new();
            m.insert(
                "images".into(),
                message_json(&images, Kind::Other).map_err(json_err)?,
            );
            out(&render(&Value::Object(m), a.out.output).map_err(Error::Output)?)
        }
        Format::Table if a.verbose => {
            let mut s = String::new();
            for i in &images {
                s.push_str(&format!("ID: {}\n", i.id));
                for t in &i.repo_tags {
                    s.push_str(&format!("RepoTags: {t}\n"));
                }
                for d in &i.repo_digests {
                    s.push_str(&format!("RepoDigests: {d}\n"));
                }
                s.push_str(&format!("Size: {}\n", i.size));
                if let Some(uid) = &i.uid {
                    s.push_str(&format!("Uid: {}\n", uid.value));
                }
                if !i.username.is_empty() {
                    s.push_str(&format!("Username: {}\n", i.username));
                }
                if i.pinned {
                    s.push_str("Pinned: true\n");
                }
                s.push('\n');
            }
            out(&s)
        }
        Format::Table => out(&images_table(&images, a.digests, a.out.no_trunc)),
    }
}

async fn remove_image(ctx: &mut Ctx, image: &Image) -> Result<(), Error> {
    let mut img = ctx.img().await?;
    let req = RemoveImageRequest {
        image: spec(&image.id),
    };
    ctx.call(
        "RemoveImage",
        ctx.lifecycle_timeout(),
        req,
        move |r| async move { img.remove_image(r).await },
    )
    .await?;
    let mut s = String::new();
    if image.repo_tags.is_empty() && image.repo_digests.is_empty() {
        s.push_str(&format!("Deleted: {}\n", image.id));
    }
    for t in image.repo_tags.iter().chain(image.repo_digests.iter()) {
        s.push_str(&format!("Deleted: {t}\n"));
    }
    out(&s)
}

/// `krioctl rmi IMAGE... | -a | --prune`.
pub async fn rmi(ctx: &mut Ctx, a: RmiArgs) -> Result<(), Error> {
    let targets: Vec<Image> = if a.all || a.prune {
        let mut all = list_images(ctx, None).await?;
        if a.prune {
            let mut rt = ctx.rt().await?;
            let req = ListContainersRequest { filter: None };
            let cs = ctx
                .call("ListContainers", ctx.timeout(), req, move |r| async move {
                    rt.list_containers(r).await
                })
                .await?;
            let used: HashSet<String> = cs
                .containers
                .iter()
                .flat_map(|c| [c.image_ref.clone(), c.image_id.clone()])
                .chain(
                    cs.containers
                        .iter()
                        .filter_map(|c| c.image.as_ref().map(|i| i.image.clone())),
                )
                .filter(|s| !s.is_empty())
                .collect();
            all.retain(|i| {
                !used.contains(&i.id)
                    && !i.repo_tags.iter().any(|t| used.contains(t))
                    && !i.repo_digests.iter().any(|d| used.contains(d))
            });
        }
        all
    } else {
        if a.images.is_empty() {
            return Err(Error::invalid(
                "arguments",
                "give at least one image, or -a / --prune",
            ));
        }
        let mut v = Vec::new();
        for name in &a.images {
            match image_status(ctx, name).await? {
                Some(i) => v.push(i),
                None => {
                    return Err(Error::Response {
                        op: "ImageStatus",
                        message: format!("no such image {name:?}"),
                    })
                }
            }
        }
        v
    };
    let mut batch = Batch::new(targets.len());
    for i in &targets {
        let r = remove_image(ctx, i).await;
        batch.record(r)?;
    }
    batch.finish()
}

/// `krioctl inspecti IMAGE...`: ImageStatus verbose as `{"status":..,"info":..}`.
pub async fn inspecti(ctx: &mut Ctx, a: InspectiArgs) -> Result<(), Error> {
    let mut batch = Batch::new(a.images.len());
    for name in &a.images {
        let r = inspect_one(ctx, name, a.out.output).await;
        batch.record(r)?;
    }
    batch.finish()
}

async fn inspect_one(ctx: &mut Ctx, name: &str, format: Format) -> Result<(), Error> {
    let mut img = ctx.img().await?;
    let req = ImageStatusRequest {
        image: spec(name),
        verbose: true,
    };
    let resp = ctx
        .call("ImageStatus", ctx.timeout(), req, move |r| async move {
            img.image_status(r).await
        })
        .await?;
    let Some(image) = &resp.image else {
        return Err(Error::Response {
            op: "ImageStatus",
            message: format!("no such image {name:?}"),
        });
    };
    let mut m = Map::new();
    m.insert(
        "status".into(),
        message_json(image, Kind::Other).map_err(json_err)?,
    );
    with_info(&mut m, &resp.info);
    out(&render(&Value::Object(m), format).map_err(Error::Output)?)
}

/// `krioctl imagefsinfo`: ImageFsInfo as JSON/YAML.
pub async fn imagefsinfo(ctx: &mut Ctx, a: InfoArgs) -> Result<(), Error> {
    let mut img = ctx.img().await?;
    let resp = ctx
        .call(
            "ImageFsInfo",
            ctx.timeout(),
            ImageFsInfoRequest {},
            move |r| async move { img.image_fs_info(r).await },
        )
        .await?;
    let format = match a.output {
        None | Some(Format::Table) => Format::Json,
        Some(f) => f,
    };
    out(
        &render(&message_json(&resp, Kind::Other).map_err(json_err)?, format)
            .map_err(Error::Output)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_table_rows() {
        let images = vec![
            Image {
                id: "sha256:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
                repo_tags: vec![
                    "localhost:5000/busybox:latest".into(),
                    "localhost:5000/busybox:1.36".into(),
                ],
                repo_digests: vec!["localhost:5000/busybox@sha256:dddddddddddddddddd".into()],
                size: 2_150_000,
                ..Default::default()
            },
            Image {
                id: "sha256:bbbbbbbbbbbbbbbbbbbb".into(),
                repo_digests: vec!["example.com/app@sha256:eeeeeeeeeeeeeeeeeee".into()],
                size: 512,
                ..Default::default()
            },
            Image {
                id: "sha256:cccccccccccccccccccc".into(),
                ..Default::default()
            },
        ];
        let t = images_table(&images, false, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            format!("{:<25}{:<20}{:<20}{}", "IMAGE", "TAG", "IMAGE ID", "SIZE")
        );
        assert_eq!(
            lines[1],
            format!(
                "{:<25}{:<20}{:<20}{}",
                "localhost:5000/busybox", "latest", "aaaaaaaaaaaaa", "2.15MB"
            )
        );
        assert!(lines[2].contains("1.36"));
        assert!(lines[3].starts_with("example.com/app "));
        assert!(lines[3].contains("<none>"));
        assert!(lines[4].starts_with("<none> "));
        let t = images_table(&images, true, false);
        assert!(t.lines().next().unwrap().contains("DIGEST"));
        assert!(t.lines().nth(1).unwrap().contains("ddddddddddddd "));
    }
}
