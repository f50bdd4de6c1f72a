//! On-disk cache of the network config and ADD result per sandbox, so DEL and CHECK work after a
//! daemon restart and after the config directory changed (like libcni's `results/` cache).

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::NetError;

const KIND: &str = "krio-cni-cache-v1";

/// One cached attachment: everything needed to repeat the call with DEL / CHECK.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    pub if_name: String,
    pub network_name: String,
    /// The whole network config list as used for ADD.
    pub config: Value,
    pub cni_args: String,
    /// Runtime-supplied capability arguments (`portMappings`).
    pub capability_args: Map<String, Value>,
    /// The final ADD result; `None` while ADD is in progress or after it failed.
    pub result: Option<Value>,
}

impl CacheEntry {
    pub(crate) fn new(
        container_id: &str,
        if_name: &str,
        network_name: &str,
        config: Value,
        cni_args: &str,
        capability_args: Map<String, Value>,
    ) -> Self {
        CacheEntry {
            kind: KIND.into(),
            container_id: container_id.into(),
            if_name: if_name.into(),
            network_name: network_name.into(),
            config,
            cni_args: cni_args.into(),
            capability_args,
            result: None,
        }
    }
}

/// `<cache_dir>/<id>.json`; `id` must already be validated (no `/`, no leading `.`).
pub(crate) fn path(cache_dir: &Path, id: &str) -> PathBuf {
    cache_dir.join(format!("{id}.json"))
}

/// Reads the entry for `id`; `Ok(None)` when absent.
pub(crate) fn read(cache_dir: &Path, id: &str) -> Result<Option<CacheEntry>, NetError> {
    let p = path(cache_dir, id);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(NetError::Io {
                op: "read CNI cache",
                path: p,
                source,
            })
        }
    };
    let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| NetError::Cache {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    if entry.kind != KIND || entry.container_id != id {
        return Err(NetError::Cache {
            path: p,
            reason: format!(
                "kind {:?} / containerId {:?} do not match {KIND:?} / {id:?}",
                entry.kind, entry.container_id
            ),
        });
    }
    Ok(Some(entry))
}

/// Atomically writes the entry (temp file, fsync, rename); the directory is created 0700.
pub(crate) fn write(cache_dir: &Path, entry: &CacheEntry) -> Result<(), NetError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .map_err(|source| NetError::Io {
            op: "create CNI cache dir",
            path: cache_dir.to_path_buf(),
            source,
        })?;
    let p = path(cache_dir, &entry.container_id);
    let tmp = cache_dir.join(format!(".{}.json.tmp", entry.container_id));
    let bytes = serde_json::to_vec_pretty(entry).map_err(|e| NetError::Cache {
        path: p.clone(),
        reason: format!("serialize: {e}"),
    })?;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| NetError::Io { op, path, source }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io("create CNI cache file", &tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("write CNI cache file", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &p).map_err(io("rename CNI cache file to", &p))
}

/// Removes the entry for `id`; absent is fine.
pub(crate) fn remove(cache_dir: &Path, id: &str) -> Result<(), NetError> {
    let p = path(cache_dir, id);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Io {
            op: "remove CNI cache file",
            path: p,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache");
        assert!(read(&dir, "abc").unwrap().is_none());
        let mut e = CacheEntry::new(
            "abc",
            "eth0",
            "net",
            serde_json::json!({"a": 1}),
            "X=1",
            Map::new(),
        );
        write(&dir, &e).unwrap();
        assert_eq!(read(&dir, "abc").unwrap().unwrap(), e);
        e.result = Some(serde_json::json!({"ips": []}));
        write(&dir, &e).unwrap();
        assert_eq!(read(&dir, "abc").unwrap().unwrap().result, e.result);
        std::fs::write(path(&dir, "bad"), "{").unwrap();
        assert!(matches!(read(&dir, "bad"), Err(NetError::Cache { .. })));
        // Entry stored under another id is rejected.
        std::fs::copy(path(&dir, "abc"), path(&dir, "other")).unwrap();
        assert!(read(&dir, "other").is_err());
        remove(&dir, "abc").unwrap();
        remove(&dir, "abc").unwrap();
        assert!(read(&dir, "abc").unwrap().is_none());
    }
}
