//! Conveniences for tests and benchmarks: start the project's local registry and push the catalogue.

use std::path::PathBuf;
use std::process::Command;

use crate::catalog::{Catalog, IMAGE_NAMES};
use crate::error::{Error, Result};
use crate::registry::{PushedImage, RegistryClient};

/// Path of `scripts/registry.sh` in the source tree this crate was compiled from.
pub const REGISTRY_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/registry.sh");

/// Address of the shared test registry (`scripts/registry.sh start` with the default port).
pub const SHARED_REGISTRY: &str = "127.0.0.1:5000";

/// Runs `scripts/registry.sh start PORT` (idempotent: ok if already running) and returns
/// `127.0.0.1:PORT`. The registry keeps running after the caller exits; stop it with
/// `scripts/registry.sh stop PORT`.
///
/// # Errors
/// [`Error::RegistryScript`] if the script cannot be run or exits non-zero (e.g. Debian's
/// `docker-registry` is not installed, or the port is taken by another program); its output is included.
pub fn start_local_registry(port: u16) -> Result<String> {
    let script = PathBuf::from(REGISTRY_SCRIPT);
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(port.to_string())
        .output()
        .map_err(|e| Error::RegistryScript {
            script: script.clone(),
            port,
            output: format!("cannot run: {e}"),
        })?;
    if !out.status.success() {
        return Err(Error::RegistryScript {
            script,
            port,
            output: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(format!("127.0.0.1:{port}"))
}

/// Builds the named catalogue images (all of [`IMAGE_NAMES`] if `names` is empty) from the host's
/// busybox and pushes + verifies them on `registry` (`host:port`). Pushing is idempotent and cheap when
/// the blobs are already there.
///
/// # Errors
/// Build errors ([`Error::Io`], [`Error::BusyboxList`], [`Error::UnknownImage`]) and registry errors
/// ([`Error::Http`], [`Error::UnexpectedStatus`], [`Error::Mismatch`], ...).
pub fn push_images(registry: &str, names: &[&str]) -> Result<Vec<PushedImage>> {
    let client = RegistryClient::new(registry)?;
    client.ping()?;
    let catalog = Catalog::from_host()?;
    let names = if names.is_empty() { IMAGE_NAMES } else { names };
    names
        .iter()
        .map(|n| client.push_test_image(&catalog.build(n)?))
        .collect()
}
