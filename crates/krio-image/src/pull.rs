//! `ImageStore::pull`: manifest resolution, config, and the streaming layer pipeline.
//!
//! Layers download in parallel (bounded) into spools; one blocking worker applies them in
//! order, each as soon as its first bytes arrive: spool → (decompress → sha256 diff_id, on a
//! helper thread) → bounded channel → `krio_layer::apply_layer` into `tmp/`, then a rename
//! into `layers/<chain-id>`.

use sha2::Digest as _;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tracing::Instrument;

use crate::authfile::AuthStore;
use crate::digest::{chain_ids, Digest};
use crate::error::ImageError;
use crate::manifest::{
    self, classify, select_platform, Compression, Document, DOCKER_CONFIG, OCI_CONFIG,
};
use crate::reference::Reference;
use crate::registry::{RegistryAuth, Session};
use crate::spool::{spool, SpoolHandle, SpoolReader, SpoolWriter};
use crate::store::{now_ns, ImageRecord, ImageStore, LayerMeta, Pin};

const DEFAULT_CONCURRENT_DOWNLOADS: usize = 3;
const CHUNK: usize = 256 * 1024;

/// Aborts a tokio task when dropped (so a cancelled pull stops its downloads).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sets a flag when dropped (tells the blocking worker the pull was cancelled).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Garbage-collects unreferenced content when a pull fails or is cancelled.
struct GcOnDrop<'a> {
    store: &'a ImageStore,
    armed: bool,
    pin: Option<Pin<'a>>,
}

impl Drop for GcOnDrop<'_> {
    fn drop(&mut self) {
        drop(self.pin.take());
        if self.armed {
            if let Err(e) = self.store.gc() {
                tracing::warn!(error = %e, "cleanup after failed pull");
            }
        }
    }
}

/// One layer the pull must unpack.
struct LayerJob {
    index: usize,
    digest: Digest,
    /// The manifest's media type for the layer, and the compression it names.
    media_type: String,
    compression: Compression,
    size: u64,
    diff_id: Digest,
    chain_id: Digest,
    parent: Option<Digest>,
    /// `diff/` dirs of every layer below, topmost first.
    lowers: Vec<PathBuf>,
}

/// Publishes the single-flight outcome and removes the table entry, also when the pull is
/// cancelled.
struct FlightGuard<'a> {
    store: &'a ImageStore,
    key: String,
    tx: tokio::sync::watch::Sender<Option<Option<ImageRecord>>>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut m = self.store.flights.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&self.key);
        drop(m);
        if self.tx.borrow().is_none() {
            let _ = self.tx.send(Some(None));
        }
    }
}

impl ImageStore {
    /// Pulls `reference` (CRI `PullImage`) for the host platform and returns the stored image.
    ///
    /// Accepts short names, tags, digests and `name:tag@digest`. Concurrent pulls of the same
    /// reference with the same credentials share one pull; different images pull in parallel.
    /// Layers already in the store (same chain id) are not downloaded again. Every blob is
    /// verified while streaming; a failed or cancelled pull leaves nothing visible.
    ///
    /// Registries: short names resolve through [`RegistryConfig::candidates`] (alias, search
    /// registries, docker.io); each candidate is fetched from the endpoints registries.conf
    /// gives (mirrors first, then the possibly rewritten location). `auth` is the CRI
    /// `AuthConfig`; without it, credentials come from [`RegistryConfig::auth_file`] for the
    /// endpoint contacted. Requests are retried on transient failures and a download with no
    /// progress for [`RegistryConfig::progress_timeout`] is cancelled.
    ///
    /// Errors: [`ImageError::InvalidReference`], [`ImageError::NotFound`] (unknown
    /// repository/tag/digest, naming the reference), [`ImageError::Unauthorized`],
    /// [`ImageError::Blocked`], [`ImageError::Stalled`], [`ImageError::AuthFile`],
    /// [`ImageError::DigestMismatch`], [`ImageError::SizeMismatch`],
    /// [`ImageError::UnsupportedMediaType`], [`ImageError::InvalidManifest`],
    /// [`ImageError::NoMatchingPlatform`], [`ImageError::Registry`] (also transient failures
    /// after the last retry), [`ImageError::Layer`], [`ImageError::Io`].
    ///
    /// [`RegistryConfig::candidates`]: crate::RegistryConfig::candidates
    /// [`RegistryConfig::auth_file`]: crate::RegistryConfig::auth_file
    /// [`RegistryConfig::progress_timeout`]: crate::RegistryConfig::progress_timeout
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let candidates = self.registries.candidates(reference)?;
        let fingerprint = auth
            .and_then(|a| serde_json::to_vec(a).ok())
            .map(|b| hex::encode(sha2::Sha256::digest(&b)))
            .unwrap_or_default();
        let names: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
        let key = format!("{} {fingerprint}", names.join(","));
        loop {
            enum Role {
                Leader(tokio::sync::watch::Sender<Option<Option<ImageRecord>>>),
                Waiter(tokio::sync::watch::Receiver<Option<Option<ImageRecord>>>),
            }
            let role = {
                let mut m = self.flights.lock().unwrap_or_else(|e| e.into_inner());
                match m.get(&key) {
                    Some(rx) => Role::Waiter(rx.clone()),
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel(None);
                        m.insert(key.clone(), rx);
                        Role::Leader(tx)
                    }
                }
            };
            match role {
                Role::Leader(tx) => {
                    let guard = FlightGuard {
                        store: self,
                        key: key.clone(),
                        tx,
                    };
                    let result = self.pull_candidates(reference, &candidates, auth).await;
                    let _ = guard.tx.send(Some(result.as_ref().ok().cloned()));
                    drop(guard);
                    return result;
                }
                Role::Waiter(mut rx) => {
                    let outcome = rx
                        .wait_for(|v| v.is_some())
                        .await
                        .ok()
                        .and_then(|v| v.clone());
                    if let Some(Some(rec)) = outcome {
                        // Return the current state (tags may have been merged meanwhile).
                        return Ok(self.lookup_id(&rec.id).unwrap_or(rec));
                    }
                    // The leader failed or was cancelled: try ourselves (and get our own error).
                }
            }
        }
    }

    /// Tries each candidate of a (possibly short) reference in order (registries.conf
    /// aliases / unqualified-search-registries); the first that can be pulled wins.
    async fn pull_candidates(
        &self,
        input: &str,
        candidates: &[Reference],
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let auth_file = match (&self.registries.auth_file, auth) {
            (Some(p), None) => Some(AuthStore::load(p)?),
            _ => None,
        };
        let mut errors = Vec::new();
        for r in candidates {
            match self.pull_once(r, auth, auth_file.as_ref()).await {
                Ok(rec) => return Ok(rec),
                // Only "not there / not reachable" moves on to the next candidate: an image
                // that was found but is broken must not be replaced by another registry's.
                Err(
                    e @ (ImageError::NotFound { .. }
                    | ImageError::Unauthorized { .. }
                    | ImageError::Registry { .. }
                    | ImageError::Blocked { .. }
                    | ImageError::Stalled { .. }),
                ) if candidates.len() > 1 => {
                    tracing::info!(candidate = %r, error = %e, "short-name candidate failed");
                    errors.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        if errors.iter().all(ImageError::is_not_found) {
            return Err(ImageError::NotFound {
                reference: input.to_string(),
                detail: Some(format!(
                    "tried {}",
                    candidates
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        }
        match errors.into_iter().find(|e| !e.is_not_found()) {
            Some(e) => Err(e),
            None => Err(ImageError::NotFound {
                reference: input.to_string(),
                detail: None,
            }),
        }
    }

    #[tracing::instrument(level = "info", name = "pull", skip_all, fields(otel.name = "pull image", reference = %r))]
    async fn pull_once(
        &self,
        r: &Reference,
        auth: Option<&RegistryAuth>,
        auth_file: Option<&AuthStore>,
    ) -> Result<ImageRecord, ImageError> {
        let started = std::time::Instant::now();
        let rstr = r.to_string();
        // 1. Top-level manifest, from the first endpoint (mirrors first) that has it.
        let mut last_err = None;
        let mut found = None;
        for ep in self.registries.sources(r)? {
            // The request's credentials go everywhere; auth-file credentials are looked up
            // for the endpoint really contacted (mirror or rewritten location).
            let file_auth = auth_file.and_then(|f| f.lookup(&ep.host, &ep.path));
            let session = Session::new(
                self.http.clone(),
                r.clone(),
                ep,
                auth.or(file_auth.as_ref()),
                &self.registries,
            );
            let span = tracing::info_span!("pull_manifest", otel.name = "pull manifest", endpoint = %session.endpoint().base);
            match session
                .get_manifest(&r.manifest_ref())
                .instrument(span)
                .await
            {
                Ok(m) => {
                    found = Some((session, m));
                    break;
                }
                Err(e) if session.endpoint().mirror => {
                    tracing::warn!(mirror = %session.endpoint().base, error = %e, "mirror failed, trying next endpoint");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let (session, top) = match found {
            Some(f) => f,
            None => {
                return Err(last_err.unwrap_or(ImageError::NotFound {
                    reference: rstr,
                    detail: None,
                }))
            }
        };
        let session = Arc::new(session);
        let mut blobs: Vec<(Digest, Vec<u8>)> = Vec::new();
        let repo_digest = r.digested_name(&top.digest);
        let doc = classify(&rstr, top.content_type.as_deref(), &top.bytes)?;
        let top_digest = top.digest.clone();
        blobs.push((top.digest, top.bytes));
        let (manifest_digest, media_type, config_desc, layers) = match doc {
            Document::Manifest {
                media_type,
                config,
                layers,
            } => (top_digest, media_type, config, layers),
            Document::Index { manifests, .. } => {
                let entry = select_platform(&rstr, &manifests, &self.platform)?;
                let d = entry.digest("index.manifests[].digest")?;
                let want_size = entry.size(&rstr, "index.manifests[]")?;
                let m = session
                    .get_manifest(d.as_str())
                    .instrument(tracing::info_span!(
                        "pull_manifest",
                        otel.name = "pull manifest",
                        digest = %d
                    ))
                    .await?;
                if m.bytes.len() as u64 != want_size {
                    return Err(ImageError::SizeMismatch {
                        what: format!("manifest {d}"),
                        expected: want_size,
                        actual: m.bytes.len() as u64,
                    });
                }
                match classify(&rstr, m.content_type.as_deref(), &m.bytes)? {
                    Document::Manifest {
                        media_type,
                        config,
                        layers,
                    } => {
                        blobs.push((m.digest, m.bytes));
                        (d, media_type, config, layers)
                    }
                    Document::Index { .. } => {
                        return Err(ImageError::InvalidManifest {
                            reference: rstr,
                            reason: format!(
                                "index entry {d} for {} is itself an index",
                                self.platform
                            ),
                        })
                    }
                }
            }
        };
        // 2. Config.
        if config_desc.media_type != OCI_CONFIG && config_desc.media_type != DOCKER_CONFIG {
            return Err(ImageError::UnsupportedMediaType {
                media_type: config_desc.media_type.clone(),
                what: format!("config of {rstr} (not a container image)"),
            });
        }
        let config_digest = config_desc.digest("manifest.config.digest")?;
        let config_size = config_desc.size(&rstr, "manifest.config")?;
        let config_bytes = session
            .get_small_blob(
                &config_digest,
                config_size,
                manifest::MAX_CONFIG_BYTES,
                "image config",
            )
            .instrument(tracing::info_span!(
                "pull_config",
                otel.name = "pull config",
                digest = %config_digest
            ))
            .await?;
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::InvalidConfig {
                digest: config_digest.to_string(),
                reason: e.to_string(),
            })?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .enumerate()
            .map(|(i, d)| Digest::parse(d, &format!("config.rootfs.diff_ids[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        if diff_ids.len() != layers.len() {
            return Err(ImageError::InvalidConfig {
                digest: config_digest.to_string(),
                reason: format!(
                    "{} diff_ids for {} manifest layers",
                    diff_ids.len(),
                    layers.len()
                ),
            });
        }
        let chains = chain_ids(&diff_ids);
        let mut jobs_all = Vec::with_capacity(layers.len());
        let mut size = 0u64;
        for (i, l) in layers.iter().enumerate() {
            let field = format!("manifest.layers[{i}]");
            let compression = manifest::layer_compression(&l.media_type, &field)?;
            let digest = l.digest(&format!("{field}.digest"))?;
            let lsize = l.size(&rstr, &field)?;
            size += lsize;
            jobs_all.push(LayerJob {
                index: i,
                digest,
                media_type: l.media_type.clone(),
                compression,
                size: lsize,
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                parent: i.checked_sub(1).map(|p| chains[p].clone()),
                lowers: chains[..i]
                    .iter()
                    .rev()
                    .map(|c| self.layer_path(c).join("diff"))
                    .collect(),
            });
        }
        blobs.push((config_digest.clone(), config_bytes));
        // 3. Pin everything this pull will reference, then store blobs and missing layers.
        let mut keys: Vec<String> = chains
            .iter()
            .map(|c| format!("layer:{}", c.hex()))
            .collect();
        keys.extend(blobs.iter().map(|(d, _)| format!("blob:{d}")));
        // Unpins, then garbage-collects unless disarmed: a failed or cancelled pull leaves nothing.
        let mut cleanup = GcOnDrop {
            store: self,
            armed: true,
            pin: Some(self.pin(keys)),
        };
        let result = async {
            for (d, data) in &blobs {
                self.put_blob(d, data)?;
            }
            let missing: Vec<LayerJob> = jobs_all
                .into_iter()
                .filter(|j| !self.has_layer(&j.chain_id))
                .collect();
            let fetched = missing.len();
            if !missing.is_empty() {
                self.fetch_layers(&session, &rstr, missing).await?;
            }
            let rec = ImageRecord {
                id: format!("sha256:{}", config_digest.hex()),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                size,
                config,
                chain_ids: chains.iter().map(|c| c.to_string()).collect(),
                diff_ids: diff_ids.iter().map(|c| c.to_string()).collect(),
                manifest_digest: manifest_digest.to_string(),
                manifest_media_type: media_type,
                blobs: blobs.iter().map(|(d, _)| d.to_string()).collect(),
                pulled_at_ns: now_ns(),
            };
            let tag = if r.digest().is_none() { r.tagged_name() } else { None };
            let rec = self.commit(rec, tag, repo_digest)?;
            tracing::info!(reference = %rstr, id = %rec.id, layers_fetched = fetched, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
            Ok(rec)
        }
        .await;
        cleanup.armed = result.is_err();
        drop(cleanup);
        result
    }

    /// Downloads `jobs` in parallel and applies them in order.
    async fn fetch_layers(
        &self,
        session: &Arc<Session>,
        rstr: &str,
        jobs: Vec<LayerJob>,
    ) -> Result<(), ImageError> {
        let mut writers = Vec::with_capacity(jobs.len());
        let mut readers = Vec::with_capacity(jobs.len());
        let mut handles = Vec::with_capacity(jobs.len());
        for j in &jobs {
            let (w, rd, h) = spool(&self.tmp_dir)?;
            writers.push((w, j.digest.clone(), j.size, j.index));
            readers.push(rd);
            handles.push(h);
        }
        let limit = match self.registries.max_concurrent_downloads {
            0 => DEFAULT_CONCURRENT_DOWNLOADS,
            n => n,
        };
        let sem = Arc::new(tokio::sync::Semaphore::new(limit));
        let sess = session.clone();
        // Downloads run on tasks of their own and unpacking on blocking threads: their spans
        // name the pull's span as parent explicitly.
        let pull_span = tracing::Span::current();
        let unpack_parent = pull_span.clone();
        // Scheduler: starts downloads in layer order as permits free up.
        let _scheduler = AbortOnDrop(tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for (w, digest, size, index) in writers {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    return;
                };
                let s = sess.clone();
                let span = tracing::info_span!(
                    parent: &pull_span,
                    "pull_layer_download",
                    otel.name = "download layer",
                    layer = %digest,
                    index,
                    size
                );
                set.spawn(
                    async move {
                        download(&s, &digest, size, index, w).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            while set.join_next().await.is_some() {}
        }));
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(cancelled.clone());
        let layers_dir = self.layers_dir.clone();
        let tmp_dir = self.tmp_dir.clone();
        let worker_handles = handles.clone();
        let worker = tokio::task::spawn_blocking(move || {
            apply_all(
                &jobs,
                readers,
                &worker_handles,
                &layers_dir,
                &tmp_dir,
                &cancelled,
                &unpack_parent,
            )
        });
        match worker.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((pos, e))) => {
                // A download failure surfaces in the worker as a stream error: report the
                // download's own typed error instead.
                Err(handles.get(pos).and_then(|h| h.take_error()).unwrap_or(e))
            }
            Err(join) => Err(ImageError::Aborted {
                reference: rstr.to_string(),
                detail: format!("layer worker died: {join}"),
            }),
        }
    }
}

/// Number of layers unpacked at the same time.
const APPLY_WORKERS: usize = 2;

/// Completion of the layers of one pull, shared by the apply workers.
struct Sched {
    state: Mutex<SchedState>,
    cond: Condvar,
}

struct SchedState {
    done: Vec<bool>,
    /// The failure with the lowest position.
    failed: Option<(usize, ImageError)>,
}

impl Sched {
    fn lock(&self) -> MutexGuard<'_, SchedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn all_done_before(&self, pos: usize) -> bool {
        self.lock().done[..pos].iter().all(|d| *d)
    }

    /// Waits until every layer before `pos` is done; false if the pull failed meanwhile.
    fn wait_done_before(&self, pos: usize) -> bool {
        let mut st = self.lock();
        loop {
            if st.failed.is_some() {
                return false;
            }
            if st.done[..pos].iter().all(|d| *d) {
                return true;
            }
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish(&self, pos: usize, r: Result<(), ImageError>) {
        let mut st = self.lock();
        match r {
            Ok(()) => st.done[pos] = true,
            Err(e) => {
                if st.failed.as_ref().is_none_or(|(p, _)| pos < *p) {
                    st.failed = Some((pos, e));
                }
            }
        }
        drop(st);
        self.cond.notify_all();
    }

    fn failed(&self) -> bool {
        self.lock().failed.is_some()
    }
}

/// Unpacks `jobs` with [`APPLY_WORKERS`] threads, in order of position.
///
/// A layer whose lower layers are all unpacked gets them as `lowers`. One whose lowers are
/// still in progress is unpacked speculatively with NO lowers (never a partial set: a hard
/// link must not resolve to a file an unfinished upper lower layer replaces); lowers are only
/// consulted for hard links to files outside the layer, so if that attempt fails it is redone
/// from the spool once all lowers are done.
fn apply_all(
    jobs: &[LayerJob],
    readers: Vec<SpoolReader>,
    handles: &[SpoolHandle],
    layers_dir: &Path,
    tmp_dir: &Path,
    cancelled: &AtomicBool,
    parent: &tracing::Span,
) -> Result<(), (usize, ImageError)> {
    let n = jobs.len();
    let readers: Vec<Mutex<Option<SpoolReader>>> =
        readers.into_iter().map(|r| Mutex::new(Some(r))).collect();
    let next = AtomicUsize::new(0);
    let sched = Sched {
        state: Mutex::new(SchedState {
            done: vec![false; n],
            failed: None,
        }),
        cond: Condvar::new(),
    };
    let aborted = || ImageError::Aborted {
        reference: String::new(),
        detail: "cancelled".into(),
    };
    std::thread::scope(|s| {
        for _ in 0..APPLY_WORKERS.min(n) {
            s.spawn(|| loop {
                let pos = next.fetch_add(1, Ordering::SeqCst);
                if pos >= n || sched.failed() {
                    return;
                }
                if cancelled.load(Ordering::SeqCst) {
                    sched.finish(pos, Err(aborted()));
                    return;
                }
                let job = &jobs[pos];
                let reader = readers[pos]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_else(|| handles[pos].reader());
                let span = tracing::info_span!(
                    parent: parent,
                    "pull_layer_unpack",
                    otel.name = "unpack layer",
                    layer = %job.digest,
                    index = pos
                );
                let _entered = span.enter();
                let ready = sched.all_done_before(pos);
                let lowers: &[PathBuf] = if ready { &job.lowers } else { &[] };
                let mut r = apply_one(job, reader, lowers, layers_dir, tmp_dir, cancelled);
                if !ready && matches!(r, Err(ImageError::Layer { .. })) {
                    tracing::debug!(layer = %job.digest, "redoing speculative unpack with its lower layers");
                    if sched.wait_done_before(pos) {
                        r = apply_one(job, handles[pos].reader(), &job.lowers, layers_dir, tmp_dir, cancelled);
                    }
                }
                let failed = r.is_err();
                sched.finish(pos, r);
                if failed {
                    return;
                }
            });
        }
    });
    let st = sched.state.into_inner().unwrap_or_else(|e| e.into_inner());
    match st.failed {
        Some(f) => Err(f),
        None if st.done.iter().all(|d| *d) => Ok(()),
        None => Err((0, aborted())),
    }
}

/// Streams one blob into its spool, verifying size and digest; the spool learns the outcome.
async fn download(session: &Session, digest: &Digest, size: u64, index: usize, mut w: SpoolWriter) {
    let what = format!("layer {index} blob {digest}");
    let result = async {
        let mut resp = session.open_blob(digest, &what).await?;
        let mut h = digest.hasher();
        let mut n = 0u64;
        while let Some(chunk) = session
            .within_progress(resp.chunk())
            .await
            .ok_or_else(|| session.stalled(&what))?
            .map_err(|e| session.stream_error(&what, e))?
        {
            n += chunk.len() as u64;
            if n > size {
                return Err(ImageError::SizeMismatch {
                    what: what.clone(),
                    expected: size,
                    actual: n,
                });
            }
            h.update(&chunk);
            w.write(&chunk)
                .map_err(|e| ImageError::io("write spool for", PathBuf::from(&what), e))?;
            if n == chunk.len() as u64 {
                crate::test_hook("PullImage:downloading");
            }
        }
        if n != size {
            return Err(ImageError::SizeMismatch {
                what: what.clone(),
                expected: size,
                actual: n,
            });
        }
        digest.verify(&h.finish(), &what)
    }
    .await;
    w.finish(result);
}

/// Reads up to `n` bytes (fewer only at EOF).
fn read_head(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// A `Read` over chunks from a channel (the decompressor thread's output).
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    off: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.off >= self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = c;
                    self.off = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.off);
        buf[..n].copy_from_slice(&self.cur[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// The leading bytes of a layer do not match its media type's compression.
#[derive(Debug)]
struct CompressionMismatch {
    expected: &'static str,
    found: &'static str,
}

impl std::fmt::Display for CompressionMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected {}, found {}", self.expected, self.found)
    }
}

impl std::error::Error for CompressionMismatch {}

/// What the leading bytes of a blob look like, for error messages.
fn sniff(head: &[u8]) -> &'static str {
    if head.starts_with(GZIP_MAGIC) {
        "gzip-compressed"
    } else if is_zstd_frame(head) {
        "zstd-compressed"
    } else if head.starts_with(XZ_MAGIC) {
        "xz-compressed"
    } else if head.is_empty() {
        "empty"
    } else {
        "not compressed"
    }
}

/// A zstd frame (RFC 8878 §3.1.1) or a skippable frame (magic 0x184D2A5?, §3.1.2).
fn is_zstd_frame(head: &[u8]) -> bool {
    head.starts_with(ZSTD_MAGIC)
        || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
}

/// Checks the leading bytes of a layer against the compression its media type names: gzip
/// (RFC 1952) and zstd must start with their magic; an uncompressed tar must not start with a
/// gzip, zstd or xz magic (no tar header does: its first bytes are a file name).
///
/// Errors: [`CompressionMismatch`] naming what was expected and found.
fn check_compression(compression: Compression, head: &[u8]) -> Result<(), CompressionMismatch> {
    let (ok, expected) = match compression {
        Compression::Gzip => (head.starts_with(GZIP_MAGIC), "gzip"),
        Compression::Zstd => (is_zstd_frame(head), "zstd"),
        Compression::None => (
            !(head.starts_with(GZIP_MAGIC) || is_zstd_frame(head) || head.starts_with(XZ_MAGIC)),
            "an uncompressed tar",
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(CompressionMismatch {
            expected,
            found: sniff(head),
        })
    }
}

/// Decompresses as the media type says (`compression`; the bytes are checked against it, never
/// used to choose) and hashes the uncompressed stream, sending chunks to `tx`. Returns
/// `(diff_id, uncompressed bytes)`.
///
/// Errors: an `InvalidData` error wrapping [`CompressionMismatch`] when the bytes do not match;
/// read and decompression errors.
fn decompress_stream(
    mut src: SpoolReader,
    compression: Compression,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> io::Result<(Digest, u64)> {
    let head = read_head(&mut src, XZ_MAGIC.len())?;
    if let Err(m) = check_compression(compression, &head) {
        let _ = tx.send(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            m.to_string(),
        )));
        return Err(io::Error::new(io::ErrorKind::InvalidData, m));
    }
    let chained = io::Cursor::new(head).chain(src);
    let mut dec: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(CHUNK, chained),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(chained)?),
        Compression::None => Box::new(chained),
    };
    let mut hasher = sha2::Sha256::new();
    let mut total = 0u64;
    let mut send_ok = true;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        // Fill a whole chunk to keep channel traffic low.
        while filled < CHUNK {
            match dec.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        hasher.update(&buf);
        total += filled as u64;
        // The applier may stop reading early (end-of-archive); keep hashing the rest.
        if send_ok && tx.send(Ok(buf)).is_err() {
            send_ok = false;
        }
    }
    Ok((Digest::sha256_from_bytes(&hasher.finalize()), total))
}

/// Unpacks one layer into `tmp/`, verifies its diff id and renames it into `layers/`.
fn apply_one(
    job: &LayerJob,
    reader: SpoolReader,
    lowers: &[PathBuf],
    layers_dir: &Path,
    tmp_dir: &Path,
    cancelled: &AtomicBool,
) -> Result<(), ImageError> {
    let tmp = tempfile::Builder::new()
        .prefix("layer-")
        .tempdir_in(tmp_dir)
        .map_err(|e| ImageError::io("create temp dir in", tmp_dir, e))?;
    let diff = tmp.path().join("diff");
    std::fs::create_dir(&diff).map_err(|e| ImageError::io("create directory", &diff, e))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let stream_err = |e: io::Error| ImageError::LayerStream {
        digest: job.digest.to_string(),
        source: e,
    };
    let (applied, decoded) = std::thread::scope(|s| {
        let dec = s.spawn(move || decompress_stream(reader, job.compression, tx));
        let mut chan = ChannelReader {
            rx,
            cur: Vec::new(),
            off: 0,
        };
        let applied = krio_layer::apply_layer(&mut chan, &diff, lowers);
        // Let the decompressor finish (it hashes the trailing bytes too).
        drop(chan);
        let decoded = dec
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("decompressor thread panicked")));
        (applied, decoded)
    });
    // A stream failure is the root cause of an apply failure: report it first.
    let (diff_id, uncompressed_size) = decoded.map_err(|e| {
        match e
            .get_ref()
            .and_then(|i| i.downcast_ref::<CompressionMismatch>())
        {
            Some(m) => ImageError::LayerMediaTypeMismatch {
                digest: job.digest.to_string(),
                media_type: job.media_type.clone(),
                expected: m.expected,
                found: m.found,
            },
            None => stream_err(e),
        }
    })?;
    let stats = applied.map_err(|e| ImageError::Layer {
        digest: job.digest.to_string(),
        source: e,
    })?;
    job.diff_id.verify(
        &diff_id,
        &format!("layer {} diff_id (uncompressed {})", job.index, job.digest),
    )?;
    let meta = LayerMeta {
        chain_id: job.chain_id.to_string(),
        diff_id: job.diff_id.to_string(),
        parent: job.parent.as_ref().map(|p| p.to_string()),
        compressed_digest: job.digest.to_string(),
        compressed_size: job.size,
        uncompressed_size,
        created_ns: now_ns(),
    };
    crate::test_hook("PullImage:unpacking");
    let meta_path = tmp.path().join("meta.json");
    let data = serde_json::to_vec_pretty(&meta).map_err(|e| ImageError::Metadata {
        path: meta_path.clone(),
        source: e,
    })?;
    std::fs::write(&meta_path, data).map_err(|e| ImageError::io("write", &meta_path, e))?;
    if cancelled.load(Ordering::SeqCst) {
        return Err(ImageError::Aborted {
            reference: String::new(),
            detail: "cancelled".into(),
        });
    }
    let dest = layers_dir.join(job.chain_id.hex());
    match std::fs::rename(tmp.path(), &dest) {
        Ok(()) => {
            // The TempDir guard must not delete the renamed directory.
            let _ = tmp.keep();
        }
        Err(_) if dest.join("meta.json").is_file() => {
            // A concurrent pull unpacked the same layer first; ours is dropped with `tmp`.
        }
        Err(e) => return Err(ImageError::io("rename layer into", dest, e)),
    }
    tracing::debug!(chain_id = %job.chain_id, entries = stats.entries, bytes = stats.bytes, "layer applied");
    Ok(())
}

#[cfg(test)]
#[path = "pull/tests.rs"]
mod tests;
