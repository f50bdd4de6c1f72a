//! `CreateContainer` from a checkpoint archive (CRI-O's restore): when `config.image.image`
//! is an absolute path, it names a checkpoint archive written by `CheckpointContainer`
//! (krio's or CRI-O's; kubelet's checkpoint API hands them out). The archive is unpacked
//! into a scratch directory under krio's root and checked ([`checkpoint_archive::unpack`]:
//! member names and types, `config.dump`, `spec.dump`, `deleted.files`, `bind.mounts`, a CRIU
//! image in `checkpoint/`), then `criu check` must pass, before anything else is made. The
//! scratch directory is removed on every path.

use std::path::{Path, PathBuf};

use crate::checkpoint_archive::{self, Unpacked};
use crate::error::{Result, ServerError};
use crate::{ids, Krio};

/// The request field that names the archive.
pub(crate) const FIELD: &str = "config.image.image";

/// Whether `image` (CRI `ImageSpec.image`) names a checkpoint archive rather than an image:
/// an absolute path (image references never start with `/`).
pub(crate) fn is_archive(image: &str) -> bool {
    image.starts_with('/')
}

/// Where restores unpack archives: `<root>/restore-scratch/<random>`.
pub(crate) fn scratch_root(root: &Path) -> PathBuf {
    root.join("restore-scratch")
}

impl Krio {
    /// Unpacks and checks the checkpoint archive at `archive` into a fresh scratch directory,
    /// then runs `criu check`. Returns the unpacked archive; the caller removes its `dir`
    /// ([`remove_scratch`]). On error nothing is left behind.
    ///
    /// Errors: `NotFound` when no file is at `archive`; `InvalidArgument` naming
    /// `config.image.image` for an archive that is malformed or unsafe; `FailedPrecondition`
    /// naming CRIU's reason when `criu check` fails.
    pub(crate) async fn unpack_checkpoint(&self, archive: &str) -> Result<Unpacked> {
        let path = PathBuf::from(archive);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(ServerError::NotFound {
                kind: "checkpoint archive",
                id: archive.to_string(),
            });
        }
        let scratch = scratch_root(&self.cfg.root).join(&ids::new_id()?[..16]);
        let unpacked = crate::blocking(|| {
            std::fs::create_dir_all(&scratch)
                .map_err(|e| ServerError::io("creating directory", &scratch, e))?;
            checkpoint_archive::unpack(&path, &scratch, FIELD)
        });
        let checked = match unpacked {
            Ok(u) => super::checkpoint::criu_check().await.map(|()| u),
            Err(e) => Err(e),
        };
        if checked.is_err() {
            remove_scratch(&scratch);
        }
        checked
    }
}

/// Removes a restore's scratch directory (logged when it fails).
pub(crate) fn remove_scratch(dir: &Path) {
    crate::blocking(|| match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %dir.display(), error = %e, "removing restore scratch directory");
        }
        _ => {}
    })
}
