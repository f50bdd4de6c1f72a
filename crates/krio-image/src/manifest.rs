//! Manifest documents: media types, classification (with the OCI image-spec "guidance for
//! ambiguity" checks), and platform selection from an OCI index / Docker manifest list.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::digest::Digest;
use crate::error::ImageError;

/// OCI image manifest (image-spec `manifest.md`).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (image-spec `image-index.md`).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (schema 2 "fat manifest").
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (refused).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Signed Docker schema 1 (refused).
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header value for manifest requests (manifests and indexes, OCI and Docker).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Maximum accepted manifest / index size in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Maximum accepted image config size in bytes.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The compression of a layer, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// zstd (RFC 8878).
    Zstd,
}

/// Maps a layer media type to its compression.
///
/// Errors: [`ImageError::UnsupportedMediaType`] for foreign, encrypted or non-layer types.
pub fn layer_compression(media_type: &str, what: &str) -> Result<Compression, ImageError> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
        other => Err(ImageError::UnsupportedMediaType {
            media_type: other.to_string(),
            what: what.to_string(),
        }),
    }
}

/// An OCI platform (image-spec `image-index.md` `platform` object), normalized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// GOARCH-style architecture (`amd64`, `arm64`, `arm`, ...).
    pub architecture: String,
    /// CPU variant (`v8` for arm64 when absent, `v7` for arm when absent, else possibly empty).
    #[serde(default)]
    pub variant: String,
}

impl Platform {
    /// The platform of this host: `linux` and the GOARCH name of the compiled target
    /// (arm64 gets variant `v8`, 32-bit arm `v7`).
    pub fn host() -> Platform {
        Platform::new("linux", std::env::consts::ARCH, "")
    }

    /// A normalized platform (`x86_64` → `amd64`, `aarch64` → `arm64`+`v8`, arm default `v7`).
    pub fn new(os: &str, arch: &str, variant: &str) -> Platform {
        let os = os.to_ascii_lowercase();
        let (arch, mut variant) = match arch.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), variant.to_string()),
            "aarch64" | "arm64" => ("arm64".to_string(), variant.to_string()),
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "i386" | "x86" | "386" => ("386".to_string(), variant.to_string()),
            "powerpc64" | "ppc64le" => ("ppc64le".to_string(), variant.to_string()),
            a => (a.to_string(), variant.to_string()),
        };
        match arch.as_str() {
            "arm64" if variant.is_empty() || variant == "8" => variant = "v8".into(),
            "arm" if variant.is_empty() => variant = "v7".into(),
            "arm" if matches!(variant.as_str(), "5" | "6" | "7" | "8") => {
                variant = format!("v{variant}")
            }
            "amd64" if variant == "v1" => variant = String::new(),
            _ => {}
        }
        Platform {
            os,
            architecture: arch,
            variant,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// A content descriptor (image-spec `descriptor.md`), as found in manifests and indexes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The media type of the referenced content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Digest string (validated before use via [`Descriptor::digest`]).
    pub digest: String,
    /// Size of the content in bytes.
    pub size: i64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<RawPlatform>,
    /// Foreign-layer URLs (never followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// The validated digest; `field` names the descriptor in errors.
    ///
    /// Errors: [`ImageError::InvalidDigest`].
    pub fn digest(&self, field: &str) -> Result<Digest, ImageError> {
        Digest::parse(&self.digest, field)
    }

    /// The size as u64; negative sizes are an [`ImageError::InvalidManifest`].
    pub fn size(&self, reference: &str, field: &str) -> Result<u64, ImageError> {
        u64::try_from(self.size).map_err(|_| ImageError::InvalidManifest {
            reference: reference.to_string(),
            reason: format!("{field}.size is negative ({})", self.size),
        })
    }
}

/// A platform object as written in an index entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RawPlatform {
    /// `os`
    #[serde(default)]
    pub os: String,
    /// `architecture`
    #[serde(default)]
    pub architecture: String,
    /// `variant`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl RawPlatform {
    /// Normalized form.
    pub fn normalize(&self) -> Platform {
        Platform::new(
            &self.os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        )
    }
}

/// A classified manifest document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// An image manifest (OCI or Docker schema 2).
    Manifest {
        /// Its media type.
        media_type: String,
        /// The config descriptor.
        config: Descriptor,
        /// Layer descriptors, bottom first.
        layers: Vec<Descriptor>,
    },
    /// An OCI index or Docker manifest list.
    Index {
        /// Its media type.
        media_type: String,
        /// The entries.
        manifests: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct RawDoc {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(rename = "fsLayers", default)]
    fs_layers: Option<serde_json::Value>,
}

fn is_index_type(t: &str) -> bool {
    t == OCI_INDEX || t == DOCKER_MANIFEST_LIST
}

fn is_manifest_type(t: &str) -> bool {
    t == OCI_MANIFEST || t == DOCKER_MANIFEST
}

/// Classifies manifest bytes served with `content_type` (the HTTP `Content-Type`, parameters ignored).
///
/// Refuses Docker schema 1 ([`ImageError::UnsupportedMediaType`] naming the type), documents that
/// are both an index and a manifest, whose `mediaType` contradicts a manifest `Content-Type` or
/// their own structure ([`ImageError::InvalidManifest`]), and unknown types.
pub fn classify(
    reference: &str,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Document, ImageError> {
    let invalid = |reason: String| ImageError::InvalidManifest {
        reference: reference.to_string(),
        reason,
    };
    let ct = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty());
    if let Some(c) = ct.as_deref() {
        if c == DOCKER_SCHEMA1 || c == DOCKER_SCHEMA1_SIGNED {
            return Err(ImageError::UnsupportedMediaType {
                media_type: c.to_string(),
                what: format!("manifest of {reference} (Docker schema 1 is not supported)"),
            });
        }
    }
    // Strict JSON first: the typed parse below skips unknown members without checking them
    // (invalid UTF-8, lone surrogates), and a registry must not get that leniency.
    serde_json::from_slice::<serde_json::Value>(bytes)
        .map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    // Then the typed parse, which also refuses duplicate members (e.g. two `mediaType`s).
    let doc: RawDoc =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    if doc.schema_version == Some(1) || doc.fs_layers.is_some() {
        return Err(ImageError::UnsupportedMediaType {
            media_type: doc
                .media_type
                .clone()
                .unwrap_or_else(|| DOCKER_SCHEMA1_SIGNED.to_string()),
            what: format!("manifest of {reference} (Docker schema 1 is not supported)"),
        });
    }
    if doc.schema_version != Some(2) {
        return Err(invalid(format!(
            "schemaVersion must be 2, found {:?}",
            doc.schema_version
        )));
    }
    let has_manifests = doc.manifests.is_some();
    let has_image = doc.layers.is_some() || doc.config.is_some();
    if has_manifests && has_image {
        return Err(invalid(
            "ambiguous document: has both \"manifests\" and \"config\"/\"layers\"".into(),
        ));
    }
    let known = |t: &str| is_index_type(t) || is_manifest_type(t);
    if let (Some(m), Some(c)) = (doc.media_type.as_deref(), ct.as_deref()) {
        if known(c) && m != c {
            return Err(invalid(format!(
                "mediaType {m:?} contradicts Content-Type {c:?}"
            )));
        }
    }
    let media_type = match (doc.media_type.clone(), ct.clone()) {
        (Some(m), _) => m,
        (None, Some(c)) if known(&c) => c,
        // No usable type information: OCI allows omitting mediaType; infer from structure.
        (None, _) if has_manifests => OCI_INDEX.to_string(),
        (None, _) if has_image => OCI_MANIFEST.to_string(),
        (None, c) => {
            return Err(invalid(format!(
            "cannot tell the document type (Content-Type {c:?}, no mediaType, no manifests/layers)"
        )))
        }
    };
    if is_index_type(&media_type) {
        if has_image {
            return Err(invalid(format!(
                "ambiguous document: {media_type} has \"config\"/\"layers\""
            )));
        }
        Ok(Document::Index {
            media_type,
            manifests: doc.manifests.unwrap_or_default(),
        })
    } else if is_manifest_type(&media_type) {
        if has_manifests {
            return Err(invalid(format!(
                "ambiguous document: {media_type} has \"manifests\""
            )));
        }
        let config = doc
            .config
            .ok_or_else(|| invalid("manifest has no config".into()))?;
        Ok(Document::Manifest {
            media_type,
            config,
            layers: doc.layers.unwrap_or_default(),
        })
    } else {
        Err(ImageError::UnsupportedMediaType {
            media_type,
            what: format!("manifest of {reference}"),
        })
    }
}

/// How well `have` serves `want`: `None` = not usable, higher = better.
fn platform_score(want: &Platform, have: &Platform) -> Option<u32> {
    if want.os != have.os || want.architecture != have.architecture {
        return None;
    }
    if want.variant == have.variant {
        return Some(100);
    }
    // 32-bit arm is backwards compatible: a v7 host runs v6 and v5 images.
    if want.architecture == "arm" {
        let num = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        if let (Some(w), Some(h)) = (num(&want.variant), num(&have.variant)) {
            if h < w {
                return Some(50 + h);
            }
        }
        return None;
    }
    // amd64 micro-architecture levels: an unspecified host accepts only the baseline.
    None
}

/// Picks the index entry for `want` (OCI image-spec index `platform` matching): os and
/// architecture must match; an exact variant wins, older 32-bit arm variants are accepted;
/// arm64 entries without variant count as `v8`. Ties go to the first entry. Entries that are
/// not image manifests (e.g. nested indexes, attestations) are skipped.
///
/// Errors: [`ImageError::NoMatchingPlatform`] listing the available platforms.
pub fn select_platform<'a>(
    reference: &str,
    manifests: &'a [Descriptor],
    want: &Platform,
) -> Result<&'a Descriptor, ImageError> {
    let mut best: Option<(u32, &Descriptor)> = None;
    for m in manifests {
        if !m.media_type.is_empty() && !is_manifest_type(&m.media_type) {
            continue;
        }
        let Some(p) = &m.platform else { continue };
        if let Some(score) = platform_score(want, &p.normalize()) {
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, m));
            }
        }
    }
    best.map(|(_, m)| m)
        .ok_or_else(|| ImageError::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: want.to_string(),
            available: manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(|p| p.normalize().to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn entry(digest: &str, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 10,
            platform: Some(RawPlatform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
            urls: None,
            annotations: None,
        }
    }

    #[test]
    fn host_platform() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(h.architecture, "amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(
            (h.architecture.as_str(), h.variant.as_str()),
            ("arm64", "v8")
        );
    }

    #[test]
    fn platform_selection() {
        let list = vec![
            entry(D1, "linux", "arm", Some("v6")),
            entry(D2, "linux", "arm64", None),
            entry(D3, "linux", "amd64", None),
            entry(D1, "unknown", "unknown", None),
        ];
        let pick = |p: Platform| select_platform("r", &list, &p).map(|d| d.digest.clone());
        assert_eq!(pick(Platform::new("linux", "x86_64", "")).unwrap(), D3);
        assert_eq!(pick(Platform::new("linux", "aarch64", "")).unwrap(), D2);
        assert_eq!(pick(Platform::new("linux", "arm64", "v8")).unwrap(), D2);
        // a v7 host runs v6
        assert_eq!(pick(Platform::new("linux", "arm", "v7")).unwrap(), D1);
        // v5 host cannot run v6
        assert!(matches!(
            pick(Platform::new("linux", "arm", "v5")),
            Err(ImageError::NoMatchingPlatform { .. })
        ));
        let e = pick(Platform::new("linux", "s390x", "")).unwrap_err();
        assert!(e.to_string().contains("linux/arm64/v8"), "{e}");
        assert!(pick(Platform::new("windows", "amd64", "")).is_err());

        // exact variant preferred over older one
        let list = vec![
            entry(D1, "linux", "arm", Some("v6")),
            entry(D2, "linux", "arm", Some("v7")),
        ];
        assert_eq!(
            select_platform("r", &list, &Platform::new("linux", "arm", "v7"))
                .unwrap()
                .digest,
            D2
        );
        // arm64 with explicit v8 entry vs host without variant
        let list = vec![entry(D1, "linux", "arm64", Some("v8"))];
        assert!(select_platform("r", &list, &Platform::new("linux", "arm64", "")).is_ok());
        // first of equal matches wins; nested indexes are skipped
        let mut nested = entry(D1, "linux", "amd64", None);
        nested.media_type = OCI_INDEX.into();
        let list = vec![
            nested,
            entry(D2, "linux", "amd64", None),
            entry(D3, "linux", "amd64", None),
        ];
        assert_eq!(
            select_platform("r", &list, &Platform::new("linux", "amd64", ""))
                .unwrap()
                .digest,
            D2
        );
    }

    fn json(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn classify_documents() {
        let cfg = serde_json::json!({"mediaType": OCI_CONFIG, "digest": D1, "size": 2});
        let layer = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 3});
        let m = json(
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [layer]}),
        );
        match classify("r", Some(OCI_MANIFEST), &m).unwrap() {
            Document::Manifest { layers, .. } => assert_eq!(layers.len(), 1),
            d => panic!("{d:?}"),
        }
        // no mediaType, typed by Content-Type
        let m2 = json(serde_json::json!({"schemaVersion": 2, "config": cfg, "layers": []}));
        assert!(matches!(
            classify("r", Some(DOCKER_MANIFEST), &m2).unwrap(),
            Document::Manifest { media_type, .. } if media_type == DOCKER_MANIFEST
        ));
        // no type information at all: inferred
        assert!(matches!(
            classify("r", Some("application/octet-stream"), &m2).unwrap(),
            Document::Manifest { media_type, .. } if media_type == OCI_MANIFEST
        ));
        let idx =
            json(serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}));
        assert!(matches!(
            classify(
                "r",
                Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
                &idx
            )
            .unwrap(),
            Document::Index { .. }
        ));
    }

    #[test]
    fn classify_refusals() {
        let cfg = serde_json::json!({"mediaType": OCI_CONFIG, "digest": D1, "size": 2});
        // ambiguous: both manifests and layers
        let amb = json(
            serde_json::json!({"schemaVersion": 2, "manifests": [], "layers": [], "config": cfg}),
        );
        assert!(
            matches!(classify("r", None, &amb), Err(ImageError::InvalidManifest { reason, .. }) if reason.contains("ambiguous"))
        );
        // index type with layers
        let amb2 =
            json(serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "layers": []}));
        assert!(
            matches!(classify("r", None, &amb2), Err(ImageError::InvalidManifest { reason, .. }) if reason.contains("ambiguous"))
        );
        // manifest type with manifests
        let amb3 = json(
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "manifests": []}),
        );
        assert!(matches!(
            classify("r", None, &amb3),
            Err(ImageError::InvalidManifest { .. })
        ));
        // contradicting content type
        let m = json(
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": []}),
        );
        assert!(matches!(
            classify("r", Some(OCI_INDEX), &m),
            Err(ImageError::InvalidManifest { .. })
        ));
        // schema 1 by content type and by body
        let s1 = json(serde_json::json!({"schemaVersion": 1, "name": "x", "fsLayers": []}));
        match classify("r", Some(DOCKER_SCHEMA1_SIGNED), &s1) {
            Err(ImageError::UnsupportedMediaType { media_type, .. }) => {
                assert_eq!(media_type, DOCKER_SCHEMA1_SIGNED)
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            classify("r", Some("application/json"), &s1),
            Err(ImageError::UnsupportedMediaType { .. })
        ));
        // unknown type
        let art = json(
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.cncf.helm.chart", "config": cfg, "layers": []}),
        );
        assert!(matches!(
            classify("r", None, &art),
            Err(ImageError::UnsupportedMediaType { .. })
        ));
        assert!(matches!(
            classify("r", None, b"{not json"),
            Err(ImageError::InvalidManifest { .. })
        ));
        assert!(matches!(
            classify("r", None, b"{\"schemaVersion\":2}"),
            Err(ImageError::InvalidManifest { .. })
        ));
    }

    #[test]
    fn layer_types() {
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip", "l").unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd", "l").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar", "l").unwrap(),
            Compression::None
        );
        assert!(layer_compression(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "l"
        )
        .is_err());
        assert!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", "l")
                .is_err()
        );
    }
}
