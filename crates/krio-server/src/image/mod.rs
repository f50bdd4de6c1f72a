//! `ImageService` handlers: thin adapters over [`krio_image::ImageStore`].

pub(crate) mod in_use;

use std::collections::HashMap;
use std::sync::Arc;

use krio_cri::v1 as cri;
use krio_image::{ImageRecord, RegistryAuth};

use crate::error::{Result, ServerError};
use crate::Krio;

/// How long a `RemoveImage` waits for another call's removal of the same image before giving
/// up with `FailedPrecondition` (kubelet's default runtime request timeout is 2 minutes; the
/// caller's own gRPC deadline, when shorter, ends the wait first).
pub(crate) const REMOVE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

impl Krio {
    /// CRI `PullImage`: pulls `image.image` with the request's credentials and returns the
    /// image id (`sha256:<config digest>`), as containerd does.
    ///
    /// Errors: `InvalidArgument` for a missing or malformed reference, `NotFound` when the
    /// registry has no such repository or tag (the message names the reference),
    /// `PermissionDenied` for rejected credentials, `Internal` for registry or storage failures.
    pub(crate) async fn pull_image(
        &self,
        req: cri::PullImageRequest,
    ) -> Result<cri::PullImageResponse> {
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(ServerError::invalid("image.image", "is required"));
        }
        let auth = req.auth.map(|a| RegistryAuth {
            username: a.username,
            password: a.password,
            auth: a.auth,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
        });
        let started = std::time::Instant::now();
        let image = self.images.pull(&reference, auth.as_ref()).await?;
        self.metrics.observe_pull(image.size, started.elapsed());
        tracing::info!(reference = %reference, id = %image.id, elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
        Ok(cri::PullImageResponse {
            image_ref: image.id,
        })
    }

    /// CRI `ListImages`, optionally filtered by `filter.image.image` (a reference or id).
    pub(crate) fn list_images(
        &self,
        req: cri::ListImagesRequest,
    ) -> Result<cri::ListImagesResponse> {
        let wanted = req
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|s| !s.is_empty());
        let images = match wanted {
            Some(r) => self
                .resolve_image(&r)
                .into_iter()
                .map(|i| to_cri(&i, self.image_pinned(&i)))
                .collect(),
            None => self
                .images
                .list()
                .iter()
                .map(|i| to_cri(i, self.image_pinned(i)))
                .collect(),
        };
        Ok(cri::ListImagesResponse { images })
    }

    /// CRI `ImageStatus`: `image` is unset (not an error) when the image is absent, as the CRI
    /// specifies. `verbose` adds `info` with the image config as JSON.
    ///
    /// Errors: `InvalidArgument` when `image.image` is empty.
    pub(crate) fn image_status(
        &self,
        req: cri::ImageStatusRequest,
    ) -> Result<cri::ImageStatusResponse> {
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(ServerError::invalid("image.image", "is required"));
        }
        let Some(image) = self.resolve_image(&reference) else {
            return Ok(cri::ImageStatusResponse::default());
        };
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "imageSpec": &image.config,
                    "chainIDs": &image.chain_ids,
                    "pulledAt": image.pulled_at_ns,
                })
                .to_string(),
            );
        }
        Ok(cri::ImageStatusResponse {
            image: Some(to_cri(&image, self.image_pinned(&image))),
            info,
        })
    }

    /// CRI `RemoveImage` by id, tag or digest. By id or digest the image goes with all its
    /// names; by tag only that tag goes (the image with it when it was its last name).
    /// Removing an absent image succeeds (the CRI call is idempotent). The store's work
    /// (records, layer deletion) runs on a blocking thread.
    ///
    /// A call that finds another removal of the same image under way waits for it (awaiting,
    /// not blocking a worker; at most [`REMOVE_WAIT`]) and then starts over: the image is
    /// normally gone by then and the call succeeds, as the CRI's idempotent RemoveImage wants
    /// (critest "should not fail on simultaneous RemoveImage calls"). Should the other removal
    /// have failed, this call tries again itself and reports its own result, so a persistent
    /// store error reaches every caller rather than being hidden behind an OK.
    ///
    /// Errors: `FailedPrecondition` naming the container when a container uses the image, or
    /// when a create of a container of it is in flight (counted from before its rootfs is
    /// mounted), or another removal of it is still under way after [`REMOVE_WAIT`].
    pub(crate) async fn remove_image(self: &Arc<Self>, req: cri::RemoveImageRequest) -> Result<()> {
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(ServerError::invalid("image.image", "is required"));
        }
        let wait_until = tokio::time::Instant::now() + REMOVE_WAIT;
        loop {
            match self.try_remove_image(&reference).await? {
                None => return Ok(()),
                Some(other) => {
                    tokio::time::timeout_at(wait_until, other.finished())
                        .await
                        .map_err(|_| {
                            ServerError::FailedPrecondition(format!(
                                "image {reference} is still being removed by another call after \
                                 {} s",
                                REMOVE_WAIT.as_secs()
                            ))
                        })?;
                }
            }
        }
    }

    /// One attempt of [`Krio::remove_image`] (`reference` is not empty): `Ok(None)` when the
    /// image (or tag) is gone, `Ok(Some(_))` when another call is removing the same image.
    ///
    /// Errors: as [`Krio::remove_image`], and the store's.
    async fn try_remove_image(
        self: &Arc<Self>,
        reference: &str,
    ) -> Result<Option<in_use::RemoveInProgress>> {
        let Some(image) = self.resolve_image(reference) else {
            return Ok(None);
        };
        // A short id prefix (crictl shows 13 characters) names the image itself, but only
        // `resolve_image` understands it: the store would find nothing and remove nothing.
        let by_short_id = self.images.resolve(reference).is_none();
        // Removing only a tag leaves the image in place, so only block the removal of the
        // image itself (by id, digest, or its last name).
        let names = image.repo_tags.len() + image.repo_digests.len();
        // Removing a repository's last tag drops its digests too, so the last tag of a pulled
        // image (a tag and a digest) removes the image: the store says.
        let removes_image = by_short_id
            || reference.trim_start_matches("sha256:") == image.id.trim_start_matches("sha256:")
            || names <= 1
            || reference.contains('@')
            || self.images.removal_deletes_image(reference);
        let mark = if removes_image {
            let user = || {
                self.containers
                    .all()
                    .iter()
                    .find(|c| {
                        c.with_snapshot(|r| {
                            r.image_id() == image.id || r.volume_image_ids().contains(&image.id)
                        })
                    })
                    .map(|c| c.id.clone())
            };
            match self.image_use.begin_remove(&image.id, user)? {
                in_use::RemoveStart::Marked(mark) => Some(mark),
                in_use::RemoveStart::InProgress(other) => return Ok(Some(other)),
            }
        } else {
            None
        };
        // A digest names content, not a name: removing by digest removes the image with
        // every name it has, as removing by id does (containerd removes all references of
        // the resolved image; krio keeps "by tag removes just that tag").
        let target = if by_short_id || (removes_image && reference.contains('@')) {
            image.id.clone()
        } else {
            reference.to_string()
        };
        crate::state::kill_point("RemoveImage:checked");
        let this = self.clone();
        // The mark goes with the store's work, so calls waiting for this removal wake when
        // it is really over, even when this call's caller went away meanwhile.
        tokio::task::spawn_blocking(move || {
            let result = this.images.remove(&target);
            drop(mark);
            result
        })
        .await
        .map_err(|e| ServerError::Task(e.to_string()))??;
        crate::state::kill_point("RemoveImage:removed");
        Ok(None)
    }
    /// CRI `ImageFsInfo`: the image store's usage (blobs, layers, records) as
    /// `image_filesystems`, and the containers' writable layers (`<root>/containers`) as
    /// `container_filesystems`, each with the mountpoint holding it. The walks run on a
    /// blocking thread.
    ///
    /// Errors: `Internal` when a tree cannot be walked.
    pub(crate) async fn image_fs_info(self: &Arc<Self>) -> Result<cri::ImageFsInfoResponse> {
        let this = self.clone();
        let (images, containers) = tokio::task::spawn_blocking(move || {
            let containers_dir = this.cfg.root.join("containers");
            Ok::<_, krio_image::ImageError>((
                this.images.fs_usage()?,
                krio_image::tree_usage(&[&containers_dir], &this.cfg.root)?,
            ))
        })
        .await
        .map_err(|e| ServerError::Task(e.to_string()))??;
        Ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![filesystem_usage(&images)],
            container_filesystems: vec![filesystem_usage(&containers)],
        })
    }
}

/// A measured usage in CRI form.
fn filesystem_usage(usage: &krio_image::FsUsage) -> cri::FilesystemUsage {
    cri::FilesystemUsage {
        timestamp: usage.timestamp_ns,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: usage.mountpoint.to_string_lossy().into_owned(),
        }),
        used_bytes: Some(cri::UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(cri::UInt64Value {
            value: usage.inodes_used,
        }),
    }
}

impl Krio {
    /// Finds an image by reference or id as the store does, and also by a unique prefix of its
    /// id shorter than the store accepts (crictl shows 13 characters; containerd resolves any
    /// unique prefix). A reference wins over an id prefix that happens to look like one.
    pub(crate) fn resolve_image(&self, name: &str) -> Option<ImageRecord> {
        if let Some(i) = self.images.resolve(name) {
            return Some(i);
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() < 4
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut matches = self
            .images
            .list()
            .into_iter()
            .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
        let first = matches.next()?;
        matches.next().is_none().then_some(first)
    }
}

/// An image record in CRI form. `uid`/`username` come from the config's `User` (a numeric
/// user goes to `uid`, a name to `username`), as kubelet's runAsNonRoot check expects.
fn to_cri(image: &ImageRecord, pinned: bool) -> cri::Image {
    let user = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let user = user.split(':').next().unwrap_or("").to_string();
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
        Err(_) if user.is_empty() => (None, String::new()),
        Err(_) => (None, user),
    };
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned,
    }
}

impl Krio {
    /// Whether `image` is pinned: served from an additional read-only store, or matching one of
    /// `image.pinned_images`: a prefix pattern (ending in `*`)
    /// against its tags and digests, else the normalized reference against them, or its id.
    fn image_pinned(&self, image: &ImageRecord) -> bool {
        if self.images.is_read_only(&image.id) {
            return true;
        }
        let names = || image.repo_tags.iter().chain(image.repo_digests.iter());
        self.cfg
            .image
            .pinned_images
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => names().any(|n| n.starts_with(prefix)),
                None => {
                    let normalized = krio_image::Reference::parse(p)
                        .map(|r| r.to_string())
                        .unwrap_or_else(|_| p.clone());
                    image.id == *p || names().any(|n| *n == normalized)
                }
            })
    }
}
