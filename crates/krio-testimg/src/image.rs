//! Image configs, manifests and indexes (OCI image spec `config.md`, `manifest.md`, `image-index.md`;
//! Docker image manifest v2 schema 2), and writing them as an OCI image layout (`image-layout.md`).
//!
//! All JSON is serialised from structs with a fixed field order and no maps with random order, so the
//! bytes (and therefore the digests) are stable across runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::{Compression, Layer};

/// Media type constants (OCI image spec `media-types.md`, Docker schema 2).
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Every manifest/index type this crate produces, for an HTTP `Accept` header.
    pub const ALL_MANIFESTS: &[&str] = &[
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
}

/// Timestamp written into configs (`created`, `history[].created`), RFC 3339; matches [`crate::layer::LAYER_MTIME`].
pub const CREATED: &str = "2024-01-01T00:00:00Z";

/// Default `PATH` put into every test image's `config.Env`.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Annotation carrying a tag name in an OCI layout's `index.json` (`annotations.md`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Which manifest flavour to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestFormat {
    /// Docker image manifest v2 schema 2 with Docker config/layer media types (gzip layers only).
    Docker,
    /// OCI image manifest v1 with OCI media types.
    Oci,
}

impl ManifestFormat {
    /// Lowercase name ("docker", "oci").
    pub fn name(self) -> &'static str {
        match self {
            ManifestFormat::Docker => "docker",
            ManifestFormat::Oci => "oci",
        }
    }

    /// The manifest media type.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Docker => media_types::DOCKER_MANIFEST,
            ManifestFormat::Oci => media_types::OCI_MANIFEST,
        }
    }

    /// The config media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Docker => media_types::DOCKER_CONFIG,
            ManifestFormat::Oci => media_types::OCI_CONFIG,
        }
    }

    /// The layer media type for `compression`, or `None` if this format has no such type
    /// (Docker schema 2 only defines gzip layers).
    pub fn layer_media_type(self, compression: Compression) -> Option<&'static str> {
        match (self, compression) {
            (ManifestFormat::Docker, Compression::Gzip) => Some(media_types::DOCKER_LAYER_GZIP),
            (ManifestFormat::Docker, _) => None,
            (ManifestFormat::Oci, Compression::None) => Some(media_types::OCI_LAYER_TAR),
            (ManifestFormat::Oci, Compression::Gzip) => Some(media_types::OCI_LAYER_GZIP),
            (ManifestFormat::Oci, Compression::Zstd) => Some(media_types::OCI_LAYER_ZSTD),
        }
    }
}

/// A platform as in `image-index.md` (`platform` object) and `config.md` (`architecture`, `os`, `variant`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    /// GOARCH-style architecture: `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// GOOS-style OS: `linux`.
    pub os: String,
    /// CPU variant (`v8` for arm64, `v7` for arm), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Builds a platform from parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The platform this process runs on, mapped from Rust's `target_arch` to GOARCH names
    /// (`x86_64`→`amd64`, `aarch64`→`arm64`/`v8`, `arm`→`arm`/`v7`, others verbatim); `os` is `linux`.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform::new("linux", arch, variant)
    }

    /// `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
    pub fn to_slash_string(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// What goes into an image config's `config` object (OCI `config.md` "Properties" / Docker `container_config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Platform recorded in the config.
    pub platform: Platform,
    /// `config.Env`, `KEY=value` strings.
    pub env: Vec<String>,
    /// `config.Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `config.Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `config.WorkingDir` (absolute), if set.
    pub working_dir: Option<String>,
    /// `config.User`, if set.
    pub user: Option<String>,
    /// `config.StopSignal` (e.g. `SIGUSR1`), if set.
    pub stop_signal: Option<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// `created_by` text per layer in `history` (one per layer; missing ones get a generic text).
    pub history: Vec<String>,
}

impl ImageSpec {
    /// Host platform, `Env` = [`DEFAULT_PATH_ENV`], `Cmd` = `cmd`, `WorkingDir` = `/`.
    pub fn with_cmd(cmd: &[&str]) -> Self {
        ImageSpec {
            platform: Platform::host(),
            env: vec![DEFAULT_PATH_ENV.to_owned()],
            entrypoint: None,
            cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
            working_dir: Some("/".to_owned()),
            user: None,
            stop_signal: None,
            labels: BTreeMap::new(),
            history: Vec::new(),
        }
    }
}

/// A content descriptor (`descriptor.md`), as serialised in manifests and indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced bytes.
    pub digest: Digest,
    /// Size of the referenced bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (OCI layout `index.json` entries carry the ref name here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    created: &'a str,
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    config: ContainerConfigJson<'a>,
    rootfs: RootFsJson<'a>,
    history: Vec<HistoryJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfigJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootFsJson<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a Digest>,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    created: &'a str,
    created_by: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: &'a [Descriptor],
}

fn to_json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|source| Error::Json {
        what: what.to_owned(),
        source,
    })
}

/// A complete single-platform image: config blob, layer blobs and the manifest that ties them together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Manifest flavour.
    pub format: ManifestFormat,
    /// Platform the config declares.
    pub platform: Platform,
    /// Config JSON bytes.
    pub config: Vec<u8>,
    /// Digest of `config`.
    pub config_digest: Digest,
    /// Layers, lowest first (order of `rootfs.diff_ids` and `manifest.layers`).
    pub layers: Vec<Layer>,
    /// Manifest JSON bytes.
    pub manifest: Vec<u8>,
    /// Digest of `manifest` (what a registry returns as `Docker-Content-Digest`).
    pub manifest_digest: Digest,
}

impl Image {
    /// Builds config and manifest for `layers` (lowest first).
    ///
    /// # Errors
    /// [`Error::UnsupportedCompression`] if a layer's compression has no media type in `format` (Docker needs gzip);
    /// [`Error::Json`] if serialisation fails.
    pub fn build(format: ManifestFormat, spec: &ImageSpec, layers: Vec<Layer>) -> Result<Image> {
        let history: Vec<HistoryJson<'_>> = (0..layers.len())
            .map(|i| HistoryJson {
                created: CREATED,
                created_by: spec
                    .history
                    .get(i)
                    .map(String::as_str)
                    .unwrap_or("krio-testimg layer"),
            })
            .collect();
        let cfg = ConfigJson {
            created: CREATED,
            architecture: &spec.platform.architecture,
            variant: spec.platform.variant.as_deref(),
            os: &spec.platform.os,
            config: ContainerConfigJson {
                user: spec.user.as_deref(),
                env: &spec.env,
                entrypoint: spec.entrypoint.as_deref(),
                cmd: spec.cmd.as_deref(),
                working_dir: spec.working_dir.as_deref(),
                stop_signal: spec.stop_signal.as_deref(),
                labels: &spec.labels,
            },
            rootfs: RootFsJson {
                kind: "layers",
                diff_ids: layers.iter().map(|l| &l.diff_id).collect(),
            },
            history,
        };
        let config = to_json("image config", &cfg)?;
        let config_digest = Digest::of(&config);
        let mut layer_descs = Vec::with_capacity(layers.len());
        for l in &layers {
            let mt =
                format
                    .layer_media_type(l.compression)
                    .ok_or(Error::UnsupportedCompression {
                        format: format.name(),
                        compression: l.compression.name(),
                    })?;
            layer_descs.push(Descriptor {
                media_type: mt.to_owned(),
                digest: l.digest.clone(),
                size: l.size(),
                platform: None,
                annotations: None,
            });
        }
        let m = ManifestJson {
            schema_version: 2,
            media_type: format.manifest_media_type(),
            config: Descriptor {
                media_type: format.config_media_type().to_owned(),
                digest: config_digest.clone(),
                size: config.len() as u64,
                platform: None,
                annotations: None,
            },
            layers: layer_descs,
        };
        let manifest = to_json("image manifest", &m)?;
        Ok(Image {
            format,
            platform: spec.platform.clone(),
            manifest_digest: Digest::of(&manifest),
            manifest,
            config_digest,
            config,
            layers,
        })
    }

    /// The manifest media type.
    pub fn media_type(&self) -> &'static str {
        self.format.manifest_media_type()
    }

    /// Descriptor of the manifest, with `platform` set (for an index entry).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type().to_owned(),
            digest: self.manifest_digest.clone(),
            size: self.manifest.len() as u64,
            platform: Some(self.platform.clone()),
            annotations: None,
        }
    }

    /// All blobs this manifest references (config first, then layers), as `(digest, bytes)`.
    pub fn blobs(&self) -> Vec<(&Digest, &[u8])> {
        std::iter::once((&self.config_digest, self.config.as_slice()))
            .chain(self.layers.iter().map(|l| (&l.digest, l.blob.as_slice())))
            .collect()
    }
}

/// An OCI image index over several platform images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The images, in index order.
    pub images: Vec<Image>,
    /// Index JSON bytes.
    pub json: Vec<u8>,
    /// Digest of `json`.
    pub digest: Digest,
}

impl Index {
    /// Builds an OCI image index (`application/vnd.oci.image.index.v1+json`) listing `images` with
    /// their platforms, in the given order.
    ///
    /// # Errors
    /// [`Error::Json`] if serialisation fails.
    pub fn build(images: Vec<Image>) -> Result<Index> {
        let manifests: Vec<Descriptor> = images.iter().map(Image::descriptor).collect();
        let json = to_json(
            "image index",
            &IndexJson {
                schema_version: 2,
                media_type: media_types::OCI_INDEX,
                manifests: &manifests,
            },
        )?;
        Ok(Index {
            images,
            digest: Digest::of(&json),
            json,
        })
    }

    /// The image for `platform` (exact match on os, architecture and variant), if listed.
    pub fn image_for(&self, platform: &Platform) -> Option<&Image> {
        self.images.iter().find(|i| &i.platform == platform)
    }
}

/// What one tag points at: a single image or an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifact {
    /// A single-platform image.
    Image(Image),
    /// A multi-platform index.
    Index(Index),
}

impl Artifact {
    /// Media type of the top-level manifest/index.
    pub fn media_type(&self) -> &'static str {
        match self {
            Artifact::Image(i) => i.media_type(),
            Artifact::Index(_) => media_types::OCI_INDEX,
        }
    }

    /// Top-level manifest/index bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        match self {
            Artifact::Image(i) => &i.manifest,
            Artifact::Index(x) => &x.json,
        }
    }

    /// Digest of [`Artifact::manifest_bytes`].
    pub fn digest(&self) -> &Digest {
        match self {
            Artifact::Image(i) => &i.manifest_digest,
            Artifact::Index(x) => &x.digest,
        }
    }

    /// The image a runtime on the host platform would pick ([`Platform::host`]).
    pub fn host_image(&self) -> Option<&Image> {
        match self {
            Artifact::Image(i) => Some(i),
            Artifact::Index(x) => x.image_for(&Platform::host()),
        }
    }

    /// Every image contained (one for an image, all entries for an index).
    pub fn images(&self) -> Vec<&Image> {
        match self {
            Artifact::Image(i) => vec![i],
            Artifact::Index(x) => x.images.iter().collect(),
        }
    }
}

/// Writes `items` (tag name, artifact) into an OCI image layout at `dir` (created if missing):
/// `oci-layout`, `blobs/sha256/<hex>` for every manifest, config and layer, and `index.json` listing
/// each artifact with annotation [`REF_NAME_ANNOTATION`] = its tag name (e.g. `krio-test/busybox:latest`).
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written; [`Error::Json`].
pub fn write_oci_layout(dir: &Path, items: &[(&str, &Artifact)]) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let put = |d: &Digest, data: &[u8]| -> Result<()> {
        let p = blobs.join(d.hex());
        if !p.exists() {
            std::fs::write(&p, data).map_err(io(&p))?;
        }
        Ok(())
    };
    let mut top = Vec::new();
    for (name, art) in items {
        for img in art.images() {
            for (d, data) in img.blobs() {
                put(d, data)?;
            }
            put(&img.manifest_digest, &img.manifest)?;
        }
        put(art.digest(), art.manifest_bytes())?;
        top.push(Descriptor {
            media_type: art.media_type().to_owned(),
            digest: art.digest().clone(),
            size: art.manifest_bytes().len() as u64,
            platform: None,
            annotations: Some(BTreeMap::from([(
                REF_NAME_ANNOTATION.to_owned(),
                (*name).to_owned(),
            )])),
        });
    }
    let layout = dir.join("oci-layout");
    std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&layout))?;
    let index = to_json(
        "layout index.json",
        &IndexJson {
            schema_version: 2,
            media_type: media_types::OCI_INDEX,
            manifests: &top,
        },
    )?;
    let index_path = dir.join("index.json");
    std::fs::write(&index_path, index).map_err(io(&index_path))?;
    Ok(())
}
