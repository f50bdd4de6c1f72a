//! Writing an OCI bundle's `config.json`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use oci_spec::runtime::Spec;

use crate::error::SpecError;

/// Name of the spec file inside a bundle (OCI runtime spec, "Filesystem Bundle").
pub const CONFIG_FILE: &str = "config.json";

/// Writes `<bundle_dir>/config.json` atomically: the JSON goes to `config.json.tmp` (mode 0600), is fsync'ed,
/// renamed over `config.json`, and the directory is fsync'ed. `bundle_dir` must exist. On failure the temporary
/// file is removed and any previous `config.json` is left untouched.
///
/// Errors: [`SpecError::Serialize`] if the spec cannot be serialised, [`SpecError::BundleWrite`] (with the path)
/// for I/O failures.
pub fn write_bundle(bundle_dir: &Path, spec: &Spec) -> Result<(), SpecError> {
    let data = serde_json::to_vec_pretty(spec).map_err(SpecError::Serialize)?;
    let tmp = bundle_dir.join(format!("{CONFIG_FILE}.tmp"));
    let dst = bundle_dir.join(CONFIG_FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SpecError::BundleWrite { path, source }
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        std::fs::File::open(bundle_dir)
            .and_then(|d| d.sync_all())
            .map_err(io(bundle_dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec::default();
        write_bundle(dir.path(), &spec).unwrap();
        let back: Spec =
            serde_json::from_slice(&std::fs::read(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert!(!dir.path().join("config.json.tmp").exists());
        let e = write_bundle(&dir.path().join("missing"), &spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
