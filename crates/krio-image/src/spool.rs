//! A download spool: an unlinked temp file one async writer appends to while one blocking
//! reader follows it ("tail -f"), so layers download in parallel and are applied in order,
//! each starting as soon as its first bytes arrive.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::ImageError;

struct State {
    written: u64,
    /// `Some(Ok)` once the content is complete and verified, `Some(Err(text))` on failure.
    done: Option<Result<(), String>>,
    /// The typed error of a failed download, taken by the pull to report it.
    error: Option<ImageError>,
}

struct Shared {
    file: File,
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates a spool in `dir` (an `O_TMPFILE`, so nothing is left behind on a crash).
///
/// Errors: [`ImageError::Io`] if the temp file cannot be created.
pub(crate) fn spool(dir: &Path) -> Result<(SpoolWriter, SpoolReader, SpoolHandle), ImageError> {
    let file = tempfile::tempfile_in(dir).map_err(|e| ImageError::io("create spool in", dir, e))?;
    let shared = Arc::new(Shared {
        file,
        state: Mutex::new(State {
            written: 0,
            done: None,
            error: None,
        }),
        cond: Condvar::new(),
    });
    Ok((
        SpoolWriter {
            shared: shared.clone(),
            written: 0,
            finished: false,
        },
        SpoolReader {
            shared: shared.clone(),
            pos: 0,
        },
        SpoolHandle { shared },
    ))
}

/// The appending side (owned by the download task). Dropping it unfinished fails the spool.
pub(crate) struct SpoolWriter {
    shared: Arc<Shared>,
    written: u64,
    finished: bool,
}

impl SpoolWriter {
    /// Appends bytes and wakes the reader.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.shared.file.write_all_at(data, self.written)?;
        self.written += data.len() as u64;
        let mut st = self.shared.lock();
        st.written = self.written;
        drop(st);
        self.shared.cond.notify_all();
        Ok(())
    }

    /// Marks the content complete and verified (`Ok`) or failed.
    pub(crate) fn finish(mut self, result: Result<(), ImageError>) {
        self.finished = true;
        let mut st = self.shared.lock();
        match result {
            Ok(()) => st.done = Some(Ok(())),
            Err(e) => {
                st.done = Some(Err(e.to_string()));
                st.error = Some(e);
            }
        }
        drop(st);
        self.shared.cond.notify_all();
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if !self.finished {
            let mut st = self.shared.lock();
            if st.done.is_none() {
                st.done = Some(Err("download aborted".into()));
            }
            drop(st);
            self.shared.cond.notify_all();
        }
    }
}

/// The following side: blocks until bytes arrive; EOF only after the writer finished `Ok`.
pub(crate) struct SpoolReader {
    shared: Arc<Shared>,
    pos: u64,
}

impl io::Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = self.shared.lock();
        loop {
            if self.pos < st.written {
                let avail = st.written - self.pos;
                drop(st);
                let n = usize::try_from(avail).unwrap_or(usize::MAX).min(buf.len());
                let got = self.shared.file.read_at(&mut buf[..n], self.pos)?;
                self.pos += got as u64;
                return Ok(got);
            }
            match &st.done {
                Some(Ok(())) => return Ok(0),
                Some(Err(msg)) => return Err(io::Error::other(msg.clone())),
                None => st = self.shared.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// Lets the pull retrieve a failed download's typed error, or read the content again.
#[derive(Clone)]
pub(crate) struct SpoolHandle {
    shared: Arc<Shared>,
}

impl SpoolHandle {
    /// The download's error, if it failed.
    pub(crate) fn take_error(&self) -> Option<ImageError> {
        self.shared.lock().error.take()
    }

    /// A new reader from the start of the content (the spool keeps everything written).
    pub(crate) fn reader(&self) -> SpoolReader {
        SpoolReader {
            shared: self.shared.clone(),
            pos: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn follows_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, mut r, _h) = spool(dir.path()).unwrap();
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            out
        });
        for i in 0..100u8 {
            w.write(&[i; 1000]).unwrap();
        }
        w.finish(Ok(()));
        let out = t.join().unwrap();
        assert_eq!(out.len(), 100_000);
        assert_eq!(out[99_999], 99);
        let mut again = Vec::new();
        _h.reader().read_to_end(&mut again).unwrap();
        assert_eq!(again, out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn failure_and_abort_reach_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, mut r, h) = spool(dir.path()).unwrap();
        w.write(b"abc").unwrap();
        w.finish(Err(ImageError::NotFound {
            reference: "x".into(),
            detail: None,
        }));
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        assert_eq!(out, b"abc");
        assert!(h.take_error().unwrap().is_not_found());

        let (w, mut r, h) = spool(dir.path()).unwrap();
        drop(w);
        assert!(r.read(&mut [0u8; 4]).is_err());
        assert!(h.take_error().is_none());
    }
}
