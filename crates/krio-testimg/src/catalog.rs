//! The project's test images, built from the host's busybox-static.
//!
//! | name | repository | what |
//! |---|---|---|
//! | `busybox` | `krio-test/busybox` | one gzip layer, Docker schema 2 manifest |
//! | `busybox-oci` | `krio-test/busybox-oci` | same layer, OCI manifest |
//! | `busybox-index` | `krio-test/busybox-index` | OCI index: linux/arm64/v8, linux/amd64, linux/arm/v7 (host entry real, others dummies) |
//! | `layered` | `krio-test/layered` | two layers with whiteouts and an opaque dir, see [`LAYERED_FILES`] |
//! | `pause` | `krio-test/pause` | sandbox image, entrypoint [`PAUSE_ENTRYPOINT`] |
//! | `zstd` | `krio-test/zstd` | busybox with a zstd layer (OCI) |
//! | `uncompressed` | `krio-test/uncompressed` | busybox with an uncompressed tar layer (OCI) |
//! | `stopsignal` | `krio-test/stopsignal` | busybox whose config says `StopSignal: SIGUSR1`, entrypoint [`STOPSIGNAL_ENTRYPOINT`] |
//!
//! The busybox layer holds `/bin/busybox` (copied from the host) with every applet of `busybox --list`
//! as a hard link in `/bin`, `/etc/passwd` and `/etc/group` (root 0, krio 1000, nobody 65534),
//! `/tmp` (1777), `/root` (0700), `/home`, and empty `/dev`, `/proc`, `/sys` mount points.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::image::{Artifact, Image, ImageSpec, Index, ManifestFormat, Platform};
use crate::layer::{Compression, Layer, LayerBuilder};

/// Where the host's busybox-static lives on Debian (`busybox-static` package).
pub const HOST_BUSYBOX: &str = "/bin/busybox";
/// Repository namespace of all test images.
pub const REPOSITORY_PREFIX: &str = "krio-test/";
/// Tag of all test images.
pub const TAG: &str = "latest";

/// Name of the Docker schema 2 busybox image.
pub const BUSYBOX: &str = "busybox";
/// Name of the OCI busybox image.
pub const BUSYBOX_OCI: &str = "busybox-oci";
/// Name of the multi-platform index image.
pub const BUSYBOX_INDEX: &str = "busybox-index";
/// Name of the two-layer whiteout image.
pub const LAYERED: &str = "layered";
/// Name of the sandbox (pause) image.
pub const PAUSE: &str = "pause";
/// Name of the zstd-layer image.
pub const ZSTD: &str = "zstd";
/// Name of the uncompressed-layer image.
pub const UNCOMPRESSED: &str = "uncompressed";

/// Name of the image whose config sets `StopSignal` to `SIGUSR1`.
pub const STOPSIGNAL: &str = "stopsignal";

/// Name of the image-volume image (CRI `Mount.image`): two layers of plain files and symlinks
/// that point out of it, no runnable command. See [`Catalog::volume_layers`].
pub const VOLUME: &str = "volume";

/// Entrypoint of the stopsignal image: prints `ready` once its trap is set, exits 0 on SIGUSR1 and ignores
/// SIGTERM, so only the image's stop signal stops it cleanly.
pub const STOPSIGNAL_ENTRYPOINT: &[&str] = &[
    "/bin/sh",
    "-c",
    "trap 'echo got-usr1; exit 0' USR1; trap '' TERM; echo ready; while :; do sleep 0.1; done",
];

/// Every image name, in build/push order.
pub const IMAGE_NAMES: &[&str] = &[
    BUSYBOX,
    BUSYBOX_OCI,
    BUSYBOX_INDEX,
    LAYERED,
    PAUSE,
    ZSTD,
    UNCOMPRESSED,
    STOPSIGNAL,
    VOLUME,
];

/// `/etc/passwd` of the busybox layer.
pub const ETC_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
krio:x:1000:1000:krio:/home/krio:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// `/etc/group` of the busybox layer.
pub const ETC_GROUP: &str = "root:x:0:\nkrio:x:1000:\nnobody:x:65534:\n";

/// Entrypoint of the pause image: a shell that sleeps until SIGTERM/SIGINT, then exits 0.
pub const PAUSE_ENTRYPOINT: &[&str] = &[
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
];

/// `Cmd` of the busybox-based images.
pub const BUSYBOX_CMD: &[&str] = &["sh"];

/// Files of `krio-test/layered` (path relative to the rootfs, content) that the merged view must show.
/// Besides these, everything of the busybox layer is present.
pub const LAYERED_FILES: &[(&str, &str)] = &[
    ("data/added.txt", "added"),
    ("data/change.txt", "new"),
    ("data/keep.txt", "keep"),
    ("opaque/c.txt", "c"),
];

/// Paths of `krio-test/layered` that must NOT exist in the merged view (deleted by a whiteout, hidden by
/// the opaque directory, or whiteout markers that must not leak into the rootfs).
pub const LAYERED_ABSENT: &[&str] = &[
    "data/remove.txt",
    "data/.wh.remove.txt",
    "opaque/a.txt",
    "opaque/b.txt",
    "opaque/.wh..wh..opq",
];

/// Exact directory listings (sorted names) of `krio-test/layered`'s merged view.
pub const LAYERED_DIRS: &[(&str, &[&str])] = &[
    ("data", &["added.txt", "change.txt", "keep.txt"]),
    ("opaque", &["c.txt"]),
];

/// Platforms listed in `krio-test/busybox-index`, in index order. The entry equal to
/// [`Platform::host`] is the real busybox OCI image; the others are small non-runnable dummies whose
/// only file is `/DUMMY`. If the host is none of these, a real host entry is appended.
pub const INDEX_PLATFORMS: &[(&str, &str, Option<&str>)] = &[
    ("linux", "arm64", Some("v8")),
    ("linux", "amd64", None),
    ("linux", "arm", Some("v7")),
];

/// A built test image with its repository and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestImage {
    /// Catalogue name, one of [`IMAGE_NAMES`].
    pub name: &'static str,
    /// Repository path under the registry, e.g. `krio-test/busybox`.
    pub repository: String,
    /// Tag ([`TAG`]).
    pub tag: &'static str,
    /// The manifest/index and its blobs.
    pub artifact: Artifact,
}

impl TestImage {
    /// Full reference `registry/repository:tag`, e.g. `127.0.0.1:5000/krio-test/busybox:latest`.
    pub fn reference(&self, registry: &str) -> String {
        format!(
            "{}/{}:{}",
            registry.trim_end_matches('/'),
            self.repository,
            self.tag
        )
    }
}

/// Repository of a catalogue name: `krio-test/<name>`.
pub fn repository(name: &str) -> String {
    format!("{REPOSITORY_PREFIX}{name}")
}

/// Runs `<busybox> --list` and returns the applet names (excluding `busybox` itself), sorted.
///
/// # Errors
/// [`Error::BusyboxList`] if it cannot run, fails, or prints a name that is not a plain file name.
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let err = |reason: String| Error::BusyboxList {
        busybox: busybox.to_path_buf(),
        reason,
    };
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| err(format!("cannot run: {e}")))?;
    if !out.status.success() {
        return Err(err(format!("exited with {}", out.status)));
    }
    let text = String::from_utf8(out.stdout).map_err(|_| err("output is not UTF-8".into()))?;
    let mut names = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains('/') || line == "." || line == ".." || line.contains('\0') {
            return Err(err(format!("bad applet name {line:?}")));
        }
        if line != "busybox" {
            names.push(line.to_owned());
        }
    }
    if names.is_empty() {
        return Err(err("no applets listed".into()));
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Builds the catalogue's images. Holds the busybox base layer so it is rendered and compressed once.
#[derive(Debug)]
pub struct Catalog {
    busybox: PathBuf,
    applets: Vec<String>,
    base: LayerBuilder,
    base_gzip: OnceLock<Layer>,
}

impl Catalog {
    /// Uses the host's [`HOST_BUSYBOX`].
    ///
    /// # Errors
    /// As [`Catalog::new`].
    pub fn from_host() -> Result<Self> {
        Self::new(Path::new(HOST_BUSYBOX))
    }

    /// Reads `busybox` (must be a static binary runnable on this host) and lists its applets.
    ///
    /// # Errors
    /// [`Error::Io`] if the binary cannot be read; [`Error::BusyboxList`] if `--list` fails.
    pub fn new(busybox: &Path) -> Result<Self> {
        let bin = std::fs::read(busybox).map_err(|source| Error::Io {
            path: busybox.to_path_buf(),
            source,
        })?;
        let applets = busybox_applets(busybox)?;
        let mut base = LayerBuilder::new();
        base.dir("bin", 0o755)?
            .file("bin/busybox", 0o755, bin)?
            .dir("dev", 0o755)?
            .dir("etc", 0o755)?
            .file("etc/passwd", 0o644, ETC_PASSWD)?
            .file("etc/group", 0o644, ETC_GROUP)?
            .dir("home", 0o755)?
            .dir("proc", 0o555)?
            .dir("root", 0o700)?
            .dir("sys", 0o555)?
            .dir("tmp", 0o1777)?;
        for a in &applets {
            base.hard_link(&format!("bin/{a}"), "bin/busybox")?;
        }
        Ok(Catalog {
            busybox: busybox.to_path_buf(),
            applets,
            base,
            base_gzip: OnceLock::new(),
        })
    }

    /// The busybox binary this catalogue was built from.
    pub fn busybox_path(&self) -> &Path {
        &self.busybox
    }

    /// Applet names (each is `/bin/<name>`, a hard link to `/bin/busybox`).
    pub fn applets(&self) -> &[String] {
        &self.applets
    }

    /// The busybox base layer's entries.
    pub fn base_layer(&self) -> &LayerBuilder {
        &self.base
    }

    fn base_gzip(&self) -> Result<Layer> {
        if let Some(l) = self.base_gzip.get() {
            return Ok(l.clone());
        }
        let l = self.base.build(Compression::Gzip)?;
        Ok(self.base_gzip.get_or_init(|| l).clone())
    }

    fn busybox_image(&self, format: ManifestFormat, layer: Layer) -> Result<Image> {
        let mut spec = ImageSpec::with_cmd(BUSYBOX_CMD);
        spec.history = vec!["krio-testimg busybox layer".into()];
        Image::build(format, &spec, vec![layer])
    }

    /// The two layers of `krio-test/layered`, lowest first (uncompressed builders).
    ///
    /// # Errors
    /// Only on internal path conflicts ([`Error::DuplicateEntry`]).
    pub fn layered_layers(&self) -> Result<[LayerBuilder; 2]> {
        let mut l1 = self.base.clone();
        l1.file("data/keep.txt", 0o644, "keep")?
            .file("data/remove.txt", 0o644, "remove")?
            .file("data/change.txt", 0o644, "old")?
            .file("opaque/a.txt", 0o644, "a")?
            .file("opaque/b.txt", 0o644, "b")?;
        let mut l2 = LayerBuilder::new();
        l2.whiteout("data/remove.txt")?
            .file("data/change.txt", 0o644, "new")?
            .file("data/added.txt", 0o644, "added")?
            .opaque("opaque")?
            .file("opaque/c.txt", 0o644, "c")?;
        Ok([l1, l2])
    }

    /// The two layers of `krio-test/volume`, lowest first (uncompressed builders): the merged
    /// view has `files/a.txt` (`a`), `files/b.txt` (`b`; `files/gone.txt` of the first layer
    /// is whited out), `etc/in-image.txt` (`in-image`), and two symlinks that would leave the
    /// image if resolved on the host: `escape-abs` → `/etc` and `escape-rel` →
    /// `../../../../../../etc`. Resolved inside the image, both name its own `etc`.
    ///
    /// # Errors
    /// Only on internal path conflicts ([`Error::DuplicateEntry`]).
    pub fn volume_layers(&self) -> Result<[LayerBuilder; 2]> {
        let mut l1 = LayerBuilder::new();
        l1.dir("files", 0o755)?
            .file("files/a.txt", 0o644, "a")?
            .file("files/gone.txt", 0o644, "gone")?
            .dir("etc", 0o755)?
            .file("etc/in-image.txt", 0o644, "in-image")?
            .symlink("escape-abs", "/etc")?;
        let mut l2 = LayerBuilder::new();
        l2.whiteout("files/gone.txt")?
            .file("files/b.txt", 0o644, "b")?
            .symlink("escape-rel", "../../../../../../etc")?;
        Ok([l1, l2])
    }

    fn dummy_image(&self, platform: Platform) -> Result<Image> {
        let mut l = LayerBuilder::new();
        l.file(
            "DUMMY",
            0o644,
            format!(
                "krio-testimg dummy image for {}; not runnable\n",
                platform.to_slash_string()
            ),
        )?;
        let mut spec = ImageSpec::with_cmd(&["/DUMMY"]);
        spec.platform = platform;
        spec.history = vec!["krio-testimg dummy layer".into()];
        Image::build(
            ManifestFormat::Oci,
            &spec,
            vec![l.build(Compression::Gzip)?],
        )
    }

    /// Builds one image by catalogue name.
    ///
    /// # Errors
    /// [`Error::UnknownImage`] if `name` is not in [`IMAGE_NAMES`]; build errors otherwise.
    pub fn build(&self, name: &str) -> Result<TestImage> {
        let (name, artifact) = match name {
            BUSYBOX => (
                BUSYBOX,
                Artifact::Image(self.busybox_image(ManifestFormat::Docker, self.base_gzip()?)?),
            ),
            BUSYBOX_OCI => (
                BUSYBOX_OCI,
                Artifact::Image(self.busybox_image(ManifestFormat::Oci, self.base_gzip()?)?),
            ),
            ZSTD => (
                ZSTD,
                Artifact::Image(
                    self.busybox_image(ManifestFormat::Oci, self.base.build(Compression::Zstd)?)?,
                ),
            ),
            UNCOMPRESSED => (
                UNCOMPRESSED,
                Artifact::Image(
                    self.busybox_image(ManifestFormat::Oci, self.base.build(Compression::None)?)?,
                ),
            ),
            BUSYBOX_INDEX => {
                let host = Platform::host();
                let mut images = Vec::new();
                let mut saw_host = false;
                for (os, arch, variant) in INDEX_PLATFORMS {
                    let p = Platform::new(os, arch, *variant);
                    if p == host {
                        saw_host = true;
                        images.push(self.busybox_image(ManifestFormat::Oci, self.base_gzip()?)?);
                    } else {
                        images.push(self.dummy_image(p)?);
                    }
                }
                if !saw_host {
                    images.push(self.busybox_image(ManifestFormat::Oci, self.base_gzip()?)?);
                }
                (BUSYBOX_INDEX, Artifact::Index(Index::build(images)?))
            }
            LAYERED => {
                let [l1, l2] = self.layered_layers()?;
                let mut spec = ImageSpec::with_cmd(BUSYBOX_CMD);
                spec.history = vec![
                    "krio-testimg layered: busybox + /data + /opaque".into(),
                    "krio-testimg layered: whiteout, change, opaque dir, add".into(),
                ];
                let layers = vec![l1.build(Compression::Gzip)?, l2.build(Compression::Gzip)?];
                (
                    LAYERED,
                    Artifact::Image(Image::build(ManifestFormat::Oci, &spec, layers)?),
                )
            }
            PAUSE => {
                let mut spec = ImageSpec::with_cmd(&[]);
                spec.cmd = None;
                spec.entrypoint = Some(PAUSE_ENTRYPOINT.iter().map(|s| (*s).to_owned()).collect());
                spec.history = vec!["krio-testimg busybox layer".into()];
                (
                    PAUSE,
                    Artifact::Image(Image::build(
                        ManifestFormat::Oci,
                        &spec,
                        vec![self.base_gzip()?],
                    )?),
                )
            }
            STOPSIGNAL => {
                let mut spec = ImageSpec::with_cmd(&[]);
                spec.cmd = None;
                spec.entrypoint = Some(
                    STOPSIGNAL_ENTRYPOINT
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect(),
                );
                spec.stop_signal = Some("SIGUSR1".to_owned());
                spec.history = vec!["krio-testimg busybox layer".into()];
                (
                    STOPSIGNAL,
                    Artifact::Image(Image::build(
                        ManifestFormat::Oci,
                        &spec,
                        vec![self.base_gzip()?],
                    )?),
                )
            }
            VOLUME => {
                let [l1, l2] = self.volume_layers()?;
                let mut spec = ImageSpec::with_cmd(&[]);
                spec.cmd = None;
                spec.history = vec![
                    "krio-testimg volume: files, etc and a symlink to /etc".into(),
                    "krio-testimg volume: whiteout, a file and a relative escape".into(),
                ];
                let layers = vec![l1.build(Compression::Gzip)?, l2.build(Compression::Gzip)?];
                (
                    VOLUME,
                    Artifact::Image(Image::build(ManifestFormat::Oci, &spec, layers)?),
                )
            }
            other => {
                return Err(Error::UnknownImage {
                    name: other.to_owned(),
                    known: IMAGE_NAMES.join(", "),
                })
            }
        };
        Ok(TestImage {
            name,
            repository: repository(name),
            tag: TAG,
            artifact,
        })
    }

    /// Builds every image of [`IMAGE_NAMES`], in that order.
    ///
    /// # Errors
    /// As [`Catalog::build`].
    pub fn build_all(&self) -> Result<Vec<TestImage>> {
        IMAGE_NAMES.iter().map(|n| self.build(n)).collect()
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
