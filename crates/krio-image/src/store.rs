//! The on-disk image store: content blobs, unpacked layers and image records.
//!
//! Layout under the root:
//! * `blobs/<algo>/<hex>`: manifests, indexes and configs (content-addressed);
//! * `layers/<chain-id-hex>/{diff/,meta.json}`: unpacked layers (overlayfs lower dirs);
//!   a layer without `meta.json` is incomplete and removed on open;
//! * `images/<id-hex>.json`: one [`ImageRecord`] per image (written atomically);
//! * `tmp/`: in-progress work, emptied on open.
//!
//! Additional stores ([`ImageStore::open_with_additional`]) are roots of other stores with the same layout,
//! only read: their images are listed and run as if stored here (reported by [`ImageStore::is_read_only`]),
//! their layers serve pulls that need them (nothing is downloaded for a layer one of them holds), and
//! nothing in them is ever written, garbage-collected or removed.

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::config::RegistryConfig;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::manifest::Platform;

/// One stored image, as the CRI `Image` message needs it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// Image id: `sha256:<config digest hex>` (CRI `Image.id`).
    pub id: String,
    /// Normalized `domain/path:tag` names (CRI `Image.repo_tags`).
    pub repo_tags: Vec<String>,
    /// `domain/path@sha256:...` names; the digest is that of the manifest or index the image
    /// was pulled through (CRI `Image.repo_digests`).
    pub repo_digests: Vec<String>,
    /// Bytes: the sum of the compressed layer sizes from the manifest, as containerd reports
    /// (CRI `Image.size`).
    pub size: u64,
    /// The image config (OCI image-spec `config.md`).
    pub config: ImageConfiguration,
    /// Layer chain ids (`sha256:...`), bottom layer first.
    pub chain_ids: Vec<String>,
    /// Layer diff ids (uncompressed digests, `rootfs.diff_ids`), bottom layer first.
    pub diff_ids: Vec<String>,
    /// Digest of the image manifest (not the index).
    pub manifest_digest: String,
    /// Media type of the image manifest.
    pub manifest_media_type: String,
    /// Content-store blobs kept for this image (manifests, indexes, config), `algo:hex`.
    pub blobs: Vec<String>,
    /// When the image was last pulled: nanoseconds since the Unix epoch.
    pub pulled_at_ns: i64,
}

impl ImageRecord {
    /// The `User` field of the image config (CRI `Image.uid` / `Image.username` derive from it).
    pub fn user(&self) -> Option<&str> {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.user().as_deref())
            .filter(|u| !u.is_empty())
    }
}

/// `layers/<chain>/meta.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerMeta {
    /// The layer's chain id.
    pub chain_id: String,
    /// The uncompressed digest.
    pub diff_id: String,
    /// Chain id of the layer below, if any.
    pub parent: Option<String>,
    /// Digest of the blob it was unpacked from.
    pub compressed_digest: String,
    /// Compressed size in bytes.
    pub compressed_size: u64,
    /// Uncompressed tar size in bytes.
    pub uncompressed_size: u64,
    /// When it was unpacked: nanoseconds since the Unix epoch.
    pub created_ns: i64,
}

/// Disk usage of the store (CRI `FilesystemUsage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsUsage {
    /// Mount point of the filesystem holding the root (CRI `fs_id.mountpoint`).
    pub mountpoint: PathBuf,
    /// Bytes allocated under the root (`st_blocks * 512`, hard links counted once).
    pub used_bytes: u64,
    /// Inodes under the root (hard links counted once).
    pub inodes_used: u64,
    /// When measured: nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
}

#[derive(Default)]
pub(crate) struct State {
    pub images: BTreeMap<String, ImageRecord>,
    /// Ids of the images in `images` whose record lives in an additional (read-only) store.
    pub read_only: HashSet<String>,
}

/// What a name resolved to.
#[derive(Debug, PartialEq, Eq)]
enum Match {
    Id,
    Tag(String),
    Digest(String),
}

/// The image store. `Send + Sync`; every method takes `&self` and may be called concurrently.
pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) blobs_dir: PathBuf,
    pub(crate) layers_dir: PathBuf,
    pub(crate) images_dir: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    pub(crate) registries: RegistryConfig,
    /// Roots of the additional read-only stores, in the order they are consulted.
    additional: Vec<PathBuf>,
    pub(crate) platform: Platform,
    pub(crate) http: reqwest::Client,
    state: RwLock<State>,
    /// Layers (`layer:<hex>`) and blobs (`blob:<digest>`) in use by in-progress pulls, refcounted.
    inflight: Mutex<HashMap<String, usize>>,
    /// Single-flight table: normalized reference (+ credential fingerprint) → result channel.
    pub(crate) flights:
        Mutex<HashMap<String, tokio::sync::watch::Receiver<Option<Option<ImageRecord>>>>>,
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Writes `data` to `dest` atomically: temp file in `tmp`, fsync, rename, fsync of the parent.
pub(crate) fn atomic_write(tmp: &Path, dest: &Path, data: &[u8]) -> Result<(), ImageError> {
    let mut f = tempfile::NamedTempFile::new_in(tmp)
        .map_err(|e| ImageError::io("create temp file in", tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.as_file().sync_all())
        .map_err(|e| ImageError::io("write", f.path().to_path_buf(), e))?;
    f.persist(dest)
        .map_err(|e| ImageError::io("rename into", dest, e.error))?;
    if let Some(parent) = dest.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| ImageError::io("fsync", parent, e))?;
    }
    Ok(())
}

fn remove_path(p: &Path) -> Result<(), ImageError> {
    let r = match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::io("remove", p, e)),
        _ => Ok(()),
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` (e.g. `/var/lib/krio`).
    ///
    /// Recovery: empties `tmp/`; removes layers without `meta.json`, image records that are
    /// unreadable or reference missing layers, and layers/blobs no image references.
    ///
    /// Errors: [`ImageError::Io`] when the directories cannot be created or read.
    pub fn open(root: &Path, registries: RegistryConfig) -> Result<ImageStore, ImageError> {
        Self::open_with_additional(root, registries, Vec::new())
    }

    /// As [`ImageStore::open`], then loads the images of each additional read-only store in `additional`
    /// (roots with this store's layout, e.g. another krio's `root` or a shared, pre-filled directory). An image
    /// stored here wins over one of the same id there, and an earlier additional store over a later one. A
    /// missing additional root is skipped with a warning; an image record there that is unreadable or names a
    /// missing layer or blob is skipped (never deleted).
    ///
    /// Errors: as [`ImageStore::open`].
    pub fn open_with_additional(
        root: &Path,
        registries: RegistryConfig,
        additional: Vec<PathBuf>,
    ) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            blobs_dir: root.join("blobs"),
            layers_dir: root.join("layers"),
            images_dir: root.join("images"),
            tmp_dir: root.join("tmp"),
            registries,
            additional,
            platform: Platform::host(),
            http: crate::registry::http_client()?,
            state: RwLock::new(State::default()),
            inflight: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
        };
        for d in [
            &store.root,
            &store.blobs_dir,
            &store.layers_dir,
            &store.images_dir,
            &store.tmp_dir,
        ] {
            fs::create_dir_all(d).map_err(|e| ImageError::io("create directory", d, e))?;
        }
        // tmp/: everything in it is a leftover.
        for e in read_dir(&store.tmp_dir)? {
            remove_path(&e)?;
        }
        // layers/: incomplete or foreign entries go. Layers of additional stores count as present.
        let mut layers = store.additional_layers();
        for p in read_dir(&store.layers_dir)? {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if is_hex(name)
                && name.len() == 64
                && p.join("meta.json").is_file()
                && p.join("diff").is_dir()
            {
                layers.insert(name.to_string());
            } else {
                tracing::warn!(path = %p.display(), "removing incomplete layer");
                remove_path(&p)?;
            }
        }
        // images/
        let mut state = State::default();
        for p in read_dir(&store.images_dir)? {
            match store.load_record(&p, &layers) {
                Ok(rec) => {
                    state.images.insert(rec.id.clone(), rec);
                }
                Err(reason) => {
                    tracing::warn!(path = %p.display(), %reason, "dropping invalid image record");
                    remove_path(&p)?;
                }
            }
        }
        for extra in &store.additional {
            let dir = extra.join("images");
            let records = match read_dir(&dir) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(store = %extra.display(), error = %e, "additional image store not readable, skipped");
                    continue;
                }
            };
            for p in records {
                match store.load_record(&p, &layers) {
                    Ok(rec) if !state.images.contains_key(&rec.id) => {
                        state.read_only.insert(rec.id.clone());
                        state.images.insert(rec.id.clone(), rec);
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        tracing::warn!(path = %p.display(), %reason, "skipping image record of an additional store");
                    }
                }
            }
        }
        *store.write_state() = state;
        store.gc()?;
        Ok(store)
    }

    /// Chain ids (hex) of the complete layers of the additional stores.
    fn additional_layers(&self) -> HashSet<String> {
        let mut layers = HashSet::new();
        for extra in &self.additional {
            for p in read_dir(&extra.join("layers")).unwrap_or_default() {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.len() == 64 && is_hex(name) && p.join("meta.json").is_file() {
                    layers.insert(name.to_string());
                }
            }
        }
        layers
    }

    /// The record of image `id` in the first additional store that holds a valid one, as
    /// [`ImageStore::open_with_additional`] would load it.
    fn additional_record(&self, id: &str) -> Option<ImageRecord> {
        let hex = Digest::parse(id, "id").ok()?.hex().to_string();
        let layers = self.additional_layers();
        self.additional.iter().find_map(|extra| {
            let p = extra.join("images").join(format!("{hex}.json"));
            p.is_file()
                .then(|| self.load_record(&p, &layers).ok())
                .flatten()
        })
    }

    fn load_record(&self, p: &Path, layers: &HashSet<String>) -> Result<ImageRecord, String> {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let hex = name.strip_suffix(".json").ok_or("not a .json file")?;
        let data = fs::read(p).map_err(|e| e.to_string())?;
        let rec: ImageRecord = serde_json::from_slice(&data).map_err(|e| e.to_string())?;
        let id = Digest::parse(&rec.id, "id").map_err(|e| e.to_string())?;
        if id.hex() != hex {
            return Err(format!("id {} does not match file name", rec.id));
        }
        for c in &rec.chain_ids {
            let d = Digest::parse(c, "chain_ids").map_err(|e| e.to_string())?;
            if !layers.contains(d.hex()) {
                return Err(format!("layer {c} is missing"));
            }
        }
        for b in &rec.blobs {
            let d = Digest::parse(b, "blobs").map_err(|e| e.to_string())?;
            if !self.find_blob(&d).is_file() {
                return Err(format!("blob {b} is missing"));
            }
        }
        Ok(rec)
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_inflight(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks layers/blobs as used by an in-progress pull so garbage collection keeps them.
    pub(crate) fn pin(&self, keys: Vec<String>) -> Pin<'_> {
        let mut m = self.lock_inflight();
        for k in &keys {
            *m.entry(k.clone()).or_insert(0) += 1;
        }
        Pin { store: self, keys }
    }

    /// Path of a blob in the content store.
    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir.join(d.algo_str()).join(d.hex())
    }

    /// Path of a blob: in this store, else in the first additional store holding it, else where this store
    /// would put it.
    fn find_blob(&self, d: &Digest) -> PathBuf {
        let own = self.blob_path(d);
        if own.is_file() {
            return own;
        }
        self.additional
            .iter()
            .map(|r| r.join("blobs").join(d.algo_str()).join(d.hex()))
            .find(|p| p.is_file())
            .unwrap_or(own)
    }

    /// Path of a layer directory: in this store, else in the first additional store holding the layer
    /// complete, else where this store puts it.
    pub(crate) fn layer_path(&self, chain: &Digest) -> PathBuf {
        let own = self.layers_dir.join(chain.hex());
        if own.join("meta.json").is_file() {
            return own;
        }
        self.additional
            .iter()
            .map(|r| r.join("layers").join(chain.hex()))
            .find(|p| p.join("meta.json").is_file())
            .unwrap_or(own)
    }

    /// True when the layer is complete on disk, here or in an additional store.
    pub(crate) fn has_layer(&self, chain: &Digest) -> bool {
        self.layer_path(chain).join("meta.json").is_file()
    }

    /// The pulls running now, each as the normalized references it tries (comma-separated), sorted.
    pub fn pulls_in_flight(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|k| k.split(' ').next().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    }

    /// Whether image `id` is served from an additional read-only store (it cannot be removed; a pull of
    /// the same image makes it an image of this store).
    pub fn is_read_only(&self, id: &str) -> bool {
        self.read_state().read_only.contains(id)
    }

    /// Stores a blob (no-op if present).
    pub(crate) fn put_blob(&self, d: &Digest, data: &[u8]) -> Result<(), ImageError> {
        let p = self.blob_path(d);
        if p.is_file() {
            return Ok(());
        }
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(|e| ImageError::io("create directory", dir, e))?;
        }
        atomic_write(&self.tmp_dir, &p, data)
    }

    /// Reads a stored blob (manifest, index or config), e.g. to serve CRI `ImageStatus` verbose info.
    ///
    /// Errors: [`ImageError::InvalidDigest`], [`ImageError::Io`] (NotFound kind if absent).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let d = Digest::parse(digest, "digest")?;
        let p = self.find_blob(&d);
        fs::read(&p).map_err(|e| ImageError::io("read", p, e))
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All images, ordered by id.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.read_state().images.values().cloned().collect()
    }

    fn find(&self, st: &State, s: &str) -> Option<(String, Match)> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix("sha256:") {
            if hex.len() == 64 && is_hex(hex) && st.images.contains_key(s) {
                return Some((s.to_string(), Match::Id));
            }
        }
        if s.len() == 64 && is_hex(s) {
            let id = format!("sha256:{s}");
            if st.images.contains_key(&id) {
                return Some((id, Match::Id));
            }
        }
        // Short names resolve like pulls do (alias, search registries, docker.io).
        for r in self.registries.candidates(s).unwrap_or_default() {
            if let Some(d) = r.digest() {
                let name = r.digested_name(d);
                if let Some(rec) = st.images.values().find(|i| i.repo_digests.contains(&name)) {
                    return Some((rec.id.clone(), Match::Digest(name)));
                }
            } else if let Some(t) = r.tagged_name() {
                if let Some(rec) = st.images.values().find(|i| i.repo_tags.contains(&t)) {
                    return Some((rec.id.clone(), Match::Tag(t)));
                }
            }
        }
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        if prefix.len() >= 12 && prefix.len() < 64 && is_hex(prefix) {
            let mut hits = st
                .images
                .keys()
                .filter(|id| id.strip_prefix("sha256:").unwrap_or(id).starts_with(prefix));
            if let (Some(id), None) = (hits.next(), hits.next()) {
                return Some((id.clone(), Match::Id));
            }
        }
        None
    }

    /// Looks an image up by id (`sha256:<64hex>`, bare hex, or a unique hex prefix of at least
    /// 12), by repo tag (normalized: `busybox` == `docker.io/library/busybox:latest`; short
    /// names go through registries.conf aliases and search registries in order, as in
    /// [`ImageStore::pull`]) or by repo digest (`name@sha256:...`; `name:tag@digest` matches by
    /// digest). `None` when unknown.
    pub fn resolve(&self, name_or_id: &str) -> Option<ImageRecord> {
        let st = self.read_state();
        self.find(&st, name_or_id)
            .and_then(|(id, _)| st.images.get(&id).cloned())
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, ImageError> {
        let d = Digest::parse(id, "image id")?;
        Ok(self.images_dir.join(format!("{}.json", d.hex())))
    }

    pub(crate) fn persist(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        let p = self.record_path(&rec.id)?;
        let data = serde_json::to_vec_pretty(rec).map_err(|e| ImageError::Metadata {
            path: p.clone(),
            source: e,
        })?;
        atomic_write(&self.tmp_dir, &p, &data)
    }

    /// Whether [`ImageStore::remove`] of `name_or_id` would delete the image itself (by id,
    /// or a name that is its last one: removing a repository's last tag drops that
    /// repository's digests too), rather than only a name. `false` for an unknown name.
    pub fn removal_deletes_image(&self, name_or_id: &str) -> bool {
        let st = self.read_state();
        let Some((id, how)) = self.find(&st, name_or_id) else {
            return false;
        };
        let Some(mut rec) = st.images.get(&id).cloned() else {
            return false;
        };
        drop_names(&mut rec, how);
        rec.repo_tags.is_empty() && rec.repo_digests.is_empty()
    }

    /// Removes an image (CRI `RemoveImage`, idempotent).
    ///
    /// By id: the image and all its names. By tag: only that tag, plus the repo digests of
    /// that repository when it was the repository's last tag; the image goes when no tag or
    /// digest remains. By repo digest: that digest only (same rule). Unknown names → `Ok`.
    /// Layers and blobs no image references any more are deleted.
    ///
    /// Errors: [`ImageError::Io`] if the record or content cannot be deleted.
    pub fn remove(&self, name_or_id: &str) -> Result<(), ImageError> {
        {
            let mut st = self.write_state();
            let Some((id, how)) = self.find(&st, name_or_id) else {
                return Ok(());
            };
            let Some(mut rec) = st.images.get(&id).cloned() else {
                return Ok(());
            };
            if st.read_only.contains(&id) {
                return Err(ImageError::ReadOnly { id });
            }
            drop_names(&mut rec, how);
            if rec.repo_tags.is_empty() && rec.repo_digests.is_empty() {
                let p = self.record_path(&id)?;
                remove_path(&p)?;
                st.images.remove(&id);
                // The same image in an additional store shows again, read-only, as it would
                // after a restart.
                if let Some(shared) = self.additional_record(&id) {
                    st.read_only.insert(id.clone());
                    st.images.insert(id, shared);
                }
            } else {
                self.persist(&rec)?;
                st.images.insert(id, rec);
                return Ok(());
            }
        }
        self.gc()
    }

    /// Deletes layers and blobs that no image record and no in-progress pull references.
    /// Victims are renamed into `tmp/` under the lock and deleted after it is released.
    pub(crate) fn gc(&self) -> Result<(), ImageError> {
        let mut doomed = Vec::new();
        {
            let st = self.write_state();
            let inflight = self.lock_inflight();
            let mut keep: HashSet<String> = inflight.keys().cloned().collect();
            for rec in st.images.values() {
                for c in &rec.chain_ids {
                    if let Ok(d) = Digest::parse(c, "chain_ids") {
                        keep.insert(format!("layer:{}", d.hex()));
                    }
                }
                for b in &rec.blobs {
                    keep.insert(format!("blob:{b}"));
                }
            }
            for p in read_dir(&self.layers_dir)? {
                let name = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string();
                if !keep.contains(&format!("layer:{name}")) {
                    doomed.push(p);
                }
            }
            for algo in read_dir(&self.blobs_dir)? {
                let a = algo
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_string();
                if !algo.is_dir() {
                    continue;
                }
                for p in read_dir(&algo)? {
                    let h = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if !keep.contains(&format!("blob:{a}:{h}")) {
                        doomed.push(p);
                    }
                }
            }
            // Move layer dirs out of sight while locked (cheap renames).
            let mut moved = Vec::new();
            for p in doomed.drain(..) {
                if p.is_dir() {
                    let dest = tempfile::Builder::new()
                        .prefix("gc-")
                        .make_in(&self.tmp_dir, |_| Ok(()))
                        .map(|t| t.path().to_path_buf())
                        .map_err(|e| ImageError::io("create temp name in", &self.tmp_dir, e))?;
                    fs::rename(&p, &dest).map_err(|e| ImageError::io("rename", &p, e))?;
                    moved.push(dest);
                } else {
                    remove_path(&p)?;
                }
            }
            doomed = moved;
        }
        for p in doomed {
            tracing::debug!(path = %p.display(), "deleting unreferenced content");
            remove_path(&p)?;
        }
        Ok(())
    }

    /// The overlay `lowerdir` list for `image`: its layers' `diff/` directories, topmost
    /// first (so `lowerdir=` can be built by joining with `:`).
    ///
    /// Errors: [`ImageError::LayerMissing`] if a layer is not in the store,
    /// [`ImageError::InvalidDigest`] for a corrupt record.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        let mut out = Vec::with_capacity(image.chain_ids.len());
        for c in image.chain_ids.iter().rev() {
            let d = Digest::parse(c, "chain_ids")?;
            if !self.has_layer(&d) {
                return Err(ImageError::LayerMissing {
                    image: image.id.clone(),
                    chain_id: c.clone(),
                });
            }
            out.push(self.layer_path(&d).join("diff"));
        }
        Ok(out)
    }

    /// Usage of the image store alone: its blobs, unpacked layers, image records and
    /// download scratch (`<root>/{blobs,layers,images,tmp}`), not whatever else lives under
    /// the same root (containers' writable layers are reported apart, as CRI
    /// `ImageFsInfoResponse.container_filesystems`). Walks the trees; blocking.
    ///
    /// Errors: [`ImageError::Io`] when a directory cannot be read or the mountpoint found.
    pub fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        let dirs = [
            &self.blobs_dir,
            &self.layers_dir,
            &self.images_dir,
            &self.tmp_dir,
        ];
        tree_usage(&dirs.map(|d| d.as_path()), &self.root)
    }

    pub(crate) fn lookup_id(&self, id: &str) -> Option<ImageRecord> {
        self.read_state().images.get(id).cloned()
    }

    /// Inserts or merges a freshly pulled image; `tag` moves away from any other image.
    pub(crate) fn commit(
        &self,
        mut new: ImageRecord,
        tag: Option<String>,
        repo_digest: String,
    ) -> Result<ImageRecord, ImageError> {
        let mut st = self.write_state();
        let mut updates = Vec::new();
        if let Some(t) = &tag {
            for other in st.images.values() {
                if other.id != new.id && other.repo_tags.contains(t) {
                    let mut o = other.clone();
                    o.repo_tags.retain(|x| x != t);
                    updates.push(o);
                }
            }
        }
        if let Some(old) = st.images.get(&new.id) {
            let mut tags = old.repo_tags.clone();
            let mut digests = old.repo_digests.clone();
            let mut blobs = old.blobs.clone();
            tags.extend(tag.clone());
            digests.push(repo_digest);
            blobs.extend(new.blobs.iter().cloned());
            new.repo_tags = dedup(tags);
            new.repo_digests = dedup(digests);
            new.blobs = dedup(blobs);
        } else {
            new.repo_tags = tag.into_iter().collect();
            new.repo_digests = vec![repo_digest];
        }
        self.persist(&new)?;
        for o in updates {
            self.persist(&o)?;
            st.read_only.remove(&o.id);
            st.images.insert(o.id.clone(), o);
        }
        st.read_only.remove(&new.id);
        st.images.insert(new.id.clone(), new.clone());
        Ok(new)
    }
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    v.into_iter().filter(|x| seen.insert(x.clone())).collect()
}

fn read_dir(p: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let rd = fs::read_dir(p).map_err(|e| ImageError::io("read directory", p, e))?;
    let mut out = Vec::new();
    for e in rd {
        out.push(
            e.map_err(|e| ImageError::io("read directory", p, e))?
                .path(),
        );
    }
    Ok(out)
}

/// Unescapes the octal escapes (`\040`) of /proc/self/mountinfo.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount point (longest matching prefix in /proc/self/mountinfo) holding `p`.
fn mountpoint_of(p: &Path) -> Result<PathBuf, ImageError> {
    let canon = fs::canonicalize(p).map_err(|e| ImageError::io("canonicalize", p, e))?;
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| ImageError::io("read", "/proc/self/mountinfo", e))?;
    let mut best = PathBuf::from("/");
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(unescape_mount(mp));
        if canon.starts_with(&mp) && mp.components().count() > best.components().count() {
            best = mp;
        }
    }
    Ok(best)
}

/// Releases [`ImageStore::pin`]s on drop.
pub(crate) struct Pin<'a> {
    store: &'a ImageStore,
    keys: Vec<String>,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut m = self.store.lock_inflight();
        for k in &self.keys {
            if let Some(n) = m.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Bytes and inodes allocated under `dirs` (`st_blocks * 512`; hard links counted once; absent
/// directories count nothing), on the filesystem whose mountpoint holds `anchor`. Walks the
/// trees; blocking.
///
/// Errors: [`ImageError::Io`] when a directory cannot be read or the mountpoint found.
pub fn tree_usage(dirs: &[&Path], anchor: &Path) -> Result<FsUsage, ImageError> {
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(p) = stack.pop() {
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::io("stat", p, e)),
        };
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        bytes += m.blocks() * 512;
        inodes += 1;
        if m.is_dir() {
            match fs::read_dir(&p) {
                Ok(rd) => {
                    for e in rd.flatten() {
                        stack.push(e.path());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("read directory", p, e)),
            }
        }
    }
    Ok(FsUsage {
        mountpoint: mountpoint_of(anchor)?,
        used_bytes: bytes,
        inodes_used: inodes,
        timestamp_ns: now_ns(),
    })
}

/// Drops from `rec` the names a removal matched by `how` takes away: every name (by id), the
/// tag (and, when it was its repository's last tag, that repository's digests), or the digest.
fn drop_names(rec: &mut ImageRecord, how: Match) {
    match how {
        Match::Id => {
            rec.repo_tags.clear();
            rec.repo_digests.clear();
        }
        Match::Tag(t) => {
            rec.repo_tags.retain(|x| *x != t);
            let repo = t.rsplit_once(':').map(|(r, _)| r).unwrap_or(&t);
            let repo_has_tags = rec
                .repo_tags
                .iter()
                .any(|x| x.rsplit_once(':').map(|(r, _)| r) == Some(repo));
            if !repo_has_tags {
                rec.repo_digests
                    .retain(|x| x.split_once('@').map(|(r, _)| r) != Some(repo));
            }
        }
        Match::Digest(d) => rec.repo_digests.retain(|x| *x != d),
    }
}
