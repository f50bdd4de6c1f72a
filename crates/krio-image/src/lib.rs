//! The image side of the CRI `ImageService`, as a library (no gRPC here):
//!
//! * [`Reference`]: image references per the distribution reference grammar, normalized like
//!   Docker (`busybox` = `docker.io/library/busybox:latest`);
//! * a registry client (OCI distribution API: bearer/basic auth, manifests, streaming blobs;
//!   plain HTTP for loopback and configured insecure registries, mirrors, retries with
//!   backoff and a no-progress timeout);
//! * [`RegistryConfig`]: containers-registries.conf(5) v2 (prefixes, mirrors, insecure,
//!   blocked, short-name aliases and search registries) and a Docker-style auth file;
//! * [`ImageStore`]: content store (`blobs/`), layer store (`layers/<chain-id>/diff`, overlayfs
//!   lower dirs unpacked by `krio_layer`) and image records (`images/<id>.json`), with
//!   streaming, verified, parallel pulls ([`ImageStore::pull`]).

mod authfile;
mod config;
mod digest;
mod error;
mod manifest;
mod pull;
mod reference;
mod registry;
mod spool;
mod store;

pub use config::{
    is_loopback_host, PullFromMirror, RegistryConfig, RegistryMirror, RegistryTable,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_PROGRESS_TIMEOUT, DEFAULT_REGISTRIES_CONF, DEFAULT_RETRY_BACKOFF,
};
pub use digest::{chain_ids, Algorithm, Digest, Hasher};
pub use error::ImageError;
pub use manifest::{
    classify, layer_compression, select_platform, Compression, Descriptor, Document, Platform,
    RawPlatform,
};
pub use reference::Reference;
pub use registry::RegistryAuth;
pub use store::{tree_usage, FsUsage, ImageRecord, ImageStore, LayerMeta};

/// Media type constants (OCI image-spec and Docker schema 2).
pub mod media_types {
    pub use crate::manifest::{
        DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1,
        DOCKER_SCHEMA1_SIGNED, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
    };
}

#[cfg(test)]
mod fuzz_tests;

/// A test-only hook called at named steps of a pull (`PullImage:downloading` once a layer's
/// first bytes are spooled, `PullImage:unpacking` once a layer's tar has been applied, before
/// it is moved into place); the daemon installs its kill switch here
/// (`KRIO_TEST_KILL_AT`). Set once; later calls are ignored.
pub fn set_test_hook(hook: fn(&'static str)) {
    let _ = TEST_HOOK.set(hook);
}

static TEST_HOOK: std::sync::OnceLock<fn(&'static str)> = std::sync::OnceLock::new();

/// Calls the installed test hook, if any, with `step`.
pub(crate) fn test_hook(step: &'static str) {
    if let Some(hook) = TEST_HOOK.get() {
        hook(step);
    }
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn store_is_send_sync() {
        assert_send_sync::<super::ImageStore>();
    }
}
