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
    write_atomic(path, &encode(path, value)?)
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
    // A temp name of this write's own, so that two writers of the same record (a request and
    // a background commit) never write into one temp file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}.{seq}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io("creating temp file"))?;
        f.write_all(bytes).map_err(io("writing temp file"))?;
        f.sync_all().map_err(io("syncing temp file"))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io("renaming temp file"))
    })();
    if let Err(e) = written {
        // A failed write (a full disk, typically) leaves the old record in place and no temp
        // file beside it.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`write_json`] off the async workers: the value is encoded here, the write and its fsyncs
/// run on a blocking thread.
///
/// Errors: [`ServerError::Io`] naming the path; [`ServerError::Task`] if the blocking task
/// panicked.
pub async fn write_json_async<T: Serialize>(path: &Path, value: &T) -> Result<(), ServerError> {
    let bytes = encode(path, value)?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| ServerError::Task(e.to_string()))?
}

/// Writes `value` to `path` on a blocking thread without waiting for it; a failure is logged.
/// For readers that notice a change (an exit) and must not wait for a disk: the record is
/// published in memory already, and every later commit writes it again.
pub fn write_json_detached<T: Serialize>(path: &Path, value: &T) {
    let bytes = match encode(path, value) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "encoding record");
            return;
        }
    };
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write_atomic(&path, &bytes) {
            tracing::warn!(error = %e, "persisting record in the background");
        }
    });
}

fn encode<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, ServerError> {
    serde_json::to_vec_pretty(value).map_err(|e| ServerError::Io {
        op: "encoding record",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
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
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "temp files left: {left:?}");
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails: the target is a non-empty directory.
        let p = dir.path().join("r.json");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("x"), "x").unwrap();
        assert!(write_json(&p, &vec![1u32]).is_err());
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        left.sort();
        assert_eq!(left, vec![std::ffi::OsString::from("r.json")]);
    }
}
