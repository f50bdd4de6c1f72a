//! Atomic on-disk records: write a temp file, fsync it, rename it over the target, fsync the
//! directory. A reader therefore sees either the old or the new record, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ServerError;

/// Writes `value` as JSON to `path` atomically (temp file + fsync + rename + directory fsync).
///
/// Errors: [`ServerError::Io`] naming the path.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ServerError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| ServerError::Io {
        op: "encoding record",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (temp file + fsync + rename + directory fsync).
///
/// Errors: [`ServerError::Io`] naming the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| ServerError::Io { op, path, source }
    };
    let dir = path.parent().ok_or_else(|| ServerError::Io {
        op: "finding parent directory",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("creating temp file"))?;
    f.write_all(bytes).map_err(io("writing temp file"))?;
    f.sync_all().map_err(io("syncing temp file"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("renaming temp file"))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a JSON record. `Ok(None)` when the file does not exist.
///
/// Errors: [`ServerError::Io`] for unreadable or undecodable files.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ServerError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ServerError::Io {
                op: "reading record",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ServerError::Io {
            op: "decoding record",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), None);
        write_json(&p, &vec![1u32, 2]).unwrap();
        write_json(&p, &vec![3u32]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![3]));
        assert!(!dir.path().join("r.json.tmp").exists());
    }
}
