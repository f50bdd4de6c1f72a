//! A small in-memory reference model of applying layer tarballs on top of each other
//! (OCI image spec `layer.md`: "Applying Changesets", "Whiteouts", "Opaque Whiteout").
//!
//! Tests use it to compute the merged root filesystem an unpacker (e.g. overlayfs-based snapshots) must
//! produce, and compare. It is a model, not an extractor: nothing touches the disk.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::layer::{normalize_path, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};

/// One path of a merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewEntry {
    /// A directory with these permission bits.
    Dir {
        /// Permission bits (`0o7777` mask).
        mode: u32,
    },
    /// A regular file (hard links share `data` with their target).
    File {
        /// Permission bits.
        mode: u32,
        /// Contents.
        data: Arc<[u8]>,
    },
    /// A symbolic link.
    Symlink {
        /// Link target, verbatim.
        target: String,
    },
}

/// Merged view: normalised relative path → entry. The root directory itself is not listed.
pub type View = BTreeMap<String, ViewEntry>;

fn terr(stage: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Tar {
        stage: stage.to_owned(),
        source,
    }
}

/// A non-whiteout entry of the layer being applied, added after the layer's whiteouts took effect.
struct PendingAdd {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    data: Vec<u8>,
    link: Option<String>,
}

fn remove_tree(view: &mut View, path: &str) {
    view.remove(path);
    let prefix = format!("{path}/");
    view.retain(|k, _| !k.starts_with(&prefix));
}

/// Applies uncompressed layer tars (lowest first) and returns the merged view. Whiteouts and opaque
/// markers of a layer affect only lower layers and never appear in the view themselves.
///
/// # Errors
/// [`Error::Tar`] for unreadable tar data; [`Error::InvalidPath`] for an unsafe entry path;
/// [`Error::DanglingHardLink`] for a hard link whose target is not a regular file at that point.
pub fn apply_layers(tars: &[&[u8]]) -> Result<View> {
    let mut view = View::new();
    for tar in tars {
        let mut archive = tar::Archive::new(*tar);
        let mut adds: Vec<PendingAdd> = Vec::new();
        for e in archive.entries().map_err(terr("read entries"))? {
            let mut e = e.map_err(terr("read entry"))?;
            let raw = e
                .path()
                .map_err(terr("entry path"))?
                .to_string_lossy()
                .into_owned();
            let path = normalize_path(&raw)?;
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (Some(d.to_owned()), b.to_owned()),
                None => (None, path.clone()),
            };
            let join = |name: &str| match &dir {
                Some(d) => format!("{d}/{name}"),
                None => name.to_owned(),
            };
            if base == OPAQUE_WHITEOUT {
                // Hide all lower children of `dir`.
                match &dir {
                    Some(d) => {
                        let prefix = format!("{d}/");
                        view.retain(|k, _| !k.starts_with(&prefix));
                    }
                    None => view.clear(),
                }
                continue;
            }
            if let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) {
                remove_tree(&mut view, &join(name));
                continue;
            }
            let h = e.header();
            let kind = h.entry_type();
            let mode = h.mode().map_err(terr("entry mode"))? & 0o7777;
            let link = e
                .link_name()
                .map_err(terr("link name"))?
                .map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            if kind == tar::EntryType::Regular {
                e.read_to_end(&mut data).map_err(terr("entry data"))?;
            }
            adds.push(PendingAdd {
                path,
                kind,
                mode,
                data,
                link,
            });
        }
        for PendingAdd {
            path,
            kind,
            mode,
            data,
            link,
        } in adds
        {
            let entry = match kind {
                tar::EntryType::Directory => ViewEntry::Dir { mode },
                tar::EntryType::Regular => ViewEntry::File {
                    mode,
                    data: data.into(),
                },
                tar::EntryType::Symlink => ViewEntry::Symlink {
                    target: link.unwrap_or_default(),
                },
                tar::EntryType::Link => {
                    let target = normalize_path(&link.unwrap_or_default())?;
                    match view.get(&target) {
                        Some(f @ ViewEntry::File { .. }) => f.clone(),
                        _ => return Err(Error::DanglingHardLink { path, target }),
                    }
                }
                // Devices, fifos etc. are not produced by this crate; model them as empty files.
                _ => ViewEntry::File {
                    mode,
                    data: Vec::new().into(),
                },
            };
            let is_dir = matches!(entry, ViewEntry::Dir { .. });
            if !is_dir || !matches!(view.get(&path), Some(ViewEntry::Dir { .. })) {
                remove_tree(&mut view, &path);
            }
            view.insert(path, entry);
        }
    }
    Ok(view)
}

/// Sorted names directly inside `dir` (normalised relative path, `""` for the root) in `view`.
pub fn list_dir<'a>(view: &'a View, dir: &str) -> Vec<&'a str> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    view.keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerBuilder;

    #[test]
    fn whiteout_and_opaque() {
        let mut l1 = LayerBuilder::new();
        l1.file("d/a", 0o644, "a").unwrap();
        l1.file("d/sub/x", 0o644, "x").unwrap();
        l1.file("o/a", 0o644, "a").unwrap();
        l1.file("f", 0o644, "f").unwrap();
        let mut l2 = LayerBuilder::new();
        l2.whiteout("d/sub").unwrap();
        l2.opaque("o").unwrap();
        l2.file("o/b", 0o644, "b").unwrap();
        l2.dir("f", 0o755).unwrap(); // file replaced by dir
        let (t1, t2) = (l1.tar().unwrap(), l2.tar().unwrap());
        let v = apply_layers(&[&t1, &t2]).unwrap();
        assert_eq!(list_dir(&v, ""), ["d", "f", "o"]);
        assert_eq!(list_dir(&v, "d"), ["a"]);
        assert_eq!(list_dir(&v, "o"), ["b"]);
        assert_eq!(v["f"], ViewEntry::Dir { mode: 0o755 });
    }
}
