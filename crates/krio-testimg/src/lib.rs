//! Builds krio's own small test images from Debian's busybox-static and pushes them to a registry.
//!
//! Everything is deterministic (fixed mtimes, sorted entries, uid/gid 0, fixed compression levels), so
//! manifest digests are stable across runs on the same host and busybox binary.
//!
//! * [`layer`]: reproducible layer tarballs ([`layer::LayerBuilder`]) compressed as none/gzip/zstd.
//! * [`image`]: configs, Docker schema 2 / OCI manifests, OCI indexes, OCI image layouts.
//! * [`catalog`]: the named test images (`krio-test/busybox`, `.../layered`, `.../pause`, ...) and the
//!   expected merged view of the whiteout image ([`catalog::LAYERED_FILES`], [`catalog::LAYERED_ABSENT`]).
//! * [`view`]: a reference model of applying layers (whiteouts, opaque dirs) for asserting merged rootfs views.
//! * [`local`]: start `scripts/registry.sh` and push the catalogue in one call (for test setup).
//! * [`registry`]: a plain-HTTP OCI distribution client to push and verify them.
//!
//! Typical use from an integration test:
//!
//! ```no_run
//! let catalog = krio_testimg::Catalog::from_host()?;
//! let client = krio_testimg::RegistryClient::new("127.0.0.1:5000")?;
//! let img = catalog.build(krio_testimg::catalog::BUSYBOX)?;
//! let pushed = client.push_test_image(&img)?;
//! println!("{} {}", pushed.reference, pushed.digest);
//! # Ok::<(), krio_testimg::Error>(())
//! ```
//!
//! Or, in one call each: `krio_testimg::start_local_registry(5000)?` then
//! `krio_testimg::push_images("127.0.0.1:5000", &[])?`.
//!
//! Or push everything: `krio-testimg push --registry 127.0.0.1:5000`, after `scripts/registry.sh start`.

#![warn(missing_docs)]

pub mod catalog;
pub mod digest;
pub mod error;
pub mod image;
pub mod layer;
pub mod local;
pub mod registry;
pub mod view;

pub use catalog::{Catalog, TestImage};
pub use digest::Digest;
pub use error::{Error, Result};
pub use image::{Artifact, Image, ImageSpec, Index, ManifestFormat, Platform};
pub use layer::{Compression, Layer, LayerBuilder};
pub use local::{push_images, start_local_registry, SHARED_REGISTRY};
pub use registry::{PushedImage, RegistryClient};
