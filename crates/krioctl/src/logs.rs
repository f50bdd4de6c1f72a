//! Decoding the CRI container log format.
//!
//! Each line of a CRI log file (kubelet's `ContainerConfig.log_path`) is
//! `<RFC3339Nano timestamp> <stream> <tags> <content>\n`, where stream is
//! `stdout` or `stderr` and the first `:`-separated tag is `P` (partial: the
//! content continues in the next record of the same stream) or `F` (full: this
//! record ends the line). See the CRI "container log" design (kubelet
//! `pkg/kubelet/kuberuntime/logs`).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which output stream a record was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

/// One record (one line of the file) of the CRI log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The RFC 3339 timestamp exactly as written (nanosecond precision, UTC).
    pub timestamp: String,
    /// The stream it came from.
    pub stream: Stream,
    /// `true` for a `P` (partial) record, `false` for `F` (full).
    pub partial: bool,
    /// The content bytes, without the line's trailing newline.
    pub content: Vec<u8>,
}

/// One complete log line after partial records were joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp of the line's first record.
    pub timestamp: String,
    /// The stream it came from.
    pub stream: Stream,
    /// The joined content, without a trailing newline.
    pub content: Vec<u8>,
}

/// A malformed log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogParseError {
    /// Fewer than the three space-separated header fields.
    #[error("log line has no `<timestamp> <stream> <tag>` header")]
    MissingFields,
    /// The timestamp is not RFC 3339.
    #[error("log line timestamp {0:?} is not RFC 3339")]
    BadTimestamp(String),
    /// The stream is neither `stdout` nor `stderr`.
    #[error("log line stream {0:?} is not stdout or stderr")]
    BadStream(String),
    /// The first tag is neither `P` nor `F`.
    #[error("log line tag {0:?} is not P or F")]
    BadTag(String),
}

/// An I/O error reading a log file.
#[derive(Debug, thiserror::Error)]
#[error("reading log file {path}: {source}")]
pub struct LogReadError {
    /// The log file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Parses one line of a CRI log file (without its trailing `\n`).
///
/// Errors: [`LogParseError`] naming the malformed part.
pub fn parse_record(line: &[u8]) -> Result<LogRecord, LogParseError> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = parts.next().ok_or(LogParseError::MissingFields)?;
    let stream = parts.next().ok_or(LogParseError::MissingFields)?;
    let tags = parts.next().ok_or(LogParseError::MissingFields)?;
    let content = parts.next().unwrap_or_default();
    let ts = String::from_utf8_lossy(ts).into_owned();
    if chrono::DateTime::parse_from_rfc3339(&ts).is_err() {
        return Err(LogParseError::BadTimestamp(ts));
    }
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => {
            return Err(LogParseError::BadStream(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    let first_tag = tags.split(|b| *b == b':').next().unwrap_or_default();
    let partial = match first_tag {
        b"P" => true,
        b"F" => false,
        _ => {
            return Err(LogParseError::BadTag(
                String::from_utf8_lossy(tags).into_owned(),
            ))
        }
    };
    Ok(LogRecord {
        timestamp: ts,
        stream,
        partial,
        content: content.to_vec(),
    })
}

/// Joins partial records into full lines, separately per stream.
#[derive(Debug, Default)]
pub struct LineJoiner {
    pending: HashMap<Stream, (String, Vec<u8>)>,
}

impl LineJoiner {
    /// A joiner with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one record; returns the completed line when `record` is an `F`
    /// record (carrying the first partial's timestamp), `None` while partial.
    pub fn push(&mut self, record: LogRecord) -> Option<LogLine> {
        if record.partial {
            let entry = self
                .pending
                .entry(record.stream)
                .or_insert_with(|| (record.timestamp.clone(), Vec::new()));
            entry.1.extend_from_slice(&record.content);
            return None;
        }
        match self.pending.remove(&record.stream) {
            Some((timestamp, mut content)) => {
                content.extend_from_slice(&record.content);
                Some(LogLine {
                    timestamp,
                    stream: record.stream,
                    content,
                })
            }
            None => Some(LogLine {
                timestamp: record.timestamp,
                stream: record.stream,
                content: record.content,
            }),
        }
    }

    /// Returns whatever partial content is still pending (for when the log ends
    /// in a partial record, e.g. the container exited mid-line), stdout first.
    pub fn flush(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            if let Some((timestamp, content)) = self.pending.remove(&stream) {
                out.push(LogLine {
                    timestamp,
                    stream,
                    content,
                });
            }
        }
        out
    }
}

/// What happened to one raw line handed to [`LogReader`]'s callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete line.
    Line(LogLine),
    /// A malformed line (the caller may warn and carry on, as kubelet does).
    Malformed(LogParseError),
}

/// Reads a CRI log file incrementally: the initial content (optionally only
/// the last N lines) and then whatever is appended, following rotation.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    offset: u64,
    carry: Vec<u8>,
    joiner: LineJoiner,
}

impl LogReader {
    /// Opens `path`. Errors: [`LogReadError`] if it cannot be opened.
    pub fn open(path: &Path) -> Result<Self, LogReadError> {
        let mut r = LogReader {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            offset: 0,
            carry: Vec::new(),
            joiner: LineJoiner::new(),
        };
        r.reopen()?;
        Ok(r)
    }

    fn err(&self, source: std::io::Error) -> LogReadError {
        LogReadError {
            path: self.path.clone(),
            source,
        }
    }

    fn reopen(&mut self) -> Result<(), LogReadError> {
        let file = File::open(&self.path).map_err(|e| self.err(e))?;
        let meta = file.metadata().map_err(|e| self.err(e))?;
        self.inode = meta.ino();
        self.offset = 0;
        self.carry.clear();
        self.file = Some(file);
        Ok(())
    }

    /// Reads the whole current content and returns the decoded items; if
    /// `tail` is `Some(n)`, only the last `n` complete lines are kept
    /// (malformed lines are always returned). Partial records at the end stay
    /// pending for [`LogReader::poll`].
    ///
    /// Errors: [`LogReadError`].
    pub fn read_initial(&mut self, tail: Option<usize>) -> Result<Vec<Decoded>, LogReadError> {
        let mut kept: VecDeque<Decoded> = VecDeque::new();
        let mut lines = 0usize;
        self.poll(|d| {
            if matches!(d, Decoded::Line(_)) {
                lines += 1;
            }
            kept.push_back(d);
            if let Some(n) = tail {
                while lines > n {
                    match kept.pop_front() {
                        Some(Decoded::Line(_)) => lines -= 1,
                        Some(Decoded::Malformed(_)) => {}
                        None => break,
                    }
                }
            }
        })?;
        Ok(kept.into())
    }

    /// Reads whatever was appended since the last call and hands each decoded
    /// item to `sink`. If the file was rotated (a new inode at `path`) or
    /// truncated, the old file is drained and reading restarts at the new
    /// file's beginning. Returns the number of bytes consumed.
    ///
    /// Errors: [`LogReadError`].
    pub fn poll(&mut self, mut sink: impl FnMut(Decoded)) -> Result<u64, LogReadError> {
        let mut total = self.drain(&mut sink)?;
        // Rotation or truncation: a different file now lives at the path, or
        // ours got shorter than what we have read.
        let rotated = match std::fs::metadata(&self.path) {
            Ok(m) => m.ino() != self.inode || m.len() < self.offset,
            Err(_) => false,
        };
        if rotated {
            self.reopen()?;
            total += self.drain(&mut sink)?;
        }
        Ok(total)
    }

    fn drain(&mut self, sink: &mut impl FnMut(Decoded)) -> Result<u64, LogReadError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        let pos = file.seek(SeekFrom::Start(self.offset));
        if let Err(e) = pos {
            return Err(self.err(e));
        }
        let mut reader = BufReader::new(&mut *file);
        let mut consumed = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = match reader.read_until(b'\n', &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    return Err(LogReadError {
                        path: self.path.clone(),
                        source: e,
                    })
                }
            };
            if n == 0 {
                break;
            }
            consumed += n as u64;
            if buf.last() != Some(&b'\n') {
                // Incomplete trailing line: keep it until the rest arrives.
                self.carry.extend_from_slice(&buf);
                break;
            }
            buf.pop();
            let line = if self.carry.is_empty() {
                std::mem::take(&mut buf)
            } else {
                let mut l = std::mem::take(&mut self.carry);
                l.extend_from_slice(&buf);
                l
            };
            match parse_record(&line) {
                Ok(rec) => {
                    if let Some(l) = self.joiner.push(rec) {
                        sink(Decoded::Line(l));
                    }
                }
                Err(e) => sink(Decoded::Malformed(e)),
            }
        }
        self.offset += consumed;
        Ok(consumed)
    }

    /// Returns the pending partial lines at end of log (see [`LineJoiner::flush`]).
    pub fn finish(&mut self) -> Vec<LogLine> {
        self.joiner.flush()
    }
}

/// Reads the entire file at `path` and decodes it (a convenience for tests and
/// one-shot reads). Errors: [`LogReadError`].
pub fn read_all(path: &Path) -> Result<Vec<Decoded>, LogReadError> {
    let mut r = LogReader::open(path)?;
    let mut out = r.read_initial(None)?;
    out.extend(r.finish().into_iter().map(Decoded::Line));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const T1: &str = "2016-10-06T00:17:09.669794202Z";
    const T2: &str = "2016-10-06T00:17:10.113242941Z";

    fn lines(d: Vec<Decoded>) -> Vec<(Stream, String, String)> {
        d.into_iter()
            .map(|d| match d {
                Decoded::Line(l) => (l.stream, l.timestamp, String::from_utf8(l.content).unwrap()),
                Decoded::Malformed(e) => panic!("malformed: {e}"),
            })
            .collect()
    }

    #[test]
    fn parse_full_and_partial() {
        let r = parse_record(format!("{T1} stdout F hello world").as_bytes()).unwrap();
        assert_eq!(r.stream, Stream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.content, b"hello world");
        assert_eq!(r.timestamp, T1);
        let r = parse_record(format!("{T1} stderr P part").as_bytes()).unwrap();
        assert_eq!(r.stream, Stream::Stderr);
        assert!(r.partial);
        // Empty content, with and without the separating space.
        assert_eq!(
            parse_record(format!("{T1} stdout F ").as_bytes())
                .unwrap()
                .content,
            b""
        );
        assert_eq!(
            parse_record(format!("{T1} stdout F").as_bytes())
                .unwrap()
                .content,
            b""
        );
        // Content keeps inner spaces verbatim, and extra tags after ':' are allowed.
        let r = parse_record(format!("{T1} stdout F:x  two  spaces ").as_bytes()).unwrap();
        assert_eq!(r.content, b" two  spaces ");
        // Offset timestamps are RFC 3339 too.
        assert!(parse_record(b"2016-10-06T00:17:09+02:00 stdout F x").is_ok());
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse_record(b"garbage"), Err(LogParseError::MissingFields));
        assert!(matches!(
            parse_record(b"yesterday stdout F x"),
            Err(LogParseError::BadTimestamp(_))
        ));
        assert!(matches!(
            parse_record(format!("{T1} stdin F x").as_bytes()),
            Err(LogParseError::BadStream(_))
        ));
        assert!(matches!(
            parse_record(format!("{T1} stdout Q x").as_bytes()),
            Err(LogParseError::BadTag(_))
        ));
    }

    #[test]
    fn joiner_joins_partials_per_stream() {
        let mut j = LineJoiner::new();
        let rec = |ts: &str, s: Stream, p: bool, c: &str| LogRecord {
            timestamp: ts.into(),
            stream: s,
            partial: p,
            content: c.as_bytes().to_vec(),
        };
        assert_eq!(j.push(rec(T1, Stream::Stdout, true, "abc")), None);
        // An interleaved stderr line does not disturb the pending stdout partial.
        let e = j.push(rec(T2, Stream::Stderr, false, "err")).unwrap();
        assert_eq!(e.content, b"err");
        assert_eq!(j.push(rec(T2, Stream::Stdout, true, "def")), None);
        let l = j.push(rec(T2, Stream::Stdout, false, "ghi")).unwrap();
        assert_eq!(l.content, b"abcdefghi");
        assert_eq!(
            l.timestamp, T1,
            "a joined line carries its first record's time"
        );
        assert!(j.flush().is_empty());
        assert_eq!(j.push(rec(T1, Stream::Stderr, true, "dangling")), None);
        let f = j.flush();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].content, b"dangling");
    }

    fn write_log(path: &Path, body: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(body.as_bytes()).unwrap();
    }

    #[test]
    fn read_all_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        write_log(
            &p,
            &format!(
                "{T1} stdout F one\n{T1} stderr F two\n{T1} stdout P thr\n{T2} stdout F ee\n{T2} stdout F four\n"
            ),
        );
        let all = lines(read_all(&p).unwrap());
        assert_eq!(
            all.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(),
            vec!["one", "two", "three", "four"]
        );
        assert_eq!(all[1].0, Stream::Stderr);
        assert_eq!(all[2].1, T1);

        let mut r = LogReader::open(&p).unwrap();
        let tail = lines(r.read_initial(Some(2)).unwrap());
        assert_eq!(
            tail.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(),
            vec!["three", "four"]
        );
        let mut r = LogReader::open(&p).unwrap();
        assert!(r.read_initial(Some(0)).unwrap().is_empty());
    }

    #[test]
    fn malformed_lines_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        write_log(
            &p,
            &format!("{T1} stdout F ok\nnot a log line\n{T1} stdout F ok2\n"),
        );
        let d = read_all(&p).unwrap();
        assert_eq!(d.len(), 3);
        assert!(matches!(
            d[1],
            Decoded::Malformed(LogParseError::BadTimestamp(_))
        ));
    }

    #[test]
    fn follow_appends_incomplete_lines_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        write_log(&p, &format!("{T1} stdout F a\n{T1} stdout F b"));
        let mut r = LogReader::open(&p).unwrap();
        let first = lines(r.read_initial(None).unwrap());
        assert_eq!(first.len(), 1, "the unterminated line must wait");
        let mut got = Vec::new();
        r.poll(|d| got.push(d)).unwrap();
        assert!(got.is_empty());
        write_log(&p, &format!("c\n{T2} stderr P x"));
        r.poll(|d| got.push(d)).unwrap();
        write_log(&p, &format!("\n{T2} stderr F y\n"));
        r.poll(|d| got.push(d)).unwrap();
        let got = lines(got);
        assert_eq!(
            got.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(),
            vec!["bc", "xy"]
        );

        // Rotation: the file is renamed away and a new one appears.
        std::fs::rename(&p, dir.path().join("c.log.1")).unwrap();
        write_log(&p, &format!("{T2} stdout F after-rotate\n"));
        let mut got = Vec::new();
        r.poll(|d| got.push(d)).unwrap();
        assert_eq!(lines(got)[0].2, "after-rotate");

        // Truncation in place.
        std::fs::write(&p, format!("{T2} stdout F fresh\n")).unwrap();
        let mut got = Vec::new();
        r.poll(|d| got.push(d)).unwrap();
        assert_eq!(lines(got)[0].2, "fresh");
    }
}
